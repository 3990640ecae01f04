"""Sending the sample program to worker processes, once, with big arrays by shared memory.

The program (source + map/filter functions) is pickled with cloudpickle, so functions defined
in ``__main__`` or as lambdas travel by value and a user's script is never re-imported in the
workers; such a function keeps its real file name (cloudpickle would name it
"<dynamic-code>"), so a worker's traceback names the user's script, its line and the line's
text, as a thread's does. Large contiguous numpy arrays inside it (an in-memory dataset) go out of band
(pickle protocol 5) into one anonymous shared-memory block that every worker maps read-only:
one copy for all workers, not one per worker through a pipe.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import ChainMap
from dataclasses import dataclass

import cloudpickle

from stoke.errors import UnpicklableError
from stoke.executors.ring import SharedBuffer

OUT_OF_BAND_MIN_BYTES = 1 << 20


def reduce_code(code: types.CodeType):
    """cloudpickle's reduction of ``code``, rebuilt by :func:`code_in_file` in its file (a
    reduction of another form than cloudpickle's ``(constructor, args)`` is sent as is)."""
    reduced = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    if len(reduced) != 2:
        return reduced
    rebuild, args = reduced
    return code_in_file, (rebuild, args, code.co_filename)


class KeepFileNamesPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, except that the code of a function sent by value keeps its
    real ``co_filename``: tracebacks in the worker then name the file and (read from it by
    ``linecache`` when the worker's machine has it) the line's text."""

    dispatch_table = ChainMap({types.CodeType: reduce_code},
                              cloudpickle.Pickler.dispatch_table)


def code_in_file(rebuild, args: tuple, filename: str) -> types.CodeType:
    """The code object ``rebuild(*args)``, named as defined in ``filename`` (unpickling)."""
    return rebuild(*args).replace(co_filename=filename)


def dumps(obj, buffer_callback=None) -> bytes:
    """``cloudpickle.dumps(obj, protocol=5)``, by-value functions keeping their file name
    (:class:`KeepFileNamesPickler`): what stoke sends to worker processes."""
    with io.BytesIO() as file:
        KeepFileNamesPickler(file, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


@dataclass
class PackedProgram:
    data: bytes
    spans: list[tuple[int, int]]  # (offset, length) of each out-of-band buffer
    buffer: SharedBuffer | None

    def close(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None


def pack(program) -> PackedProgram:
    """Pickle ``program`` for the workers; raise :class:`UnpicklableError` saying which part
    could not be pickled and what to do."""
    big = []

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes >= OUT_OF_BAND_MIN_BYTES:
            big.append(buffer)
            return False
        return True

    try:
        data = dumps(program, buffer_callback=keep_out_of_band)
    except Exception as exc:  # noqa: BLE001 - turned into advice
        raise UnpicklableError(_explain(program, exc)) from exc
    if not big:
        return PackedProgram(data, [], None)
    total = sum(b.raw().nbytes for b in big)
    shared = SharedBuffer(total)
    spans = []
    offset = 0
    for b in big:
        raw = b.raw()
        shared.map[offset : offset + raw.nbytes] = raw
        spans.append((offset, raw.nbytes))
        offset += raw.nbytes
    return PackedProgram(data, spans, shared)


def can_pickle(program) -> bool:
    """Can ``program`` travel to worker processes? (Big arrays are not copied to find out.)"""
    try:
        cloudpickle.dumps(program, protocol=5, buffer_callback=lambda buffer: False)
    except Exception:  # noqa: BLE001 - any failure means no
        return False
    return True


def unpack(data: bytes, spans: list[tuple[int, int]], shared: SharedBuffer | None):
    buffers = []
    if shared is not None:
        view = memoryview(shared.map)
        buffers = [view[o : o + n] for o, n in spans]
    return pickle.loads(data, buffers=buffers)


def unpicklable_part(program) -> str:
    """Which part of ``program`` cannot be pickled: "the source", "the function of map(f)"..."""
    parts = [("the source", program.source)]
    parts += [(f"the function of {step.name}", step) for step in program.steps]
    for name, part in parts:
        try:
            cloudpickle.dumps(part)
        except Exception:  # noqa: BLE001 - any failure names the part
            return name
    return "the pipeline"


def _explain(program, exc: Exception) -> str:
    culprit = unpicklable_part(program)
    return (
        f"{culprit} cannot be sent to worker processes: {type(exc).__name__}: {exc}. "
        "Process workers need picklable functions and sources: define the function at module "
        "level and keep handles such as open files, locks or sessions out of it (open them "
        "lazily inside the function), or use executor=\"thread\"."
    )
