"""A million-file source starts without listing a million paths: a brace pattern travels to
the workers as a pattern (the first-batch time itself is measured by
``benchmarks/formats_throughput.py``, not asserted here)."""

from __future__ import annotations

import time

import numpy as np

import stoke
from stoke.executors.payload import pack


def first_byte(data):
    return np.uint8(data[0])


def test_million_file_pattern_ships_the_pattern_not_the_list(tmp_path):
    for i in range(600):  # the files the first batches read; the rest need not exist
        (tmp_path / f"img-{i:07d}.bin").write_bytes(bytes([i % 256]) * 10)
    pipe = stoke.from_files(str(tmp_path / "img-{0000000..0999999}.bin")).map(first_byte).batch(64)
    assert len(pipe) == -(-1_000_000 // 64)
    assert len(pack(pipe.program).data) < 20_000  # bytes sent to each worker
    started = time.monotonic()
    with pipe.iter(executor="process", workers=2, ring_slots=4) as it:
        batch = next(it)
    print(f"first batch of a 1,000,000-file source: {time.monotonic() - started:.2f} s")
    assert batch.tolist() == [i % 256 for i in range(64)]


def test_missing_file_of_a_pattern_is_named(tmp_path):
    pipe = stoke.from_files(str(tmp_path / "x-{0..3}.bin")).batch(2)
    try:
        next(iter(pipe.iter(executor="inline")))
    except stoke.SampleError as exc:
        assert "x-0.bin" in str(exc) and exc.index == 0
    else:
        raise AssertionError("a missing file must raise")


def test_globbed_file_list_travels_out_of_band(tmp_path):
    for i in range(12_000):
        (tmp_path / f"file-with-a-long-name-{i:06d}.bin").write_bytes(bytes([i % 256]))
    pipe = stoke.from_files(str(tmp_path / "file-*.bin")).map(first_byte).batch(50)
    packed = pack(pipe.program)
    try:
        assert len(packed.data) < 20_000 and packed.spans  # the list is one shared buffer
    finally:
        packed.close()
    with pipe.iter(executor="process", workers=2) as it:
        assert next(it).tolist() == list(range(50))
