"""DataLoader: batching, per-(seed, epoch) order, prefetch thread life cycle, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cnnkit.data import Augment, DataLoader, Normalize
from cnnkit.errors import ConfigError, DataError, DTypeError, ShapeError


def arrays(n=103, c=1, h=4, w=4):
    x = (np.arange(n)[:, None, None, None] % 256 + np.zeros((1, c, h, w))).astype(np.uint8)
    return x, np.arange(n, dtype=np.int64)  # label = index, so a batch shows which samples it holds


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "cnnkit-prefetch" and t.is_alive()]


def epoch_labels(loader):
    return np.concatenate([yb for _, yb in loader])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_cover_every_sample_once(prefetch):
    loader = DataLoader(arrays(), batch_size=10, prefetch=prefetch)
    assert len(loader) == 11 and loader.num_samples == 103
    batches = list(loader)
    assert len(batches) == 11
    assert [len(yb) for _, yb in batches] == [10] * 10 + [3]
    assert sorted(np.concatenate([yb for _, yb in batches]).tolist()) == list(range(103))
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and xb.shape == (10, 1, 4, 4) and yb.dtype == np.int64
    assert np.allclose(xb[:, 0, 0, 0], (yb % 256) / 255.0)  # default transform: x / 255


def test_drop_last():
    loader = DataLoader(arrays(), batch_size=10, drop_last=True)
    assert len(loader) == 10
    labels = [yb for _, yb in loader]
    assert len(labels) == 10 and all(len(b) == 10 for b in labels)
    assert len(np.unique(np.concatenate(labels))) == 100
    assert len(DataLoader(arrays(5), batch_size=10, drop_last=True)) == 0


def test_order_is_a_function_of_seed_and_epoch():
    a = DataLoader(arrays(), batch_size=16, seed=7)
    b = DataLoader(arrays(), batch_size=16, seed=7)
    first, second = epoch_labels(a), epoch_labels(a)  # iterating advances the epoch
    assert not np.array_equal(first, second)
    b.set_epoch(1)
    assert np.array_equal(epoch_labels(b), second)  # a resumed run sees the same order
    b.set_epoch(0)
    assert np.array_equal(epoch_labels(b), first)
    c = DataLoader(arrays(), batch_size=16, seed=8)
    assert not np.array_equal(epoch_labels(c), first)
    assert np.array_equal(epoch_labels(DataLoader(arrays(), 16, shuffle=False)), np.arange(103))


def test_augmentation_is_reproducible_per_epoch_and_independent_of_prefetch():
    x = np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    y = np.zeros(40, dtype=np.int64)
    aug = Augment(rotation=20, flip=True, translate=1, seed=3)

    def run(prefetch, epoch):
        loader = DataLoader((x, y), batch_size=8, seed=1, augment=aug, prefetch=prefetch)
        loader.set_epoch(epoch)
        return np.concatenate([xb for xb, _ in loader])

    assert np.array_equal(run(0, 2), run(3, 2))
    assert not np.array_equal(run(0, 2), run(0, 3))
    plain = DataLoader((x, y), batch_size=8, seed=1)
    plain.set_epoch(2)
    assert not np.array_equal(run(0, 2), np.concatenate([xb for xb, _ in plain]))


def test_transform_and_float_input():
    x, y = arrays(20)
    norm = Normalize("symmetric")
    xb, _ = next(iter(DataLoader((x, y), 20, shuffle=False, transform=norm)))
    assert np.array_equal(xb, norm(x))
    xf = np.random.default_rng(0).random((6, 2, 3, 3))
    xb, _ = next(iter(DataLoader((xf, np.zeros(6, int)), 6, shuffle=False)))
    assert xb.dtype == np.float32 and np.allclose(xb, xf)


def test_prefetch_thread_ends_after_early_break():
    loader = DataLoader(arrays(1000), batch_size=4, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert prefetch_threads() == []


def test_prefetch_thread_ends_after_exception_and_interrupt():
    loader = DataLoader(arrays(1000), batch_size=4, prefetch=2)
    with pytest.raises(RuntimeError, match="boom"):
        for _ in loader:
            raise RuntimeError("boom")
    assert prefetch_threads() == []
    with pytest.raises(KeyboardInterrupt):
        for _ in loader:
            raise KeyboardInterrupt
    assert prefetch_threads() == []
    it = iter(loader)
    next(it)
    it.close()  # an iterator abandoned half-way
    assert prefetch_threads() == []


class SlowDataset:
    """A lazy data set that counts its calls and takes ``delay`` seconds per batch."""

    def __init__(self, n=40, delay=0.0, fail_at=None):
        self.n, self.delay, self.fail_at = n, delay, fail_at
        self.calls = 0

    def __len__(self):
        return self.n

    def load_batch(self, indices):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise ValueError("cannot decode batch")
        time.sleep(self.delay)
        idx = np.asarray(indices)
        return np.zeros((len(idx), 1, 2, 2), np.uint8), idx.astype(np.int64)


def test_lazy_dataset_and_bounded_prefetch():
    data = SlowDataset(n=100)
    loader = DataLoader(data, batch_size=5, prefetch=2)
    it = iter(loader)
    next(it)
    time.sleep(0.3)  # the producer runs ahead, but only until the queue is full
    assert data.calls <= 1 + 2 + 1
    it.close()
    assert prefetch_threads() == []
    assert sorted(epoch_labels(loader).tolist()) == list(range(100))


def test_prefetch_overlaps_loading_with_compute():
    data = SlowDataset(n=40, delay=0.05)
    loader = DataLoader(data, batch_size=4, prefetch=2)  # 10 batches
    start = time.perf_counter()
    for _ in loader:
        time.sleep(0.05)  # the "training step"
    elapsed = time.perf_counter() - start
    assert elapsed < 0.85  # 1.0 s if loading and compute took turns


def test_errors_in_the_thread_reach_the_consumer():
    loader = DataLoader(SlowDataset(fail_at=3), batch_size=4, prefetch=2)
    with pytest.raises(ValueError, match="cannot decode"):
        list(loader)
    assert prefetch_threads() == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_batch_size_must_be_a_positive_int(bad):
    with pytest.raises(ConfigError, match="batch_size"):
        DataLoader(arrays(), batch_size=bad)


def test_bad_data_and_arguments():
    x, y = arrays(10)
    with pytest.raises(ConfigError, match="prefetch"):
        DataLoader((x, y), 2, prefetch=-1)
    with pytest.raises(DataError, match="10"):
        DataLoader((x, y[:9]), 2)
    with pytest.raises(ShapeError, match="4 dimensions"):
        DataLoader((x[:, 0], y), 2)
    with pytest.raises(DTypeError, match="integer"):
        DataLoader((x, y.astype(np.float32)), 2)
    with pytest.raises(DTypeError, match="load_batch"):
        DataLoader("images/", 2)
    with pytest.raises(ConfigError, match="transform"):
        DataLoader((x, y), 2, transform="unit")
    with pytest.raises(ConfigError, match="epoch"):
        DataLoader((x, y), 2).set_epoch(-1)
