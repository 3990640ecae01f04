"""Shard-based sources with more files than are indexed up front (``index="lazy"``): the
first batch needs only the shards it reads (a 1,000,000-name brace pattern of which a few
files exist), what reaches the workers does not grow with the number of shards, and the
guarantees of the shard order hold: exactly once, the same order for every executor and
worker count, resumable mid-shard, whole files per host, bad records named and counted."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import stoke
from stoke.data.formats.tfrecord import write_tfrecord
from stoke.data.shard_plan import RECORD_BITS
from stoke.executors.payload import pack
from tests.core.formats_helpers import raw_id, record_bytes, write_webdataset

SIZES = [9, 14, 3, 0, 11, 7, 12]
TOTAL = sum(SIZES)


def write_shards(folder, sizes, stem="part", width=3) -> list[str]:
    paths, start = [], 0
    for shard, size in enumerate(sizes):
        path = str(folder / f"{stem}-{shard:0{width}d}.tfrecord")
        write_tfrecord(path, [record_bytes(i) for i in range(start, start + size)])
        paths.append(path)
        start += size
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    return write_shards(tmp_path_factory.mktemp("lazy"), SIZES)


def ids_of(pipe, **options) -> list[int]:
    return [int(i) for batch in pipe.iter(**options) for i in batch]


def test_million_name_pattern_reads_its_first_batches_without_listing(tmp_path):
    write_shards(tmp_path, [5] * 40, stem="train", width=6)  # train-000000..000039 exist
    pipe = stoke.from_tfrecord(str(tmp_path / "train-{000000..999999}.tfrecord")).map(
        raw_id).batch(6)
    assert pipe.source.lazy and len(pipe.source.paths) == 1_000_000
    assert len(pack(pipe.program).data) < 20_000  # the pattern travels, not a list
    with pytest.raises(TypeError, match="indexed lazily"):
        len(pipe)
    with pipe.iter(executor="process", workers=2, ring_slots=4) as it:
        got = [int(i) for _ in range(3) for i in next(it)]
    assert got == list(range(18))  # unshuffled: shard after shard, in file order
    assert pipe.source.indexed_shards() <= 20  # what the batches in flight read


def test_glob_of_many_files_ships_a_fixed_size_and_indexes_few(tmp_path):
    sizes, indexed = {}, {}
    for count in (1_500, 20_000):
        folder = tmp_path / str(count)
        folder.mkdir()
        for shard in range(count):
            write_tfrecord(str(folder / f"s-{shard:05d}.tfrecord"), [record_bytes(shard)])
        pipe = stoke.from_tfrecord(str(folder / "s-*.tfrecord"), cycle_length=8,
                                   buffer_size=16).shuffle(3).map(raw_id).batch(4)
        assert pipe.source.lazy  # past 1,024 files
        packed = pack(pipe.program)
        sizes[count] = len(packed.data)
        packed.close()
        with pipe.iter(executor="process", workers=2) as it:
            batch = next(it)
        assert len(set(batch.tolist())) == 4
        # the shuffle window (16 one-record files), the chunks in flight, the look-ahead
        indexed[count] = pipe.source.indexed_shards()
    assert max(indexed.values()) < 150, indexed
    # 20,000 paths travel as one shared-memory buffer (a list under 1 MiB is pickled in band)
    assert sizes[20_000] < 20_000 < sizes[1_500], sizes


@pytest.mark.parametrize("shuffle", [False, True])
def test_exactly_once_and_same_order_for_every_executor(files, shuffle):
    pipe = stoke.from_tfrecord(files, index="lazy", cycle_length=3, buffer_size=10).map(
        raw_id).batch(5)
    if shuffle:
        pipe = pipe.shuffle(seed=8)
    reference = ids_of(pipe, executor="inline")
    assert sorted(reference) == list(range(TOTAL))
    if not shuffle:
        assert reference == list(range(TOTAL))
    for executor, workers in (("thread", 2), ("process", 1), ("process", 2)):
        assert ids_of(pipe, executor=executor, workers=workers) == reference, (executor, workers)


def test_epochs_differ_and_resume_mid_shard(files):
    pipe = stoke.from_tfrecord(files, index="lazy", cycle_length=2, buffer_size=8).shuffle(
        5).map(raw_id).batch(4).repeat(2)
    full = ids_of(pipe, executor="inline")
    assert len(full) == 2 * TOTAL and full[:TOTAL] != full[TOTAL:]
    assert sorted(full[:TOTAL]) == sorted(full[TOTAL:]) == list(range(TOTAL))
    it = pipe.iter(executor="process", workers=2)
    head = [int(i) for _ in range(5) for i in next(it)]
    saved = json.loads(json.dumps(it.state().to_dict()))
    it.close()
    assert head + ids_of(pipe, executor="thread", workers=2, state=saved) == full


def test_hosts_get_whole_files(files):
    base = stoke.from_tfrecord(files, index="lazy", cycle_length=2).shuffle(1).map(
        raw_id).batch(3)
    starts = np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    seen = []
    for host in range(3):
        ids = ids_of(base.shard(host, 3), executor="inline")
        shards = {int(np.searchsorted(starts, i, side="right")) - 1 for i in ids}
        assert shards <= set(range(host, len(SIZES), 3))
        seen += ids
    assert sorted(seen) == list(range(TOTAL))


def test_keys_address_shard_and_record(files):
    source = stoke.from_tfrecord(files, index="lazy").source
    key = (4 << RECORD_BITS) | 2
    assert int(raw_id(source[key])) == sum(SIZES[:4]) + 2
    with pytest.raises(IndexError, match="record 11 of 11"):
        source[(4 << RECORD_BITS) | 11]


def bucket_length(record) -> int:
    return int(raw_id(record)) % 5  # length_fn gets the record, before the map


def test_lazy_source_says_what_needs_eager(files):
    """Whatever needs the number of records says why a lazy source has none yet and the
    call to write instead; written so, each works."""
    pipe = stoke.from_tfrecord(files, index="lazy").map(raw_id)
    needs_length = {
        "len": lambda p: len(p),
        "cache": lambda p: p.cache(),
        "mix": lambda p: stoke.mix([p, p], seed=0),
        "bucket_by_length": lambda p: list(p.bucket_by_length(
            bucket_length, boundaries=[2], batch_sizes=[4, 2]).iter(executor="inline")),
    }
    for name, needs in needs_length.items():
        with pytest.raises(TypeError) as info:
            needs(pipe)
        message = str(info.value)
        assert "TFRecord of 7 shards is indexed lazily" in message, name
        assert "stoke.from_tfrecord(..., index='eager')" in message, name
    eager = stoke.from_tfrecord(files, index="eager").map(raw_id)
    for needs in needs_length.values():
        needs(eager)
    with pytest.raises(ValueError, match='index must be "auto", "eager" or "lazy"'):
        stoke.from_tfrecord(files, index="later")


def test_webdataset_lazy(tmp_path):
    write_webdataset(tmp_path, [4, 6, 5])
    from tests.core.formats_helpers import sample_id

    pipe = stoke.from_webdataset(str(tmp_path / "shard-{000..002}.tar"), index="lazy").shuffle(
        2).map(sample_id).batch(4)
    assert sorted(ids_of(pipe, executor="process", workers=2)) == list(range(15))


def test_bad_record_in_a_lazy_shard_is_named_and_skipped_once(tmp_path):
    paths = write_shards(tmp_path, [4, 4])
    with open(paths[1], "r+b") as f:  # cut the last record of the second file short
        f.truncate(f.seek(0, 2) - 3)
    pipe = stoke.from_tfrecord(paths, index="lazy").map(raw_id).batch(3)
    with pytest.raises(stoke.StokeError, match=r"part-001.tfrecord: record 3 at byte offset"):
        ids_of(pipe, executor="inline")
    skipping = stoke.from_tfrecord(paths, index="lazy", on_error="skip").map(raw_id).batch(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ids_of(skipping, executor="process", workers=2) == [0, 1, 2, 3, 4, 5, 6]
    assert len([w for w in caught if "skipped a bad record" in str(w.message)]) == 1


def test_resume_inside_fit_counts_a_lazy_epoch(files):
    """keras/resume.py asks whether a saved state is at the end of its epoch."""
    from stoke.keras.resume import next_epoch_start

    pipe = stoke.from_tfrecord(files, index="lazy").shuffle(1).map(raw_id).batch(4)
    loader = pipe.loader(executor="inline")
    try:
        batches = -(-TOTAL // 4)
        assert loader.plan.chunk_count(0) == batches
        at_end = stoke.IteratorState(epoch=0, chunk=batches)
        assert next_epoch_start(at_end, loader).epoch == 1
        inside = stoke.IteratorState(epoch=0, chunk=batches - 1)
        assert next_epoch_start(inside, loader) == inside
    finally:
        loader.close()


@pytest.mark.parametrize("executor,workers", [("inline", 1), ("process", 2)])
def test_failing_sample_is_named_by_file_and_record(files, executor, workers):
    """A lazy source's sample key is ``(shard << 32) | record``: the error names the file
    and the record instead (id 9 is record 0 of the second file)."""
    import functools

    from tests.core.formats_helpers import raw_id_failing_at

    fails = functools.partial(raw_id_failing_at, bad=9)
    lazy = stoke.from_tfrecord(files, index="lazy").map(fails).batch(4)
    with pytest.raises(stoke.SampleError) as info:
        ids_of(lazy, executor=executor, workers=workers)
    message = str(info.value)
    assert message.startswith("sample at record 0 of ") and files[1] in message.splitlines()[0]
    assert "id 9 is bad" in message and str(1 << RECORD_BITS) not in message
    assert info.value.index == 1 << RECORD_BITS  # the key stays in the error's fields
    eager = stoke.from_tfrecord(files, index="eager").map(fails).batch(4)
    with pytest.raises(stoke.SampleError, match=r"^sample 9 \(record 0 of .*part-001\.tfrecord\)"):
        ids_of(eager, executor=executor, workers=workers)


def test_empty_lazy_feed_says_how_many_samples_its_shards_hold(tmp_path, files):
    """A lazy source's length is -1 before an epoch is read; the empty-feed message of
    ``to_keras`` counts its samples instead (the empty epoch indexed every shard)."""
    from stoke.keras.adapter import empty_feed_message

    empty = stoke.from_tfrecord(write_shards(tmp_path, [0, 0, 0]), index="lazy").map(
        raw_id).batch(2)
    assert ids_of(empty, executor="inline") == []
    message = empty_feed_message(empty)
    assert "-1" not in message
    assert "3 shard(s) read here, indexed lazily, hold 0 sample(s)" in message
    filtered = stoke.from_tfrecord(files, index="lazy").map(raw_id).filter(
        np.isnan).batch(2)  # ids are never NaN: every sample is filtered out
    assert ids_of(filtered, executor="inline") == []
    message = empty_feed_message(filtered)
    assert f"hold {TOTAL} sample(s)" in message and "filters may have removed" in message
