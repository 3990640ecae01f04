"""padded_batch and bucket_by_length: padded values, lengths/mask, capacity growth, exactly
once, the same batches for every executor and worker count, resumable mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest

import stoke
from stoke.errors import LayoutError

LENGTHS = [3, 5, 2, 9, 1, 17, 4, 40, 6, 11, 7, 2, 30, 8, 5, 1, 63, 12, 3, 9, 20, 2, 14]


def tokens(length_and_index):
    length, index = length_and_index
    return {"tokens": np.arange(1, length + 1, dtype=np.int32) + 1000 * index,
            "id": np.int32(index)}


def text_pipe():
    return stoke.from_sequence([(n, i) for i, n in enumerate(LENGTHS)]).map(tokens)


def check_padded(batch, pad_value=0):
    """Every row holds its sample's tokens, then pad_value up to the batch's longest."""
    rows = batch["tokens"]
    assert rows.shape[1] == max(LENGTHS[i] for i in batch["id"])
    for row, index in zip(rows, batch["id"].tolist()):
        n = LENGTHS[index]
        np.testing.assert_array_equal(row[:n], np.arange(1, n + 1) + 1000 * index)
        assert (row[n:] == pad_value).all()


@pytest.mark.parametrize("executor,workers", [("inline", 1), ("thread", 2), ("process", 1),
                                              ("process", 2)])
def test_padded_batches_are_the_same_for_every_executor(executor, workers):
    pipe = text_pipe().shuffle(3).padded_batch(4, pad_value=-1, lengths="lengths")
    batches = list(pipe.iter(executor=executor, workers=workers, copy=True))
    reference = list(pipe.iter(executor="inline", copy=True))
    ids = np.concatenate([b["id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(len(LENGTHS)))  # exactly once
    for batch, ref in zip(batches, reference, strict=True):
        check_padded(batch, -1)
        assert batch["tokens_lengths"].tolist() == [LENGTHS[i] for i in batch["id"]]
        np.testing.assert_array_equal(batch["tokens"], ref["tokens"])


def test_the_ring_grows_when_a_sample_is_longer_than_its_capacity():
    # the first sample has 3 tokens (capacity 4); 63 needs four regrowths
    grown = list(text_pipe().padded_batch(5, lengths="mask").iter(executor="process",
                                                                  workers=2, copy=True))
    fixed = list(text_pipe().padded_batch(5, lengths="mask", max_length=64).iter(
        executor="inline", copy=True))
    assert len(grown) == len(fixed) == -(-len(LENGTHS) // 5)
    for a, b in zip(grown, fixed):
        check_padded(a)
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        assert a["tokens_mask"].sum(axis=1).tolist() == [LENGTHS[i] for i in a["id"]]


def test_views_are_cut_to_the_batch_without_copy():
    it = text_pipe().padded_batch(4, max_length=64).iter(executor="thread", workers=1)
    batch = next(it)
    assert batch["tokens"].base is not None and batch["tokens"].shape[1] == 9
    it.close()


def test_a_sample_over_max_length_names_it():
    pipe = text_pipe().padded_batch(4, max_length=16)
    with pytest.raises(LayoutError, match=r"length 17 .*max_length=16"):
        list(pipe.iter(executor="inline"))


def test_a_ragged_sample_without_padded_batch_names_padded_batch():
    with pytest.raises(LayoutError, match="padded_batch"):
        list(text_pipe().batch(4).iter(executor="inline"))


def test_lengths_need_the_padded_array_in_a_dict():
    pipe = stoke.from_sequence([np.arange(n) for n in LENGTHS]).padded_batch(4, lengths="mask")
    with pytest.raises(LayoutError, match="not in a dict"):
        list(pipe.iter(executor="inline"))


def test_tuples_and_extra_axes_pad_the_first_axis_only():
    boxes = [np.full((n, 4), i, np.float32) for i, n in enumerate(LENGTHS)]
    pipe = stoke.from_sequence([(b, np.int32(i)) for i, b in enumerate(boxes)]).padded_batch(
        6, pad_value=-1)
    for x, y in pipe.iter(executor="inline", copy=True):
        assert x.shape == (len(y), max(LENGTHS[i] for i in y), 4)
        for row, i in zip(x, y.tolist()):
            assert (row[:LENGTHS[i]] == i).all() and (row[LENGTHS[i]:] == -1).all()


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_padded_resume_mid_epoch_gives_the_rest(executor):
    pipe = text_pipe().shuffle(1).padded_batch(3).repeat(2)
    full = [b["id"].tolist() for b in pipe.iter(executor="inline", copy=True)]
    it = pipe.iter(executor=executor, workers=2, copy=True)
    head = [next(it)["id"].tolist() for _ in range(5)]
    saved = it.state().to_dict()
    it.close()
    rest = [b["id"].tolist() for b in pipe.iter(executor=executor, workers=2, copy=True,
                                                 state=saved)]
    assert head + rest == full


def test_padded_with_filter():
    pipe = text_pipe().filter(lambda s: int(s["id"]) % 3 != 0).padded_batch(4)
    batches = list(pipe.iter(executor="thread", workers=2, copy=True))
    ids = np.concatenate([b["id"] for b in batches]).tolist()
    assert ids == [i for i in range(len(LENGTHS)) if i % 3]
    for batch in batches:
        check_padded(batch)


# -- bucket_by_length ---------------------------------------------------------------------
BOUNDARIES = [4, 10, 20]
SIZES = [4, 3, 2, 2]


def raw_length(sample):
    return sample[0]


def bucket_of(n):
    return int(np.searchsorted(BOUNDARIES, n, side="right"))


@pytest.mark.parametrize("executor,workers", [("inline", 1), ("thread", 2), ("process", 2)])
def test_buckets_exactly_once_and_deterministic(executor, workers):
    pipe = text_pipe().shuffle(5).bucket_by_length(raw_length, BOUNDARIES, SIZES).repeat(2)
    batches = [b for b in pipe.iter(executor=executor, workers=workers, copy=True)]
    reference = [b["id"].tolist() for b in pipe.iter(executor="inline", copy=True)]
    assert [b["id"].tolist() for b in batches] == reference
    per_epoch = len(batches) // 2
    assert per_epoch == len(text_pipe().bucket_by_length(raw_length, BOUNDARIES, SIZES))
    for epoch in range(2):
        ids = np.concatenate([b["id"] for b in batches[epoch * per_epoch:(epoch + 1) * per_epoch]])
        assert sorted(ids.tolist()) == list(range(len(LENGTHS)))
    for batch in batches:
        check_padded(batch)
        buckets = {bucket_of(LENGTHS[i]) for i in batch["id"]}
        assert len(buckets) == 1  # one bucket per batch
        assert len(batch["id"]) <= SIZES[buckets.pop()]
    assert reference[:per_epoch] != reference[per_epoch:]  # reshuffled each epoch


def test_buckets_resume_mid_epoch():
    pipe = text_pipe().shuffle(2).bucket_by_length(raw_length, BOUNDARIES, SIZES)
    full = [b["id"].tolist() for b in pipe.iter(executor="inline", copy=True)]
    it = pipe.iter(executor="process", workers=2, copy=True)
    head = [next(it)["id"].tolist() for _ in range(3)]
    state = it.state()
    it.close()
    rest = [b["id"].tolist() for b in pipe.iter(executor="thread", workers=2, copy=True,
                                                 state=state.to_dict())]
    assert head + rest == full


def test_bucket_arguments_are_checked():
    with pytest.raises(ValueError, match="one positive batch size per bucket"):
        text_pipe().bucket_by_length(raw_length, [4, 10], [8, 4])
    with pytest.raises(ValueError, match="increasing"):
        text_pipe().bucket_by_length(raw_length, [10, 4], [8, 4, 2])
    with pytest.raises(ValueError, match="cannot follow filter"):
        text_pipe().filter(lambda s: True).bucket_by_length(raw_length, [4], [8, 4])


def float_after_first(i):
    return np.arange(LENGTHS[i], dtype=np.int32 if i == 0 else np.float32)


def test_a_dtype_that_would_be_cut_is_refused():
    pipe = stoke.from_sequence(list(range(len(LENGTHS)))).map(float_after_first).padded_batch(4)
    with pytest.raises(LayoutError, match="dtype float32, but sample 0 has int32"):
        list(pipe.iter(executor="inline"))


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_pad_to_multiple_of_rounds_the_width_up(executor):
    pipe = text_pipe().padded_batch(4, pad_value=-1, lengths="mask", pad_to_multiple_of=8)
    for batch in pipe.iter(executor=executor, workers=2, copy=True):
        longest = max(LENGTHS[i] for i in batch["id"])
        width = batch["tokens"].shape[1]
        assert width % 8 == 0 and longest <= width < longest + 8
        for row, index in zip(batch["tokens"], batch["id"].tolist()):
            assert (row[LENGTHS[index]:] == -1).all()
        assert batch["tokens_mask"].shape == batch["tokens"].shape


def test_lengths_of_a_large_source_come_from_worker_processes(monkeypatch):
    import stoke.data.buckets

    computed_in_workers = []
    original = stoke.data.buckets.LengthTable._compute_in_workers

    def spy(self, source):
        computed_in_workers.append(len(source))
        return original(self, source)

    monkeypatch.setattr(stoke.data.buckets.LengthTable, "_compute_in_workers", spy)
    monkeypatch.setattr(stoke.data.buckets, "PARALLEL_FROM", 10)
    pipe = text_pipe().shuffle(5).bucket_by_length(raw_length, BOUNDARIES, SIZES)
    len(pipe)  # the lengths are computed now, once
    assert computed_in_workers == [len(LENGTHS)]
    monkeypatch.setattr(stoke.data.buckets, "PARALLEL_FROM", 10**9)
    serial = text_pipe().shuffle(5).bucket_by_length(raw_length, BOUNDARIES, SIZES)
    assert [b["id"].tolist() for b in pipe.iter(executor="inline", copy=True)] == \
        [b["id"].tolist() for b in serial.iter(executor="inline", copy=True)]


@pytest.mark.parametrize("batching", ["padded_batch", "batch"])
def test_token_lists_of_different_lengths_name_the_field_and_the_fix(batching):
    # rows as a Hugging Face dataset gives them (python lists of token ids): a list is a
    # structure, so rows of other lengths differ in structure; the error must say where and
    # what to write, whichever sample comes first
    rows = [{"input_ids": list(range(1, 2 + i % 4)), "label": i % 3} for i in range(8)]
    pipe = getattr(stoke.from_sequence(rows), batching)(4)
    with pytest.raises(LayoutError) as caught:
        list(pipe.iter(executor="inline"))
    message = str(caught.value)
    assert "['input_ids']" in message, message
    assert "list of 2 items" in message and "list of 1 items" in message, message
    assert "np.asarray" in message, message
