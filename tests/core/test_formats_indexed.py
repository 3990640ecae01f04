"""Indexed formats: Parquet (pyarrow's writer), ArrayRecord (array_record's writer) and
WebDataset tar shards (tarfile). Parquet and ArrayRecord keep the global permutation;
tar shards get the shard-based order. Every sample exactly once, the same order for every
executor and worker count, resumable; a missing column names the columns that exist."""

from __future__ import annotations

import os
import re
import tarfile

import numpy as np
import pytest

import stoke
from tests.core.formats_helpers import raw_id, record_bytes, sample_id, write_webdataset

EXECUTORS = (("inline", 1), ("thread", 2), ("process", 1), ("process", 3))


def ids_of(pipe, **options) -> list[int]:
    return [int(i) for batch in pipe.iter(**options) for i in batch]


def check_executors(pipe, total: int) -> list[int]:
    reference = ids_of(pipe, executor="inline")
    assert sorted(reference) == list(range(total))
    for executor, workers in EXECUTORS[1:]:
        assert ids_of(pipe, executor=executor, workers=workers) == reference, (executor, workers)
    return reference


# -- Parquet --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("parquet")
    paths, start = [], 0
    for file, rows in enumerate([45, 30]):
        ids = np.arange(start, start + rows)
        table = pa.table({"id": ids, "label": ids % 7,
                          "blob": [record_bytes(int(i)) for i in ids],
                          "vec": [np.full(3, i, np.float32) for i in ids]})
        path = str(folder / f"part-{file}.parquet")
        pq.write_table(table, path, row_group_size=10)
        paths.append(path)
        start += rows
    return paths


def test_parquet_rows_with_columns(parquet_files):
    import os

    pipe = stoke.from_parquet(os.path.dirname(parquet_files[0]) + "/*.parquet",
                              columns=["id", "blob", "vec"])
    assert len(pipe) == 75
    row = pipe.source[47]
    assert set(row) == {"id", "blob", "vec"}
    assert int(row["id"]) == 47 and row["blob"] == record_bytes(47)
    np.testing.assert_array_equal(row["vec"], np.full(3, 47, np.float32))
    assert pipe.source.locate(47) == (1, 0, 2)  # file 1, row group 0, row 2: from metadata


def test_parquet_exactly_once_across_executors(parquet_files):
    pipe = stoke.from_parquet(parquet_files, columns=["id"]).shuffle(2).map(sample_id).batch(8)
    reference = check_executors(pipe, 75)
    it = pipe.iter(executor="process", workers=2)
    head = [int(i) for _ in range(3) for i in next(it)]
    state = it.state()
    it.close()
    assert head + ids_of(pipe, executor="thread", workers=2, state=state) == reference


def test_parquet_missing_column_names_the_columns_that_exist(parquet_files):
    with pytest.raises(KeyError) as info:
        stoke.from_parquet(parquet_files, columns=["id", "image"])
    message = str(info.value)
    assert "['image']" in message and "'blob'" in message and "'label'" in message


def test_parquet_not_a_parquet_file(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"nope" * 100)
    with pytest.raises(stoke.RecordError, match=r"x\.parquet: not a readable Parquet file"):
        stoke.from_parquet(str(path))


# -- ArrayRecord ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def array_record_files(tmp_path_factory) -> list[str]:
    from array_record.python.array_record_module import ArrayRecordWriter

    folder = tmp_path_factory.mktemp("array_record")
    paths, start = [], 0
    for file, rows in enumerate([33, 40, 7]):
        path = str(folder / f"data-{file}.array_record")
        writer = ArrayRecordWriter(path, "group_size:1")
        for i in range(start, start + rows):
            writer.write(record_bytes(i))
        writer.close()
        paths.append(path)
        start += rows
    return paths


def test_array_record_exactly_once_across_executors(array_record_files):
    import os

    pipe = stoke.from_array_record(os.path.dirname(array_record_files[0]) + "/*.array_record")
    assert len(pipe) == 80 and pipe.source[35] == record_bytes(35)
    check_executors(pipe.shuffle(5).map(raw_id).batch(9), 80)


def test_array_record_bad_file_is_named(tmp_path):
    path = tmp_path / "bad.array_record"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(stoke.RecordError, match=r"bad\.array_record: not a readable ArrayRecord"):
        stoke.from_array_record(str(path))


def test_array_record_corrupt_record_names_file_record_and_offset(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    path = str(tmp_path / "hurt.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    for i in range(20):
        writer.write(record_bytes(i, 100))
    writer.close()
    with open(path, "r+b") as f:  # damage a chunk of an early record
        f.seek(300)
        data = f.read(20)
        f.seek(300)
        f.write(bytes(b ^ 0xFF for b in data))
    pipe = stoke.from_array_record(path).map(raw_id).batch(4)
    with pytest.raises(stoke.SampleError) as info:
        ids_of(pipe, executor="process", workers=2)
    assert re.search(r"hurt\.array_record: record \d+ at byte offset \d+ \(its chunk\)",
                     str(info.value)), str(info.value)


def test_array_record_remote_files_are_copied_once_to_the_cache(array_record_files, tmp_path):
    from tests.core.formats_helpers import RangeServer

    folder = os.path.dirname(array_record_files[0])
    cache = tmp_path / "cache"
    local = stoke.from_array_record(array_record_files).shuffle(5).map(raw_id).batch(9)
    with RangeServer(folder) as url:
        urls = [f"{url}/{os.path.basename(p)}" for p in array_record_files]
        remote = stoke.from_array_record(urls, cache_dir=str(cache)).shuffle(5).map(
            raw_id).batch(9)
        assert len(remote) == len(local) and len(os.listdir(cache)) == 3
        assert ids_of(remote, executor="process", workers=2) == ids_of(local, executor="inline")
        again = stoke.from_array_record(urls, cache_dir=str(cache))  # the copies are reused
        assert again.source.local_paths == remote.source.local_paths
        with pytest.raises(stoke.RecordError, match=f"could not read {url}/absent.array_record"):
            stoke.from_array_record([f"{url}/absent.array_record"], cache_dir=str(cache))
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(p)
                                               for p in remote.source.local_paths)


# -- WebDataset -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tar_files(tmp_path_factory) -> list[str]:
    return write_webdataset(tmp_path_factory.mktemp("wds"), [12, 30, 5, 19])


def test_webdataset_samples_with_brace_pattern(tar_files):
    import os

    pattern = os.path.dirname(tar_files[0]) + "/shard-{000..003}.tar"
    pipe = stoke.from_webdataset(pattern)
    assert len(pipe.source.paths) == 4 and list(pipe.source.paths) == tar_files
    sample = pipe.source[13]
    assert sample["__key__"] == "part/000013" and sample["__url__"] == tar_files[1]
    assert sample["id"] == b"13" and sample["bin"] == record_bytes(13, 50 + 13)
    assert sample["json"] == b'{"i": 13}'


def test_webdataset_exactly_once_across_executors_and_resume(tar_files):
    pipe = stoke.from_webdataset(tar_files, cycle_length=2, buffer_size=10).shuffle(3).map(
        sample_id).batch(7)
    reference = check_executors(pipe, 66)
    it = pipe.iter(executor="process", workers=2)
    head = [int(i) for _ in range(4) for i in next(it)]
    state = it.state().to_dict()
    it.close()
    assert head + ids_of(pipe, executor="inline", state=state) == reference


def test_webdataset_truncated_shard_is_named(tmp_path):
    [path] = write_webdataset(tmp_path, [8])
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    cut = members[13].offset_data + 2  # inside the data of sample 4's second member
    with open(path, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(stoke.RecordError) as info:
        len(stoke.from_webdataset(path))
    message = str(info.value)
    assert path in message and "sample 4" in message and "byte offset" in message


def test_brace_pattern_is_lazy():
    from stoke.data.formats.remote import BracePaths

    paths = BracePaths("gs://b/shard-{000000..999999}.tar")
    assert len(paths) == 1_000_000
    assert paths[0] == "gs://b/shard-000000.tar" and paths[-1] == "gs://b/shard-999999.tar"
    both = BracePaths("/d/{train,val}-{0..2}.rec")
    assert list(both) == [f"/d/{s}-{i}.rec" for s in ("train", "val") for i in range(3)]
    import pickle

    assert len(pickle.dumps(paths)) < 1000  # the pattern travels, never the list
    built = [paths[i] for i in range(0, 1_000_000, 97)]  # kept once built, up to a bound
    assert built[1] == "gs://b/shard-000097.tar" == paths[97]
    assert len(pickle.dumps(paths)) < 1000  # ... and never travel
    assert pickle.loads(pickle.dumps(paths))[-1] == "gs://b/shard-999999.tar"


# -- any len/[i] object keeps the global permutation ------------------------------------------
def test_grain_map_dataset_through_from_sequence(array_record_files):
    grain = pytest.importorskip("grain")
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    dataset = grain.MapDataset.source(ArrayRecordDataSource(array_record_files)).map(raw_id)
    check_executors(stoke.from_sequence(dataset).shuffle(6).batch(9), 80)
