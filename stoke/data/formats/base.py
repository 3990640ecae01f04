"""What every record format shares: its error, the skip marker and the prefetch protocol.

``RecordError`` names the file, the record number and the byte offset of a bad record. A
source built with ``on_error="skip"`` returns :data:`SKIPPED` for such a record instead of
raising (with a warning that counts them across processes: :mod:`stoke.data.formats.skips`);
the pipeline drops it with :func:`not_skipped`, its first filter. A source that can read a whole chunk of samples at once, concurrently
(remote shards), is a :class:`PrefetchingSource`: the worker hands it the chunk's indices
before it reads them one by one, and the indices of the chunks already queued behind it;
a source that reads over the network asks for more chunks queued per worker
(:meth:`PrefetchingSource.chunks_ahead`), so that their requests are in flight long before
the worker runs them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stoke.errors import StokeError

if TYPE_CHECKING:
    from stoke.data.formats.skips import SkipCounter

ON_ERROR = ("raise", "skip")
# chunks queued behind the running one on each worker when the source reads over the network:
# their requests start as they arrive, so a worker hides a request latency of up to about
# this many chunks' work. Measured (benchmarks/formats_throughput.py, HTTP at 20 ms/request,
# 2 workers, 64 JPEGs a chunk, ~13 ms of work on a quiet 2-core machine): with one chunk
# queued the reads started ~1.5 chunks (~20 ms) before they were needed, the request
# latency was not hidden (0.60-0.64x local); with 4, ~4 chunks (~50 ms). Local reads keep
# the default ring, one chunk queued
REMOTE_CHUNKS_AHEAD = 4


class RecordError(StokeError):
    """A record that cannot be read: truncated, corrupt, or its file unreachable."""


class _Skipped:
    def __repr__(self) -> str:
        return "stoke.data.formats.SKIPPED"

    def __reduce__(self):
        return "SKIPPED"


SKIPPED = _Skipped()


def not_skipped(sample: Any) -> bool:
    """The filter that drops records a source skipped (``on_error="skip"``)."""
    return sample is not SKIPPED


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be \"raise\" or \"skip\". Received: on_error={on_error!r}")
    return on_error


class SkippingSource(abc.ABC):
    """A source that may skip bad records (``on_error="skip"``), counted by its
    :class:`~stoke.data.formats.skips.SkipCounter` ``skips`` across processes."""

    skips: SkipCounter

    def skipped_records(self) -> int:
        """Bad records skipped so far, summed over the trainer and its workers."""
        return self.skips.total()


class DescribedSamples(abc.ABC):
    """A source whose sample index says little to a person (a lazily indexed shard source's
    ``(shard << 32) | record`` key): :meth:`describe_sample` names the file and record, and
    a :class:`~stoke.errors.SampleError` says that instead of the index."""

    @abc.abstractmethod
    def describe_sample(self, index: int) -> str:
        """How an error message names sample ``index`` after the word "sample", e.g.
        ``"at record 3 of data/train-007.tfrecord"``; must not raise."""


class PrefetchingSource(abc.ABC):
    """A source that starts reading many samples at once, in the background, when told
    which ones come next; ``source[i]`` then waits for its sample instead of reading it.
    A base class, not a protocol: a user's object with a method named ``prefetch`` is not
    called by mistake."""

    @abc.abstractmethod
    def prefetch(self, indices: Sequence[int]) -> None: ...

    def reads_remote(self) -> bool:
        """Do reads go over the network (an fsspec URL), so that each waits on a request?"""
        return False

    def chunks_ahead(self) -> int:
        """Chunks each worker should have queued behind the one it runs, their reads started:
        :data:`REMOTE_CHUNKS_AHEAD` for remote reads, else 1 (the default ring). The ring
        gets the slots for them within the memory budget (``stoke/loader/scheduler.py``)."""
        return REMOTE_CHUNKS_AHEAD if self.reads_remote() else 1
