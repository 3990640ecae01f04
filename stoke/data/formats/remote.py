"""Paths and bytes, local or remote: the one place stoke touches files of record formats.

A path is local (``/data/x.tfrecord``, ``file:///data/...``) or an fsspec URL (``gs://``,
``s3://``, ``https://``, ...). :func:`expand_paths` turns what a user wrote into a sequence
of paths: a list as given, a brace pattern (``shard-{000..099}.tar``, ``{train,val}``)
expanded *lazily* (path ``i`` is computed, never listed, so a million-shard pattern costs
nothing to ship to workers), or a glob. :class:`ByteReader` reads byte ranges: ``os.pread``
on cached descriptors for local files, fsspec (imported only here, and only for remote
paths) for URLs. The ranges of a whole chunk are in flight together, so that request latency
overlaps: on fsspec's own event loop when the filesystem is asynchronous (HTTP, S3, GCS: each
range one coroutine, no thread hop per request: 580 -> 360 us of client CPU per 140 KB
range, measured against the tests' HTTP server on a loaded 2-core machine), else on a
per-process thread pool. Network errors become :class:`~stoke.data.formats.base.RecordError`
naming the URL; no request waits longer than ``connect_timeout_s`` to connect.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.data.formats.base import RecordError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# an unreachable or silent server is named within 10 s: fsspec asks for a file's size twice
# (HEAD, then GET) before it gives up, each bounded by these
CONNECT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 3.0  # no byte for this long: not answering
IO_THREADS = 16
OPEN_FILES = 64

RECENT_PATHS = 4096  # paths of a brace pattern kept per process once built
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def is_remote(path: str) -> bool:
    """True for fsspec URLs other than ``file://``."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme not in ("file", "local")


def remote_paths(paths: Sequence[str]) -> bool:
    """Are ``paths`` read over the network (judged by the first: a source's paths share a
    place)?"""
    return bool(len(paths)) and is_remote(paths[0])


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class BracePaths(Sequence):
    """``shard-{000..099}.tar`` or ``{train,val}-{0..9}.rec`` as a sequence computed on
    demand: ``len()`` is the product of the alternatives, ``paths[i]`` is built from ``i``.
    Numeric ranges keep the zero padding of the wider bound (``{000..099}``). The last
    :data:`RECENT_PATHS` paths built are kept (a sample's path is asked for per sample: its
    shard's ``__url__``), per process: a pickled pattern stays its pattern."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.recent: dict[int, str] = {}
        self.literals: list[str] = []
        self.choices: list[tuple] = []  # ("range", start, step, count, width) | ("list", items)
        position = 0
        for match in _BRACE.finditer(pattern):
            self.literals.append(pattern[position:match.start()])
            body = match.group(1)
            numeric = _RANGE.match(body)
            if numeric:
                a, b = numeric.group(1), numeric.group(2)
                start, stop = int(a), int(b)
                width = max(len(a), len(b)) if (a.startswith("0") or b.startswith("0")) else 0
                step = 1 if stop >= start else -1
                self.choices.append(("range", start, step, abs(stop - start) + 1, width))
            elif "," in body:
                self.choices.append(("list", body.split(",")))
            else:
                raise ValueError(
                    f"cannot expand {{{body}}} in {pattern!r}: use {{000..099}} for a numeric "
                    "range or {a,b,c} for alternatives.")
            position = match.end()
        self.literals.append(pattern[position:])
        self.sizes = [c[3] if c[0] == "range" else len(c[1]) for c in self.choices]
        self.length = 1
        for size in self.sizes:
            self.length *= size

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "recent": {}}

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        found = self.recent.get(index)
        if found is not None:
            return found
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"path {index} of {self.length} in {self.pattern!r}")
        if len(self.recent) >= RECENT_PATHS:
            self.recent.clear()
        self.recent[index] = path = self.build(index)
        return path

    def build(self, index: int) -> str:
        """Path ``index`` (``0 <= index < len(self)``), built from the pattern."""
        digits = []
        for size in reversed(self.sizes):
            index, digit = divmod(index, size)
            digits.append(digit)
        digits.reverse()
        out = [self.literals[0]]
        for choice, digit, literal in zip(self.choices, digits, self.literals[1:]):
            if choice[0] == "range":
                _, start, step, _, width = choice
                value = start + step * digit
                out.append(f"{value:0{width}d}" if width else str(value))
            else:
                out.append(choice[1][digit])
            out.append(literal)
        return "".join(out)

    def __repr__(self) -> str:
        return f"BracePaths({self.pattern!r}, {self.length} paths)"


class PathTable(Sequence):
    """A long list of paths (a glob's matches) as one array of UTF-8 bytes with the end of
    each path: pickled, it is one contiguous buffer, which the process pool ships out of
    band through shared memory once for every worker (``executors/payload.py``) instead
    of one pickled string per path per worker."""

    def __init__(self, paths: Sequence[str]) -> None:
        encoded = [os.fsencode(p) for p in paths]
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        # one array: the ends, then the bytes (one out-of-band buffer, not two)
        self.table = np.concatenate([ends.view(np.uint8),
                                     np.frombuffer(b"".join(encoded), np.uint8)])
        self.count = len(encoded)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        index = int(index)
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"path {index} of {self.count}")
        ends = self.table[:8 * self.count].view(np.int64)
        base = 8 * self.count
        start = int(ends[index - 1]) if index else 0
        return os.fsdecode(self.table[base + start: base + int(ends[index])].tobytes())

    def __repr__(self) -> str:
        return f"PathTable({self.count} paths)"


SHIP_AS_TABLE_FROM = 256  # a list of more paths than this travels as a PathTable


def shippable_paths(paths: Sequence[str]) -> Sequence[str]:
    """``paths`` as they best travel to worker processes: a pattern stays a pattern, a long
    list becomes a :class:`PathTable` (a size that does not grow the pickled program)."""
    if isinstance(paths, (BracePaths, PathTable)) or len(paths) <= SHIP_AS_TABLE_FROM:
        return paths
    return PathTable(paths)


def describe_paths(paths: Sequence[str]) -> str:
    """A short fingerprint of a sequence of paths (its pattern, or its count and ends)."""
    if isinstance(paths, BracePaths):
        return paths.pattern
    if not len(paths):
        return "0"
    import hashlib

    ends = f"{len(paths)}:{paths[0]}:{paths[-1]}".encode()
    return hashlib.sha1(ends).hexdigest()[:12]


def expand_paths(spec: Any, what: str, storage_options: dict | None = None) -> Sequence[str]:
    """A list of paths, a brace pattern (lazy), a glob (local or remote: listed with
    ``storage_options``), a local folder (its files, sorted) or one path.

    Raises ``FileNotFoundError`` naming the pattern when nothing matches."""
    if isinstance(spec, (str, os.PathLike)):
        pattern = os.fspath(spec)
        if _BRACE.search(pattern):
            paths = BracePaths(pattern)
            return paths
        if not is_remote(pattern) and os.path.isdir(local_path(pattern)):
            folder = local_path(pattern)
            found = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                           if os.path.isfile(os.path.join(folder, name)))
            if not found:
                raise FileNotFoundError(f"{what} found no files in the folder {pattern!r}.")
            return found
        if any(c in pattern for c in "*?["):
            found = _glob(pattern, storage_options)
            if not found:
                raise FileNotFoundError(
                    f"{what} found no files for {pattern!r}. Give a glob such as "
                    "'data/train-*.tfrecord', a brace pattern 'shard-{000..099}.tar', or a "
                    "list of paths.")
            return found
        return [pattern]
    paths = [os.fspath(p) for p in spec]
    if not paths:
        raise FileNotFoundError(f"{what} got an empty list of paths.")
    return paths


def _glob(pattern: str, storage_options: dict | None = None) -> list[str]:
    if not is_remote(pattern):
        return sorted(glob.glob(local_path(pattern), recursive=True))
    protocol = pattern.split("://", 1)[0]
    try:
        fs, _ = filesystem(pattern, storage_options)
        found = sorted(fs.glob(pattern))
    except FileNotFoundError:
        found = []
    except Exception as exc:  # noqa: BLE001 - said with the URL
        raise unreachable(pattern, exc) from exc
    return [p if "://" in p else f"{protocol}://{p}" for p in found]


def filesystem(url: str, storage_options: dict | None = None):
    """The fsspec filesystem of ``url`` (with connect/read timeouts for HTTP and S3, unless
    ``storage_options`` sets them)."""
    import fsspec.core

    options = dict(storage_options or {})
    if url.startswith(("http://", "https://")) and "client_kwargs" not in options:
        import aiohttp

        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S,
            sock_read=READ_TIMEOUT_S)}
    if url.startswith(("s3://", "s3a://")) and "config_kwargs" not in options:
        # botocore's defaults (60 s to connect, retried with back-off) would keep an
        # unreachable endpoint silent for minutes; s3fs adds its own retries on top
        options["config_kwargs"] = {"connect_timeout": CONNECT_TIMEOUT_S,
                                    "read_timeout": READ_TIMEOUT_S,
                                    "retries": {"max_attempts": 1, "mode": "standard"}}
    fs, _ = fsspec.core.url_to_fs(url, **options)
    return fs, url


def unreachable(path: str, exc: BaseException) -> RecordError:
    """The error of a path that could not be read: the URL, what went wrong and what caused
    it (fsspec reports a refused connection or an unknown host as a bare
    ``FileNotFoundError(url)``; its causes say which)."""
    return RecordError(
        f"could not read {path}: {failure_words(exc, path)}. Check the URL, the network and "
        "the credentials (fsspec storage_options=...).")


def failure_words(exc: BaseException, path: str = "") -> str:
    """``exc`` and the chain of errors that caused it, in a line: ``"FileNotFoundError,
    caused by ClientConnectorError: Cannot connect to host ..."``; a message that only
    repeats ``path`` is left out, a timeout with none says which timeouts ran out."""
    words: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(words) < 4:
        seen.add(id(exc))
        text = str(exc).strip()
        if not text and isinstance(exc, TimeoutError):  # fsspec's FSTimeoutError too
            text = (f"no answer within the timeouts ({CONNECT_TIMEOUT_S:g} s to connect, "
                    f"{READ_TIMEOUT_S:g} s between bytes)")
        if text in (path, repr(path)):
            text = ""
        words.append(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return ", caused by ".join(words)


class ByteReader:
    """Byte ranges of local files and URLs, per process; nothing open is pickled.

    ``read(path, start, end)`` reads one range now; ``submit`` starts one in the background
    and returns a future: a coroutine on fsspec's event loop for an asynchronous filesystem,
    else a job for a pool of ``IO_THREADS`` threads."""

    def __init__(self, storage_options: dict | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self._setup()

    def _setup(self) -> None:
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._fs: dict[str, Any] = {}
        self._in_flight: set[Future] = set()  # coroutines on fsspec's loop, cancelled at close

    def __getstate__(self) -> dict:
        return {"storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.storage_options = state["storage_options"]
        self._setup()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        fds = getattr(self, "_fds", {})
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        fds.clear()
        for future in list(getattr(self, "_in_flight", ())):
            future.cancel()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- local --------------------------------------------------------------------------
    def _fd(self, path: str) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                self._fds.move_to_end(path)
                return fd
            fd = os.open(local_path(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._fds[path] = fd
            while len(self._fds) > OPEN_FILES:
                _, old = self._fds.popitem(last=False)
                os.close(old)
            return fd

    # -- remote -------------------------------------------------------------------------
    def fs(self, path: str):
        protocol = path.split("://", 1)[0]
        fs = self._fs.get(protocol)
        if fs is None:
            fs, _ = filesystem(path, self.storage_options)
            self._fs[protocol] = fs
        return fs

    # -- reading ------------------------------------------------------------------------
    def size(self, path: str) -> int:
        if not is_remote(path):
            return os.path.getsize(local_path(path))
        try:
            return int(self.fs(path).size(path))
        except Exception as exc:  # noqa: BLE001 - said with the URL
            raise unreachable(path, exc) from exc

    def read(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``path`` (fewer only at the end of the file)."""
        if not is_remote(path):
            return os.pread(self._fd(path), end - start, start)
        try:
            return self.fs(path).cat_file(path, start=start, end=end)
        except Exception as exc:  # noqa: BLE001 - said with the URL
            raise unreachable(path, exc) from exc

    def submit(self, path: str, start: int, end: int) -> Future:
        """Start reading bytes ``[start, end)`` of ``path``; the future's result is
        :meth:`read`'s (or its :class:`~stoke.data.formats.base.RecordError`)."""
        if is_remote(path):
            fs = self.fs(path)
            if fs.async_impl:
                future = asyncio.run_coroutine_threadsafe(
                    self._read_async(fs, path, start, end), fs.loop)
                self._in_flight.add(future)
                future.add_done_callback(self._in_flight.discard)
                return future
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="stoke-io")
        return self._pool.submit(self.read, path, start, end)

    @staticmethod
    async def _read_async(fs, path: str, start: int, end: int) -> bytes:
        """:meth:`read` of a URL as a coroutine on ``fs``'s event loop; its errors are said as
        fsspec's ``sync`` says them (a timeout becomes ``FSTimeoutError``), with the URL."""
        try:
            try:
                return await fs._cat_file(path, start=start, end=end)
            except asyncio.TimeoutError as exc:
                from fsspec.exceptions import FSTimeoutError

                raise FSTimeoutError from exc
        except Exception as exc:  # noqa: BLE001 - said with the URL
            raise unreachable(path, exc) from exc

    def open(self, path: str, block_size: int = 8 << 20):
        """A file object for a sequential pass (indexing)."""
        if not is_remote(path):
            return open(local_path(path), "rb")  # noqa: SIM115 - the caller closes it
        try:
            return self.fs(path).open(path, "rb", block_size=block_size, cache_type="readahead")
        except Exception as exc:  # noqa: BLE001 - said with the URL
            raise unreachable(path, exc) from exc


def coalesce(spans: list[tuple[int, int, int]], max_gap: int) -> list[tuple[int, int, list[int]]]:
    """Merge ``(start, end, key)`` spans of one file that lie within ``max_gap`` bytes of
    each other: ``(start, end, keys)`` ranges, each fetched by one request."""
    merged: list[tuple[int, int, list[int]]] = []
    for start, end, key in sorted(spans):
        if merged and start - merged[-1][1] <= max_gap:
            s, e, keys = merged[-1]
            merged[-1] = (s, max(e, end), [*keys, key])
        else:
            merged.append((start, end, [key]))
    return merged


__all__ = ["BracePaths", "ByteReader", "PathTable", "coalesce", "expand_paths", "is_remote",
           "remote_paths"]
