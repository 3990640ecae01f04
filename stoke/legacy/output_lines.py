"""Whether the script's output stands at the start of a line, so that stoke's notes, printed
between the script's own calls, begin on a line of their own.

Owns :func:`track`, :func:`untrack` and :func:`line_break_needed`. :func:`track` puts a
pass-through in front of ``sys.stdout`` and ``sys.stderr`` that remembers whether the last
text written to either ended a line. A script that prints ``"evaluating... "`` (``end=" "``)
before a Keras-2 call had the call's note written onto that line; a progress bar that ends
in ``"\\r"`` (drawn again in place) is mid-line too. Output that bypasses the two objects (a C
library writing to the file descriptor, ``sys.stdout.buffer``) is not seen: after it, the
note starts as it always did. The shim (:mod:`stoke.legacy.shim`) tracks while it is
installed and prints its notes through :func:`line_break_needed`.

    track()
    print("evaluating", end="... ")
    line_break_needed()  # True: a note here starts with "\\n"
    untrack()
"""

from __future__ import annotations

import sys
from typing import Any

_last_write = {"ended_line": True}  # the last text written to either stream


class _TrackedStream:
    """``stream`` as it is, writes noted in ``_last_write``."""

    def __init__(self, stream: Any) -> None:
        self.tracked_stream = stream

    def write(self, text: str) -> int:
        written = self.tracked_stream.write(text)
        if text:
            _last_write["ended_line"] = text.endswith("\n")
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracked_stream, name)


def track() -> None:
    """Track writes to ``sys.stdout`` and ``sys.stderr`` from now on (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _TrackedStream):
            setattr(sys, name, _TrackedStream(stream))


def untrack() -> None:
    """Put back the streams :func:`track` wrapped (those still in place)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _TrackedStream):
            setattr(sys, name, stream.tracked_stream)
    _last_write["ended_line"] = True


def line_break_needed() -> bool:
    """Whether the last text the script wrote (to either stream) left a line unfinished."""
    return not _last_write["ended_line"]
