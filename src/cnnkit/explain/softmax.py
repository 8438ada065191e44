"""Softmax with the exponentials and their sum written out, as the notes' §6.2 does.

``P(class i) = e^{z_i} / sum_j e^{z_j}``. The probabilities are :func:`cnnkit.ops.activations.softmax`;
the exponentials and the sum are the formula's terms, shown so the division can be followed. The library
subtracts the largest score first (``e^{z_i - max z}``), which gives the same probabilities without
overflowing for large scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..ops.activations import softmax as softmax_op
from ._format import Explanation, heading, num, parse_vector, wrap

#: The notes' §6.2 scores and the numbers they print.
NOTES_SCORES = (2.0, 1.0, 0.1)
NOTES_SUM = 11.22
NOTES_PROBABILITIES = (0.66, 0.24, 0.10)


@dataclass(frozen=True)
class SoftmaxExplanation(Explanation):
    """The terms of §6.2's softmax (see :func:`softmax`)."""

    scores: np.ndarray
    exps: np.ndarray  # e^{z_i}
    total: float  # sum_j e^{z_j}, exact
    probabilities: np.ndarray  # from cnnkit.ops.activations.softmax
    shifted_exps: np.ndarray  # e^{z_i - max z}, what the library computes
    notes_defaults: bool
    rounded_terms_sum: float | None = None  # sum of the exponentials rounded to 2 places, as the notes add

    def render(self) -> str:
        lines = [heading("Softmax (notes §6.2)"), ""]
        lines.append("P(class i) = e^(z_i) / sum_j e^(z_j)")
        lines.append(f"Scores z = [{', '.join(num(z) for z in self.scores)}]")
        lines.append("")
        terms = " + ".join(f"e^{num(z)}" for z in self.scores)
        values = " + ".join(num(e) for e in self.exps)
        lines.append(f"Sum = {terms}")
        lines.append(f"    = {values}")
        lines.append(f"    = {num(self.total)}")
        lines.append("")
        overflow = not np.all(np.isfinite(self.exps))
        if overflow:
            lines.append(
                wrap(
                    "These exponentials are too large for float64 (they overflow to inf), so the formula "
                    "as written gives inf/inf. The library's shifted form below does not overflow:"
                )
            )
            shifted_total = float(np.sum(self.shifted_exps))
            pairs = zip(self.shifted_exps, self.probabilities, strict=True)
            for k, (e, p) in enumerate(pairs, start=1):
                lines.append(f"P(class {k}) = {num(e)} / {num(shifted_total)} = {num(p)}")
        else:
            for k, (e, p) in enumerate(zip(self.exps, self.probabilities, strict=True), start=1):
                lines.append(f"P(class {k}) = {num(e)} / {num(self.total)} = {num(p)}")
        lines.append(f"The probabilities add up to {num(float(np.sum(self.probabilities)))}.")
        lines.append("")
        zmax = float(np.max(self.scores))
        lines.append(
            wrap(
                f"How the library computes it: subtract the largest score ({num(zmax)}) first, "
                f"e^(z_i - {num(zmax)}) = [{', '.join(num(e) for e in self.shifted_exps)}], "
                f"sum {num(float(np.sum(self.shifted_exps)))}. Dividing both top and bottom by e^{num(zmax)} "
                "leaves every probability unchanged, and e^(large score) can no longer overflow."
            )
        )
        if self.notes_defaults and self.rounded_terms_sum is not None:
            lines.append("")
            lines.append(
                wrap(
                    f"Compared with the notes: the exact sum is {num(self.total)} (to two places "
                    f"{self.total:.2f}). The notes print {NOTES_SUM:.2f} because they add the rounded terms "
                    f"{' + '.join(f'{e:.2f}' for e in self.exps)} = {self.rounded_terms_sum:.2f}. The "
                    "probabilities are unaffected at two decimals: "
                    + ", ".join(f"{p:.2f}" for p in self.probabilities)
                    + f", as the notes give ({', '.join(f'{p:.2f}' for p in NOTES_PROBABILITIES)})."
                )
            )
        return "\n".join(lines) + "\n"


def softmax(scores: Sequence[float] | np.ndarray | str = NOTES_SCORES) -> SoftmaxExplanation:
    """Explain softmax of a score vector step by step (notes §6.2).

    ``scores``: a list of numbers or a string ``"2 1 0.1"`` (default: the notes' ``[2.0, 1.0, 0.1]``).
    The result's ``total`` is the exact sum ``e^2 + e^1 + e^0.1 = 11.2125...``; the notes print 11.22
    because they add the rounded terms 7.39 + 2.72 + 1.11.

    >>> r = softmax()
    >>> round(r.total, 4), [round(float(p), 2) for p in r.probabilities]
    (11.2125, [0.66, 0.24, 0.1])
    """
    z = parse_vector(scores, "scores", "explain.softmax")
    probabilities = softmax_op(z[None, :], axis=1)[0]
    with np.errstate(over="ignore"):
        exps = np.exp(z)
        total = float(np.sum(exps))
    shifted = np.exp(z - np.max(z))
    defaults = z.shape == (3,) and np.allclose(z, NOTES_SCORES, rtol=0, atol=0)
    rounded = float(np.sum(np.round(exps, 2))) if defaults else None
    return SoftmaxExplanation(
        scores=z,
        exps=exps,
        total=total,
        probabilities=probabilities,
        shifted_exps=shifted,
        notes_defaults=defaults,
        rounded_terms_sum=rounded,
    )
