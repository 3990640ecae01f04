"""The trainer's own global random streams while it makes batches for the workers:
:class:`StandInRandom`, and the quick swap of numpy's global stream it rests on
(:class:`NumpyGlobalStream`).

A batch made in the trainer (a Sequence's batches before stoke's workers start, or all of
them when workers would not pay) must draw new numbers from the global ``random`` and
``numpy.random`` streams, as a worker does, and leave the user's own draws as they were. So
the trainer's states are swapped out around each batch and back in after it.

numpy's ``get_state``/``set_state`` copy the Mersenne Twister's 624-word key one element at a
time: about 32 µs each, four a batch, 0.13 ms. On a 1 ms ``__getitem__`` (the red-team's
s05: ``pad_sequences`` over 64 short lists) that made ``stoke.accelerate`` 16% slower than
the plain loop (1.27 ms a batch against 1.09 ms). :class:`NumpyGlobalStream` swaps the
Twister's state as the 2,500 bytes it is (numpy's public ctypes interface to the bit
generator, ``state_address``): under a microsecond. Beside it numpy's legacy global keeps a
cached normal (``has_gauss``), which only ``get_state``/``set_state`` reach; it is tracked, and
the slow, exact path is taken whenever it may be set:

- a cached normal is made only by a normal draw, which moves the Twister: a side whose
  cache was last seen empty and whose Twister has not moved since still has an empty cache;
- a side with a cached normal, or one that moved, is read in full (``get_state``);
- the raw swap is used only where both sides' caches are empty (the cache's value is then
  not read by numpy), else ``set_state`` puts the whole state in.

Where the raw layout does not hold (another bit generator set with
``np.random.set_bit_generator``, a numpy whose MT19937 state is laid out otherwise: checked
once against ``get_state``), every swap takes the slow path.
"""

from __future__ import annotations

import ctypes
import random
from typing import Any

import numpy as np

from stoke.data.program import seed_worker_globals

# the worker index whose global random streams the trainer uses while it stands in (worker
# processes count from 0; no pool grows this far)
STAND_IN_INDEX = 1 << 31

# numpy's mt19937_state: uint32 key[624]; int pos
TWISTER_KEY_WORDS = 624
TWISTER_STATE_BYTES = TWISTER_KEY_WORDS * 4 + 4


def raw_twister_layout_holds() -> bool:
    """Is an MT19937's state ``TWISTER_STATE_BYTES`` at its ``ctypes.state_address``: the
    key's words then ``pos``, as ``get_state`` reports them? Checked on a generator of its
    own, written and read back, so the global stream is not touched."""
    try:
        generator = np.random.MT19937(20261205)
        state = np.random.RandomState(generator)
        address = generator.ctypes.state_address
        _, key, pos, _, _ = state.get_state()
        raw = ctypes.string_at(address, TWISTER_STATE_BYTES)
        if raw != key.astype("<u4").tobytes() + int(pos).to_bytes(4, "little", signed=True):
            return False
        other_generator = np.random.MT19937(7)
        other = np.random.RandomState(other_generator)
        other.random_sample(5)
        other_raw = ctypes.string_at(other_generator.ctypes.state_address, TWISTER_STATE_BYTES)
        ctypes.memmove(address, other_raw, TWISTER_STATE_BYTES)
        return state.random_sample(3).tolist() == other.random_sample(3).tolist()
    except Exception:  # noqa: BLE001 - any surprise: the slow path, which always holds
        return False


class NumpyGlobalStream:
    """numpy's legacy global stream (``np.random.random`` and the rest), saved and put back.

    A saved state is ``(raw, full)``: the Twister's raw bytes, and ``get_state(legacy=False)``'s
    dict where it was read in full (None where the cache is known to be empty: see the module docstring).

    >>> stream = NumpyGlobalStream()
    >>> saved = stream.save(None)
    >>> a = np.random.random()
    >>> stream.restore(saved)
    >>> a == np.random.random()
    True
    """

    _layout_holds: bool | None = None  # checked once per process

    def __init__(self) -> None:
        if NumpyGlobalStream._layout_holds is None:
            NumpyGlobalStream._layout_holds = raw_twister_layout_holds()

    @staticmethod
    def _address() -> int | None:
        generator = np.random.get_bit_generator()
        if not NumpyGlobalStream._layout_holds or type(generator) is not np.random.MT19937:
            return None
        return generator.ctypes.state_address

    def save(self, last: tuple[bytes | None, Any] | None) -> tuple[bytes | None, Any]:
        """The global stream's state now. ``last``: what this side was left with when it was
        last put in (its cache then known), or None."""
        address = self._address()
        if address is None:
            return None, np.random.get_state(legacy=False)
        raw = ctypes.string_at(address, TWISTER_STATE_BYTES)
        if last is not None and last[0] == raw and last[1] is None:
            return raw, None  # unmoved, and its cache was empty: it still is
        full = np.random.get_state(legacy=False)
        return raw, (full if full["has_gauss"] else None)

    def restore(self, saved: tuple[bytes | None, Any], now: tuple[bytes | None, Any]
                | None = None) -> None:
        """Put ``saved`` in. ``now``: the state being replaced, as :meth:`save` gave it (its
        cache decides whether the raw swap is exact); None: taken to have a cached normal."""
        raw, full = saved
        address = self._address()
        if (address is not None and raw is not None and full is None
                and now is not None and now[1] is None):
            ctypes.memmove(address, raw, TWISTER_STATE_BYTES)
            return
        if full is None:  # an empty cache: the raw key and position with has_gauss 0
            key = np.frombuffer(raw, "<u4", TWISTER_KEY_WORDS).astype(np.uint32)
            pos = int.from_bytes(raw[-4:], "little", signed=True)
            full = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos},
                    "has_gauss": 0, "gauss": 0.0}
        np.random.set_state(full)


class StandInRandom:
    """Global ``random``/``numpy.random`` streams of the trainer's own while it stands in for
    workers: inside ``with stand_in:`` the code drawing from them continues its stream (the
    first time: seeded as a worker's, :func:`~stoke.data.program.seed_worker_globals`, with
    index :data:`STAND_IN_INDEX` + ``stream``); outside, the trainer's states are as they
    were. So batches made one after the other in the trainer draw new numbers, as in a
    worker, and the user's own draws are untouched. (The states are the process's: code on
    another thread that draws from them while a batch is made inside draws from the
    stand-in's.)

    >>> stand_in = StandInRandom(seed=0)
    >>> with stand_in:
    ...     a = np.random.random()
    >>> with stand_in:
    ...     b = np.random.random()
    >>> a != b
    True
    """

    def __init__(self, seed: int, stream: int = 0) -> None:
        self.seed = seed
        self.stream = stream  # one stand-in's streams from another's, of the same seed
        self._numpy = NumpyGlobalStream()
        self._python_state: Any = None  # the stand-in's, between uses
        self._numpy_state: tuple[bytes | None, Any] | None = None
        self._trainer: list[tuple[Any, tuple[bytes | None, Any]]] = []  # while inside
        self._trainer_left: tuple[bytes | None, Any] | None = None  # as last put back

    def __enter__(self) -> StandInRandom:
        trainer_numpy = self._numpy.save(self._trainer_left)
        self._trainer.append((random.getstate(), trainer_numpy))
        if self._numpy_state is None:
            seed_worker_globals(self.seed, STAND_IN_INDEX + self.stream)
        else:
            random.setstate(self._python_state)
            self._numpy.restore(self._numpy_state, trainer_numpy)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._python_state = random.getstate()
        mine = self._numpy.save(self._numpy_state)
        self._numpy_state = mine
        trainer_python, trainer_numpy = self._trainer.pop()
        random.setstate(trainer_python)
        self._numpy.restore(trainer_numpy, mine)
        self._trainer_left = trainer_numpy
