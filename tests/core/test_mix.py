"""stoke.data.mix: exact weighted shares, exactly once within each source's epoch, the same
order for every executor and worker count, resumable mid-epoch, each source's own rng."""

from __future__ import annotations

import numpy as np
import pytest

import stoke

A, B, C = 10, 4, 25  # source sizes; sample values: 0.., 1000.., 2000..


def source(k, n):
    return stoke.from_arrays(np.arange(n, dtype=np.int64) + 1000 * k)


def with_noise(sample, rng):
    return np.array([sample, int(rng.integers(0, 1 << 30))], np.int64)


def pipes():
    return [source(0, A).shuffle(1).map(with_noise), source(1, B).shuffle(2).map(with_noise),
            source(2, C).map(with_noise)]


def values(batches):
    return np.concatenate([b[:, 0] for b in batches]).tolist()


def mixed(**kwargs):
    return stoke.mix(pipes(), weights=[0.5, 0.2, 0.3], seed=7, **kwargs)


def test_shares_are_exact_and_each_source_is_exactly_once_per_its_epoch():
    pipe = mixed(samples_per_epoch=40).batch(8).repeat(5)
    got = values(pipe.iter(executor="inline", copy=True))
    assert len(got) == 200
    for epoch in range(5):
        part = got[epoch * 40:(epoch + 1) * 40]
        assert [sum(v // 1000 == k for v in part) for k in range(3)] == [20, 8, 12]
    for k, n in enumerate((A, B, C)):
        stream = [v - 1000 * k for v in got if v // 1000 == k]
        whole = len(stream) // n
        for e in range(whole):
            assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))  # its own epochs
        assert len(set(stream[whole * n:])) == len(stream[whole * n:])
    # a shuffled source is reshuffled in each of its epochs; the unshuffled one is in order
    a = [v for v in got if v // 1000 == 0]
    assert a[:A] != a[A:2 * A]
    assert [v for v in got if v // 1000 == 2][:C] == list(range(2000, 2000 + C))


@pytest.mark.parametrize("executor,workers", [("thread", 2), ("process", 1), ("process", 2)])
def test_the_same_mix_for_every_executor_and_worker_count(executor, workers):
    pipe = mixed().batch(6).repeat(2)
    reference = [b.copy() for b in pipe.iter(executor="inline", copy=True)]
    got = [b.copy() for b in pipe.iter(executor=executor, workers=workers, copy=True)]
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)  # samples and their per-source rng draws


def test_mix_resumes_mid_epoch():
    pipe = mixed().batch(5)
    for epoch in (0, 3):  # mix epoch 3 starts mid-way through the sources' epochs
        full = values(pipe.iter(executor="inline", copy=True, epoch=epoch))
        it = pipe.iter(executor="process", workers=2, copy=True, epoch=epoch)
        head = values([next(it) for _ in range(4)])
        state = it.state()
        it.close()
        rest = values(pipe.iter(executor="thread", workers=2, copy=True,
                                state=state.to_dict()))
        assert head + rest == full


def test_another_seed_is_another_order_and_a_state_from_another_mix_is_refused():
    one = values(mixed().batch(8).iter(executor="inline", copy=True))
    other_pipe = stoke.mix(pipes(), weights=[0.5, 0.2, 0.3], seed=8).batch(8)
    assert values(other_pipe.iter(executor="inline", copy=True)) != one
    it = stoke.mix(pipes(), weights=[0.6, 0.1, 0.3], seed=7).batch(8).iter(executor="inline")
    next(it)
    with pytest.raises(ValueError, match="different pipeline"):
        mixed().batch(8).iter(executor="inline", state=it.state())
    it.close()


def test_filters_inside_mixed_pipelines_apply():
    odd = source(0, A).filter(lambda s: int(s) % 2 == 1)
    pipe = stoke.mix([odd, source(1, B)], weights=[1, 1], seed=0).batch(4)
    got = np.concatenate(list(pipe.iter(executor="process", workers=2, copy=True))).tolist()
    assert all(v % 2 == 1 for v in got if v < 1000)
    a = [v for v in got if v < 1000]
    b = [v for v in got if v >= 1000]
    assert len(set(a)) == len(a) and 0 < len(a) <= 7  # 7 draws, the even ones dropped
    assert len(b) == 7 and sorted(b[:4]) == [1000, 1001, 1002, 1003]
    assert len(set(b[4:])) == 3


def test_mix_arguments_are_checked():
    with pytest.raises(ValueError, match="one non-negative weight per pipeline"):
        stoke.mix(pipes(), weights=[1, 2])
    with pytest.raises(ValueError, match="already batched"):
        stoke.mix([source(0, A).batch(2)])
    with pytest.raises(ValueError, match="at least one"):
        stoke.mix([])
    with pytest.raises(ValueError, match="a mix itself"):
        stoke.mix([mixed(), source(0, A)])
    with pytest.raises(ValueError, match="cache the pipelines before mixing"):
        mixed().cache()
