"""cnnkit.optim: optimizers, schedules and clipping held to torch.optim on the same gradients."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer
from cnnkit.models import Sequential
from cnnkit.optim import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ReduceLROnPlateau,
    StepLR,
    clip_grad_norm,
    get_optimizer,
    global_grad_norm,
    optimizer_from_state,
)


class OptimTestParams(Layer):
    """A leaf that only holds parameters (gradients are set by the test)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shapes = shapes or {}

    def build(self, input_shape) -> None:
        super().build(input_shape)
        rng = np.random.default_rng(self.seed)
        for key, shape in self.shapes.items():
            self.params[key] = rng.standard_normal(shape).astype(self.dtype)

    def forward(self, x, training):
        return x

    def backward(self, dy):
        return dy


def make_model(dtype=np.float64, seed=0) -> Sequential:
    model = Sequential(
        {
            "a": OptimTestParams({"weight": (3, 4), "bias": (3,)}, seed=seed, dtype=dtype),
            "b": OptimTestParams({"weight": (2, 2, 3, 3)}, seed=seed + 1, dtype=dtype),
        },
        dtype=dtype,
    )
    model.build((4,))
    return model


def torch_params(model) -> dict[str, torch.Tensor]:
    return {
        name: torch.tensor(owner.params[key].copy(), requires_grad=True)
        for name, owner, key in model.named_parameters()
    }


def set_grads(model, tparams, rng, scale=1.0):
    for name, owner, key in model.named_parameters():
        g = (rng.standard_normal(owner.params[key].shape) * scale).astype(owner.params[key].dtype)
        owner.grads[key] = g
        tparams[name].grad = torch.tensor(g.copy())


def run_both(make_ours, make_torch, dtype=np.float64, steps=6, lr_changes=None):
    model = make_model(dtype)
    tparams = torch_params(model)
    ours = make_ours()
    theirs = make_torch(list(tparams.values()))
    rng = np.random.default_rng(42)
    ids = {name: id(owner.params[key]) for name, owner, key in model.named_parameters()}
    for step in range(steps):
        if lr_changes and step in lr_changes:
            ours.lr = lr_changes[step]
            for group in theirs.param_groups:
                group["lr"] = lr_changes[step]
        set_grads(model, tparams, rng)
        ours.step(model)
        theirs.step()
    for name, owner, key in model.named_parameters():
        assert id(owner.params[key]) == ids[name], "parameters must be updated in place"
        assert owner.params[key].dtype == dtype
    return model, tparams


def assert_match(model, tparams, rtol, atol):
    for name, owner, key in model.named_parameters():
        np.testing.assert_allclose(owner.params[key], tparams[name].detach().numpy(), rtol=rtol, atol=atol)


SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.8, "dampening": 0.3},
    {"weight_decay": 0.05},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    {"momentum": 0.5, "weight_decay": 0.1, "dampening": 0.1},
]


@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_matches_torch_float64(kwargs):
    model, tparams = run_both(
        lambda: SGD(lr=0.05, **kwargs),
        lambda ps: torch.optim.SGD(ps, lr=0.05, **kwargs),
        lr_changes={3: 0.02},
    )
    assert_match(model, tparams, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kwargs", SGD_CASES[:3])
def test_sgd_matches_torch_float32(kwargs):
    model, tparams = run_both(
        lambda: SGD(lr=0.05, **kwargs), lambda ps: torch.optim.SGD(ps, lr=0.05, **kwargs), dtype=np.float32
    )
    assert_match(model, tparams, rtol=1e-5, atol=1e-6)


def test_plain_sgd_is_the_notes_update():
    """Notes 7.3: W_new = W_old - eta * dL/dW, worked by hand on one parameter."""
    model = make_model()
    owner = model["a"]
    owner.params["weight"][...] = 1.0
    owner.params["bias"][...] = np.array([0.5, -0.5, 2.0])
    owner.grads["weight"] = np.full((3, 4), 2.0)
    owner.grads["bias"] = np.array([1.0, -4.0, 0.0])
    SGD(lr=0.1).step(model)
    np.testing.assert_array_equal(owner.params["weight"], np.full((3, 4), 0.8))
    np.testing.assert_allclose(owner.params["bias"], [0.4, -0.1, 2.0], rtol=0, atol=1e-15)


ADAM_CASES = [
    {},
    {"betas": (0.8, 0.99), "eps": 1e-6},
    {"weight_decay": 0.1},
]


@pytest.mark.parametrize("kwargs", ADAM_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_matches_torch(kwargs, dtype):
    model, tparams = run_both(
        lambda: Adam(lr=0.01, **kwargs),
        lambda ps: torch.optim.Adam(ps, lr=0.01, **kwargs),
        dtype=dtype,
        steps=8,
        lr_changes={5: 0.003},
    )
    tol = (1e-12, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    assert_match(model, tparams, *tol)


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.2, "betas": (0.85, 0.995)}])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_matches_torch(kwargs, dtype):
    model, tparams = run_both(
        lambda: AdamW(lr=0.01, **kwargs),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, **kwargs),
        dtype=dtype,
        steps=8,
    )
    tol = (1e-12, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    assert_match(model, tparams, *tol)


def test_adamw_default_weight_decay_differs_from_adam():
    assert AdamW().weight_decay == 0.01 and Adam().weight_decay == 0.0
    m1, m2 = make_model(), make_model()
    for m in (m1, m2):
        set_grads(m, torch_params(m), np.random.default_rng(1))
    Adam(lr=0.1, weight_decay=0.01).step(m1)
    AdamW(lr=0.1, weight_decay=0.01).step(m2)
    assert not np.allclose(m1["a"].params["weight"], m2["a"].params["weight"], rtol=0, atol=1e-12)


@settings(deadline=None, max_examples=15)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    lr=st.floats(1e-4, 0.5),
    momentum=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_sgd_momentum_random_shapes_match_torch(shape, lr, momentum, seed):
    model = Sequential([OptimTestParams({"w": shape}, seed=seed, dtype=np.float64)], dtype=np.float64)
    model.build((1,))
    tparams = torch_params(model)
    ours, theirs = (
        SGD(lr=lr, momentum=momentum),
        torch.optim.SGD(list(tparams.values()), lr=lr, momentum=momentum),
    )
    rng = np.random.default_rng(seed)
    for _ in range(4):
        set_grads(model, tparams, rng)
        ours.step(model)
        theirs.step()
    assert_match(model, tparams, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    "make", [lambda: SGD(lr=0.1, momentum=0.9, nesterov=True), lambda: Adam(lr=0.01), lambda: AdamW(lr=0.01)]
)
def test_state_dict_round_trip_continues_bit_for_bit(make):
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    straight, split = make_model(np.float32), make_model(np.float32)
    opt = make()
    for _ in range(5):
        set_grads(straight, torch_params(straight), rng_a)
        opt.step(straight)

    first = make()
    for _ in range(3):
        set_grads(split, torch_params(split), rng_b)
        first.step(split)
    state = first.state_dict()
    json.dumps(state["config"])  # the config must be JSON-able
    assert all(isinstance(v, np.ndarray) for v in state["arrays"].values())
    second = optimizer_from_state(
        {"config": json.loads(json.dumps(state["config"])), "arrays": state["arrays"]}
    )
    assert type(second) is type(first)
    for _ in range(2):
        set_grads(split, torch_params(split), rng_b)
        second.step(split)
    for name, array in straight.state_dict().items():
        np.testing.assert_array_equal(array, split.state_dict()[name])


def test_state_is_keyed_by_parameter_name():
    model = make_model()
    set_grads(model, torch_params(model), np.random.default_rng(0))
    opt = Adam()
    opt.step(model)
    keys = set(opt.state_dict()["arrays"])
    assert keys == {f"{n}.{s}" for n in ("a.weight", "a.bias", "b.weight") for s in ("exp_avg", "exp_avg_sq")}
    assert opt.state_dict()["config"]["steps"] == {"a.weight": 1, "a.bias": 1, "b.weight": 1}


def test_load_state_dict_overrides_hyperparameters_and_checks_class():
    src = SGD(lr=0.3, momentum=0.5)
    src.lr = 0.03
    dst = SGD(lr=0.1)
    dst.load_state_dict(src.state_dict())
    assert (dst.lr, dst.momentum, dst.initial_lr) == (0.03, 0.5, 0.3)
    assert dst.slot_names() == ("momentum_buffer",)
    with pytest.raises(ConfigError, match="saved by SGD, not Adam"):
        Adam().load_state_dict(src.state_dict())
    with pytest.raises(ConfigError, match="unexpected array"):
        Adam().load_state_dict({"config": {"class": "Adam"}, "arrays": {"w.velocity": np.zeros(2)}})


def test_frozen_layers_and_missing_grads_are_skipped():
    model = make_model()
    set_grads(model, torch_params(model), np.random.default_rng(0))
    model["b"].trainable = False
    del model["a"].grads["bias"]
    before = {k: v.copy() for k, v in model.state_dict().items()}
    SGD(lr=1.0).step(model)
    after = model.state_dict()
    np.testing.assert_array_equal(after["b.weight"], before["b.weight"])
    np.testing.assert_array_equal(after["a.bias"], before["a.bias"])
    assert not np.array_equal(after["a.weight"], before["a.weight"])


def test_float64_gradients_update_float32_parameters_in_their_dtype():
    model = make_model(np.float32)
    for _, owner, key in model.named_parameters():
        owner.grads[key] = np.ones(owner.params[key].shape, dtype=np.float64)
    for opt in (SGD(lr=0.1, momentum=0.9), Adam()):
        opt.step(model)
        assert all(v.dtype == np.float32 for v in model.state_dict().values())


def test_gradient_shape_mismatch_is_a_shape_error():
    model = make_model()
    model["a"].grads["weight"] = np.zeros((4, 3))
    with pytest.raises(ShapeError, match=r"a\.weight.*\(4, 3\).*\(3, 4\)"):
        SGD().step(model)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGD(lr=-1), "lr"),
        (lambda: SGD(lr=float("nan")), "lr"),
        (lambda: SGD(momentum=-0.1), "momentum"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: SGD(momentum=0.9, nesterov=True, dampening=0.1), "nesterov"),
        (lambda: Adam(betas=(1.0, 0.9)), "betas"),
        (lambda: Adam(betas=0.9), "betas"),
        (lambda: AdamW(eps=-1), "eps"),
        (lambda: get_optimizer("rmsprop"), "unknown optimizer"),
        (lambda: get_optimizer("sgd", mommentum=0.9), "bad arguments"),
        (lambda: StepLR(0), "step_size"),
        (lambda: CosineAnnealingLR(0), "T_max"),
        (lambda: ReduceLROnPlateau(factor=1.0), "factor"),
        (lambda: ReduceLROnPlateau(mode="up"), "mode"),
        (lambda: clip_grad_norm(make_model(), 0), "max_norm"),
    ],
)
def test_bad_hyperparameters_raise_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_get_optimizer_by_name():
    opt = get_optimizer("SGD", lr=0.5, momentum=0.9)
    assert isinstance(opt, SGD) and opt.lr == 0.5 and opt.momentum == 0.9
    assert isinstance(get_optimizer("adam"), Adam) and isinstance(get_optimizer("adamw"), AdamW)
    same = Adam()
    assert get_optimizer(same) is same


def test_lr_is_settable():
    opt = SGD(lr=0.1)
    opt.lr = 0.01
    assert opt.lr == 0.01 and opt.initial_lr == 0.1
    with pytest.raises(ConfigError):
        opt.lr = "fast"


# ---------------------------------------------------------------- schedules


def torch_lrs(make_sched, epochs, lr=0.1):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (3, 0.1), (4, 0.9)])
def test_step_lr_matches_torch(step_size, gamma):
    ours = StepLR(step_size, gamma)
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma), 12)
    np.testing.assert_allclose([ours.lr_at(e, 0.1) for e in range(12)], expected, rtol=1e-12)


@pytest.mark.parametrize("t_max, eta_min", [(5, 0.0), (10, 0.001), (3, 0.01)])
def test_cosine_annealing_matches_torch(t_max, eta_min):
    ours = CosineAnnealingLR(t_max, eta_min)
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, t_max, eta_min), 2 * t_max + 3
    )
    got = [ours.lr_at(e, 0.1) for e in range(2 * t_max + 3)]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)
    assert got[0] == 0.1 and math.isclose(got[t_max], eta_min, abs_tol=1e-15)


def test_step_lr_hand_values():
    sched = StepLR(2, 0.1)
    assert [sched.lr_at(e, 1.0) for e in range(5)] == [1.0, 1.0, 0.1, 0.1, pytest.approx(0.01)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 2},
        {"patience": 0, "factor": 0.5, "cooldown": 2},
        {"patience": 1, "mode": "max", "threshold_mode": "abs", "min_delta": 0.05},
        {"patience": 1, "min_lr": 0.02, "factor": 0.5},
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs):
    metrics = [1.0, 0.9, 0.95, 0.91, 0.9, 0.9, 0.85, 0.86, 0.87, 0.88, 0.8, 0.8, 0.81, 0.82, 0.83, 0.84]
    if kwargs.get("mode") == "max":
        metrics = [-m for m in metrics]
    tkw = dict(kwargs)
    if "min_delta" in tkw:
        tkw["threshold"] = tkw.pop("min_delta")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **tkw)
    ours = ReduceLROnPlateau(**kwargs)
    lr = 0.1
    changes = 0
    for metric in metrics:
        opt.step()
        theirs.step(metric)
        new = ours.step(metric, lr)
        changes += new != lr
        lr = new
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert changes >= 1  # the sequence must exercise a reduction


def test_reduce_on_plateau_state_round_trip():
    a = ReduceLROnPlateau(patience=1)
    for m in (1.0, 1.1):
        a.step(m, 0.1)
    b = ReduceLROnPlateau(patience=1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.step(1.2, 0.1) == a.step(1.2, 0.1) == pytest.approx(0.01)


# ---------------------------------------------------------------- clipping


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    model = make_model()
    tparams = torch_params(model)
    set_grads(model, tparams, np.random.default_rng(5), scale=1.0)
    total = clip_grad_norm(model, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(list(tparams.values()), max_norm)
    assert total == pytest.approx(float(expected), rel=1e-12)
    for name, owner, key in model.named_parameters():
        np.testing.assert_allclose(owner.grads[key], tparams[name].grad.numpy(), rtol=1e-12, atol=1e-15)
    assert global_grad_norm(model) == pytest.approx(min(total, max_norm), rel=1e-5)


def test_clip_grad_norm_leaves_non_finite_gradients_alone():
    model = make_model()
    set_grads(model, torch_params(model), np.random.default_rng(5))
    model["a"].grads["bias"][0] = np.inf
    before = model["a"].grads["weight"].copy()
    assert clip_grad_norm(model, 1.0) == math.inf
    np.testing.assert_array_equal(model["a"].grads["weight"], before)
