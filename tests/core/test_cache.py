"""cache(): the steps before it run once per sample, whatever the executor; later epochs and
later iterations read the cache; maps after it keep their per-sample rng; read-only; the
budget is enforced before memory fills; a cache at a path is kept for the next run."""

from __future__ import annotations

import os

import numpy as np
import pytest

import stoke
from stoke.data.cache import CacheFullError
from stoke.errors import SampleError

N = 40


class CountingDecode:
    """Appends the index to a file at each call (O_APPEND: one line per call, from any
    process), then makes a sample larger than its input, like a decoder."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def __call__(self, sample):
        x, y = sample
        with open(self.log_path, "a") as f:
            f.write(f"{int(y)}\n")
        return np.full((8, 8), x, np.float32), y


def calls(log_path) -> list[int]:
    if not os.path.exists(log_path):
        return []
    with open(log_path) as f:
        return [int(line) for line in f]


def add_noise(sample, rng):
    image, y = sample
    return image + np.float32(rng.random()), y


def make_pipe(log_path, **cache_options):
    return (stoke.from_arrays(np.arange(N, dtype=np.float32), np.arange(N))
            .map(CountingDecode(str(log_path))).cache(**cache_options)
            .shuffle(4).map(add_noise).batch(8))


def epoch_values(loader, epoch):
    return [(x.copy(), y.copy()) for x, y in loader.iter(epoch=epoch)]


@pytest.mark.parametrize("executor,workers", [("inline", 1), ("thread", 2), ("process", 2)])
def test_steps_before_cache_run_once_and_maps_after_keep_their_rng(tmp_path, executor, workers):
    log = tmp_path / "calls.txt"
    pipe = make_pipe(log)
    with pipe.loader(workers=workers, executor=executor) as loader:
        epochs = [epoch_values(loader, e) for e in range(3)]
    assert sorted(calls(log)) == list(range(N))  # each sample computed once in 3 epochs
    # the same as the pipeline without cache (pre-cache steps use epoch 0's rng: none here)
    plain = (stoke.from_arrays(np.arange(N, dtype=np.float32), np.arange(N))
             .map(CountingDecode(str(tmp_path / "plain.txt"))).shuffle(4).map(add_noise)
             .batch(8))
    for batches in epochs:
        ys = np.concatenate([y for _, y in batches])
        assert sorted(ys.tolist()) == list(range(N))
        for x, y in batches:
            base = np.floor(x[:, 0, 0])
            np.testing.assert_array_equal(base, y.astype(np.float32))
            noise = x[:, 0, 0] - base
            assert (x == x[:, :1, :1]).all()
            assert 0 <= noise.min() and noise.max() < 1
    # fresh noise each epoch (rng depends on the epoch), from the cached samples
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])
    # deterministic: the same pipeline without cache, inline, delivers the same values
    reference = [(x.copy(), y.copy()) for x, y in plain.iter(executor="inline", epoch=1)]
    for (x, y), (rx, ry) in zip(epochs[1], reference, strict=True):
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_allclose(x, rx)


def test_a_later_iter_reads_the_cache(tmp_path):
    log = tmp_path / "calls.txt"
    pipe = make_pipe(log)
    list(pipe.iter(executor="process", workers=2))
    list(pipe.iter(executor="thread", workers=2, epoch=5))
    assert sorted(calls(log)) == list(range(N))
    assert pipe.source.store.stored() == N


def test_an_interrupted_first_epoch_computes_only_what_is_missing(tmp_path):
    log = tmp_path / "calls.txt"
    pipe = make_pipe(log)
    it = pipe.iter(executor="inline")
    next(it)
    it.close()
    list(pipe.iter(executor="process", workers=2))
    assert sorted(calls(log)) == list(range(N))


def mutate(sample):
    image, y = sample
    image += 1
    return image, y


def test_cached_arrays_are_read_only(tmp_path):
    pipe = (stoke.from_arrays(np.arange(N, dtype=np.float32), np.arange(N))
            .map(CountingDecode(str(tmp_path / "c.txt"))).cache().map(mutate).batch(8))
    with pytest.raises(SampleError, match="read-only"):
        list(pipe.iter(executor="inline"))


def big(sample):
    return np.zeros(64 * 1024, np.uint8) + np.uint8(sample % 200)


def test_a_cache_that_will_not_fit_says_so_before_filling_memory():
    pipe = stoke.from_sequence(list(range(10_000))).map(big).cache(
        memory_budget_bytes=8 << 20).batch(16)
    with pytest.raises(SampleError, match=r"CacheFullError: cache\(\) will not fit.*budget"):
        list(pipe.iter(executor="process", workers=2))
    assert pipe.source.store.stored() < 64  # stopped after the projection, not at the limit


def test_the_store_itself_raises_cache_full_error():
    pipe = stoke.from_sequence(list(range(10_000))).map(big).cache(memory_budget_bytes=8 << 20)
    with pytest.raises(CacheFullError, match="GiB"):
        for i in range(100):
            pipe.source[i]


def test_a_cache_at_a_path_is_kept_for_the_next_run(tmp_path):
    log = tmp_path / "calls.txt"
    path = tmp_path / "decoded.cache"
    list(make_pipe(log, path=str(path), memory_budget_bytes=1 << 24).iter(
        executor="process", workers=2))
    assert sorted(calls(log)) == list(range(N))
    again = make_pipe(log, path=str(path), memory_budget_bytes=1 << 24)  # a new run
    list(again.iter(executor="thread", workers=2))
    assert len(calls(log)) == N  # nothing computed again
    other = (stoke.from_arrays(np.arange(N + 1, dtype=np.float32), np.arange(N + 1))
             .map(CountingDecode(str(log))))
    with pytest.raises(stoke.StokeError, match="different pipeline"):
        other.cache(path=str(path))


def test_filter_before_cache_stays_applied(tmp_path):
    log = tmp_path / "calls.txt"
    pipe = (stoke.from_arrays(np.arange(N, dtype=np.float32), np.arange(N))
            .map(CountingDecode(str(log))).filter(lambda s: int(s[1]) % 2 == 0).cache()
            .batch(6))
    for epoch in range(2):
        ys = np.concatenate([y for _, y in pipe.iter(executor="process", workers=2,
                                                     epoch=epoch, copy=True)])
        assert ys.tolist() == list(range(0, N, 2))
    assert sorted(calls(log)) == list(range(N))


def test_cache_must_come_before_batch():
    with pytest.raises(ValueError, match="before .batch"):
        stoke.from_sequence([1, 2]).batch(2).cache()


def test_the_cache_epochs_benchmark_runs_in_quick_mode(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "cache_epochs.json"
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "cache_epochs.py"),
                           "--quick", "--after", "uint8", "--workers", "1", "--out", str(out)],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["schema"] == "stoke.bench.cache_epochs/1" and result["quick"]
    assert set(result["rows"]) == {"cached-uint8", "uncached-uint8"}
    assert all(r > 0 for row in result["rows"].values() for r in row["images_per_s"])
    assert result["epoch2_over_epoch1"]["uint8"] > 0
