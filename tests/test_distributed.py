"""Distributed training's pieces in one process: shares, keyed dropout, synchronised batch norm (with
threads standing in for processes), environment detection and the errors of a bad setup."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from cnnkit.errors import ConfigError
from cnnkit.layers import Dropout
from cnnkit.ops.dropout import dropout_forward, keyed_uniform
from cnnkit.ops.norm import batch_norm_backward, batch_norm_forward
from cnnkit.ops.reference import dropout_reference
from cnnkit.training.distributed import import_mpi, launched_world_size, shares


@pytest.mark.parametrize(("batch", "size"), [(64, 1), (64, 2), (64, 3), (10, 4), (2, 3), (7, 7)])
def test_shares_cover_the_batch_in_order(batch, size):
    parts = shares(batch, size)
    assert len(parts) == size and parts[0][0] == 0 and parts[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_sample", [(1,), (3,), (5, 3, 3), (16,)])
def test_keyed_masks_do_not_depend_on_how_the_batch_is_split(dtype, per_sample):
    key, step, n = (12345, 678), 9, 11
    whole = keyed_uniform((n, *per_sample), dtype, key, step)
    assert whole.dtype == dtype and whole.shape == (n, *per_sample)
    for cut in shares(n, 3):
        part = keyed_uniform((cut[1] - cut[0], *per_sample), dtype, key, step, offset=cut[0])
        np.testing.assert_array_equal(part, whole[cut[0] : cut[1]])
    assert not np.array_equal(keyed_uniform((n, *per_sample), dtype, key, step + 1), whole)
    assert not np.array_equal(keyed_uniform((n, *per_sample), dtype, (12345, 679), step), whole)


def test_keyed_dropout_matches_the_reference_and_checks_its_arguments():
    x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    out, mask = dropout_forward(x, 0.4, key=(1, 2), step=3, offset=5)
    u = keyed_uniform(x.shape, np.float32, (1, 2), 3, 5)
    np.testing.assert_allclose(out, dropout_reference(x, 0.4, u), rtol=1e-6)
    with pytest.raises(ConfigError, match="^dropout: give either rng or key"):
        dropout_forward(x, 0.4, rng=1, key=(1, 2))
    with pytest.raises(ConfigError, match=r"^dropout: key must be a pair of ints in \[0, 2\*\*64\)"):
        dropout_forward(x, 0.4, key=(1, -2))


def test_dropout_layer_on_a_share_draws_the_whole_batch_masks():
    x = np.ones((9, 20), np.float32)
    whole = Dropout(0.5, seed=4)
    expect = [whole(x, training=True) for _ in range(2)]
    parts = [Dropout(0.5, seed=4) for _ in range(3)]
    for step in range(2):
        for layer, (a, b) in zip(parts, shares(9, 3), strict=True):
            layer.sample_offset = a
            np.testing.assert_array_equal(layer(x[a:b], training=True), expect[step][a:b])
    idle = Dropout(0.5, seed=4)  # a rank without samples in a short batch keeps step with the others
    idle(x, training=True)
    idle.skip_step()
    assert idle.rng_state() == whole.rng_state()


def test_dropout_accepts_an_old_pcg64_state():
    layer = Dropout(0.5, seed=1)
    layer.build((4,))
    layer.set_rng_state(np.random.default_rng(3).bit_generator.state)
    assert layer.rng_state()["step"] == 0 and layer.rng_state()["bit_generator"] == "cnnkit.keyed_dropout"


class _ThreadSum:
    """``size`` threads' element-wise sum, in rank order (what ``Communicator.sum_small`` gives)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[np.ndarray | None] = [None] * size

    def for_rank(self, rank: int):
        def total(v: np.ndarray) -> np.ndarray:
            self.slots[rank] = np.array(v, dtype=np.float64)
            self.barrier.wait()
            out = sum(self.slots[1:], self.slots[0].copy())
            self.barrier.wait()
            return out

        return total


@pytest.mark.parametrize("shape", [(13, 5), (7, 4, 3, 3)])
def test_synchronised_batch_norm_equals_one_batch(shape):
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, shape)
    dy = rng.standard_normal(shape)
    c = shape[1]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = np.zeros(c), np.ones(c)
    y, cache = batch_norm_forward(x, gamma, beta, rm, rv, True)
    dx, dg, db = batch_norm_backward(dy, cache)
    parts = shares(shape[0], 3)
    summer = _ThreadSum(3)
    results: dict[int, tuple] = {}

    def rank(r: int) -> None:
        a, b = parts[r]
        rmr, rvr = np.zeros(c), np.ones(c)
        yr, cr = batch_norm_forward(x[a:b], gamma, beta, rmr, rvr, True, allreduce=summer.for_rank(r))
        results[r] = (yr, *batch_norm_backward(dy[a:b], cr), rmr, rvr)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.concatenate([results[r][0] for r in range(3)]), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([results[r][1] for r in range(3)]), dx, rtol=1e-10, atol=1e-12)
    # each share returns its own part of dgamma/dbeta; their sum is the whole batch's
    np.testing.assert_allclose(sum(results[r][2] for r in range(3)), dg, rtol=1e-12)
    np.testing.assert_allclose(sum(results[r][3] for r in range(3)), db, rtol=1e-12)
    for r in range(3):  # running statistics as one process (the global count in the unbiased variance)
        np.testing.assert_allclose(results[r][4], rm, rtol=1e-12)
        np.testing.assert_allclose(results[r][5], rv, rtol=1e-12)


def test_launched_world_size_reads_the_launchers_variables():
    assert launched_world_size({}) is None
    assert launched_world_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_world_size({"PMI_SIZE": "2"}) == 2
    assert launched_world_size({"PMIX_RANK": "0"}) == -1


def test_mpi4py_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'cnnkit\[mpi\]'"):
        import_mpi()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="started by an MPI launcher .2 processes., so without mpi4py each"):
        import_mpi()


def test_fit_under_mpiexec_without_mpi4py_refuses_to_train_alone(monkeypatch):
    from cnnkit.models import zoo
    from cnnkit.training import fit

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    x = np.zeros((4, 3, 8, 8), np.float32)
    with pytest.raises(ConfigError, match="MPI launcher"):
        fit(zoo.get("simple_cnn", input_shape=(3, 8, 8), seed=0), x, np.zeros(4, int), verbose=0)
    with pytest.raises(ConfigError, match="distributed must be 'mpi', None .automatic. or False"):
        fit(zoo.get("simple_cnn", input_shape=(3, 8, 8), seed=0), x, np.zeros(4, int), distributed="tcp")
