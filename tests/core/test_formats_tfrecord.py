"""TFRecord files written by TensorFlow's own writer, read by stoke with no TensorFlow:
every record exactly once, the same order for every executor and worker count, resumable
mid-shard, split across hosts by whole files, and bad records named by file, record number
and byte offset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.data.formats.tfrecord import write_tfrecord
from tests.core.formats_helpers import example_id, raw_id, record_bytes, write_tfrecords_with_tf

REPO = Path(__file__).resolve().parents[2]
SIZES = [37, 50, 13, 64, 21]
TOTAL = sum(SIZES)


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory) -> list[str]:
    return write_tfrecords_with_tf(tmp_path_factory.mktemp("tfrecords"), SIZES)


def ids_of(pipe, **options) -> list[int]:
    return [int(i) for batch in pipe.iter(**options) for i in batch]


def test_reads_tensorflow_files_without_importing_tensorflow(tf_files):
    folder = os.path.dirname(tf_files[0])
    code = (
        "import sys, stoke\n"
        f"pipe = stoke.from_tfrecord({folder!r} + '/train-*.tfrecord')\n"
        "ids = sorted(int(stoke.parse_example(r)['id'][0]) for r in pipe.source)\n"
        f"assert ids == list(range({TOTAL})), ids\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok', len(pipe))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", str(TOTAL)]


def test_parse_example_matches_tensorflow(tf_files):
    """stoke.parse_example against tf.io.parse_single_example on the same records."""
    pipe = stoke.from_tfrecord(tf_files)
    ours = {}
    for record in pipe.source:
        parsed = stoke.parse_example(record)
        ours[int(parsed["id"][0])] = parsed
    code = r"""
import json, sys
import tensorflow as tf
spec = {"id": tf.io.FixedLenFeature([1], tf.int64), "label": tf.io.FixedLenFeature([2], tf.int64),
        "x": tf.io.VarLenFeature(tf.float32), "image": tf.io.FixedLenFeature([2], tf.string)}
out = {}
for record in tf.data.TFRecordDataset(json.loads(sys.argv[1])):
    p = tf.io.parse_single_example(record, spec)
    out[int(p["id"][0])] = {"label": p["label"].numpy().tolist(),
                            "x": tf.sparse.to_dense(p["x"]).numpy().tolist(),
                            "image": [b.hex() for b in p["image"].numpy()]}
print(json.dumps(out))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(tf_files)], capture_output=True,
                          text=True, env=env, timeout=300, check=True)
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(theirs) == len(ours) == TOTAL
    for key, expected in theirs.items():
        got = ours[int(key)]
        assert got["label"].dtype == np.int64 and got["label"].tolist() == expected["label"]
        assert got["x"].dtype == np.float32
        np.testing.assert_array_equal(got["x"], np.array(expected["x"], np.float32))
        assert got["image"].dtype == object
        assert [b.hex() for b in got["image"]] == expected["image"]


@pytest.mark.parametrize("shuffle", [False, True])
def test_exactly_once_and_same_order_for_every_executor(tf_files, shuffle):
    pipe = stoke.from_tfrecord(tf_files, cycle_length=3, buffer_size=20).map(example_id).batch(8)
    if shuffle:
        pipe = pipe.shuffle(seed=4)
    reference = ids_of(pipe, executor="inline")
    assert sorted(reference) == list(range(TOTAL))
    if not shuffle:
        assert reference == list(range(TOTAL))  # file order, shard after shard
    for executor, workers in (("thread", 1), ("thread", 3), ("process", 1), ("process", 3)):
        assert ids_of(pipe, executor=executor, workers=workers) == reference, (executor, workers)


def test_epochs_differ_and_repeat_with_the_seed(tf_files):
    pipe = stoke.from_tfrecord(tf_files, cycle_length=2, buffer_size=8).shuffle(1).map(
        example_id).batch(10)
    e0, e1 = ids_of(pipe, executor="inline"), ids_of(pipe, executor="inline", epoch=1)
    assert e0 != e1 and sorted(e0) == sorted(e1) == list(range(TOTAL))
    assert ids_of(pipe, executor="inline", epoch=1) == e1


def test_resumes_mid_shard(tf_files):
    pipe = stoke.from_tfrecord(tf_files, cycle_length=2, buffer_size=16).shuffle(7).map(
        example_id).batch(6).repeat(2)
    full = ids_of(pipe, executor="inline")
    it = pipe.iter(executor="process", workers=2)
    first = []
    for _ in range(9):  # part way into the first epoch: inside a shard
        first += [int(i) for i in next(it)]
    saved = json.loads(json.dumps(it.state().to_dict()))
    it.close()
    rest = ids_of(pipe, executor="thread", workers=2, state=saved)
    assert first + rest == full
    assert len(full) == 2 * TOTAL


def test_shard_splits_whole_files_across_hosts(tf_files):
    base = stoke.from_tfrecord(tf_files, cycle_length=2).shuffle(3).map(example_id).batch(5)
    starts = np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    seen = []
    for host in range(2):
        ids = ids_of(base.shard(host, 2), executor="inline")
        files = {int(np.searchsorted(starts, i, side="right")) - 1 for i in ids}
        assert files == set(range(host, len(SIZES), 2))  # whole files, i, i+n, ...
        expected = sum(SIZES[host::2])
        assert len(ids) == expected and len(base.shard(host, 2)) == -(-expected // 5)
        seen += ids
    assert sorted(seen) == list(range(TOTAL))
    with pytest.raises(ValueError, match="splits whole files, but this source has 5 file"):
        len(base.shard(0, 6))


def test_shard_order_reads_few_files_at_a_time():
    """Interleave of cycle_length shards: a window of the order touches about that many."""
    from stoke.data.shard_plan import ShardOrder

    order = ShardOrder(tuple([100] * 20), cycle_length=4, buffer_size=0)
    got = order.order(seed=0, epoch=0, shuffle=True)
    assert sorted(got.tolist()) == list(range(2000))
    shards_in_first_200 = set((got[:200] // 100).tolist())
    assert len(shards_in_first_200) == 4
    jittered = ShardOrder(tuple([100] * 20), cycle_length=4, buffer_size=50).order(0, 0, True)
    assert sorted(jittered.tolist()) == list(range(2000))
    position = {v: p for p, v in enumerate(got.tolist())}
    moved = [abs(position[v] - p) for p, v in enumerate(jittered.tolist())]
    assert max(moved) < 50 and np.mean(moved) > 3
    blocked = ShardOrder(tuple([100] * 20), cycle_length=4, block_records=5, buffer_size=50)
    runs = blocked.order(seed=1, epoch=0, shuffle=True).reshape(-1, 5)
    assert (np.diff(runs, axis=1) == 1).all() and (runs[:, 0] % 5 == 0).all()  # blocks intact


def test_stoke_writer_is_read_back(tmp_path):
    path = str(tmp_path / "mine.tfrecord")
    write_tfrecord(path, [record_bytes(i) for i in range(30)])
    assert sorted(ids_of(stoke.from_tfrecord(path).map(raw_id).batch(7),
                         executor="inline")) == list(range(30))


def _corrupt(tmp_path) -> tuple[str, int]:
    path = str(tmp_path / "bad.tfrecord")
    records = [record_bytes(i) for i in range(10)]
    write_tfrecord(path, records)
    offset = sum(16 + len(r) for r in records[:4])
    with open(path, "r+b") as f:  # flip a data byte of record 4
        f.seek(offset + 12 + 5)
        byte = f.read(1)
        f.seek(offset + 12 + 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    return path, offset


def test_corrupt_record_names_file_record_and_offset(tmp_path):
    path, offset = _corrupt(tmp_path)
    pipe = stoke.from_tfrecord(path).map(raw_id).batch(4)
    with pytest.raises(stoke.SampleError) as info:
        ids_of(pipe, executor="process", workers=2)
    message = str(info.value)
    assert path in message and "record 4" in message and f"byte offset {offset}" in message
    assert "CRC" in message


def test_corrupt_record_skipped_when_asked(tmp_path):
    path, _ = _corrupt(tmp_path)
    pipe = stoke.from_tfrecord(path, on_error="skip").map(raw_id).batch(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ids_of(pipe, executor="inline")
    assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    skipped = [w for w in caught if "skipped a bad record" in str(w.message)]
    assert len(skipped) == 1 and "1 skipped" in str(skipped[0].message)


def test_skips_of_every_worker_are_summed(tmp_path):
    paths = []
    for k in range(3):  # record 4 of each file is bad
        folder = tmp_path / str(k)
        folder.mkdir()
        paths.append(_corrupt(folder)[0])
    pipe = stoke.from_tfrecord(paths, on_error="skip", cycle_length=3).shuffle(1).map(
        raw_id).batch(2)
    assert pipe.skipped_records() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stoke.StokeWarning)
        got = ids_of(pipe, executor="process", workers=2)
        assert len(got) == 27 and pipe.skipped_records() == 3  # read in the workers, summed
        ids_of(pipe, executor="thread", workers=2, epoch=1)
    assert pipe.skipped_records() == 6  # every epoch since the pipeline was made
    assert stoke.from_tfrecord(paths).skipped_records() == 0


def test_skipping_pipeline_resumes_exactly_once(tmp_path):
    path, _ = _corrupt(tmp_path)
    pipe = stoke.from_tfrecord(path, on_error="skip").shuffle(2).map(raw_id).batch(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stoke.StokeWarning)
        full = ids_of(pipe, executor="inline")
        it = pipe.iter(executor="process", workers=2)
        head = [int(i) for i in next(it)]
        state = it.state()
        it.close()
        rest = ids_of(pipe, executor="thread", workers=2, state=state)
    assert head + rest == full and sorted(full) == [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_truncated_file_names_file_record_and_offset(tmp_path):
    path = str(tmp_path / "short.tfrecord")
    records = [record_bytes(i) for i in range(6)]
    write_tfrecord(path, records)
    offset = sum(16 + len(r) for r in records[:5])
    with open(path, "r+b") as f:
        f.truncate(offset + 20)
    with pytest.raises(stoke.RecordError) as info:
        len(stoke.from_tfrecord(path))
    message = str(info.value)
    assert path in message and "record 5" in message and f"byte offset {offset}" in message
    assert "truncated" in message
    with pytest.warns(stoke.StokeWarning, match="rest of this file is skipped"):
        pipe = stoke.from_tfrecord(path, on_error="skip").map(raw_id).batch(4)
        assert ids_of(pipe, executor="inline") == [0, 1, 2, 3, 4]


def test_not_a_tfrecord_file(tmp_path):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(b"hello, this is not a tfrecord file at all")
    with pytest.raises(stoke.RecordError, match=r"record 0 at byte offset 0 .*CRC"):
        len(stoke.from_tfrecord(str(path)))


def test_gzip_tfrecord_says_to_decompress(tmp_path):
    import gzip

    path = tmp_path / "x.tfrecord.gz"
    write_tfrecord(str(tmp_path / "plain.tfrecord"), [record_bytes(i) for i in range(3)])
    path.write_bytes(gzip.compress((tmp_path / "plain.tfrecord").read_bytes()))
    with pytest.raises(stoke.RecordError, match="GZIP-compressed: decompress it"):
        len(stoke.from_tfrecord(str(path)))


def test_no_files_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="from_tfrecord found no files"):
        stoke.from_tfrecord(str(tmp_path / "*.tfrecord"))
    with pytest.raises(FileNotFoundError, match="found no files in the folder"):
        stoke.from_tfrecord(str(tmp_path))


def test_a_folder_means_its_files(tf_files):
    pipe = stoke.from_tfrecord(os.path.dirname(tf_files[0]))
    assert list(pipe.source.paths) == tf_files and len(pipe) == TOTAL
