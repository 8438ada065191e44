"""Gradient checking: hold an analytic backward pass to central finite differences.

Backpropagation (notes section 7.2) is the chain rule written by hand, one ``backward`` per layer; one
wrong sign or a missing sum over the batch gives a network that still trains, only worse. The check that
catches it compares each analytic derivative with a numerical one.

**Central differences.** For a scalar function ``L`` of an array ``x`` and a small step ``h``::

    dL/dx[i] ~ (L(x + h e_i) - L(x - h e_i)) / (2 h)

Taylor expansion of ``L(x +- h e_i)`` shows that the even terms cancel: the error is ``h**2 / 6 *
L'''``, i.e. O(h^2), where the one-sided difference ``(L(x + h e_i) - L(x)) / h`` has an O(h) error. The
step cannot be made arbitrarily small because ``L(x + h)`` and ``L(x - h)`` are rounded to the floating
point grid: the rounding error of the quotient is about ``eps_machine * |L| / h``. In float32
(eps_machine ~ 1.2e-7) the best achievable accuracy is about 1e-3 relative, too coarse to tell a subtle
bug from noise; in float64 (eps_machine ~ 2.2e-16) a step of 1e-6 gives truncation error ~1e-12 and
rounding error ~1e-10, so agreement to 1e-5 is a real test. That is why every check runs in float64 on a
copy of the layer.

**Scalar loss.** A layer's output is an array, not a scalar, so the check uses ``L = sum(y * R)`` for a
fixed random array ``R`` of the output's shape. Then ``dL/dy = R`` exactly, and ``backward(R)`` must
return ``dL/dx`` and set ``dL/dparam`` for every parameter. A random ``R`` (rather than all ones) makes
every output element count with a different weight, so errors cannot cancel.

**Kinks.** ReLU and max pooling are not differentiable where an input sits exactly on a kink (0 for ReLU,
a tie for max). With random float64 inputs the chance that a step of 1e-6 crosses one is negligible, but
hand-made inputs with ties or exact zeros will fail the check for that reason alone.

Two forms are supported:

- a :class:`~cnnkit.layers.base.Layer` (or a whole model) and one input batch ``x``;
- a pair ``(forward_fn, backward_fn)`` following the ops convention: ``forward_fn(*inputs)`` returns
  ``(out, cache)`` and ``backward_fn(dout, cache)`` returns one gradient, or a tuple with one gradient per
  input (``None`` for an input that has none), e.g. ``(cnnkit.ops.conv2d_forward, cnnkit.ops.conv2d_backward)``.

A plain function ``f(*inputs) -> array`` has no analytic gradient to check;
:func:`numerical_gradient` gives its finite-difference gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError, DTypeError, GradcheckError
from .layers.base import Layer

__all__ = ["gradcheck", "numerical_gradient"]

ForwardFn = Callable[..., tuple[np.ndarray, Any]]
BackwardFn = Callable[[np.ndarray, Any], Any]


def numerical_gradient(
    f: Callable[[], float],
    x: np.ndarray,
    eps: float = 1e-6,
    indices: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to the array ``x``, perturbed in place.

    ``f`` takes no argument: it reads ``x`` (and whatever else it closes over) each time it is called.
    Each element ``x[i]`` is set to ``x[i] + eps`` and ``x[i] - eps`` in turn and restored afterwards, and
    ``(f+ - f-) / (2 eps)`` is stored. With ``indices`` (flat indices into ``x``) only those elements are
    estimated; the others are left at 0 in the returned array, which has ``x``'s shape and dtype.
    """
    grad = np.zeros_like(x)
    flat_x = x.reshape(-1)  # a view: x must be contiguous for the perturbation to reach f
    if not np.shares_memory(flat_x, x):
        raise ConfigError("numerical_gradient: x must be a contiguous array (perturbed in place)")
    flat_g = grad.reshape(-1)
    todo = range(x.size) if indices is None else indices
    for i in todo:
        old = flat_x[i]
        flat_x[i] = old + eps
        plus = float(f())
        flat_x[i] = old - eps
        minus = float(f())
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2.0 * eps)
    return grad


def _sample(size: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """All flat indices, or a seeded sorted subset of ``limit`` of them."""
    if limit is None or size <= limit:
        return np.arange(size)
    return np.sort(rng.choice(size, size=limit, replace=False))


def _compare(
    what: str,
    analytic: np.ndarray,
    numeric: np.ndarray,
    indices: np.ndarray,
    atol: float,
    rtol: float,
) -> None:
    """Raise GradcheckError unless ``|a - n| <= atol + rtol * |n|`` at every checked index."""
    a = np.asarray(analytic, dtype=np.float64).reshape(-1)[indices]
    n = numeric.reshape(-1)[indices]
    if a.size == 0:
        return
    diff = np.abs(a - n)
    allowed = atol + rtol * np.abs(n)
    excess = np.where(np.isfinite(diff), diff / allowed, np.inf)
    bad = ~(excess <= 1.0)
    if not bad.any():
        return
    worst = int(np.argmax(excess))
    index = np.unravel_index(int(indices[worst]), numeric.shape)
    index = tuple(int(i) for i in index)
    raise GradcheckError(
        f"gradcheck: {what}: analytic and numerical gradients differ at {int(bad.sum())} of {a.size} "
        f"checked elements; worst at index {index}: analytic {a[worst]:.10g}, numerical {n[worst]:.10g} "
        f"(|difference| {diff[worst]:.3g} > atol + rtol*|numerical| = {allowed[worst]:.3g})"
    )


def _check_shape(what: str, analytic: Any, expected: tuple[int, ...]) -> np.ndarray:
    if not isinstance(analytic, np.ndarray):
        raise GradcheckError(f"gradcheck: {what}: backward returned {type(analytic).__name__}, not an array")
    if analytic.shape != expected:
        raise GradcheckError(
            f"gradcheck: {what}: analytic gradient has shape {analytic.shape}, expected {expected}"
        )
    return analytic


# --------------------------------------------------------------------------- layers and models
def _rng_states(layer: Layer) -> list[tuple[Layer, Any]]:
    """The training-time random state of the layer and of every descendant that has one (dropout)."""
    states = []
    for sub in [layer, *(child for _, child in layer.named_layers())]:
        state = sub.rng_state()
        if state is not None:
            states.append((sub, copy.deepcopy(state)))
    return states


def _check_layer(
    layer: Layer,
    x: np.ndarray,
    *,
    eps: float,
    atol: float,
    rtol: float,
    rng: np.random.Generator,
    params: bool,
    limit: int | None,
) -> None:
    name = f"{type(layer).__name__} {layer.name!r}"
    layer = copy.deepcopy(layer).astype(np.float64)
    layer.train(True)
    x = np.array(x, dtype=np.float64, order="C", copy=True)
    if not layer.built:
        layer.build(x.shape[1:])
    states = _rng_states(layer)

    def run() -> np.ndarray:
        for owner, state in states:
            owner.set_rng_state(copy.deepcopy(state))
        return layer(x, training=True)

    out = run()
    weights = rng.standard_normal(out.shape)
    dx = _check_shape(f"{name}: input x", layer.backward(weights.copy()), x.shape)
    dx = dx.copy()
    named = list(layer.named_parameters()) if params else []
    analytic: dict[str, np.ndarray] = {}
    for full, owner, key in named:
        if key not in owner.grads:
            raise GradcheckError(f"gradcheck: {name}: backward set no gradient for parameter {full!r}")
        analytic[full] = _check_shape(
            f"{name}: parameter {full!r}", owner.grads[key], owner.params[key].shape
        )
        analytic[full] = analytic[full].copy()

    def loss() -> float:
        return float(np.sum(run() * weights))

    idx = _sample(x.size, limit, rng)
    _compare(f"{name}: input x", dx, numerical_gradient(loss, x, eps, idx), idx, atol, rtol)
    for full, owner, key in named:
        p = owner.params[key]
        if not p.flags.c_contiguous:
            p = owner.params[key] = np.ascontiguousarray(p)
        idx = _sample(p.size, limit, rng)
        _compare(
            f"{name}: parameter {full!r}",
            analytic[full],
            numerical_gradient(loss, p, eps, idx),
            idx,
            atol,
            rtol,
        )


# --------------------------------------------------------------------------- (forward, backward) pairs
def _check_pair(
    forward_fn: ForwardFn,
    backward_fn: BackwardFn,
    inputs: tuple[Any, ...],
    *,
    eps: float,
    atol: float,
    rtol: float,
    rng: np.random.Generator,
    limit: int | None,
) -> None:
    fname = getattr(forward_fn, "__name__", "forward_fn")
    args = [
        np.array(a, dtype=np.float64, order="C", copy=True)
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)
        else a
        for a in inputs
    ]
    out, cache = forward_fn(*args)
    out = np.asarray(out)
    weights = rng.standard_normal(out.shape)
    grads = backward_fn(weights.copy(), cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    while len(grads) > len(args) and grads[-1] is None:
        grads = grads[:-1]  # e.g. conv2d_backward's db when no bias was given
    if len(grads) > len(args):
        raise GradcheckError(
            f"gradcheck: {getattr(backward_fn, '__name__', 'backward_fn')} returned {len(grads)} gradients "
            f"for {len(args)} inputs"
        )
    checked = [
        (i, _check_shape(f"{fname}: input {i}", g, args[i].shape).copy())
        for i, g in enumerate(grads)
        if g is not None and isinstance(args[i], np.ndarray) and args[i].dtype == np.float64
    ]
    if not checked:
        raise GradcheckError(f"gradcheck: {fname}: backward returned no gradient for any array input")

    def loss() -> float:
        value, _ = forward_fn(*args)
        return float(np.sum(np.asarray(value) * weights))

    for i, g in checked:
        idx = _sample(args[i].size, limit, rng)
        _compare(f"{fname}: input {i}", g, numerical_gradient(loss, args[i], eps, idx), idx, atol, rtol)


def gradcheck(
    fn_or_layer: Layer | tuple[ForwardFn, BackwardFn],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    params: bool = True,
    max_elements_per_tensor: int | None = None,
) -> bool:
    """Check analytic gradients against central differences in float64; return True or raise.

    ``fn_or_layer`` is either

    - a :class:`~cnnkit.layers.base.Layer` or model, with exactly one input batch ``x``: the layer is
      deep-copied, cast to float64 and put in training mode (the caller's layer is untouched; an unbuilt
      layer is built for ``x``). Training-time randomness is frozen: the random state of every
      sub-layer that has one (:meth:`~cnnkit.layers.base.Layer.rng_state`, e.g. dropout) is restored
      before every forward pass, so every evaluation uses the same mask. With ``L = sum(forward(x) * R)``
      for a fixed standard-normal ``R``, ``backward(R)`` is compared with the numerical ``dL/dx`` and,
      when ``params`` is true, ``grads[key]`` with the numerical ``dL/dparam`` for every parameter
      (dotted names as in :meth:`~cnnkit.layers.base.Layer.named_parameters`);
    - a pair ``(forward_fn, backward_fn)`` in the ops convention: ``forward_fn(*inputs) -> (out, cache)``,
      ``backward_fn(dout, cache)`` -> one gradient or a tuple of gradients, one per input in order,
      ``None`` for an input without one. Floating-point array inputs are copied to float64; other inputs
      (ints, tuples) are passed unchanged and not checked. Bind keyword arguments with
      :func:`functools.partial`.

    An element passes when ``|analytic - numerical| <= atol + rtol * |numerical|``. ``eps`` is the step
    ``h``. ``max_elements_per_tensor`` checks only that many elements of each tensor, a subset drawn with
    ``seed`` (which also draws ``R``), so big layers stay affordable: each checked element costs two
    forward passes.

    Raises :class:`cnnkit.GradcheckError` naming the input or parameter, the number of mismatching
    elements, the worst index and the analytic and numerical values there.
    """
    if eps <= 0 or atol < 0 or rtol < 0:
        raise ConfigError(f"gradcheck: eps must be > 0 and atol, rtol >= 0, got {eps}, {atol}, {rtol}")
    if max_elements_per_tensor is not None and max_elements_per_tensor < 1:
        raise ConfigError(f"gradcheck: max_elements_per_tensor must be >= 1, got {max_elements_per_tensor}")
    rng = np.random.default_rng(seed)
    options = {"eps": eps, "atol": atol, "rtol": rtol, "rng": rng, "limit": max_elements_per_tensor}
    if isinstance(fn_or_layer, Layer):
        if len(inputs) != 1:
            raise ConfigError(f"gradcheck: a layer takes exactly one input batch, got {len(inputs)} inputs")
        x = inputs[0]
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"gradcheck: the input must be a floating-point numpy.ndarray, got {x!r:.80}")
        _check_layer(fn_or_layer, x, params=params, **options)
        return True
    if isinstance(fn_or_layer, tuple) and len(fn_or_layer) == 2 and all(callable(f) for f in fn_or_layer):
        if not inputs:
            raise ConfigError("gradcheck: (forward_fn, backward_fn) needs at least one input")
        _check_pair(fn_or_layer[0], fn_or_layer[1], inputs, **options)
        return True
    raise ConfigError(
        "gradcheck: expected a Layer or a (forward_fn, backward_fn) pair, got "
        f"{type(fn_or_layer).__name__}; a plain function has no analytic gradient to check "
        "(use cnnkit.gradcheck.numerical_gradient for its numerical one)"
    )
