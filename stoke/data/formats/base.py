"""What every record format shares: its error, the skip marker and the prefetch protocol.

``RecordError`` names the file, the record number and the byte offset of a bad record. A
source built with ``on_error="skip"`` returns :data:`SKIPPED` for such a record instead of
raising (with a warning that counts them across processes: :mod:`stoke.data.formats.skips`);
the pipeline drops it with :func:`not_skipped`, its first filter. A source that can read a whole chunk of samples at once, concurrently
(remote shards), is a :class:`PrefetchingSource`: the worker hands it the chunk's indices
before it reads them one by one.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stoke.errors import StokeError

if TYPE_CHECKING:
    from stoke.data.formats.skips import SkipCounter

ON_ERROR = ("raise", "skip")


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


class PrefetchingSource(abc.ABC):
    """A source that starts reading many samples at once, in the background, when told
    which ones come next; ``source[i]`` then waits for its sample instead of reading it.
    A base class, not a protocol: a user's object with a method named ``prefetch`` is not
    called by mistake."""

    @abc.abstractmethod
    def prefetch(self, indices: Sequence[int]) -> None: ...
