"""Optimizers: gradient descent (notes section 7.3) and its momentum and Adam refinements.

An optimizer is created without a model (``opt = SGD(lr=0.1)``) and applied to one with
``opt.step(model)``, after ``model.backward`` has set every ``owner.grads[key]``. It walks
``model.named_parameters()`` and updates ``owner.params[key]`` **in place** (the arrays keep their identity
and their dtype: float32 stays float32), skipping layers with ``trainable = False`` and parameters that
have no gradient. Per-parameter state (momentum buffers, Adam moments) is keyed by the parameter's dotted
name (``features.0.weight``), so :meth:`Optimizer.state_dict` can be saved next to the model and loaded into
a freshly built one.

The update rules are exactly those of ``torch.optim`` (single-tensor path), so results agree with PyTorch
to rounding:

- :class:`SGD`: ``W <- W - lr * g`` (notes 7.3), with optional L2 weight decay ``g <- g + wd * W``,
  momentum ``b <- mu * b + (1 - dampening) * g`` (``b = g`` on the first step) and Nesterov
  ``g <- g + mu * b``.
- :class:`Adam` (Kingma & Ba 2015): ``m <- lerp(m, g, 1 - beta1)``, ``v <- beta2 * v + (1 - beta2) g^2``,
  ``W <- W - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``; weight decay is added to the
  gradient (L2).
- :class:`AdamW` (Loshchilov & Hutter 2019): Adam with decoupled weight decay ``W <- W (1 - lr * wd)``
  applied before the Adam step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers.base import Layer
from ..utils.checks import check_number

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer", "optimizer_from_state"]


def _check_number(value: Any, name: str, owner: str, *, low: float = 0.0, high: float | None = None) -> float:
    """``float(value)``, checked to be finite and in ``[low, high)`` (``[low, inf)`` without ``high``)."""
    checked = check_number(value, name, owner, low=low, high=high, high_open=True)
    assert checked is not None
    return checked


class Optimizer:
    """Base class: walks the model's trainable parameters and delegates the update rule to subclasses.

    Subclasses set ``slots`` (the names of their per-parameter state arrays) and implement
    :meth:`_update`.
    """

    #: Names of the per-parameter state arrays (``momentum_buffer``, ``exp_avg``, ...).
    slots: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lr: float) -> None:
        self.lr = lr
        #: The learning rate the optimizer was created with; schedules scale from it.
        self.initial_lr = self.lr
        #: ``state[name][slot]`` holds the arrays, ``steps[name]`` how many updates ``name`` received.
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps: dict[str, int] = {}

    # ------------------------------------------------------------------ learning rate
    @property
    def lr(self) -> float:
        """The learning rate eta of the next step (settable; schedules change it between epochs)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_number(value, "lr", type(self).__name__)

    # ------------------------------------------------------------------ stepping
    def step(self, model: Layer) -> None:
        """Update every trainable parameter of ``model`` in place from its gradient."""
        for name, param, grad in self.parameters(model):
            self.steps[name] = self.steps.get(name, 0) + 1
            fresh = name not in self.state
            self._update(name, param, grad, self._slots_for(name, param), fresh)

    def parameters(self, model: Layer) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Yield ``(name, param, grad)`` for the parameters :meth:`step` updates.

        Parameters of layers with ``trainable = False`` and parameters without a gradient are skipped.
        """
        if not isinstance(model, Layer):
            raise ConfigError(
                f"{type(self).__name__}.step: expected a cnnkit model, got {type(model).__name__}"
            )
        for name, owner, key in model.named_parameters():
            if not owner.trainable:
                continue
            grad = owner.grads.get(key)
            if grad is None:
                continue
            param = owner.params[key]
            if grad.shape != param.shape:
                raise ShapeError(
                    f"{type(self).__name__}: gradient of {name} has shape {grad.shape}, "
                    f"expected the parameter's shape {param.shape}"
                )
            yield name, param, grad

    def _slots_for(self, name: str, param: np.ndarray) -> dict[str, np.ndarray]:
        """The state arrays of ``name``; created as zeros, or cast if loaded in another dtype."""
        slots = self.state.get(name)
        if slots is None:
            slots = self.state[name] = {slot: np.zeros_like(param) for slot in self.slot_names()}
            return slots
        for slot, value in slots.items():
            if value.shape != param.shape:
                raise ShapeError(
                    f"{type(self).__name__}: state {slot!r} of {name} has shape {value.shape}, "
                    f"but the parameter has shape {param.shape}"
                )
            if value.dtype != param.dtype:
                slots[slot] = value.astype(param.dtype)
        return slots

    def slot_names(self) -> tuple[str, ...]:
        """The per-parameter state arrays this optimizer keeps with its current hyperparameters."""
        return self.slots

    def _update(
        self, name: str, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], fresh: bool
    ) -> None:
        """Update ``param`` in place; ``fresh`` is True when ``slots`` were just created as zeros."""
        raise NotImplementedError

    def zero_state(self) -> None:
        """Forget all per-parameter state (momentum buffers, moments, step counts)."""
        self.state.clear()
        self.steps.clear()

    # ------------------------------------------------------------------ state
    def get_config(self) -> dict[str, Any]:
        """JSON-able hyperparameters (constructor keyword arguments)."""
        return {"lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        """``{"config": JSON-able dict, "arrays": {"<param name>.<slot>": ndarray}}``.

        ``config`` holds the class name, the hyperparameters, the initial learning rate and the step count of
        every parameter; the arrays are copies of the per-parameter state.
        """
        config = {
            "class": type(self).__name__,
            **self.get_config(),
            "initial_lr": self.initial_lr,
            "steps": dict(self.steps),
        }
        arrays = {
            f"{name}.{slot}": value.copy()
            for name, slots in self.state.items()
            for slot, value in slots.items()
        }
        return {"config": config, "arrays": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore hyperparameters and per-parameter state saved by :meth:`state_dict`."""
        try:
            config = dict(state["config"])
            arrays = dict(state["arrays"])
        except (KeyError, TypeError):
            raise ConfigError(
                f"{type(self).__name__}.load_state_dict: expected a dict with 'config' and 'arrays', "
                f"got {type(state).__name__}"
            ) from None
        cls = config.pop("class", type(self).__name__)
        if cls != type(self).__name__:
            raise ConfigError(
                f"{type(self).__name__}.load_state_dict: the state was saved by {cls}, not {type(self).__name__}"
            )
        initial_lr = config.pop("initial_lr", None)
        steps = config.pop("steps", {})
        try:
            fresh = type(self)(**config)
        except TypeError as err:
            raise ConfigError(
                f"{type(self).__name__}.load_state_dict: bad config {config!r}: {err}"
            ) from None
        self.__dict__.clear()
        self.__dict__.update(fresh.__dict__)
        self.initial_lr = self.lr if initial_lr is None else float(initial_lr)
        new_state: dict[str, dict[str, np.ndarray]] = {}
        for full, value in arrays.items():
            name, _, slot = full.rpartition(".")
            if slot not in self.slot_names() or not name:
                raise ConfigError(
                    f"{type(self).__name__}.load_state_dict: unexpected array {full!r}; "
                    f"expected '<parameter>.<slot>' with slot in {self.slot_names()}"
                )
            new_state.setdefault(name, {})[slot] = np.array(value, copy=True)
        for name, slots in new_state.items():
            missing = set(self.slot_names()) - set(slots)
            if missing:
                raise ConfigError(
                    f"{type(self).__name__}.load_state_dict: {name} lacks state {sorted(missing)}"
                )
        self.state = new_state
        self.steps = {str(k): int(v) for k, v in steps.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov momentum and L2 weight decay.

    Plain SGD is the notes' section 7.3 update ``W_new = W_old - eta * dL/dW``. With ``momentum = mu``
    each parameter keeps a buffer ``b`` (PyTorch's convention, not the "velocity" of some texts)::

        g <- g + weight_decay * W                      (if weight_decay)
        b <- g                      on the first step
        b <- mu * b + (1 - dampening) * g  afterwards
        g <- g + mu * b  (nesterov)  or  g <- b
        W <- W - lr * g

    >>> opt = SGD(lr=0.1, momentum=0.9)
    """

    slots = ("momentum_buffer",)

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.momentum = _check_number(momentum, "momentum", "SGD")
        self.dampening = _check_number(dampening, "dampening", "SGD")
        self.weight_decay = _check_number(weight_decay, "weight_decay", "SGD")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError(
                f"SGD: nesterov=True needs momentum > 0 and dampening = 0, "
                f"got momentum={self.momentum}, dampening={self.dampening}"
            )

    def slot_names(self) -> tuple[str, ...]:
        return self.slots if self.momentum != 0 else ()

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "dampening": self.dampening,
        }

    def _update(
        self, name: str, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], fresh: bool
    ) -> None:
        if self.weight_decay != 0:
            grad = param * self.weight_decay + grad
        d_p = grad
        if self.momentum != 0:
            buf = slots["momentum_buffer"]
            if fresh:
                np.copyto(buf, grad, casting="same_kind")
            else:
                buf *= self.momentum
                if self.dampening == 0:
                    buf += grad
                else:
                    buf += (1.0 - self.dampening) * grad
            d_p = buf * self.momentum + grad if self.nesterov else buf
        param -= self.lr * d_p


class Adam(Optimizer):
    """Adam: per-parameter steps scaled by running estimates of the gradient's first and second moments.

    With ``t`` the parameter's step count::

        g <- g + weight_decay * W                                   (if weight_decay; L2 in the gradient)
        m <- m + (1 - beta1) * (g - m)
        v <- beta2 * v + (1 - beta2) * g * g
        W <- W - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    slots = ("exp_avg", "exp_avg_sq")
    _decoupled: ClassVar[bool] = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            _check_number(betas[0], "betas[0]", name, high=1.0),
            _check_number(betas[1], "betas[1]", name, high=1.0),
        )
        self.eps = _check_number(eps, "eps", name)
        self.weight_decay = _check_number(weight_decay, "weight_decay", name)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(
        self, name: str, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], fresh: bool
    ) -> None:
        beta1, beta2 = self.betas
        t = self.steps[name]
        if self.weight_decay != 0:
            if self._decoupled:
                param *= 1.0 - self.lr * self.weight_decay
            else:
                grad = param * self.weight_decay + grad
        exp_avg, exp_avg_sq = slots["exp_avg"], slots["exp_avg_sq"]
        tmp = np.subtract(grad, exp_avg, dtype=param.dtype)
        tmp *= 1.0 - beta1
        exp_avg += tmp  # lerp(m, g, 1 - beta1), as torch computes it
        np.multiply(grad, grad, out=tmp, casting="same_kind")
        tmp *= 1.0 - beta2
        exp_avg_sq *= beta2
        exp_avg_sq += tmp
        step_size = self.lr / (1.0 - beta1**t)
        bias_correction2_sqrt = (1.0 - beta2**t) ** 0.5
        np.sqrt(exp_avg_sq, out=tmp)
        tmp /= bias_correction2_sqrt
        tmp += self.eps
        np.divide(exp_avg, tmp, out=tmp)
        tmp *= step_size
        param -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay: ``W <- W * (1 - lr * weight_decay)`` before the Adam step."""

    _decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay)


_OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(name: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer by name (``"sgd"``, ``"adam"``, ``"adamw"``, any case) with keyword hyperparameters.

    An :class:`Optimizer` instance is returned unchanged (``kwargs`` must then be empty).
    """
    if isinstance(name, Optimizer):
        if kwargs:
            raise ConfigError(
                f"get_optimizer: got an optimizer instance and extra arguments {sorted(kwargs)}"
            )
        return name
    if not isinstance(name, str) or name.lower() not in _OPTIMIZERS:
        raise ConfigError(f"get_optimizer: unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}")
    try:
        return _OPTIMIZERS[name.lower()](**kwargs)
    except TypeError as err:
        raise ConfigError(f"get_optimizer: bad arguments for {name!r}: {err}") from None


def optimizer_from_state(state: dict[str, Any]) -> Optimizer:
    """Build the optimizer a :meth:`Optimizer.state_dict` came from, and load the state into it."""
    try:
        cls = state["config"]["class"]
    except (KeyError, TypeError):
        raise ConfigError("optimizer_from_state: the state has no config['class']") from None
    if cls.lower() not in _OPTIMIZERS:
        raise ConfigError(f"optimizer_from_state: unknown optimizer class {cls!r}")
    opt = _OPTIMIZERS[cls.lower()]()
    opt.load_state_dict(state)
    return opt
