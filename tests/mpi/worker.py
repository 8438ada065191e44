"""Run by the MPI tests (``mpiexec -n N python worker.py JOB.json``, or plainly for one process).

Trains a zoo model on seeded random data with ``fit`` and has rank 0 write the weights to ``out``
(an .npz of the state dict) and the history to ``out.json``. The job file says which model, dtype,
batch size, samples, epochs, optimizer and what to do (``fault``: raise on a rank at a step).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def build(name: str, classes: int, shape: tuple[int, ...], seed: int | None, dtype: np.dtype):
    from cnnkit.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
    from cnnkit.models import Sequential, zoo

    if name == "tiny_bn_dropout":  # both kinds of batch norm and dropout, in little time
        layers = [Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Dense(16)]
        layers += [BatchNorm1D(), ReLU(), Dropout(0.3), Dense(classes)]
        return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)
    if name == "tiny_dropout":
        layers = [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(16), ReLU(), Dropout(0.3)]
        return Sequential([*layers, Dense(classes)], input_shape=shape, seed=seed, dtype=dtype)
    return zoo.get(name, num_classes=classes, input_shape=shape, seed=seed, dtype=dtype)


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    if "sweep" in job:  # several models in one launch (the start-up is most of a small job's time)
        import gc

        for name, size in job["sweep"]:
            run(dict(job, model=name, input_shape=[3, size, size], out=f"{job['out']}-{name}.npz"))
            gc.collect()  # the ImageNet VGGs hold 0.5 GB of weights each
    else:
        run(job)


def run(job: dict) -> None:
    """Train as ``job`` says; rank 0 (or the only process) writes ``job["out"]`` and its .json."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cnnkit.optim import SGD, Adam
    from cnnkit.training import Callback, fit

    dtype = np.dtype(job.get("dtype", "float32"))
    shape = tuple(job["input_shape"])
    classes = job.get("classes", 10)
    n = job["samples"]
    rng = np.random.default_rng(job.get("data_seed", 0))
    rng_x32 = rng.standard_normal((n, *shape)).astype(np.float32)
    x = rng_x32.astype(dtype)
    y = rng.integers(0, classes, n)
    if job.get("rank_dependent_data"):
        from mpi4py import MPI

        y = (y + MPI.COMM_WORLD.Get_rank()) % classes
    seed = 7
    if job.get("unseeded"):
        from mpi4py import MPI

        import cnnkit

        cnnkit.set_seed(100 + MPI.COMM_WORLD.Get_rank())  # different draws on each rank: rank 0's must win
        seed = None
    if job.get("float64_twin"):  # the float32 job's weights and data, cast: its float64 reference
        model = build(job["model"], classes, shape, seed, np.float32).astype(np.float64)
        x = rng_x32.astype(np.float64)
    else:
        model = build(job["model"], classes, shape, seed, dtype)
    opt = SGD(lr=job.get("lr", 0.05), momentum=0.9) if job.get("optimizer", "sgd") == "sgd" else Adam(lr=1e-3)
    callbacks = []
    fault = job.get("fault")
    if fault and fault.get("kind") == "forward":  # an exception inside the step, on one rank
        from mpi4py import MPI

        first = next(iter(model.children().values()))
        forward, calls = first.forward, []

        def failing(x, training):
            calls.append(1)
            if MPI.COMM_WORLD.Get_rank() == fault["rank"] and len(calls) == fault["call"]:
                raise RuntimeError(f"boom on rank {fault['rank']}")
            return forward(x, training)

        first.forward = failing
    elif fault:

        class Boom(Callback):
            def on_batch_begin(self, batch, logs=None):
                from mpi4py import MPI

                if MPI.COMM_WORLD.Get_rank() == fault["rank"] and batch == fault["batch"]:
                    if fault.get("kind") == "exit":
                        os._exit(3)
                    raise RuntimeError(f"boom on rank {fault['rank']}")

        callbacks.append(Boom())
    steps: list[int] = []
    if job.get("report_pid"):  # for the signal tests: say who we are, then train slowly
        import time

        from mpi4py import MPI

        class Slow(Callback):
            def on_batch_end(self, batch, logs=None):
                steps.append(batch)
                if len(steps) == 6:  # in epoch 2: the checkpoint of epoch 1 is written
                    print(f"pid {MPI.COMM_WORLD.Get_rank()} {os.getpid()}", flush=True)
                time.sleep(0.05)

        callbacks.append(Slow())
    kwargs = dict(
        epochs=job.get("epochs", 1),
        batch_size=job["batch_size"],
        optimizer=opt,
        seed=3,
        verbose=0,
        callbacks=callbacks,
        distributed=job.get("distributed"),
    )
    if job.get("validation"):
        kwargs["validation_split"] = 0.25
    if job.get("checkpoint"):
        kwargs["checkpoint_path"] = job["checkpoint"]
    if job.get("resume"):
        kwargs["resume_from"] = job["resume"]
    data: object = x
    if job.get("loader"):  # a DataLoader with augmentation: each process loads and augments its share
        from cnnkit.data import Augment, DataLoader

        augment = Augment(rotation=15, flip=True, zoom=0.1, translate=1, seed=5)
        data, y = DataLoader((x, y), job["batch_size"], seed=3, augment=augment, prefetch=0), None
    history = fit(model, data, y, **kwargs)
    if job.get("report_pid"):
        from mpi4py import MPI

        print(
            f"rank {MPI.COMM_WORLD.Get_rank()} steps {len(steps)} interrupted {history.interrupted}",
            flush=True,
        )
    rank = 0
    if job.get("distributed") != False:  # noqa: E712
        try:
            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank()
        except ImportError:
            rank = 0
    if rank == 0:
        np.savez(job["out"], **{k: np.asarray(v) for k, v in model.state_dict().items()})
        with open(job["out"] + ".json", "w") as f:
            json.dump(history.to_dict(), f)


if __name__ == "__main__":
    main()
