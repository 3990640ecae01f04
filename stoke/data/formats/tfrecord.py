"""TFRecord files, read without TensorFlow: ``stoke.from_tfrecord(paths)`` gives each
record's bytes (parse them with :func:`stoke.parse_example` in ``map``).

The framing is TensorFlow's: ``uint64 length``, ``uint32 masked_crc32c(length)``, the data,
``uint32 masked_crc32c(data)``, all little-endian; both checksums are verified (with
``google-crc32c``, a C implementation). Indexing walks the length headers (one 12-byte read
and a seek per record for a local file); a truncated or corrupt record is reported with its
file, its record number and its byte offset. Compressed (GZIP/ZLIB) TFRecords have no
seekable records: decompress them once, or use an uncompressed copy.
"""

from __future__ import annotations

import struct
from typing import Any

from stoke.data.formats.base import RecordError
from stoke.data.formats.shards import ShardedSource, ShardIndex

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def masked_crc32c(data: bytes | memoryview) -> int:
    """TensorFlow's masked CRC32-C of ``data``."""
    try:
        import google_crc32c
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading TFRecords checks CRC32-C with google-crc32c: "
                          "pip install 'stoke[tfrecord]' (or google-crc32c)") from exc
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def write_tfrecord(path: str, records) -> None:
    """Write ``records`` (bytes) as a TFRecord file, framed exactly as TensorFlow does."""
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc32c(length)))
            f.write(data)
            f.write(struct.pack("<I", masked_crc32c(data)))


class TFRecordSource(ShardedSource):
    """The records of TFRecord shards; sample ``i`` is the bytes of record ``i``."""

    format_name = "TFRecord"
    factory = "stoke.from_tfrecord"

    def index_shard(self, shard: int, path: str) -> ShardIndex:
        offsets: list[int] = []
        lengths: list[int] = []
        errors: list[RecordError] = []
        size = self.reader.size(path)
        position = 0
        with self.reader.open(path) as f:
            while position < size:
                header = f.read(12)
                record = len(offsets)
                if len(header) < 12:
                    error = RecordError(
                        f"{path}: record {record} at byte offset {position} is truncated: "
                        f"{len(header)} of 12 header bytes, then the file ends")
                    self.index_error(error, errors)
                    break
                length, length_crc = _HEADER.unpack(header)
                if masked_crc32c(header[:8]) != length_crc:
                    what = ("the file is GZIP-compressed: decompress it (gunzip), stoke reads "
                            "uncompressed TFRecords" if position == 0 and header[:2] == b"\x1f\x8b"
                            else "not a TFRecord file, or damaged")
                    error = RecordError(
                        f"{path}: record {record} at byte offset {position} is corrupt: its "
                        f"length header fails the CRC check ({what})")
                    self.index_error(error, errors)
                    break
                end = position + 12 + length + 4
                if end > size:
                    error = RecordError(
                        f"{path}: record {record} at byte offset {position} is truncated: it "
                        f"needs {length + 16} bytes, the file has {size - position} left")
                    self.index_error(error, errors)
                    break
                offsets.append(position)
                lengths.append(length + 16)
                position = end
                f.seek(position)
        return ShardIndex(offsets, lengths, errors=errors)

    def decode(self, shard: int, record: int, offset: int, data: bytes, extra: Any) -> bytes:
        view = memoryview(data)
        length, length_crc = _HEADER.unpack_from(view, 0)
        if length != len(view) - 16 or masked_crc32c(view[:8]) != length_crc:
            raise RecordError(f"{self.paths[shard]}: record {record} at byte offset {offset} "
                              "is corrupt: its length header changed since the file was indexed")
        payload = bytes(view[12: 12 + length])
        (data_crc,) = _FOOTER.unpack_from(view, 12 + length)
        if masked_crc32c(payload) != data_crc:
            raise RecordError(f"{self.paths[shard]}: record {record} at byte offset {offset} "
                              f"is corrupt: its {length} data bytes fail the CRC check")
        return payload
