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
the plain loop (1.27 ms a batch against 1.09 ms). :class:`NumpyGlobalStream` copies the
state as the bytes it is instead: the Twister's 2,500 bytes (numpy's public ctypes interface
to the bit generator, ``state_address``), and the legacy global's cached normal beside it
(``has_gauss``, ``gauss``: 16 bytes of the ``RandomState`` object, which only
``get_state``/``set_state`` reach otherwise), each under the bit generator's lock. Both
layouts are found and checked once, on generators of their own, against what ``get_state``
and ``set_state`` read and write; where either does not hold (another bit generator set with
``np.random.set_bit_generator``, another numpy, another Python), every swap takes
``get_state``/``set_state``. A swap costs a few µs; Python's own ``random.getstate`` (8 µs)
stays as it is.
"""

from __future__ import annotations

import ctypes
import random
import struct
import sys
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


# numpy's aug_bitgen_t beside the Twister: int has_gauss, (padding), double gauss
CACHED_NORMAL_BYTES = 16


def cached_normal_offset() -> int | None:
    """Where a legacy ``RandomState`` keeps its cached normal: the offset, in the object's
    memory (CPython: ``id()`` is its address), of ``has_gauss`` (an int; ``gauss``, a
    double, 8 bytes after it). Found on a RandomState of its own by ``set_state`` with marker
    values, then checked both ways (read after ``set_state``, written then read by
    ``get_state``); None where that fails: then the slow path."""
    try:
        size = sys.getsizeof(np.random.RandomState(np.random.MT19937(0)))
        probe = np.random.RandomState(np.random.MT19937(1))
        name, key, pos, _, _ = probe.get_state()
        marker = 1.2345678901234567
        probe.set_state((name, key, pos, 1, marker))
        memory = ctypes.string_at(id(probe), size)
        wanted = struct.pack("=i", 1)
        found = [offset for offset in range(0, size - CACHED_NORMAL_BYTES + 1, 8)
                 if memory[offset + 8:offset + 16] == struct.pack("=d", marker)
                 and memory[offset:offset + 4] == wanted]
        if len(found) != 1:
            return None
        offset = found[0]
        probe.set_state((name, key, pos, 0, -2.5))  # read: set_state's values, at offset
        has_gauss, gauss = _cached_normal(ctypes.string_at(id(probe) + offset,
                                                           CACHED_NORMAL_BYTES))
        if (has_gauss, gauss) != (0, -2.5):
            return None
        other = np.random.RandomState(np.random.MT19937(2))  # written: get_state reads it
        ctypes.memmove(id(other) + offset, struct.pack("=i4xd", 1, 0.75), CACHED_NORMAL_BYTES)
        _, _, _, has_gauss, gauss = other.get_state()
        return offset if (has_gauss, gauss) == (1, 0.75) else None
    except Exception:  # noqa: BLE001 - any surprise: the slow path, which always holds
        return None


def _cached_normal(raw: bytes) -> tuple[int, float]:
    has_gauss, gauss = struct.unpack("=i4xd", raw)
    return has_gauss, gauss


class NumpyGlobalStream:
    """numpy's legacy global stream (``np.random.random`` and the rest), saved and put back.

    A saved state is ``("raw", twister bytes, cached normal bytes)`` where the layouts hold
    (see the module docstring), else ``("full", get_state(legacy=False))``.

    >>> stream = NumpyGlobalStream()
    >>> saved = stream.save()
    >>> a = np.random.normal()
    >>> stream.restore(saved)
    >>> a == np.random.normal()
    True
    """

    _layouts: tuple[bool, int | None] | None = None  # checked once per process

    def __init__(self) -> None:
        if NumpyGlobalStream._layouts is None:
            NumpyGlobalStream._layouts = (raw_twister_layout_holds(), cached_normal_offset())
        # numpy's global RandomState (np.random.random is its bound method); it keeps its
        # identity when set_bit_generator gives it another generator
        self._global = np.random.random.__self__

    def _raw_places(self) -> tuple[Any, int, int] | None:
        """(the global's bit generator, the Twister's address, the cached normal's) where
        the raw copy holds now; None: the slow path."""
        twister_holds, normal_offset = NumpyGlobalStream._layouts
        generator = np.random.get_bit_generator()
        if not twister_holds or normal_offset is None or type(generator) is not np.random.MT19937:
            return None
        return generator, generator.ctypes.state_address, id(self._global) + normal_offset

    def save(self) -> tuple:
        """The global stream's state now."""
        places = self._raw_places()
        if places is None:
            return ("full", np.random.get_state(legacy=False))
        generator, twister, normal = places
        with generator.lock:
            return ("raw", ctypes.string_at(twister, TWISTER_STATE_BYTES),
                    ctypes.string_at(normal, CACHED_NORMAL_BYTES))

    def restore(self, saved: tuple) -> None:
        """Put ``saved`` (from :meth:`save`) in."""
        places = self._raw_places()
        if saved[0] == "raw" and places is not None:
            generator, twister, normal = places
            with generator.lock:
                ctypes.memmove(twister, saved[1], TWISTER_STATE_BYTES)
                ctypes.memmove(normal, saved[2], CACHED_NORMAL_BYTES)
            return
        if saved[0] == "raw":  # saved raw, the global has another generator now
            has_gauss, gauss = _cached_normal(saved[2])
            key = np.frombuffer(saved[1], "<u4", TWISTER_KEY_WORDS).astype(np.uint32)
            pos = int.from_bytes(saved[1][-4:], "little", signed=True)
            saved = ("full", {"bit_generator": "MT19937", "state": {"key": key, "pos": pos},
                              "has_gauss": has_gauss, "gauss": gauss})
        np.random.set_state(saved[1])


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
        self._numpy_state: tuple | None = None
        self._trainer: list[tuple[Any, tuple]] = []  # the trainer's, while inside

    def __enter__(self) -> StandInRandom:
        trainer = (random.getstate(), self._numpy.save())
        try:
            if self._numpy_state is None:
                seed_worker_globals(self.seed, STAND_IN_INDEX + self.stream)
            else:
                random.setstate(self._python_state)
                self._numpy.restore(self._numpy_state)
        except BaseException:  # (a state for another bit generator): the trainer's back
            random.setstate(trainer[0])
            self._numpy.restore(trainer[1])
            raise
        self._trainer.append(trainer)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._python_state = random.getstate()
        self._numpy_state = self._numpy.save()
        trainer_python, trainer_numpy = self._trainer.pop()
        random.setstate(trainer_python)
        self._numpy.restore(trainer_numpy)
