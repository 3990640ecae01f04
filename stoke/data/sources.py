"""Sources: where samples come from. A source has ``len()`` and ``source[i]``.

``from_sequence`` wraps anything indexable, ``from_arrays`` slices aligned arrays,
``from_files`` reads raw bytes of files (decoding belongs in the workers' ``map``, with a
well-kept decoder: see :func:`stoke.decode_image`). Sources are sent to worker processes
once, when the workers start; large numpy arrays inside them travel through shared memory,
not pipes (see ``executors/payload.py``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stoke.data.formats.remote import BracePaths, shippable_paths


class SequenceSource:
    """Any object with ``__len__`` and ``__getitem__(i)``, read one index at a time."""

    def __init__(self, sequence: Any) -> None:
        if not (hasattr(sequence, "__len__") and hasattr(sequence, "__getitem__")):
            raise TypeError(
                "from_sequence needs an object with __len__ and __getitem__(i) (a list, a "
                f"numpy array, a torch Dataset, ...). Received: {type(sequence).__name__}. "
                "For a generator use stoke.accelerate(generator_function)."
            )
        self.sequence = sequence

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, index: int) -> Any:
        return self.sequence[index]

    def describe(self) -> str:
        return f"{type(self.sequence).__name__} of {len(self)} samples"


class ArraySource:
    """Aligned arrays sliced together: sample ``i`` is ``(x[i], y[i], ...)`` or ``{k: v[i]}``."""

    def __init__(self, *arrays: Any, **named: Any) -> None:
        if arrays and named:
            raise TypeError("from_arrays takes positional arrays or keyword arrays, not both.")
        if not arrays and not named:
            raise TypeError("from_arrays needs at least one array.")
        self.named = bool(named)
        self.keys = list(named) if named else None
        values = list(named.values()) if named else list(arrays)
        self.arrays = [np.asarray(a) for a in values]
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            names = self.keys or [f"array {i}" for i in range(len(self.arrays))]
            detail = ", ".join(f"{n}: {len(a)}" for n, a in zip(names, self.arrays))
            raise ValueError(f"from_arrays needs arrays of the same length. Received: {detail}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> Any:
        if self.named:
            return {k: a[index] for k, a in zip(self.keys, self.arrays)}
        if len(self.arrays) == 1:
            return self.arrays[0][index]
        return tuple([a[index] for a in self.arrays])

    def describe(self) -> str:
        return f"{len(self.arrays)} arrays of {len(self)} samples"


class FileSource:
    """The raw bytes of each file (and optionally its label): decoding happens in ``map``."""

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[Any] | None = None):
        # a brace pattern stays a pattern: a million paths cost nothing to ship to workers
        self.paths = paths if isinstance(paths, BracePaths) else [os.fspath(p) for p in paths]
        if labels is not None and len(labels) != len(self.paths):
            raise ValueError(
                f"from_files got {len(self.paths)} paths but {len(labels)} labels; "
                "give one label per file."
            )
        self.labels = None if labels is None else list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        with open(self.paths[index], "rb") as f:
            data = f.read()
        if self.labels is None:
            return data
        return data, self.labels[index]

    def __getstate__(self) -> dict:
        # a long list travels to process workers as one shared-memory buffer, not a list
        return dict(self.__dict__, paths=shippable_paths(self.paths))

    def describe(self) -> str:
        return f"{len(self)} files"


def resolve_paths(paths_or_glob: str | os.PathLike | Sequence[str | os.PathLike]) -> Sequence[str]:
    """A glob pattern, a directory (all files below it, sorted), a brace pattern
    (``img-{0000000..0999999}.jpg``: computed lazily, never listed) or a list of paths."""
    if isinstance(paths_or_glob, (str, os.PathLike)):
        pattern = os.fspath(paths_or_glob)
        if "{" in pattern and not os.path.exists(pattern):
            return BracePaths(pattern)
        if os.path.isdir(pattern):
            found = sorted(str(p) for p in Path(pattern).rglob("*") if p.is_file())
        else:
            found = sorted(glob.glob(pattern, recursive=True))
        if not found:
            raise FileNotFoundError(
                f"from_files found no files for {pattern!r}. Give a directory, a glob such as "
                "'images/**/*.jpg', or a list of paths."
            )
        return found
    return [os.fspath(p) for p in paths_or_glob]
