"""The notes' §14 exercises 1-3, solved by the library and compared with the notes' answers.

Exercise 1 (sizes) uses :func:`cnnkit.ops.conv.conv_output_size` and checks it by running the op on an
array of that shape; exercise 2 is :func:`cnnkit.ops.conv.conv2d`; exercise 3 is
:func:`cnnkit.ops.pool.max_pool2d`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..ops.conv import conv2d, conv_output_size
from ..ops.pool import max_pool2d
from ._format import Explanation, heading, inline_matrix, matrix_text, num, wrap
from .conv import conv as explain_conv
from .im2col import EXERCISE2_ANSWER, EXERCISE2_IMAGE, EXERCISE2_KERNEL
from .pool import pool as explain_pool

EXERCISE3_MATRIX = np.array([[3, 8, 2, 4], [1, 6, 5, 3], [7, 2, 9, 1], [4, 5, 3, 6]], dtype=np.float64)
EXERCISE3_ANSWER = np.array([[8, 5], [7, 9]], dtype=np.float64)


@dataclass(frozen=True)
class ExerciseResult:
    """One exercise: the question, the library's answer, the notes' answer and how they compare."""

    number: str  # "1.1", "1.2", "1.3", "2", "3"
    question: str
    computed: object  # a shape tuple (exercise 1) or a matrix (exercises 2, 3)
    notes_answer: object
    agrees: bool
    working: str  # the working, as text
    comment: str = ""


@dataclass(frozen=True)
class ExercisesExplanation(Explanation):
    """Every exercise of §14 with its solution (see :func:`exercises`)."""

    results: list[ExerciseResult]

    def __getitem__(self, number: str) -> ExerciseResult:
        for result in self.results:
            if result.number == number:
                return result
        raise KeyError(number)

    def render(self) -> str:
        lines = [heading("Exercises (notes §14), solved by cnnkit"), ""]
        for r in self.results:
            lines.append(heading(f"Exercise {r.number}: {r.question}", "-"))
            lines.append(r.working.rstrip())
            verdict = "agrees" if r.agrees else "DISAGREES"
            lines.append(f"Notes' answer: {_show(r.notes_answer)} -> cnnkit {verdict}.")
            if r.comment:
                lines.append(wrap(r.comment))
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def _show(value: object) -> str:
    if isinstance(value, np.ndarray):
        return inline_matrix(value)
    if isinstance(value, tuple):
        return " x ".join(str(v) for v in value)
    return str(value)


def _size_exercise(
    number: str,
    question: str,
    shape: tuple[int, int, int],
    kernel: int,
    stride: int,
    padding: int,
    notes_answer: int,
    notes_working: str,
    pooling: bool = False,
) -> ExerciseResult:
    h, w, c = shape
    out = conv_output_size(h, kernel, padding=padding, stride=stride)
    exact = Fraction(h - kernel + 2 * padding, stride) + 1
    # Check with the op itself: run it on zeros of the exercise's shape.
    x = np.zeros((1, c, h, w), dtype=np.float32)
    if pooling:
        y = max_pool2d(x, kernel, stride=stride, padding=padding)
        depth = f"{y.shape[1]}"
        op_text = f"max_pool2d on a (1, {c}, {h}, {w}) array gives {y.shape}"
    else:
        y = conv2d(x, np.zeros((1, c, kernel, kernel), dtype=np.float32), stride=stride, padding=padding)
        depth = "?"
        op_text = (
            f"conv2d with one {kernel}x{kernel}x{c} filter on a (1, {c}, {h}, {w}) array gives {y.shape}"
        )
    formula = f"({h} - {kernel} + 2*{padding}) / {stride} + 1 = {num(float(exact))}"
    if exact.denominator != 1:
        formula += f" -> rounded down to {out}"
    working = "\n".join(
        [
            f"  {formula}",
            f"  output {out} x {out} x {depth}"
            + (" (depth = the number of filters)" if depth == "?" else ""),
            f"  check: {op_text}",
            f"  notes: {notes_working}",
        ]
    )
    comment = ""
    if exact.denominator != 1:
        comment = (
            f"The notes write {notes_working.split(' -> ')[0]}, but the exact value is {num(float(exact))}: "
            f"{h - kernel + 2 * padding}/{stride} is not a whole number. The answer {out} is right only "
            f"because the formula rounds down (the last window would hang off the padded edge); the notes "
            "round silently."
        )
    elif pooling:
        comment = (
            f"The notes write {h}/{stride}; that is the §3.4 formula with F = {kernel}, S = {stride}, P = 0: "
            f"({h} - {kernel})/{stride} + 1 = {out}, the same number whenever the window equals the stride."
        )
    return ExerciseResult(
        number=number,
        question=question,
        computed=(out, out),
        notes_answer=(notes_answer, notes_answer),
        agrees=out == notes_answer and tuple(y.shape[2:]) == (out, out),
        working=working,
        comment=comment,
    )


def exercises() -> ExercisesExplanation:
    """Solve the notes' §14 exercises 1-3 with the library and compare with the notes' answers.

    Exercise 1.2 agrees (50 x 50) but the notes' working hides a floor: ``(100 - 3 + 2)/2 + 1`` is 50.5.

    >>> r = exercises()
    >>> r["1.2"].computed, r["2"].computed.tolist(), r["3"].computed.tolist()
    ((50, 50), [[1.0, 0.0], [1.0, 3.0]], [[8.0, 5.0], [7.0, 9.0]])
    """
    results = [
        _size_exercise(
            "1.1",
            "input 28x28x1, filter 5x5, stride 1, padding 0",
            (28, 28, 1),
            5,
            1,
            0,
            24,
            "(28-5)/1 + 1 = 24 -> 24x24",
        ),
        _size_exercise(
            "1.2",
            "input 100x100x3, filter 3x3, stride 2, padding 1",
            (100, 100, 3),
            3,
            2,
            1,
            50,
            "(100-3+2)/2 + 1 = 50 -> 50x50x? (depends on filters)",
        ),
        _size_exercise(
            "1.3",
            "input 14x14x64 after 2x2 max pooling with stride 2",
            (14, 14, 64),
            2,
            2,
            0,
            7,
            "14/2 = 7 -> 7x7x64",
            pooling=True,
        ),
    ]
    conv = explain_conv(EXERCISE2_IMAGE, EXERCISE2_KERNEL)
    results.append(
        ExerciseResult(
            number="2",
            question="convolve I = [[2, 4, 1], [3, 1, 5], [0, 2, 1]] with K = [[0, 1], [-1, 0]], stride 1",
            computed=conv.output,
            notes_answer=EXERCISE2_ANSWER.copy(),
            agrees=bool(np.array_equal(conv.output, EXERCISE2_ANSWER)),
            working="\n".join(
                [
                    *(
                        f"  output[{s.position[0]}, {s.position[1]}] = "
                        + " + ".join(
                            f"({num(a)} x {num(b)})"
                            for a, b in zip(s.window.ravel(), conv.kernel.ravel(), strict=True)
                        )
                        + f" = {num(s.total)}"
                        for s in conv.steps
                    ),
                    matrix_text(conv.output),
                ]
            ),
            comment=(
                "The notes' answer slides K without flipping it (a cross-correlation), like §3.3 and "
                "like cnnkit's conv2d; with §3.2's flipped kernel the answer would be "
                f"{inline_matrix(conv2d(EXERCISE2_IMAGE[None, None], EXERCISE2_KERNEL[None, None], flip_kernel=True)[0, 0])}."
            ),
        )
    )
    pool = explain_pool(EXERCISE3_MATRIX, "max", 2, 2)
    results.append(
        ExerciseResult(
            number="3",
            question="max pooling 2x2, stride 2, of [[3, 8, 2, 4], [1, 6, 5, 3], [7, 2, 9, 1], [4, 5, 3, 6]]",
            computed=pool.output,
            notes_answer=EXERCISE3_ANSWER.copy(),
            agrees=bool(np.array_equal(pool.output, EXERCISE3_ANSWER)),
            working="\n".join(
                [
                    *(
                        f"  max({', '.join(num(v) for v in w.values.ravel())}) = {num(w.result)}"
                        for w in pool.windows
                    ),
                    matrix_text(pool.output),
                ]
            ),
        )
    )
    return ExercisesExplanation(results)
