"""cnnkit.training callbacks: hooks, EarlyStopping, ModelCheckpoint, CSVLogger, LearningRateScheduler."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cnnkit.errors import ConfigError
from cnnkit.io.model_file import load_model, read_checkpoint
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnnkit.models import Sequential
from cnnkit.optim import SGD, CosineAnnealingLR, ReduceLROnPlateau, StepLR
from cnnkit.training import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    fit,
)


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 6, 6)).astype(np.float32)
    x[y == 0, :, :, :3] += 1.0
    return x, y


def model(seed=0):
    return Sequential(
        [Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(2)], input_shape=(1, 6, 6), seed=seed
    )


X, Y = data()
VAL = data(32, 1)


def weights(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class Scripted(Callback):
    """Overwrites a metric with scripted values (it runs before the callbacks under test) and keeps the
    weights of every epoch."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, list(values)
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.snapshots.append(weights(self.model))


def run(callbacks, epochs, m=None, **kwargs):
    m = m or model()
    h = fit(
        m,
        X,
        Y,
        epochs=epochs,
        batch_size=32,
        validation_data=VAL,
        callbacks=callbacks,
        verbose=0,
        seed=0,
        optimizer=SGD(0.05),
        **kwargs,
    )
    return m, h


# ---------------------------------------------------------------------------------------------- hooks


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch, logs=None):
        assert set(logs) == {"loss", "accuracy", "size"}
        self.calls.append(("batch_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time", "images_per_sec"} <= set(logs)
        self.calls.append(("epoch_end", epoch))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_hooks_run_in_order_with_model_and_params():
    rec = Recorder()
    m, h = run([rec], epochs=2)

    def per_epoch(e):
        batches = [c for b in range(3) for c in (("batch_begin", b), ("batch_end", b))]
        return [("epoch_begin", e), *batches, ("epoch_end", e)]

    assert rec.calls == [("train_begin",), *per_epoch(0), *per_epoch(1), ("train_end",)]
    assert rec.model is m and rec.trainer.history is h
    assert rec.params["steps"] == 3 and rec.params["epochs"] == 2
    assert rec.params["metrics"][:4] == ["loss", "accuracy", "val_loss", "val_accuracy"]


def test_stop_training_from_a_batch_ends_the_epoch_early():
    def stop(batch, logs):
        if batch == 1:
            cb.trainer.stop_training = True

    cb = LambdaCallback(on_batch_end=stop)
    _, h = run([cb], epochs=5)
    assert len(h) == 1 and h.stopped_epoch == 0


def test_lambda_callback_rejects_unknown_hooks():
    with pytest.raises(ConfigError, match="unknown hooks"):
        LambdaCallback(on_epoch_finish=print)


# ---------------------------------------------------------------------------------------------- EarlyStopping


def test_early_stopping_stops_and_restores_best():
    script = Scripted("val_loss", [1.0, 0.8, 0.9, 0.95, 0.7, 0.6])
    es = EarlyStopping(patience=2, restore_best_weights=True)
    m, h = run([script, es], epochs=6)
    assert len(h) == 4 and h.stopped_epoch == 3 and es.stopped_epoch == 3
    assert es.best == 0.8 and es.best_epoch == 1
    assert_same(weights(m), script.snapshots[1])


def test_early_stopping_restores_best_when_epochs_run_out():
    script = Scripted("val_loss", [1.0, 0.5, 0.9])
    es = EarlyStopping(patience=5, restore_best_weights=True)
    m, h = run([script, es], epochs=3)
    assert len(h) == 3 and h.stopped_epoch is None
    assert_same(weights(m), script.snapshots[1])


def test_early_stopping_without_restore_keeps_last_weights():
    script = Scripted("val_loss", [1.0, 0.5, 0.9])
    m, h = run([script, EarlyStopping(patience=5)], epochs=3)
    assert_same(weights(m), script.snapshots[2])


def test_early_stopping_patience_zero_and_min_delta():
    _, h = run([Scripted("val_loss", [1.0, 0.9, 0.95, 0.1]), EarlyStopping(patience=0)], epochs=4)
    assert len(h) == 3  # stops at the first epoch that does not improve (the notes' "stop when it increases")
    # improvements smaller than min_delta do not count
    _, h = run(
        [Scripted("val_loss", [1.0, 0.95, 0.92, 0.9]), EarlyStopping(patience=2, min_delta=0.1)], epochs=4
    )
    assert len(h) == 3


def test_early_stopping_auto_mode_maximises_accuracy():
    es = EarlyStopping(monitor="val_accuracy", patience=1)
    assert es.mode == "max"
    _, h = run([Scripted("val_accuracy", [0.5, 0.7, 0.6, 0.9]), es], epochs=4)
    assert len(h) == 3 and es.best == 0.7


def test_early_stopping_bad_settings():
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(mode="best")
    with pytest.raises(ConfigError, match="'val_los' is not a metric"):
        run([EarlyStopping(monitor="val_los")], epochs=1)


# ---------------------------------------------------------------------------------------------- ModelCheckpoint


def test_model_checkpoint_best_only_writes_only_on_improvement(tmp_path):
    script = Scripted("val_loss", [1.0, 1.2, 0.8, 0.9])
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch:02d}.cnnkit", save_best_only=True)
    run([script, ckpt], epochs=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-01.cnnkit", "m-03.cnnkit"]
    assert ckpt.saved == [str(tmp_path / "m-01.cnnkit"), str(tmp_path / "m-03.cnnkit")]
    assert_same(weights(load_model(tmp_path / "m-03.cnnkit")), script.snapshots[2])
    state = read_checkpoint(tmp_path / "m-03.cnnkit")
    assert state.training_state["epoch"] == 3 and state.optimizer_state["config"]["class"] == "SGD"


def test_model_checkpoint_every_epoch_overwrites_and_can_resume(tmp_path):
    path = tmp_path / "last.cnnkit"
    straight, _ = run([], epochs=3)
    first, _ = run([ModelCheckpoint(path)], epochs=2)
    assert read_checkpoint(path).training_state["epoch"] == 2
    resumed, h = run([], epochs=3, m=model(5), resume_from=path)
    assert len(h) == 3
    assert_same(weights(resumed), weights(straight))


def test_model_checkpoint_bad_placeholder(tmp_path):
    with pytest.raises(ConfigError, match="cannot format path"):
        run([ModelCheckpoint(tmp_path / "{step}.cnnkit")], epochs=1)


# ---------------------------------------------------------------------------------------------- CSVLogger


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    _, h = run([CSVLogger(path)], epochs=3)
    rows = read_rows(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time", "images_per_sec"} <= set(rows[0])
    assert [float(r["val_loss"]) for r in rows] == h.history["val_loss"]  # exact: written with repr
    assert not [p for p in tmp_path.iterdir() if p.name != "log.csv"]  # no temporary files left


def test_csv_logger_append_and_resume(tmp_path):
    path = tmp_path / "log.csv"
    ckpt = tmp_path / "c.cnnkit"
    run([CSVLogger(path)], epochs=2, checkpoint_path=ckpt)
    run([CSVLogger(path)], epochs=4, resume_from=ckpt)  # rows of the epochs before the resume are kept
    assert [r["epoch"] for r in read_rows(path)] == ["0", "1", "2", "3"]
    run([CSVLogger(path, append=True)], epochs=1)
    assert [r["epoch"] for r in read_rows(path)] == ["0", "1", "2", "3", "0"]


# ---------------------------------------------------------------------------------------------- LR schedules


def test_step_lr_sets_the_rate_per_epoch():
    _, h = run([LearningRateScheduler(StepLR(2, 0.5))], epochs=5)
    assert h.history["lr"] == [0.05, 0.05, 0.025, 0.025, 0.0125]


def test_schedule_given_directly_is_wrapped():
    _, h = run([CosineAnnealingLR(2)], epochs=3)
    assert h.history["lr"] == pytest.approx([0.05, 0.025, 0.0])


def test_function_schedules():
    _, h = run([LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))], epochs=3)
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    _, h = run([LearningRateScheduler(lambda epoch, lr: lr * 0.5)], epochs=3)
    assert h.history["lr"] == [0.025, 0.0125, 0.00625]
    with pytest.raises(ConfigError, match="returned 'big'"):
        run([LearningRateScheduler(lambda epoch: "big")], epochs=1)
    with pytest.raises(ConfigError, match="schedule must be"):
        LearningRateScheduler(3)


def test_reduce_on_plateau_callback():
    script = Scripted("val_loss", [1.0, 0.9, 0.95, 0.96, 0.97, 0.5])
    _, h = run([script, ReduceLROnPlateau(patience=1, factor=0.5)], epochs=6)
    # bad epochs 2 and 3 -> more than patience=1 -> halved for epoch 4; counter restarts
    assert h.history["lr"] == [0.05, 0.05, 0.05, 0.05, 0.025, 0.025]
    with pytest.raises(ConfigError, match="monitor 'loss_val'"):
        run([ReduceLROnPlateau(monitor="loss_val")], epochs=1)
