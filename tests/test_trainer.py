"""The trainer's extension points (train_step, compute/apply gradients, evaluate, is_chief, trainer_class),
one shuffling recipe for arrays and DataLoaders, and SIGTERM handled like the first Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnnkit.data import DataLoader
from cnnkit.errors import ConfigError
from cnnkit.optim import SGD
from cnnkit.training import CSVLogger, ModelCheckpoint, Trainer, evaluate, fit, predict
from cnnkit.training.data_adapters import ArrayAdapter
from cnnkit.utils.random import epoch_order
from test_training import assert_same_weights, bars, small_cnn, weights


@pytest.fixture(scope="module")
def data():
    return bars(96, 3)


def test_arrays_and_a_data_loader_shuffle_alike(data):
    x, y = data
    adapter = ArrayAdapter(x, y, 16, True, seed=11)
    loader = DataLoader((x, y), 16, shuffle=True, seed=11, prefetch=0)
    for epoch in range(3):
        np.testing.assert_array_equal(adapter.order(epoch), loader.order(epoch))
        np.testing.assert_array_equal(adapter.order(epoch), epoch_order(11, epoch, len(x)))
    a, b = small_cnn(0), small_cnn(0)
    ha = fit(a, x, y, epochs=2, batch_size=16, seed=11, optimizer=SGD(0.1), verbose=0)
    hb = fit(
        b, DataLoader((x, y), 16, shuffle=True, seed=11, prefetch=0), epochs=2, optimizer=SGD(0.1), verbose=0
    )
    assert_same_weights(weights(a), weights(b))
    assert ha.history["loss"] == hb.history["loss"]


class ScaledTrainer(Trainer):
    """What a data-parallel trainer does, on one process: gradients scaled, "reduced", then applied."""

    steps = 0

    def train_step(self, xb, yb):
        loss_sum, correct = self.compute_gradients(xb, yb, loss_scale=0.5)
        for _, owner, key in self.parameters():
            owner.grads[key] = owner.grads[key] + owner.grads[key]  # the sum of two equal "ranks"
        self.apply_gradients()
        type(self).steps += 1
        return loss_sum, correct


def test_a_trainer_subclass_runs_the_step_and_matches_the_default(data):
    x, y = data
    a, b = small_cnn(0), small_cnn(0)
    ha = fit(a, x, y, epochs=2, batch_size=32, seed=0, optimizer=SGD(0.1), verbose=0)
    hb = fit(
        b, x, y, epochs=2, batch_size=32, seed=0, optimizer=SGD(0.1), verbose=0, trainer_class=ScaledTrainer
    )
    assert ScaledTrainer.steps == 6
    assert_same_weights(weights(a), weights(b))  # 0.5 * g + 0.5 * g == g exactly
    assert ha.history["loss"] == hb.history["loss"]


def test_validation_goes_through_evaluate(data):
    x, y = data
    seen = []

    class Counting(Trainer):
        def evaluate(self, adapter):
            out = super().evaluate(adapter)
            seen.append(out["samples"])
            return {**out, "loss": 42.0}

    h = fit(small_cnn(0), x, y, epochs=2, validation_split=0.25, verbose=0, seed=0, trainer_class=Counting)
    assert seen == [24, 24] and h.history["val_loss"] == [42.0, 42.0]


def test_a_non_chief_trainer_writes_and_prints_nothing(data, tmp_path, capsys):
    x, y = data

    class Worker(Trainer):
        @property
        def is_chief(self):
            return False

    cbs = [ModelCheckpoint(tmp_path / "best.cnnkit"), CSVLogger(tmp_path / "log.csv")]
    h = fit(
        small_cnn(0), x, y, epochs=2, verbose=2, seed=0, callbacks=cbs,
        checkpoint_path=tmp_path / "ckpt.cnnkit", trainer_class=Worker,
    )  # fmt: skip
    assert len(h) == 2
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [object, "Trainer", None])
def test_trainer_class_must_be_a_trainer(data, bad):
    x, y = data
    with pytest.raises(ConfigError, match="trainer_class must be cnnkit.training.Trainer"):
        fit(small_cnn(0), x, y, verbose=0, trainer_class=bad)


def test_sigterm_stops_after_the_step_and_keeps_the_work(tmp_path):
    """SIGTERM from outside (``timeout``, a batch system) stops training like the first Ctrl-C: the step
    finishes, fit returns with ``interrupted``, and the program saves what it has."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        import numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_training import bars, small_cnn
        from cnnkit.training import LambdaCallback, fit

        x, y = bars(64, 0)
        model = small_cnn(0)
        done = []

        def on_batch_end(batch, logs):
            done.append(batch)
            if len(done) == 1:
                print("started", flush=True)
            time.sleep(0.05)  # leave the parent time to signal mid-run

        h = fit(model, x, y, epochs=1000, batch_size=8, verbose=0, seed=0,
                callbacks=[LambdaCallback(on_batch_end=on_batch_end)])
        model.save({str(tmp_path / "model.cnnkit")!r})
        print(json.dumps({{"interrupted": h.interrupted, "steps": len(done), "epochs": len(h)}}), flush=True)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] and result["steps"] < 1000 * 8
    assert "fit: SIGTERM: stopping after this step" in err
    assert "interrupted during epoch" in err
    assert (tmp_path / "model.cnnkit").exists()


def test_sigterm_handler_is_put_back(data):
    x, y = data
    fit(small_cnn(0), x, y, epochs=1, verbose=0, seed=0)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_evaluate_and_predict_draw_no_bar_without_a_terminal(data, capsys):
    x, y = data
    model = small_cnn(0)
    evaluate(model, x, y, verbose=1, batch_size=8)
    predict(model, x, verbose=1, batch_size=8)
    assert capsys.readouterr().err == ""
