"""Data-parallel training on several processes with MPI, with results that do not depend on their number.

``mpiexec -n N cnnkit train ...`` or ``fit(..., distributed="mpi")`` (found on its own when the process
was started by ``mpiexec`` with more than one process) trains one model on ``N`` processes. Each step:

1. Every process takes its *share* of the global batch (the ``batch_size`` one process would use): the
   samples ``[start_r, stop_r)`` of the batch, contiguous, in rank order, sizes differing by at most one
   when ``N`` does not divide the batch (:func:`shares`). Only those samples are read.
2. The forward pass runs on the share. Batch-norm layers normalise with the statistics of the whole
   batch (:mod:`cnnkit.ops.norm`, synchronised statistics), dropout draws per-sample masks keyed by the
   sample's index in the whole batch (:class:`cnnkit.layers.Dropout`).
3. One small sum over the processes carries ``[status, samples, loss sum, correct]`` (float64, a fixed
   order): an exception or a stop request on any process is known to all of them here, before anything
   is updated, and each process learns the global sample count ``B``.
4. Each process backpropagates ``(1/B) * sum of its samples' losses``: the gradient of the mean loss of
   the whole batch is then the *sum* over the processes of their gradients, whatever the shares' sizes.
5. The gradients are summed over the processes in one flat buffer (one collective per step), and every
   process applies the same update to the same weights.

So with the same seed, ``N`` processes and one process hold the same weights after every step, up to
the rounding of sums taken in another order (a float32 GEMM over 32 samples and two over 16 round
differently). Sums over the processes are formed so that every process gets the *same* bits: the small
ones are gathered and added in rank order (up to 8 processes; reduced to rank 0 and broadcast beyond);
the gradient buffer is summed by ``MPI_Allreduce`` for two processes (``a + b == b + a`` exactly) and by
a reduction to rank 0 and a broadcast for more (an allreduce's tree may round differently on different
ranks).

A batch with fewer samples than processes (the last of an epoch) leaves the last ranks idle for that
step: batch-norm statistics are then summed over the active ranks only (a communicator split once per
such size), idle ranks contribute zero gradients, count the step in their dropout layers, and take rank
0's batch-norm running statistics afterwards.

Rank 0 (``is_chief``) alone prints, writes checkpoints and runs file-writing callbacks; validation is
shared among the processes and its sums combined, so every process sees the same metrics.

Faults: an exception inside a step's forward pass on any process is reported at the step's status sum;
every process then raises :class:`~cnnkit.errors.TrainingError` with that rank's message (so ``mpiexec``
exits non-zero, and nobody waits forever). In a model with batch norm (whose other ranks may be waiting
inside a statistics sum), and for any other uncaught exception, the rank prints its message and stops the
job with ``MPI_Abort``. Ctrl-C or SIGTERM on any process stops all of them after the same step. The
training side lives in :mod:`cnnkit.training.distributed_trainer`; this module holds the MPI pieces.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..layers.base import Layer, to_config

__all__ = [
    "MPI_ENV_VARS",
    "launched_world_size",
    "import_mpi",
    "Communicator",
    "process_group",
    "shares",
    "share_of",
    "broadcast_model",
    "GradientReducer",
    "attach_sync",
    "fingerprint",
    "check_same_everywhere",
]

#: Variables that MPI launchers set in every process they start (Open MPI, MPICH/Hydra, PMIx, Slurm).
MPI_ENV_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK")

_GATHER_UP_TO = 8

INSTALL_HINT = "pip install 'cnnkit[mpi]' (mpi4py and Open MPI), or a system MPI with its mpi4py"


def launched_world_size(environ: dict[str, str] | None = None) -> int | None:
    """The number of processes the MPI launcher started, from the environment (None: not launched).

    ``OMPI_COMM_WORLD_SIZE`` (Open MPI) or ``PMI_SIZE`` (MPICH, Intel MPI) give it; a PMIx launcher
    that sets only ``PMIX_RANK``/``PMI_RANK`` gives -1 (launched, size unknown until MPI starts).
    """
    env = os.environ if environ is None else environ
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        value = env.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    if "PMIX_RANK" in env or "PMI_RANK" in env:
        return -1
    return None


def import_mpi() -> Any:
    """``mpi4py.MPI``, imported on first use, or a ConfigError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        launched = launched_world_size()
        where = (
            f"this process was started by an MPI launcher ({launched if launched and launched > 0 else 'several'}"
            " processes), so without mpi4py each would train alone; "
            if launched is not None
            else ""
        )
        raise ConfigError(
            f"distributed training: mpi4py cannot be imported ({err}); {where}install it: {INSTALL_HINT}"
        ) from None
    return MPI


def process_group() -> tuple[int, int]:
    """``(rank, size)`` of this process in the MPI job that started it, or ``(0, 1)`` outside one.

    Under an MPI launcher with more than one process, mpi4py must import (else a ConfigError says what to
    install): the CLI asks this first, before any data is read.
    """
    launched = launched_world_size()
    if launched is None or launched == 1:
        return 0, 1
    comm = import_mpi().COMM_WORLD
    return comm.Get_rank(), comm.Get_size()


def shares(batch: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` per rank: the global batch cut into ``size`` contiguous shares in rank order.

    The first ``batch % size`` ranks take one sample more (``np.array_split``'s rule); a batch smaller
    than ``size`` leaves the last ranks with empty shares ``(b, b)``.
    """
    base, extra = divmod(int(batch), int(size))
    out, start = [], 0
    for r in range(size):
        stop = start + base + (1 if r < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def share_of(batch: int, rank: int, size: int) -> tuple[int, int]:
    """This rank's ``(start, stop)`` in a global batch of ``batch`` samples (see :func:`shares`)."""
    return shares(batch, size)[rank]


class Communicator:
    """What cnnkit needs of MPI, on an ``mpi4py`` communicator (default ``COMM_WORLD``).

    Sums are formed so that every rank receives the same bits (see the module docstring).
    """

    def __init__(self, comm: Any = None) -> None:
        self.MPI = import_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        self._subs: dict[int, Any] = {}
        #: seconds spent in the gradient sum, accumulated (benchmarks read it)
        self.reduce_seconds = 0.0

    # ------------------------------------------------------------------ small sums (deterministic)
    def sum_small(self, v: np.ndarray, comm: Any = None) -> np.ndarray:
        """Element-wise float64 sum over the ranks of a short vector, the same bits on every rank.

        Up to 8 ranks: gathered and added in rank order (the same sum whatever MPI's algorithms); more:
        reduced to rank 0 and broadcast (a gather would move ``size`` times the bytes).
        """
        comm = self.comm if comm is None else comm
        v = np.ascontiguousarray(v, dtype=np.float64).ravel()
        size = comm.Get_size()
        if size == 1:
            return v.copy()
        if size > _GATHER_UP_TO:  # O(len(v)) bytes a rank, not O(size * len(v)): a reduction, then its result
            total = v.copy()
            if comm.Get_rank() == 0:
                comm.Reduce(self.MPI.IN_PLACE, total, op=self.MPI.SUM, root=0)
            else:
                comm.Reduce(v, None, op=self.MPI.SUM, root=0)
            comm.Bcast(total, root=0)
            return total
        out = np.empty((size, v.size), np.float64)
        comm.Allgather(v, out)
        total = out[0].copy()
        for r in range(1, size):
            total += out[r]
        return total

    def sync_for(self, active: int) -> Callable[[np.ndarray], np.ndarray] | None:
        """A sum over the first ``active`` ranks (None on the others): batch-norm statistics of a short batch.

        Collective over all ranks the first time a given ``active`` is asked for (``MPI_Comm_split``).
        """
        if active >= self.size:
            return self.sum_small
        if active not in self._subs:
            color = 0 if self.rank < active else self.MPI.UNDEFINED
            self._subs[active] = self.comm.Split(color, self.rank)
        sub = self._subs[active]
        if sub == self.MPI.COMM_NULL:
            return None
        return lambda v: self.sum_small(v, sub)

    # ------------------------------------------------------------------ big sums, broadcasts
    def sum_inplace(self, buf: np.ndarray) -> None:
        """Sum ``buf`` (contiguous float32/float64) over the ranks, in place, identically on every rank."""
        import time

        start = time.perf_counter()
        if self.size == 2:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        elif self.size > 2:
            if self.rank == 0:
                self.comm.Reduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM, root=0)
            else:
                self.comm.Reduce(buf, None, op=self.MPI.SUM, root=0)
            self.comm.Bcast(buf, root=0)
        self.reduce_seconds += time.perf_counter() - start

    def bcast_array(self, buf: np.ndarray, root: int = 0) -> None:
        """Overwrite ``buf`` on every rank with rank ``root``'s (in place)."""
        if self.size > 1:
            self.comm.Bcast(buf, root=root)

    def bcast_json(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s JSON-able ``obj`` on every rank (sent as UTF-8 JSON, never pickled)."""
        if self.size == 1:
            return obj
        data = json.dumps(obj).encode() if self.rank == root else b""
        n = np.array([len(data)], np.int64)
        self.comm.Bcast(n, root=root)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self.comm.Bcast(buf, root=root)
        return json.loads(buf.tobytes().decode())

    def gather_text(self, text: str) -> list[str]:
        """Every rank's ``text``, on every rank (UTF-8 bytes, no pickle)."""
        data = np.frombuffer(text.encode(), np.uint8)
        if self.size == 1:
            return [text]
        sizes = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([data.size], np.int64), sizes)
        out = np.empty(int(sizes.sum()), np.uint8)
        self.comm.Allgatherv(data, [out, sizes.tolist()])
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [out[bounds[r] : bounds[r + 1]].tobytes().decode() for r in range(self.size)]

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """Stop every process of the job (``MPI_Abort``); does not return."""
        sys.stderr.flush()
        sys.stdout.flush()
        self.comm.Abort(code)


# ============================================================================================ the model
def _arrays(model: Layer) -> list[np.ndarray]:
    out = [owner.params[key] for _, owner, key in model.named_parameters()]
    out += [owner.buffers[key] for _, owner, key in model.named_buffers()]
    return out


def broadcast_model(model: Layer, comm: Communicator, root: int = 0) -> None:
    """Give every rank rank ``root``'s parameters, buffers and dropout keys (in place)."""
    for array in _arrays(model):
        if array.flags.c_contiguous:
            comm.bcast_array(array, root)
        else:
            tmp = np.ascontiguousarray(array)
            comm.bcast_array(tmp, root)
            array[...] = tmp
    states = {name: layer.rng_state() for name, layer in [("", model), *model.named_layers()]}
    states = comm.bcast_json({k: v for k, v in states.items() if v is not None}, root)
    targets = {"": model, **dict(model.named_layers())}
    for name, state in states.items():
        targets[name].set_rng_state(state)


def broadcast_buffers(model: Layer, comm: Communicator, root: int = 0) -> None:
    """Rank ``root``'s buffers (batch-norm running statistics) on every rank."""
    for _, owner, key in model.named_buffers():
        array = owner.buffers[key]
        tmp = np.ascontiguousarray(array)
        comm.bcast_array(tmp, root)
        array[...] = tmp


class GradientReducer:
    """Sums every parameter's gradient over the ranks through one flat buffer per step.

    Bytes exchanged per step: the parameter count times the dtype's size (the same for every step).
    Parameters whose gradient a rank did not compute (no samples on this rank in a short last batch, a
    frozen layer) contribute zeros.
    """

    def __init__(
        self, model: Layer, comm: Communicator, entries: list[tuple[Layer, str]] | None = None
    ) -> None:
        self.comm = comm
        if entries is None:
            entries = [(owner, key) for _, owner, key in model.named_parameters()]
        self.entries = entries
        self.dtype = model.dtype if hasattr(model, "dtype") else np.dtype(np.float32)
        sizes = [owner.params[key].size for owner, key in self.entries]
        self.bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self.buffer = np.empty(int(self.bounds[-1]), dtype=self.dtype)

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    def reduce(self, have_grads: bool = True) -> None:
        """Sum the gradients over the ranks and put the sums in every owner's ``grads``."""
        buf = self.buffer
        for i, (owner, key) in enumerate(self.entries):
            part = buf[self.bounds[i] : self.bounds[i + 1]]
            grad = owner.grads.get(key) if have_grads else None
            if grad is None:
                part[...] = 0
            else:
                part[...] = grad.reshape(-1)
        self.comm.sum_inplace(buf)
        for i, (owner, key) in enumerate(self.entries):
            shape = owner.params[key].shape
            owner.grads[key] = buf[self.bounds[i] : self.bounds[i + 1]].reshape(shape)

    def clear(self) -> None:
        """Forget the last step's gradients (so a layer that sets none this step contributes zeros)."""
        for owner, key in self.entries:
            owner.grads.pop(key, None)


def attach_sync(model: Layer, sync: Callable[[np.ndarray], np.ndarray] | None) -> list[Layer]:
    """Set ``sync`` on every batch-norm layer of ``model``; returns them (to detach later)."""
    layers = [layer for _, layer in model.named_layers() if hasattr(layer, "sync")]
    if hasattr(model, "sync"):
        layers.append(model)
    for layer in layers:
        layer.sync = sync
    return layers


def set_sample_offset(model: Layer, offset: int) -> None:
    """Tell every dropout layer the index, in the whole batch, of this rank's first sample."""
    for layer in _dropouts(model):
        layer.sample_offset = int(offset)


def skip_dropout_step(model: Layer) -> None:
    """Advance every dropout layer as a training pass would (a rank with no samples in a short batch)."""
    for layer in _dropouts(model):
        layer.skip_step()


def _dropouts(model: Layer) -> Iterator[Any]:
    for _, layer in [("", model), *model.named_layers()]:
        if hasattr(layer, "sample_offset") and hasattr(layer, "skip_step"):
            yield layer


# ============================================================================================ checks
def fingerprint(parts: Sequence[Any]) -> str:
    """A hex digest of JSON-able values and arrays (the config and the data every rank must share)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"array {a.dtype.str} {a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


def model_fingerprint(model: Layer) -> list[Any]:
    """The architecture and the dtype (not the weights, which rank 0 broadcasts)."""
    return [to_config(model), str(getattr(model, "dtype", "")), getattr(model, "input_shape", None)]


def check_same_everywhere(comm: Communicator, what: dict[str, str]) -> None:
    """Raise ConfigError on every rank when ranks disagree on any fingerprint in ``what``."""
    mine = json.dumps(what, sort_keys=True)
    everyone = comm.gather_text(mine)
    if all(other == everyone[0] for other in everyone):
        return
    tables = [json.loads(t) for t in everyone]
    for name in what:
        values = [t.get(name) for t in tables]
        if any(v != values[0] for v in values):
            differ = [r for r, v in enumerate(values) if v != values[0]]
            raise ConfigError(
                f"distributed training: the processes disagree on the {name}: rank(s) {differ} differ from "
                f"rank 0; every process must be started with the same model, settings and data "
                "(give a seed, and the same files on every machine)"
            )
    raise ConfigError("distributed training: the processes disagree on the setup")
