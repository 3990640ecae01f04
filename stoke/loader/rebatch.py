"""Re-batching for pipelines with a filter: a chunk of the plan comes back from the workers
with fewer rows than a batch (its other samples were filtered out), so the kept rows of
consecutive chunks are copied out of their ring slots and cut into full batches
(:class:`Rebatcher`). Also says where the iterator stands after each batch: the chunk and the
row within it that the next batch starts from, so that a saved state resumes exactly.

Which chunks come, and when an epoch ends, is the iterator's (:mod:`stoke.loader.iterator`);
the slots are the scheduler's (:mod:`stoke.loader.scheduler`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from stoke.data.plan import IteratorState


@dataclass(slots=True, eq=False)
class PendingRows:
    """Kept rows of one chunk not delivered yet: they start at row ``row0`` of the chunk's
    kept rows."""

    epoch: int
    position: int
    row0: int
    arrays: list[np.ndarray]


class Rebatcher:
    """Kept rows of filtered chunks, cut into batches in plan order. ``skip_rows``: rows of
    the chunk a restored state points at that were already delivered."""

    def __init__(self, skip_rows: int = 0) -> None:
        self._pending: deque[PendingRows] = deque()
        self.rows = 0  # kept rows waiting to be delivered
        self._skip_rows = skip_rows

    def restart(self, skip_rows: int) -> None:
        """Forget the pending rows; the next chunk skips ``skip_rows`` (a plan made again
        from a state)."""
        self.clear()
        self._skip_rows = skip_rows

    def clear(self) -> None:
        """Drop the pending rows (the end of an epoch that drops its remainder)."""
        self._pending.clear()
        self.rows = 0

    def add_chunk(self, epoch: int, position: int, views: list[np.ndarray], rows: int,
                  state: IteratorState) -> bool:
        """Copy the ``rows`` kept rows of a finished chunk out of its slot's ``views`` (the
        slot may be reused after this). Returns True when no rows are pending after it, so
        that the iterator's state may move past this chunk."""
        skip = self._skip_rows if (epoch, position) == (state.epoch, state.chunk) else 0
        self._skip_rows = 0
        arrays = [np.array(v[skip:rows]) for v in views]
        kept = rows - skip
        if kept > 0:
            self._pending.append(PendingRows(epoch, position, skip, arrays))
            self.rows += kept
            return False
        return not self._pending

    def take(self, count: int, state: IteratorState) -> tuple[list[np.ndarray], IteratorState]:
        """The leaves of a batch of ``count`` pending rows, and the state after it
        (``state``'s fingerprint)."""
        parts: list[list[np.ndarray]] = []
        need = count
        fingerprint = state.fingerprint
        while need:
            entry = self._pending[0]
            arrays = entry.arrays
            have = len(arrays[0])
            take = min(have, need)
            parts.append([a[:take] for a in arrays])
            need -= take
            if take == have:
                self._pending.popleft()
                next_state = IteratorState(entry.epoch, entry.position + 1, 0, fingerprint)
            else:
                entry.row0 += take
                entry.arrays = [a[take:] for a in arrays]
                next_state = IteratorState(entry.epoch, entry.position, entry.row0, fingerprint)
        if self._pending:
            first = self._pending[0]
            next_state = IteratorState(first.epoch, first.position, first.row0, fingerprint)
        self.rows -= count
        leaves = [np.concatenate(column) if len(column) > 1 else column[0]
                  for column in zip(*parts)]
        return leaves, next_state

    @property
    def has_pending(self) -> bool:
        """Are rows of some chunk pending?"""
        return bool(self._pending)
