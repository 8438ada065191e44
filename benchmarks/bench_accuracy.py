"""Float32 accuracy of cnnkit's gradients beside PyTorch's, both against a float64 reference.

Run it as::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_accuracy.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_accuracy.py --models vgg11_bn_small
    python benchmarks/bench_accuracy.py --imagenet --batches 16          # also the 224x224 models (slow)

For each zoo model and batch size, on real, normalised data, one training-mode forward and backward
pass (mean cross-entropy) is run four times on the same weights and the same batch:

- cnnkit in float32 (its fast paths: Winograd, fused blocks, compiled kernels);
- PyTorch in float32 (the twin from ``torch_bridge.py``, same weights);
- PyTorch in float64 and cnnkit in float64: the reference. Both start from the float32 weights and
  inputs (exactly representable in float64), so the only difference left is the arithmetic. The two
  float64 runs must agree to ~1e-12 (the ``f64 check`` column); the reference is PyTorch's.

Metric, per parameter tensor: the **norm-wise relative error** ``||g32 - g64|| / ||g64||`` (Frobenius
norms). An element-wise relative error is meaningless for gradients that are zero in exact arithmetic:
a convolution bias followed by batch norm has ``dL/db = 0`` (batch norm subtracts the mean), its float64
"gradient" is rounding noise of ~1e-16, and any relative error of it is ~1e8. Such tensors (``||g64||``
below ``1e-9`` of the largest tensor's norm) are left out and counted in the ``zero`` column. The
per-batch figure is the median over the remaining tensors; the logits' error is the same norm-wise error
of the forward output.

Why several batches (``--batches``): a training gradient is a discontinuous function of the forward
pass. Where a ReLU input or a max-pooling window's runner-up is within rounding distance of the
decision, float32 and float64 can take different branches ("flips"), and the gradient of every layer
below changes by about ``1 / (positions per channel)`` of its size (1e-3 to 1e-2 in the last stages of a
32x32 network at batch 64, where a channel has 64 x 2 x 2 positions). That is not arithmetic error and
either library hits it by chance, the more often the larger its forward error. So the table reports,
per model and batch size: the gradient error, the median over the batches whose figure stayed at or
below ``FLIP_LEVEL`` = 1e-4 (float32 arithmetic alone stayed below 1e-5 on every model measured; a flip
gives 1e-3 and more), how many batches flipped for each library, the plain median over all batches,
and the number of PyTorch's float32 ReLU and max-pooling decisions that differ from its float64 ones
(most of them in early layers, where they move a gradient by ~1e-7).

Data: the Fashion-MNIST subset bundled with cnnkit for one-channel models (LeNet-5 at 28x28), the shapes
generator (``cnnkit.data.shapes``) at the model's input size for three-channel ones, both standardised
per channel (``Normalize("standardize")`` fitted on 512 images); ``--data random`` uses standard
normal inputs instead. Dropout (AlexNet, VGG's ImageNet heads) is set to rate 0 so both libraries run
the same function. ``--no-winograd`` turns cnnkit's Winograd path off (for comparison).

This is a script, not a test; ``tests/test_float32_accuracy.py`` holds the bound (cnnkit's float32
error within 10x of PyTorch's) on small models with the same functions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: The notes' networks and the 32x32 zoo models (the default set), then the ImageNet-size ones.
SMALL_MODELS = [
    "simple_cnn",
    "lenet5",
    "cats_dogs_cnn",
    *(f"vgg{d}{bn}_small" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    *(f"resnet{d}_small" for d in (18, 34, 50, 101, 152)),
]
IMAGENET_MODELS = ["alexnet", *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))]
IMAGENET_MODELS += [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
#: Input shapes that differ from the zoo's default (LeNet-5 on Fashion-MNIST's 28x28 images).
INPUT_SHAPES = {"lenet5": (1, 28, 28)}
#: Tensors whose float64 gradient norm is below this fraction of the largest are zero in exact
#: arithmetic (a bias before batch norm) and carry no relative error.
ZERO_GRADIENT = 1e-9
#: A batch whose median gradient error is above this took another branch than float64 somewhere (a
#: "flip", see the module docstring): float32 arithmetic alone gave at most ~1e-5 on every model measured,
#: a flip 1e-3 to 1e-2.
FLIP_LEVEL = 1e-4


@dataclass
class Errors:
    """Norm-wise relative errors of one batch (see the module docstring)."""

    logits_cnnkit: float
    logits_torch: float
    grads_cnnkit: dict[str, float]
    grads_torch: dict[str, float]
    zero: list[str] = field(default_factory=list)
    f64_check: float = float("nan")
    torch_flips: int = 0

    @property
    def median_cnnkit(self) -> float:
        return statistics.median(self.grads_cnnkit.values())

    @property
    def median_torch(self) -> float:
        return statistics.median(self.grads_torch.values())


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """``||approx - exact|| / ||exact||`` in float64 (Frobenius norms); inf when ``exact`` is zero."""
    exact = np.asarray(exact, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(approx, dtype=np.float64) - exact)
    norm = np.linalg.norm(exact)
    return float(diff / norm) if norm > 0 else float("inf")


def normalised_batch(
    name: str, input_shape: tuple[int, ...], batch: int, seed: int, data: str, num_classes: int = 10
):
    """``(x, y)``: a float32 batch of real images standardised per channel, and labels below
    ``num_classes`` (the shapes generator draws that many of its classes)."""
    rng = np.random.default_rng(seed)
    c, h, w = input_shape
    if data == "random":
        return rng.standard_normal((batch, c, h, w)).astype(np.float32), rng.integers(0, num_classes, batch)
    from cnnkit.data.transforms import Normalize

    if c == 1:
        from cnnkit.data.datasets import fashion_mnist

        images = fashion_mnist(subset=True)
        if (h, w) != images.x_train.shape[2:] or num_classes != 10:
            raise SystemExit(
                f"bench_accuracy: {name} wants {h}x{w}, {num_classes} classes; Fashion-MNIST: 28x28, 10"
            )
        norm = Normalize("standardize").fit(images.x_train[:512])
        pick = rng.choice(len(images.y_train), size=batch, replace=False)
        return norm(images.x_train[pick]), images.y_train[pick]
    from cnnkit.data.shapes import DEFAULT_CLASSES, shapes

    if c != 3:
        raise SystemExit(f"bench_accuracy: no real data set with {c} channels for {name}")
    classes = DEFAULT_CLASSES[:num_classes]
    norm = Normalize("standardize").fit(shapes(512, (h, w), classes, seed=12345).x)
    images = shapes(batch, (h, w), classes, seed=seed)
    return norm(images.x), images.y


def _no_dropout(model: Any) -> None:
    for _, layer in model.named_layers():
        if type(layer).__name__ == "Dropout":
            layer.rate = 0.0


def cnnkit_pass(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and parameter gradients of one training-mode pass with mean cross-entropy."""
    from cnnkit.ops.losses import cross_entropy_backward, cross_entropy_forward

    model.train()
    logits = model.forward(x, True)
    _, cache = cross_entropy_forward(logits, y)
    model.backward(cross_entropy_backward(1.0, cache))
    return logits, {name: owner.grads[key].copy() for name, owner, key in model.named_parameters()}


def torch_pass(module: Any, x: np.ndarray, y: np.ndarray, decisions: list | None = None):
    """As :func:`cnnkit_pass` for a PyTorch module; ``decisions`` collects each ReLU's output sign and
    each max pooling's argmax (as booleans / indices) when given."""
    import torch

    handles = []
    if decisions is not None:

        def relu_hook(_m, _i, out):
            decisions.append((out > 0).numpy().copy())

        def pool_hook(m, inp, _o):
            _, idx = torch.nn.functional.max_pool2d(
                inp[0].detach(), m.kernel_size, m.stride, m.padding, m.dilation, return_indices=True
            )
            decisions.append(idx.numpy().copy())

        for m in module.modules():
            if isinstance(m, torch.nn.ReLU):
                handles.append(m.register_forward_hook(relu_hook))
            elif isinstance(m, torch.nn.MaxPool2d):
                handles.append(m.register_forward_hook(pool_hook))
    module.train()
    module.zero_grad(set_to_none=True)
    out = module(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
    for h in handles:
        h.remove()
    return out.detach().numpy(), {k: p.grad.numpy().copy() for k, p in module.named_parameters()}


def measure_errors(model32: Any, x: np.ndarray, y: np.ndarray, check_f64: bool = True) -> Errors:
    """The errors of one batch for a built float32 cnnkit model (see the module docstring)."""
    from torch_bridge import to_torch

    _no_dropout(model32)
    twin32 = to_torch(model32)
    twin64 = to_torch(model32).double()
    d32: list = []
    d64: list = []
    t_logits32, t_grads32 = torch_pass(twin32, x, y, d32)
    t_logits64, ref = torch_pass(twin64, x.astype(np.float64), y, d64)
    flips = sum(int(np.count_nonzero(a != b)) for a, b in zip(d32, d64, strict=True))
    logits32, grads32 = cnnkit_pass(model32, x, y)
    largest = max(np.linalg.norm(g) for g in ref.values())
    zero = [k for k, g in ref.items() if np.linalg.norm(g) <= ZERO_GRADIENT * largest]
    keep = [k for k in ref if k not in zero]
    errors = Errors(
        logits_cnnkit=relative_error(logits32, t_logits64),
        logits_torch=relative_error(t_logits32, t_logits64),
        grads_cnnkit={k: relative_error(grads32[k], ref[k]) for k in keep},
        grads_torch={k: relative_error(t_grads32[k], ref[k]) for k in keep},
        zero=zero,
        torch_flips=flips,
    )
    if check_f64:
        model64 = _float64_copy(model32)
        logits64, grads64 = cnnkit_pass(model64, x.astype(np.float64), y)
        errors.f64_check = max(
            relative_error(logits64, t_logits64), *(relative_error(grads64[k], ref[k]) for k in keep)
        )
    return errors


def _float64_copy(model32: Any) -> Any:
    from cnnkit.models import zoo

    model64 = zoo.get(model32.name, input_shape=model32.input_shape, dtype=np.float64)
    _no_dropout(model64)
    state = model32.state_dict()
    model64.load_state_dict({k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in state.items()})
    return model64


def run_model(name: str, batch: int, batches: int, data: str, check_f64: bool) -> dict:
    from cnnkit.models import zoo

    model = zoo.get(name, input_shape=INPUT_SHAPES.get(name), seed=0)
    per_batch = []
    start = time.perf_counter()
    for i in range(batches):
        x, y = normalised_batch(name, model.input_shape, batch, 100 + i, data, int(model.output_shape[-1]))
        per_batch.append(measure_errors(model, x, y, check_f64))
    med = statistics.median
    ck = [e.median_cnnkit for e in per_batch]
    pt = [e.median_torch for e in per_batch]
    return {
        "model": name,
        "batch": batch,
        "data": data,
        "batches": batches,
        "grad_cnnkit": arithmetic_error(ck),
        "grad_torch": arithmetic_error(pt),
        "flipped_cnnkit": sum(v > FLIP_LEVEL for v in ck),
        "flipped_torch": sum(v > FLIP_LEVEL for v in pt),
        "grad_cnnkit_all": med(ck),
        "grad_torch_all": med(pt),
        "grad_cnnkit_max": max(ck),
        "grad_torch_max": max(pt),
        "logits_cnnkit": med(e.logits_cnnkit for e in per_batch),
        "logits_torch": med(e.logits_torch for e in per_batch),
        "f64_check": max(e.f64_check for e in per_batch),
        "torch_flips": [e.torch_flips for e in per_batch],
        "zero_tensors": len(per_batch[0].zero),
        "tensors": len(per_batch[0].grads_cnnkit),
        "seconds": time.perf_counter() - start,
        "per_batch": [asdict(e) for e in per_batch],
    }


def arithmetic_error(figures: list[float]) -> float:
    """The median of the per-batch figures at or below :data:`FLIP_LEVEL` (batches without a flip that
    mattered), NaN when every batch flipped."""
    clean = [v for v in figures if v <= FLIP_LEVEL]
    return statistics.median(clean) if clean else float("nan")


def header() -> dict:
    import torch

    from cnnkit.ops._jit import numba_available
    from machine import describe

    return {"date": str(date.today()), "machine": describe(torch), "numba": numba_available()}


def ratio(row: dict) -> tuple[float, str]:
    """cnnkit's error over PyTorch's: of the flip-free figures where both libraries have one, else of
    the medians over all batches (``"all"``: every batch of one library flipped)."""
    if row["grad_cnnkit"] == row["grad_cnnkit"] and row["grad_torch"] == row["grad_torch"]:
        return row["grad_cnnkit"] / row["grad_torch"], "flip-free"
    return row["grad_cnnkit_all"] / row["grad_torch_all"], "all"


def _e(value: float) -> str:
    return f"{value:.1e}" if value == value else "flipped"


def ratio_text(row: dict) -> str:
    value, kind = ratio(row)
    return f"{value:.2f}" if kind == "flip-free" else f"{value:.2f} (all)"


def markdown_table(rows: list[dict]) -> str:
    """The rows as benchmarks/README.md shows them."""
    lines = [
        "| network | batch | data | gradient error cnnkit / PyTorch | ratio | batches flipped cnnkit / "
        "PyTorch | median, all batches | logits cnnkit / PyTorch | PyTorch decisions flipped | f64 check |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['data']} | {_e(r['grad_cnnkit'])} / {_e(r['grad_torch'])} | "
            f"{ratio_text(r)} | {r['flipped_cnnkit']} / {r['flipped_torch']} of {r['batches']} | "
            f"{r['grad_cnnkit_all']:.1e} / {r['grad_torch_all']:.1e} | "
            f"{r['logits_cnnkit']:.1e} / {r['logits_torch']:.1e} | {', '.join(map(str, r['torch_flips']))} | "
            + (f"{r['f64_check']:.0e} |" if r["f64_check"] == r["f64_check"] else "- |")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="zoo names (default: the notes' and 32x32 models)")
    parser.add_argument("--imagenet", action="store_true", help="also the 224x224 models (slow)")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 16])
    parser.add_argument("--batches", type=int, default=3, help="batches per model and size (default 3)")
    parser.add_argument("--data", choices=["real", "random"], default="real")
    parser.add_argument("--no-winograd", action="store_true", help="cnnkit without its Winograd path")
    parser.add_argument(
        "--winograd-float32", action="store_true", help="Winograd's products in float32 (no mixed precision)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the cnnkit float64 run")
    parser.add_argument("--json", type=Path, default=HERE / "results" / f"accuracy-{date.today()}.json")
    args = parser.parse_args()

    import cnnkit.ops.policy as policy
    import cnnkit.ops.winograd as winograd

    if args.no_winograd:
        policy.WINOGRAD_MIN_CHANNELS = 1 << 30
    if args.winograd_float32:
        winograd.MIXED_PRECISION = False
    names = args.models or SMALL_MODELS + (IMAGENET_MODELS if args.imagenet else [])
    report = {
        **header(),
        "winograd": not args.no_winograd,
        "winograd_mixed_precision": winograd.MIXED_PRECISION,
        "rows": [],
    }
    from machine import header_lines

    print("\n".join([report["date"], *header_lines(report["machine"])]))
    print(
        f"compiled kernels (Numba): {report['numba']}, Winograd: {report['winograd']} "
        f"(products in float64: {report['winograd_mixed_precision']})"
    )
    print(f"metric: median over parameter tensors of ||g32 - g64|| / ||g64||, over {args.batches} batches")
    for name in names:
        for batch in args.batch_sizes:
            row = run_model(name, batch, args.batches, args.data, not args.no_check)
            report["rows"].append(row)
            print(markdown_table([row]).splitlines()[-1], f"{row['seconds']:.0f} s", flush=True)
    print()
    print(markdown_table(report["rows"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
