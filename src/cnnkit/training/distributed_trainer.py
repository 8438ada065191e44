"""The training step on several MPI processes: :class:`DistributedTrainer` (see :mod:`.distributed`)."""

from __future__ import annotations

import contextlib
import math
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import CnnkitError, ConfigError, DataError, TrainingError
from ..ops.losses import cross_entropy_backward, cross_entropy_forward
from .data_adapters import ArrayAdapter, DataAdapter, LoaderAdapter, is_loader
from .distributed import (
    Communicator,
    GradientReducer,
    attach_sync,
    broadcast_buffers,
    broadcast_model,
    check_same_everywhere,
    fingerprint,
    model_fingerprint,
    set_sample_offset,
    share_of,
    skip_dropout_step,
)
from .head import LossHead, inference_mode, top_k_hits
from .inputs import as_images, as_labels, check_batch, num_classes
from .trainer import NonFiniteError, Trainer

__all__ = ["DistributedTrainer", "AllRanksError", "evaluate_shared", "choose_trainer"]


class AllRanksError(TrainingError):
    """A failure every rank knows of and raises together (no rank is left waiting)."""


class _ShardedSource:
    """Batches of the global order (as one process would make them), cut to this rank's share.

    Yields ``(x_share, y_batch)``: the rank's images only (``None`` when its share is empty) and the labels
    of the whole batch (small), so metrics count the whole batch. ``self.start`` is the share's start.
    """

    def __init__(self, inner: DataAdapter, rank: int, size: int) -> None:
        self.inner, self.rank, self.size = inner, rank, size
        self.shares_checked = inner.checked  # shares of unchecked sources are checked in the step
        self.checked = True
        self.start = 0
        self.stop = 0
        #: the labels of the images this rank loaded (None: the batch's labels [start:stop]); shorter than
        #: the share when a lazy folder skipped unreadable files
        self.share_labels: np.ndarray | None = None

    @property
    def num_samples(self) -> int | None:
        return self.inner.num_samples

    @property
    def seed(self) -> int:
        return getattr(self.inner, "seed", 0)

    @seed.setter
    def seed(self, value: int) -> None:
        if isinstance(self.inner, ArrayAdapter):
            self.inner.seed = value

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, epoch: int) -> Iterator[tuple[Any, np.ndarray]]:
        inner = self.inner
        if isinstance(inner, ArrayAdapter):
            order = inner.order(epoch)
            n, bs = inner.num_samples, inner.batch_size
            for s in range(0, n, bs):
                e = min(s + bs, n)
                a, b = share_of(e - s, self.rank, self.size)
                self.start, self.stop = a, b
                idx: Any = np.arange(s, e) if order is None else order[s:e]
                yb = inner.y[idx]
                xb = inner.x[idx[a:b]] if b > a else None
                yield xb, yb
            return
        loader = inner.loader
        if hasattr(loader, "batch_indices") and hasattr(loader, "_make_batch"):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            for number, idx in enumerate(loader.batch_indices(epoch)):
                a, b = share_of(len(idx), self.rank, self.size)
                self.start, self.stop, self.share_labels = a, b, None
                labels = _labels_of(loader, idx)
                if b > a:
                    made = _load_share(loader, epoch, number, idx, a, b)
                    if made is None:
                        raise DataError(
                            f"fit: every file of batch {number + 1}'s share on rank {self.rank} was unreadable"
                        )
                    self.share_labels = np.asarray(made[1], dtype=np.int64)
                    yield made[0], labels
                else:
                    yield None, labels
            return
        # Any other iterable: every rank reads every batch and keeps its share (correct, not economical).
        for xb, yb in inner.batches(epoch):
            a, b = share_of(len(xb), self.rank, self.size)
            self.start, self.stop = a, b
            yield (xb[a:b] if b > a else None), yb


def _load_share(loader: Any, epoch: int, number: int, idx: np.ndarray, a: int, b: int) -> Any:
    """Samples ``a:b`` of a DataLoader's batch ``number``, as that batch would give them.

    What ``DataLoader`` does for the whole batch (load, augment, transform), on the share only; an
    :class:`~cnnkit.data.Augment` draws its parameters for the whole batch and applies this share's rows,
    so every image is augmented as in one process. Another augmentation callable gets the batch's
    generator and the share alone (the same distribution, not the same draws).
    """
    if not hasattr(loader, "augment") or loader.augment is None:
        return loader._make_batch(epoch, number, idx[a:b])
    from ..data.augment import Augment

    augment = loader.augment
    if not (isinstance(augment, Augment) and getattr(loader, "_augment_takes_rng", False)):
        return loader._make_batch(epoch, number, idx[a:b])
    aug_seed = getattr(augment, "seed", None)
    key = [loader.seed, int(epoch), int(number)]
    if isinstance(aug_seed, (int, np.integer)):
        key.append(int(aug_seed) & 0xFFFFFFFFFFFFFFFF)
    params = augment.sample(len(idx), np.random.default_rng(key))
    part = {k: v[a:b] for k, v in params.items()}

    class _Rows:  # the loader's augment step, with this share's rows of the whole batch's draw
        seed = aug_seed

        def __call__(self, x: np.ndarray, rng: Any = None) -> np.ndarray:
            return augment.apply(x, part) if not augment.is_identity else x.copy()

    loader.augment = _Rows()
    try:
        return loader._make_batch(epoch, number, idx[a:b])
    finally:
        loader.augment = augment


def _labels_of(loader: Any, idx: np.ndarray) -> np.ndarray:
    ds = loader.source
    if hasattr(ds, "y"):
        return np.asarray(ds.y[idx], dtype=np.int64)
    if hasattr(ds, "labels"):
        return np.asarray(np.asarray(ds.labels)[idx], dtype=np.int64)
    return np.asarray(ds.load_batch(idx)[1], dtype=np.int64)


class DistributedTrainer(Trainer):
    """A :class:`~cnnkit.training.Trainer` whose step runs on every MPI process (see
    :mod:`cnnkit.training.distributed`). ``fit`` picks it under ``mpiexec`` (or ``distributed="mpi"``).

    Overrides: :attr:`is_chief` (rank 0), :meth:`epoch_batches` (this rank's share of each global batch),
    :meth:`train_step` (forward on the share, one status sum, backward scaled by share / global batch,
    the gradients summed in one flat buffer, then :meth:`apply_gradients`), :meth:`evaluate` (each rank
    a part of the set, the sums combined), :meth:`resume` and :meth:`train` (same seed, weights and
    setup everywhere; a failure on one rank stops all of them).
    """

    def __init__(self, *args: Any, comm: Communicator | None = None, **kwargs: Any) -> None:
        self._stop_local: str | None = None  # a Ctrl-C or SIGTERM this process received
        self._stop_agreed: str | None = None  # known to every process (through a step's status sum)
        self.comm = comm if comm is not None else Communicator()
        super().__init__(*args, **kwargs)
        self.train_source = _ShardedSource(self.train_source, self.comm.rank, self.comm.size)
        self.reducer = GradientReducer(self.model, self.comm, [(o, k) for _, o, k in self.parameters()])
        self._inner_collectives = bool(attach_sync(self.model, None))

    @property
    def is_chief(self) -> bool:
        """Rank 0 shows progress and writes the files."""
        return self.comm.rank == 0

    # A stop request is acted on only once every process knows of it, after the same step: the signal
    # handler's write goes to the local flag, the loop's reads see the agreed one.
    @property
    def _stop_signal(self) -> str | None:
        return self._stop_agreed

    @_stop_signal.setter
    def _stop_signal(self, value: str | None) -> None:
        self._stop_local = value

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        """Same seed, same weights, same setup everywhere; ConfigError on every rank otherwise."""
        comm = self.comm
        self.seed = int(comm.bcast_json(int(self.seed)))
        self.params["seed"] = self.seed
        self.train_source.seed = self.seed
        settings = {k: v for k, v in self.params.items() if k not in ("verbose", "seed")}
        check_same_everywhere(
            comm,
            {
                "model": fingerprint(model_fingerprint(self.model)),
                "settings": fingerprint(
                    [settings, type(self.optimizer).__name__, self.optimizer.get_config()]
                ),
                "data": fingerprint([*_data_parts(self.train_source.inner), *_data_parts(self.val_source)]),
            },
        )
        broadcast_model(self.model, comm)

    def resume(self, path: str, optimizer_given: bool) -> None:
        """Every rank reads the checkpoint (written with any number of processes); rank 0's wins."""
        run_or_abort(self.comm, lambda: super(DistributedTrainer, self).resume(path, optimizer_given))

    def train(self) -> Any:
        def go() -> Any:
            try:
                self._setup()
            except CnnkitError as err:
                err.all_ranks = True  # type: ignore[attr-defined]
                raise
            return super(DistributedTrainer, self).train()

        return run_or_abort(self.comm, go)

    # ------------------------------------------------------------------ the step
    def epoch_batches(self, epoch: int) -> Iterator[tuple[Any, np.ndarray]]:
        """This rank's images of each global batch, with the labels of the whole batch."""
        return self.train_source.batches(epoch)

    def train_step(self, xb: Any, yb: np.ndarray) -> tuple[float, int]:
        """One step of the whole batch ``yb`` (labels), of which this rank holds the images ``xb``."""
        comm = self.comm
        start, stop = self.train_source.start, self.train_source.stop
        active = min(len(yb), comm.size)
        sync = comm.sync_for(active)  # collective the first time a short batch leaves ranks idle
        mine = stop > start
        self._saved_buffers = [store[key].copy() for store, key in self._buffers]
        failure = ""
        loss_sum, hits, cache, n_mine = 0.0, 0, None, 0
        self.reducer.clear()
        try:
            if mine:
                try:
                    attach_sync(self.model, sync)
                    set_sample_offset(self.model, start)
                    shared = self.train_source.share_labels
                    y_mine = yb[start:stop] if shared is None else shared
                    n_mine = len(y_mine)
                    if not self.train_source.shares_checked:
                        xb, y_mine = check_batch(
                            xb, y_mine, self.model, self.classes, "fit", "the DataLoader"
                        )
                    logits = self.head.logits(xb, True)
                    loss, cache = cross_entropy_forward(logits, y_mine)
                    loss_sum = loss * len(y_mine)
                    hits = top_k_hits(logits, y_mine, 1)
                except Exception as err:  # reported to every rank below
                    failure = str(err) if isinstance(err, CnnkitError) else f"{type(err).__name__}: {err}"
                    failure = failure or repr(err)
                    if self._inner_collectives:
                        # Other ranks may wait inside a batch-norm sum this rank will never reach.
                        _abort_with(comm, failure)
            else:
                skip_dropout_step(self.model)
            status = comm.sum_small(
                np.array([1.0 if failure else 0.0, n_mine, loss_sum, hits, 1.0 if self._stop_local else 0.0])
            )
            if status[0] > 0:
                messages = comm.gather_text(failure)
                rank = next(r for r, m in enumerate(messages) if m)
                self._restore_buffers()
                raise AllRanksError(f"fit: rank {rank} of {comm.size} failed: {messages[rank]}")
            if status[4] > 0 and self._stop_agreed is None:
                self._stop_agreed = self._stop_local or "a stop request on another process"
                if self.is_chief:
                    print(f"\nfit: {self._stop_agreed}: every process stops after this step", file=sys.stderr)
            total = int(round(status[1]))
            loss_mean = float(status[2] / total)
            if not math.isfinite(loss_mean):
                self._restore_buffers()
                raise NonFiniteError("loss", loss_mean)
            if mine:
                assert cache is not None
                # d(sum of my losses / B) / dlogits; summed over the ranks: d(mean loss of the batch)
                self.head.backward(cross_entropy_backward(n_mine / total, cache))
            self.reducer.reduce(have_grads=mine)
        finally:
            attach_sync(self.model, None)
        if active < comm.size:
            broadcast_buffers(self.model, comm)  # the idle ranks' running statistics did not move
        self.apply_gradients()  # the same clipping, check and update on every rank
        return float(status[2]), int(round(status[3]))

    # ------------------------------------------------------------------ validation
    def evaluate(self, data: DataAdapter) -> dict[str, float]:
        """Mean loss and accuracy over the whole of ``data``, each rank measuring a part."""
        return _evaluate_parts(self.model, self.head, data, self.classes, self.comm, "fit", "validation_data")


def _evaluate_parts(
    model: Any, head: LossHead, source: DataAdapter, classes: int, comm: Communicator, op: str, where: str
) -> dict[str, float]:
    sums = np.zeros(3)
    with inference_mode(model):
        for xb, yb in _val_share(source, comm.rank, comm.size):
            if not source.checked:
                xb, yb = check_batch(xb, yb, model, classes, op, where)
            logits = head.logits(xb, False)
            loss, _ = cross_entropy_forward(logits, yb)
            sums += (loss * len(yb), len(yb), top_k_hits(logits, yb, 1))
    total = comm.sum_small(sums)
    if total[1] == 0:
        raise DataError(f"{op}: {where} yielded no samples")
    return {
        "loss": float(total[0] / total[1]),
        "accuracy": float(total[2] / total[1]),
        "samples": int(total[1]),
    }


def _val_share(source: Any, rank: int, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if isinstance(source, ArrayAdapter):
        a, b = share_of(source.num_samples, rank, size)
        for s in range(a, b, source.batch_size):
            e = min(s + source.batch_size, b)
            yield source.x[s:e], source.y[s:e]
        return
    loader = source.loader
    if hasattr(loader, "batch_indices") and hasattr(loader, "_make_batch"):
        for number, idx in enumerate(loader.batch_indices(0)):
            if number % size == rank:
                made = loader._make_batch(0, number, idx)
                if made is not None:
                    yield made
        return
    with contextlib.closing(source.batches(0)) as batches:
        for number, (xb, yb) in enumerate(batches):
            if number % size == rank:
                yield xb, yb


def evaluate_shared(model: Any, data: Any, comm: Communicator | None = None) -> dict[str, float]:
    """``evaluate(model, data)`` with the work shared among the MPI processes (the same result on all).

    ``data``: a DataLoader or an ``(x, y)`` pair. Each rank measures a part (a contiguous range of an
    array, every ``size``-th batch of a loader); the sums of losses, hits and samples are combined.
    """
    comm = comm if comm is not None else Communicator()
    if is_loader(data):
        source: Any = LoaderAdapter(data)
    else:
        x = as_images(data[0], "evaluate", "x")
        source = ArrayAdapter(x, as_labels(data[1], len(x), "evaluate", "y"), 256, False, 0)
    out = _evaluate_parts(
        model, LossHead(model), source, num_classes(model, "evaluate"), comm, "evaluate", "x"
    )
    del out["samples"]
    return out


def _abort_with(comm: Communicator, message: str) -> None:
    print(
        f"cnnkit: rank {comm.rank} of {comm.size} failed, stopping every process: {message}", file=sys.stderr
    )
    comm.abort(1)


def run_or_abort(comm: Communicator, fn: Any) -> Any:
    """``fn()``; an exception that not every rank shares stops the whole job with its rank's message."""
    try:
        return fn()
    except (AllRanksError, KeyboardInterrupt):
        raise
    except BaseException as err:
        if getattr(err, "all_ranks", False):
            raise
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
        print(
            f"cnnkit: rank {comm.rank} of {comm.size} failed, stopping every process: "
            f"{type(err).__name__}: {err}\n{tb}",
            file=sys.stderr,
        )
        comm.abort(1)
        raise


def _data_parts(source: Any) -> list[Any]:
    """What identifies a data source cheaply: sizes, labels, and up to 1024 evenly spaced images."""
    if source is None:
        return [None]
    if isinstance(source, ArrayAdapter):
        x = source.x
        step = max(1, len(x) // 1024)
        parts: list[Any] = [list(x.shape), str(x.dtype), x[::step]]
        if source.y is not None:
            parts.append(source.y)
        return parts
    loader = source.loader
    parts = [type(loader).__name__, len(loader), source.num_samples]
    for name in ("batch_size", "shuffle", "seed", "drop_last"):
        parts.append(getattr(loader, name, None))
    ds = getattr(loader, "source", None)
    for name in ("y", "labels"):
        if ds is not None and hasattr(ds, name):
            parts.append(np.asarray(getattr(ds, name)))
    if ds is not None and hasattr(ds, "x"):
        x = np.asarray(ds.x)
        parts.append(x[:: max(1, len(x) // 1024)])
    return parts


def choose_trainer(
    distributed: Any, trainer_class: type[Trainer], batch_size: Any, op: str = "fit"
) -> type[Trainer]:
    """The trainer class ``fit`` runs: ``trainer_class``, or :class:`DistributedTrainer` on several processes.

    ``distributed``: ``"mpi"`` (or True) insists on MPI, None uses it when launched by ``mpiexec`` with
    more than one process, False never does. Raises ConfigError for a global batch smaller than the
    number of processes, and for a ``trainer_class`` that does not derive from DistributedTrainer.
    """
    from .distributed import Communicator as _Comm
    from .distributed import launched_world_size

    if distributed is False:
        return trainer_class
    if distributed is None:
        launched = launched_world_size()
        if launched is None or launched == 1:
            return trainer_class
    elif distributed not in ("mpi", True):
        raise ConfigError(f"{op}: distributed must be 'mpi', None (automatic) or False, got {distributed!r}")
    size = _Comm().size
    if size == 1:
        return trainer_class
    if isinstance(batch_size, int) and batch_size < size:
        raise ConfigError(
            f"{op}: the global batch size {batch_size} is smaller than the {size} processes; "
            f"use a batch of at least {size} (batch_size is split among the processes)"
        )
    if issubclass(trainer_class, DistributedTrainer):
        return trainer_class
    if trainer_class is not Trainer:
        raise ConfigError(
            f"{op}: on {size} MPI processes trainer_class must derive from DistributedTrainer, got "
            f"{trainer_class.__name__}; or pass distributed=False to train on each process alone"
        )
    return DistributedTrainer
