"""cnnkit.training.fit / evaluate / predict: learning, reproducibility, resume, failures, input checks."""

from __future__ import annotations

import io
import json
import os
import signal
import sys

import numpy as np
import pytest

from cnnkit.errors import ConfigError, DataError, DTypeError, ShapeError, TrainingError
from cnnkit.io.model_file import read_checkpoint, save_model
from cnnkit.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Softmax
from cnnkit.models import Sequential
from cnnkit.optim import SGD, Adam, StepLR
from cnnkit.training import EarlyStopping, History, LambdaCallback, evaluate, fit, predict

# ---------------------------------------------------------------------------------------------- helpers


def bars(n: int, seed: int, size: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images of one bar: horizontal (class 0) or vertical (class 1), anywhere in the image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.25, (n, 1, size, size)).astype(np.float32)
    for i in range(n):
        r, c = rng.integers(0, size, 2)
        length = 5
        start = rng.integers(0, size - length + 1)
        if y[i] == 0:
            x[i, 0, r, start : start + length] += 1.0
        else:
            x[i, 0, start : start + length, c] += 1.0
    return x, y


def small_cnn(seed: int = 0, *, softmax: bool = True, dropout: float = 0.0, bn: bool = False, size: int = 10):
    layers: list[Layer] = [Conv2D(6, 3, padding=1)]
    if bn:
        layers.append(BatchNorm2D())
    layers += [ReLU(), MaxPool2D(2), Flatten()]
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(2))
    if softmax:
        layers.append(Softmax())
    return Sequential(layers, input_shape=(1, size, size), seed=seed)


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


DETERMINISTIC = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


@pytest.fixture(scope="module")
def bar_data():
    return bars(600, 0), bars(300, 1)


# ---------------------------------------------------------------------------------------------- learning


def test_small_cnn_learns_oriented_bars(bar_data):
    (x, y), (xt, yt) = bar_data
    model = small_cnn(0)
    history = model.fit(
        x, y, epochs=6, batch_size=32, validation_split=0.1, optimizer=Adam(0.01), seed=0, verbose=0
    )
    test = model.evaluate(xt, yt)
    assert test["accuracy"] >= 0.95, test
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.epoch == list(range(6))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time", "images_per_sec"):
        assert len(history.history[key]) == 6, key
    assert all(v > 0 for v in history.history["images_per_sec"])
    assert history.params["samples"] == 540 and history.params["validation_samples"] == 60
    assert not history.interrupted


def test_plain_sgd_step_is_the_notes_update():
    """One full-batch epoch of SGD equals W - eta * dL/dW with dL/dz = (softmax(z) - onehot) / N by hand."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 1, 2, 3))
    y = rng.integers(0, 3, 16)
    model = Sequential([Flatten(), Dense(3)], input_shape=(1, 2, 3), seed=0, dtype=np.float64)
    w, b = model[1].params["weight"].copy(), model[1].params["bias"].copy()
    fit(model, x, y, epochs=1, batch_size=16, shuffle=False, optimizer=SGD(lr=0.5), verbose=0, seed=0)
    flat = x.reshape(16, -1)
    z = flat @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(3)[y]) / 16
    np.testing.assert_allclose(model[1].params["weight"], w - 0.5 * dz.T @ flat, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model[1].params["bias"], b - 0.5 * dz.sum(0), rtol=1e-12, atol=1e-14)


def test_final_softmax_layer_trains_like_logits(bar_data):
    """Stripping a final Softmax layer and using the fused loss gives the same training as no Softmax."""
    (x, y), _ = bar_data
    with_sm, without = small_cnn(3, softmax=True), small_cnn(3, softmax=False)
    h1 = with_sm.fit(x[:128], y[:128], epochs=2, batch_size=32, seed=1, verbose=0, optimizer=SGD(0.1))
    h2 = without.fit(x[:128], y[:128], epochs=2, batch_size=32, seed=1, verbose=0, optimizer=SGD(0.1))
    assert_same_weights(weights(with_sm), weights(without))
    assert h1.history["loss"] == h2.history["loss"]
    np.testing.assert_allclose(with_sm.predict(x[:10]), without.predict(x[:10]), rtol=1e-6)


def test_unbuilt_model_is_built_from_x():
    x, y = bars(64, 2, size=8)
    model = Sequential([Conv2D(2, 3), ReLU(), Flatten(), Dense(2)], seed=0)
    assert not model.built
    fit(model, x, y, epochs=1, verbose=0, seed=0)
    assert model.input_shape == (1, 8, 8) and model.output_shape == (2,)


def test_optimizer_by_name_and_default(bar_data):
    (x, y), _ = bar_data
    h = fit(small_cnn(0), x[:64], y[:64], epochs=1, optimizer="sgd", verbose=0, seed=0)
    assert h.params["optimizer"]["class"] == "SGD" and h.history["lr"] == [0.01]
    h = fit(small_cnn(0), x[:64], y[:64], epochs=1, verbose=0, seed=0)
    assert h.params["optimizer"]["class"] == "Adam" and h.history["lr"] == [1e-3]


def test_clip_norm_bounds_the_step(bar_data):
    (x, y), _ = bar_data
    model = small_cnn(0, softmax=False)
    before = weights(model)
    fit(
        model,
        x[:32],
        y[:32],
        epochs=1,
        batch_size=32,
        optimizer=SGD(lr=1.0),
        clip_norm=0.01,
        verbose=0,
        seed=0,
    )
    step = np.sqrt(sum(np.sum((model.state_dict()[k] - before[k]) ** 2) for k in before))
    assert 0.009 < step <= 0.01 + 1e-6


def test_validation_split_takes_the_last_samples(bar_data):
    (x, y), _ = bar_data
    x, y = x[:200], y[:200]
    model = small_cnn(0)
    h = fit(model, x, y, epochs=1, validation_split=0.25, verbose=0, seed=0, batch_size=32)
    held_out = evaluate(model, x[150:], y[150:], batch_size=32)
    assert h.history["val_loss"][0] == pytest.approx(held_out["loss"], rel=1e-6)
    assert h.history["val_accuracy"][0] == held_out["accuracy"]
    assert h.params["samples"] == 150


def test_data_set_pairs_are_accepted(bar_data):
    (x, y), (xt, yt) = bar_data
    a, b = small_cnn(0), small_cnn(0)
    fit(a, (x[:64], y[:64]), verbose=0, seed=0)
    fit(b, x[:64], y[:64], verbose=0, seed=0)
    assert_same_weights(weights(a), weights(b))
    assert evaluate(a, (xt, yt)) == evaluate(a, xt, yt)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_on_the_first_step_keeps_the_initial_weights(bar_data):
    (x, y), _ = bar_data
    x = x[:16].copy()
    x[0, 0, 0, 0] = np.inf
    model = small_cnn(0)
    before = weights(model)
    with pytest.raises(TrainingError, match=r"epoch 1/1, batch 1/1.*weights it started with"):
        fit(model, x, y[:16], batch_size=16, verbose=0, seed=0)
    assert_same_weights(before, weights(model))


def test_validation_data_as_a_pair(bar_data):
    (x, y), (xt, yt) = bar_data
    model = small_cnn(0)
    h = fit(model, x[:100], y[:100], validation_data=(xt[:50], yt[:50]), verbose=0, seed=0)
    assert h.history["val_loss"][0] == pytest.approx(evaluate(model, xt[:50], yt[:50])["loss"], rel=1e-6)


# ---------------------------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_weights_and_metrics(bar_data):
    (x, y), _ = bar_data
    runs = []
    for _ in range(2):
        model = small_cnn(5, dropout=0.3, bn=True)
        h = model.fit(x[:256], y[:256], epochs=2, batch_size=32, validation_split=0.2, seed=7, verbose=0)
        runs.append((weights(model), h))
    assert_same_weights(runs[0][0], runs[1][0])
    for key in DETERMINISTIC:
        assert runs[0][1].history[key] == runs[1][1].history[key], key

    other = small_cnn(5, dropout=0.3, bn=True)
    other.fit(x[:256], y[:256], epochs=2, batch_size=32, validation_split=0.2, seed=8, verbose=0)
    assert not np.array_equal(other.state_dict()["6.weight"], runs[0][0]["6.weight"])


# ---------------------------------------------------------------------------------------------- resume


def test_resume_equals_uninterrupted_training(bar_data, tmp_path):
    (x, y), _ = bar_data
    x, y = x[:192], y[:192]
    kwargs = dict(batch_size=32, validation_split=0.25, seed=3, verbose=0, callbacks=[StepLR(1, 0.5)])

    straight = small_cnn(1, dropout=0.25, bn=True)
    h_straight = fit(straight, x, y, epochs=4, optimizer=Adam(0.01), **kwargs)

    path = tmp_path / "ckpt.cnnkit"
    first = small_cnn(1, dropout=0.25, bn=True)
    h_first = fit(first, x, y, epochs=2, optimizer=Adam(0.01), checkpoint_path=path, **kwargs)
    assert len(h_first) == 2
    state = read_checkpoint(path).training_state
    assert state["epoch"] == 2 and len(state["history"]["epoch"]) == 2

    resumed = small_cnn(99, dropout=0.25, bn=True)  # different initial weights: all come from the file
    h_resumed = fit(resumed, x, y, epochs=4, resume_from=path, **kwargs)
    assert_same_weights(weights(straight), weights(resumed))
    assert h_resumed.epoch == [0, 1, 2, 3]
    for key in DETERMINISTIC:
        assert h_resumed.history[key] == h_straight.history[key], key
    assert h_resumed.history["lr"] == [0.01, 0.005, 0.0025, 0.00125]


def test_checkpoint_every_epoch_and_nothing_left_to_do(bar_data, tmp_path, capsys):
    (x, y), _ = bar_data
    path = tmp_path / "c.cnnkit"
    model = small_cnn(0)
    fit(
        model,
        x[:64],
        y[:64],
        epochs=2,
        checkpoint_path=path,
        verbose=0,
        seed=0,
        optimizer=SGD(0.1, momentum=0.9),
    )
    ckpt = read_checkpoint(path)
    assert ckpt.training_state["epoch"] == 2
    assert ckpt.optimizer_state["config"]["class"] == "SGD"
    assert_same_weights(weights(model), weights(ckpt.model))
    again = small_cnn(4)
    h = fit(again, x[:64], y[:64], epochs=2, resume_from=path, verbose=1, seed=0)
    assert len(h) == 2 and "nothing to train" in capsys.readouterr().err
    assert_same_weights(weights(model), weights(again))


def test_resume_from_a_plain_model_file_is_refused(bar_data, tmp_path):
    (x, y), _ = bar_data
    model = small_cnn(0)
    save_model(model, tmp_path / "plain.cnnkit")
    with pytest.raises(ConfigError, match="no training state"):
        fit(small_cnn(0), x[:32], y[:32], epochs=2, resume_from=tmp_path / "plain.cnnkit", verbose=0)


# ---------------------------------------------------------------------------------------------- failures


def test_nan_loss_stops_with_last_good_weights(bar_data):
    (x, y), _ = bar_data
    x = x[:64].copy()
    y = y[:64]
    model = small_cnn(0, bn=True)
    snapshots = {}

    def poison(epoch, logs):
        if epoch == 1:
            x[20, 0, 3, 3] = np.nan  # sample 20 is in batch 3 (of 8) when not shuffled

    def record(batch, logs):
        snapshots["last"] = weights(model)

    cb = LambdaCallback(on_epoch_begin=poison, on_batch_end=record)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2/3, batch 3/8") as err:
        fit(model, x, y, epochs=3, batch_size=8, shuffle=False, callbacks=[cb], verbose=0, seed=0)
    assert "epoch 2, batch 2" in str(err.value)
    assert_same_weights(weights(model), snapshots["last"])  # includes batch-norm running statistics


class InfGrad(Layer):
    """Identity whose backward returns an infinite gradient after ``after`` calls."""

    def __init__(self, after: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.after = after
        self.calls = 0

    def forward(self, x, training):
        return x

    def backward(self, dy):
        self.calls += 1
        return dy * np.inf if self.calls > self.after else dy

    def get_config(self):
        return {**super().get_config(), "after": self.after}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_gradients_stop_before_the_update(bar_data):
    (x, y), _ = bar_data
    model = Sequential([Conv2D(2, 3), InfGrad(after=2), Flatten(), Dense(2)], input_shape=(1, 10, 10), seed=0)
    snap = {}
    cb = LambdaCallback(on_batch_end=lambda b, logs: snap.update(w=weights(model)))
    with pytest.raises(TrainingError, match=r"gradient norm became (inf|nan) at epoch 1/1, batch 3/4"):
        fit(model, x[:64], y[:64], batch_size=16, callbacks=[cb], verbose=0, seed=0)
    assert_same_weights(weights(model), snap["w"])


def test_keyboard_interrupt_from_a_callback_stops_cleanly(bar_data, capsys):
    (x, y), _ = bar_data
    model = small_cnn(0)
    seen = {}

    def on_batch_end(batch, logs):
        if model_epoch["e"] == 1 and batch == 2:
            seen["w"] = weights(model)
            raise KeyboardInterrupt

    model_epoch = {"e": 0}
    cbs = [
        LambdaCallback(on_epoch_begin=lambda e, logs: model_epoch.update(e=e), on_batch_end=on_batch_end),
        LambdaCallback(on_train_end=lambda logs: seen.update(ended=True)),
    ]
    h = fit(model, x[:128], y[:128], epochs=5, batch_size=16, callbacks=cbs, verbose=0, seed=0)
    assert h.interrupted and len(h) == 1 and seen["ended"]
    assert_same_weights(weights(model), seen["w"])
    assert "interrupted during epoch 2/5" in capsys.readouterr().err


def test_ctrl_c_signal_is_deferred_to_the_end_of_the_step(bar_data):
    (x, y), _ = bar_data
    model = small_cnn(0)
    seen = {}

    def on_batch_begin(batch, logs):
        if batch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while this step is still to run

    def on_batch_end(batch, logs):
        seen["batches"] = batch
        seen["w"] = weights(model)

    cb = LambdaCallback(on_batch_begin=on_batch_begin, on_batch_end=on_batch_end)
    h = fit(model, x[:128], y[:128], epochs=2, batch_size=16, callbacks=[cb], verbose=0, seed=0)
    assert h.interrupted and seen["batches"] == 1  # step 1 completed, then training stopped
    assert_same_weights(weights(model), seen["w"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------------------------------- input checks

X_OK, Y_OK = bars(40, 9)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=(X_OK * 255).astype(np.uint8)), DTypeError, r"uint8.*astype\(np.float32\) / 255"),
        (dict(y=Y_OK[:30]), DataError, "40 images, 30 labels"),
        (dict(y=np.where(Y_OK == 1, 2, 0)), DataError, r"0\.\.1 for a model with 2 outputs.*from 0 to 2"),
        (dict(y=Y_OK - 1), DataError, r"from -1 to 0"),
        (dict(y=Y_OK.astype(np.float32)), DTypeError, "integer class indices"),
        (dict(y=np.eye(2)[Y_OK]), ShapeError, "argmax"),
        (dict(y=None), DataError, "labels are missing"),
        (dict(x=X_OK[:, :, :8, :8]), ShapeError, r"\(1, 10, 10\).*got samples of shape \(1, 8, 8\)"),
        (dict(x=X_OK[:, 0]), ShapeError, r"x\[:, None\]"),
        (dict(x=X_OK[:0], y=Y_OK[:0]), DataError, "empty"),
        (dict(batch_size=0), ConfigError, "batch_size must be an int >= 1, got 0"),
        (dict(epochs=0), ConfigError, "epochs must be an int >= 1, got 0"),
        (
            dict(validation_split=1.0),
            ConfigError,
            r"validation_split must be a fraction in \[0, 1\), got 1.0",
        ),
        (dict(validation_split=-0.1), ConfigError, "validation_split"),
        (dict(validation_split=0.99), DataError, "leaves 0 for training and 40 for validation"),
        (dict(validation_split=0.2, validation_data=(X_OK, Y_OK)), ConfigError, "not both"),
        (dict(validation_data=(X_OK, Y_OK + 5)), DataError, "validation labels"),
        (dict(validation_data=(X_OK[:, :, :5], Y_OK)), ShapeError, "validation_data"),
        (dict(validation_data=X_OK), ConfigError, "pair"),
        (dict(verbose=3), ConfigError, "verbose"),
        (dict(clip_norm=0), ConfigError, "clip_norm"),
        (dict(optimizer=42), ConfigError, "optimizer"),
        (dict(optimizer="lbfgs"), ConfigError, "unknown optimizer"),
        (dict(callbacks=[print]), ConfigError, "callback"),
        (dict(class_names=["a", "b", "c"]), ConfigError, "3 names, but the model has 2 outputs"),
        (
            dict(callbacks=[EarlyStopping()]),
            ConfigError,
            "monitor 'val_loss' is not a metric.*validation_data",
        ),
    ],
)
def test_bad_inputs_fail_before_training(kwargs, error, match):
    model = small_cnn(0)
    before = weights(model)
    started = []
    call = dict(x=X_OK, y=Y_OK, epochs=2, verbose=0, seed=0)
    call.update(kwargs)
    if "callbacks" not in kwargs:
        call["callbacks"] = [LambdaCallback(on_batch_begin=lambda b, logs: started.append(b))]
    with pytest.raises(error, match=match):
        fit(model, **call)
    assert not started
    assert_same_weights(before, weights(model))


def test_model_without_class_scores_is_refused():
    model = Sequential([Conv2D(2, 3)], input_shape=(1, 10, 10), seed=0)
    with pytest.raises(ShapeError, match=r"one score per class.*Dense"):
        fit(model, X_OK, Y_OK, verbose=0)


def test_class_names_are_stored(bar_data):
    (x, y), _ = bar_data
    model = small_cnn(0)
    fit(model, x[:32], y[:32], class_names=["horizontal", "vertical"], verbose=0, seed=0)
    assert model.class_names == ["horizontal", "vertical"]


# ---------------------------------------------------------------------------------------------- evaluate, predict


def three_class_model(seed=0, softmax=False):
    layers = [Conv2D(3, 3), ReLU(), Flatten(), Dense(3)] + ([Softmax()] if softmax else [])
    return Sequential(layers, input_shape=(1, 10, 10), seed=seed)


def test_predict_probabilities():
    x = bars(37, 3)[0]
    model = three_class_model()
    p = predict(model, x, batch_size=8)
    assert p.shape == (37, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    logits = model(x, training=False)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    with_sm = three_class_model(softmax=True)
    np.testing.assert_allclose(with_sm.predict(x), with_sm(x, training=False), rtol=1e-6)
    np.testing.assert_allclose(with_sm.predict(x), p, rtol=1e-6)
    assert predict(model, x[:0]).shape == (0, 3)
    with pytest.raises(ShapeError, match=r"x\[None\]"):
        predict(model, x[0])
    with pytest.raises(DTypeError, match="255"):
        predict(model, (x * 255).astype(np.uint8))


def test_evaluate_loss_accuracy_and_top_k():
    x, _ = bars(50, 4)
    y = np.random.default_rng(0).integers(0, 3, 50)
    model = three_class_model()
    res = evaluate(model, x, y, batch_size=16, top_k=(1, 2, 3))
    p = predict(model, x)
    assert res["loss"] == pytest.approx(float(-np.log(p[np.arange(50), y]).mean()), rel=1e-5)
    assert res["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    second = np.argsort(p, axis=1)[:, -2:]
    assert res["top2_accuracy"] == pytest.approx(float(np.mean((second == y[:, None]).any(1))))
    assert res["top3_accuracy"] == 1.0
    assert set(res) == {"loss", "accuracy", "top2_accuracy", "top3_accuracy"}
    assert set(evaluate(model, x, y)) == {"loss", "accuracy"}
    with pytest.raises(ConfigError, match="top_k=4"):
        evaluate(model, x, y, top_k=(4,))
    with pytest.raises(DataError, match="0..2"):
        evaluate(model, x, y + 1)


def test_evaluate_uses_inference_mode_and_restores_modes():
    x, y = bars(40, 5)
    model = small_cnn(0, dropout=0.5, bn=True)
    model[1].train(False)  # a frozen batch norm stays in inference mode
    a = evaluate(model, x, y)
    b = evaluate(model, x, y)
    assert a == b  # dropout off: deterministic
    assert model.training and model[0].training and not model[1].training
    predict(model, x)
    assert model.training and not model[1].training


# ---------------------------------------------------------------------------------------------- progress, history


def test_verbose_levels(bar_data, capsys):
    (x, y), _ = bar_data
    fit(small_cnn(0), x[:64], y[:64], epochs=2, verbose=0, seed=0)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    fit(small_cnn(0), x[:64], y[:64], epochs=2, verbose=2, seed=0, validation_split=0.25)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "val_loss" in lines[0]
    assert "img/s" in lines[1]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_1_draws_a_bar_on_a_terminal(bar_data, monkeypatch):
    (x, y), _ = bar_data
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    fit(small_cnn(0), x[:64], y[:64], epochs=1, verbose=1, seed=0)
    err = terminal.getvalue()
    assert "Epoch 1/1" in err and "2/2" in err and "loss" in err and "\r" in err


def test_verbose_1_prints_one_line_per_epoch_when_stderr_is_no_terminal(bar_data, capsys):
    """Issue 13, point 7: logs must not fill with the bar's carriage-return updates."""
    (x, y), _ = bar_data
    fit(small_cnn(0), x[:64], y[:64], epochs=3, batch_size=8, verbose=1, seed=0)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert all("loss" in line and "acc" in line for line in lines)


def test_history_round_trips_through_json(bar_data, tmp_path):
    (x, y), _ = bar_data
    h = fit(small_cnn(0), x[:64], y[:64], epochs=2, verbose=0, seed=0, validation_split=0.25)
    h.to_json(tmp_path / "h.json")
    back = History.from_dict(json.loads((tmp_path / "h.json").read_text()))
    assert back.history == h.history and back.epoch == h.epoch and back.params["seed"] == 0
    assert "2 epochs" in repr(h)


# ---------------------------------------------------------------------------------------------- data loaders


class ListLoader:
    """The DataLoader protocol: iterable of (xb, yb), len = batches, num_samples, set_epoch."""

    def __init__(self, x, y, batch_size, seed=0):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epochs_set = []
        self.epoch = 0

    @property
    def num_samples(self):
        return len(self.x)

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def set_epoch(self, epoch):
        self.epochs_set.append(epoch)
        self.epoch = epoch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
        for i in range(0, len(self.x), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx].astype(np.int64)


def test_fit_on_a_data_loader(bar_data):
    (x, y), (xt, yt) = bar_data
    loader = ListLoader(x[:256], y[:256], 32)
    model = small_cnn(0)
    h = fit(model, loader, epochs=3, validation_data=ListLoader(xt[:64], yt[:64], 64), verbose=0, seed=0)
    assert loader.epochs_set[-3:] == [0, 1, 2]
    assert h.params["steps"] == 8 and h.params["samples"] == 256
    assert len(h.history["val_loss"]) == 3
    assert evaluate(model, ListLoader(xt, yt, 50))["accuracy"] == evaluate(model, xt, yt)["accuracy"]
    assert predict(model, ListLoader(xt[:10], yt[:10], 4)).shape == (10, 2)


def test_bad_data_loader_batches(bar_data):
    (x, y), _ = bar_data
    with pytest.raises(DataError, match="0..1"):
        fit(small_cnn(0), ListLoader(x[:64], y[:64] + 1, 16), verbose=0)
    with pytest.raises(ShapeError, match="got samples of shape"):
        fit(small_cnn(0), ListLoader(x[:64, :, :8], y[:64], 16), verbose=0)
    with pytest.raises(ConfigError, match="do not pass y"):
        fit(small_cnn(0), ListLoader(x[:64], y[:64], 16), y[:64], verbose=0)
    with pytest.raises(ConfigError, match="validation_split needs arrays"):
        fit(small_cnn(0), ListLoader(x[:64], y[:64], 16), validation_split=0.2, verbose=0)


def prefetch_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "cnnkit-prefetch" and t.is_alive()]


def test_fit_on_cnnkit_data_loader_resumes_bit_for_bit(bar_data, tmp_path):
    from cnnkit.data import DataLoader

    (x, y), (xt, yt) = bar_data
    pixels = np.clip(x[:160] * 100 + 60, 0, 255).astype(np.uint8)  # the loader scales uint8 by 1/255

    def loaders():
        return DataLoader((pixels, y[:160]), 32, seed=4), DataLoader((xt[:64], yt[:64]), 64, shuffle=False)

    train, val = loaders()
    straight = small_cnn(2, dropout=0.2)
    h = fit(straight, train, epochs=3, validation_data=val, optimizer=SGD(0.1, momentum=0.9), verbose=0)
    assert h.params["batch_size"] == 32 and h.params["steps"] == 5
    assert not prefetch_threads()

    path = tmp_path / "dl.cnnkit"
    train, val = loaders()
    fit(
        small_cnn(2, dropout=0.2),
        train,
        epochs=1,
        validation_data=val,
        optimizer=SGD(0.1, momentum=0.9),
        verbose=0,
        checkpoint_path=path,
    )
    train, val = loaders()
    resumed = small_cnn(0, dropout=0.2)
    h2 = fit(resumed, train, epochs=3, validation_data=val, resume_from=path, verbose=0)
    assert_same_weights(weights(straight), weights(resumed))
    assert h2.history["val_loss"] == h.history["val_loss"]

    def stop(batch, logs):
        if batch == 1:
            raise KeyboardInterrupt

    train, _ = loaders()
    h3 = fit(small_cnn(0), train, epochs=2, callbacks=[LambdaCallback(on_batch_end=stop)], verbose=0)
    assert h3.interrupted and not prefetch_threads()
