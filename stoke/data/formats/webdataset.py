"""WebDataset tar shards: ``stoke.from_webdataset("shard-{000..099}.tar")`` gives one dict
per sample, ``{ext: bytes, ..., "__key__": key, "__url__": shard path}``.

A sample is the run of consecutive tar members that share a key (the member's path up to
the first dot of its file name: ``images/n01440764_10026.jpg`` and ``.cls`` make sample
``images/n01440764_10026`` with fields ``jpg`` and ``cls``), the WebDataset convention.
Indexing reads the tar headers once with :mod:`tarfile`; a sample is then one read of the
bytes from its first member's data to its last's.
"""

from __future__ import annotations

import tarfile
from typing import Any

from stoke.data.formats.base import RecordError
from stoke.data.formats.shards import ShardedSource, ShardIndex


def split_key(name: str) -> tuple[str, str]:
    """``dir/abc.seg.png`` -> (``dir/abc``, ``seg.png``)."""
    directory, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext


class WebDatasetSource(ShardedSource):
    """Samples of WebDataset tar shards; sample ``i`` is ``{ext: bytes, "__key__": key}``."""

    format_name = "WebDataset"
    factory = "stoke.from_webdataset"

    def index_shard(self, shard: int, path: str) -> ShardIndex:
        offsets: list[int] = []
        lengths: list[int] = []
        samples: list[tuple[str, tuple[tuple[str, int, int], ...]]] = []
        errors: list[RecordError] = []
        current_key = None
        members: list[tuple[str, int, int]] = []
        start = 0
        position = 0

        def close_sample() -> None:
            if current_key is not None and members:
                first = members[0][1]
                offsets.append(first)
                lengths.append(members[-1][1] + members[-1][2] - first)
                samples.append((current_key, tuple((e, o - first, n) for e, o, n in members)))

        with self.reader.open(path) as f:
            try:
                with tarfile.open(fileobj=f, mode="r:") as archive:
                    for member in archive:
                        position = member.offset
                        if not member.isfile():
                            continue
                        key, ext = split_key(member.name)
                        if key != current_key:
                            close_sample()
                            current_key, members, start = key, [], member.offset
                        members.append((ext, member.offset_data, member.size))
            except (tarfile.TarError, EOFError, OSError) as exc:
                error = RecordError(
                    f"{path}: sample {len(samples)} at byte offset "
                    f"{start if current_key is not None else position} is truncated or "
                    f"corrupt: {type(exc).__name__}: {exc}")
                if self.on_error != "skip":
                    raise error from exc
                self.index_error(error, errors)
                members = []
        close_sample()
        size = self.reader.size(path)
        if offsets and offsets[-1] + lengths[-1] > size:
            raise RecordError(f"{path}: sample {len(offsets) - 1} at byte offset {offsets[-1]} "
                              f"is truncated: the file ends at byte {size}")
        return ShardIndex(offsets, lengths, samples, errors)

    def decode(self, shard: int, record: int, offset: int, data: bytes, extra: Any) -> dict[str, Any]:
        key, members = extra[record]
        sample: dict[str, Any] = {"__key__": key, "__url__": self.paths[shard]}
        view = memoryview(data)
        for ext, offset, size in members:
            sample[ext] = bytes(view[offset: offset + size])
        return sample
