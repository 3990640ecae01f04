"""What the Keras-2 shim translated, call by call: :class:`Conversion` records, found where
the user's script made the call, and the note ``stoke run`` prints about them.

Owns finding the script's own frame and the source text of its call (Python 3.11 keeps the
columns of each instruction), the record of each distinct call translated, and the
"write this instead" line for it. The translation itself is :mod:`.shim`'s.
"""

from __future__ import annotations

import dataclasses
import linecache
import os
import re
import sys
import threading
from types import FrameType

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the stoke package
# packages whose frames are never the user's call (found where they are installed)
_LIBRARIES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "importlib", "runpy")


@dataclasses.dataclass(frozen=True)
class Conversion:
    """One distinct Keras-2 call the shim translated.

    ``filename``/``lineno``: where the script made it (the first frame outside stoke, Keras
    and the backends); ``call_source``: its source text (whitespace collapsed; ``""`` when
    the source cannot be read); ``method``: the method called (``"fit_generator"``,
    ``"fit"``, ...); ``input_kind``: what it was given (``"generator"``, ``"sequence"``,
    ``"tf.data"``, ``"arrays"``, ``"image-iterator"``, ``"other"``); ``legacy_arguments``:
    the Keras-2 arguments the script passed, as ``"name=value"`` texts in its order;
    ``accelerated``: whether the data ran through ``stoke.accelerate`` (False under
    ``stoke doctor``, and for data stoke does not feed, such as a ``tf.data`` dataset);
    ``read_as_stream``: a Sequence given steps other than its length, read as Keras 2 read
    it, one stream of passes (Keras 3 alone would end an epoch where the Sequence ends:
    the advice says how to keep Keras 2's epochs).
    """

    filename: str
    lineno: int
    call_source: str
    method: str
    input_kind: str
    legacy_arguments: tuple[str, ...]
    accelerated: bool
    read_as_stream: bool = False

    @property
    def where(self) -> str:
        """``train.py:42`` (relative to the working directory when shorter)."""
        return where(self.filename, self.lineno)

    def advice(self) -> str:
        """What to write instead, one line: ``train.py:42 `old` -> `new```."""
        return f"{self.where} `{self.shown_call()}` → {self.replacement()}"

    def shown_call(self) -> str:
        """The call as the note shows it: receiver and method, the Keras-2 arguments."""
        receiver = _receiver(self.call_source, self.method) or "model"
        legacy = ", ".join(self.legacy_arguments)
        return f"{receiver}.{self.method}(..., {legacy})" if legacy else \
            f"{receiver}.{self.method}(...)"

    def replacement(self) -> str:
        receiver = _receiver(self.call_source, self.method) or "model"
        target = self.method.removesuffix("_generator")
        data = first_argument(self.call_source) or "data"
        if self.read_as_stream:
            stream = (f"`acc = stoke.accelerate({data})`, `acc.endless = True`, "
                      f"`{receiver}.{target}(acc, ...)`")
            if self.accelerated:
                return (f"{stream} (and `import stoke`; without `endless`, Keras 3 ends an "
                        "epoch where the Sequence ends, as it does without stoke)")
            return (f"{self._plain_replacement(receiver, target, data)}; Keras 3 ends an epoch "
                    f"where {data} ends, not after steps_per_epoch batches: to go on as Keras "
                    f"2 did, {stream} (and `import stoke`)")
        return self._plain_replacement(receiver, target, data)

    def _plain_replacement(self, receiver: str, target: str, data: str) -> str:
        if self.input_kind in ("generator", "sequence", "image-iterator") and self.accelerated:
            return f"`{receiver}.{target}(stoke.accelerate({data}), ...)` (and `import stoke`)"
        if self.input_kind == "generator" and self.method.endswith("_generator"):
            return f"`{receiver}.{target}({data}, ...)`"
        if self.legacy_arguments:
            names = ", ".join(a.split("=", 1)[0] + "=..." for a in self.legacy_arguments)
            renamed = f"call `{receiver}.{target}` and " if target != self.method else ""
            return f"{renamed}delete {names} (Keras 3 has no such arguments)"
        return f"`{receiver}.{target}({data}, ...)`"


def where(filename: str, lineno: int) -> str:
    """``train.py:42``: the file relative to the working directory when that is shorter."""
    try:
        relative = os.path.relpath(filename)
        if len(relative) < len(filename):
            filename = relative
    except ValueError:  # another drive
        pass
    return f"{filename}:{lineno}"


_lock = threading.Lock()
_records: dict[tuple, Conversion] = {}


def record(conversion: Conversion) -> bool:
    """Keep ``conversion``; True the first time this call (file, line, method) is seen."""
    key = (conversion.filename, conversion.lineno, conversion.method)
    with _lock:
        if key in _records:
            return False
        _records[key] = conversion
        return True


def recorded() -> list[Conversion]:
    """Each distinct call translated so far, in the order first seen."""
    with _lock:
        return list(_records.values())


def forget() -> None:
    with _lock:
        _records.clear()


def user_frame(start: FrameType | None = None) -> FrameType | None:
    """The innermost frame of the user's code: outside stoke, Keras and the backends."""
    frame = start if start is not None else sys._getframe(1)
    roots = (_HERE + os.sep, *_library_roots())
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<"):  # <frozen runpy> is Python's; <string>, <stdin> are not
            if not filename.startswith("<frozen"):
                return frame
        elif not os.path.abspath(filename).startswith(roots):
            return frame
        frame = frame.f_back
    return None


def _library_roots() -> list[str]:
    roots = []
    for name in _LIBRARIES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            roots.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return roots


def call_site(frame: FrameType | None) -> tuple[str, int, str]:
    """``(filename, lineno, source text of the call being made)`` for ``frame``."""
    if frame is None:
        return "<unknown>", 0, ""
    filename = frame.f_code.co_filename
    lineno = frame.f_lineno or 0
    source = ""
    positions = _instruction_positions(frame)
    if positions is not None:
        first, last, start_col, end_col = positions
        lines = [linecache.getline(filename, n) for n in range(first, last + 1)]
        if all(lines):
            if len(lines) == 1:
                lines[0] = lines[0][start_col:end_col]
            else:
                lines[0] = lines[0][start_col:]
                lines[-1] = lines[-1][:end_col]
            source = _collapse("".join(lines))
            lineno = first
    if not source:
        source = _collapse(linecache.getline(filename, lineno))
    return filename, lineno, source


def _instruction_positions(frame: FrameType) -> tuple[int, int, int, int] | None:
    try:
        positions = list(frame.f_code.co_positions())[frame.f_lasti // 2]
    except (AttributeError, IndexError):
        return None
    if any(p is None for p in positions):
        return None
    return positions


def _collapse(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip())
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", text)).rstrip(",")


def _receiver(call_source: str, method: str) -> str:
    match = re.match(rf"^(.*?)\.{re.escape(method)}\s*\(", call_source)
    return match.group(1) if match else ""


def first_argument(call_source: str) -> str:
    """The data argument's text in a training call's source, ``f(a, b=...)`` (its first
    positional argument, else ``x=``/``generator=``); ``""`` if the call does not parse.
    The doctor's fixes name the script's own variable with it."""
    import ast

    try:
        node = ast.parse(call_source, mode="eval").body
    except SyntaxError:
        return ""
    if not isinstance(node, ast.Call):
        return ""
    if node.args:
        return ast.get_source_segment(call_source, node.args[0]) or ""
    for keyword in node.keywords:
        if keyword.arg in ("x", "generator"):
            return ast.get_source_segment(call_source, keyword.value) or ""
    return ""
