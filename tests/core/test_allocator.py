"""``STOKE_WORKER_MALLOC=keep``: worker processes keep freed memory for the next sample
(``stoke/executors/allocator.py``).

glibc reports how many blocks it holds in pages of their own (``mallinfo2().hblks``): a
block under the mmap threshold comes from the heap, where freed memory is reused. Only
glibc has these calls; elsewhere the tests are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import stoke
from stoke.executors.allocator import keep_freed_memory


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2  # noqa: B018 - glibc >= 2.33
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


pytestmark = pytest.mark.skipif(_glibc() is None, reason="needs glibc (mallopt, mallinfo2)")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def blocks_in_own_pages_while_holding(megabytes: int = 8) -> int:
    """How many more blocks glibc keeps in pages of their own while an array of
    ``megabytes`` is alive (1: it got fresh pages; 0: it came from the heap)."""
    libc = _glibc()
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblks
    array = np.ones(megabytes << 20, np.uint8)
    during = libc.mallinfo2().hblks
    del array
    return during - before


def own_pages_sample(index):
    """A map function: the sample says whether its array (8 MB for sample 0, one MB more for
    each next one: always more than glibc's adaptive threshold has seen) got pages of its own."""
    return np.int64(blocks_in_own_pages_while_holding(8 + index)), np.int64(index)


PROBE = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{root!r}]
    from stoke.executors.allocator import keep_freed_memory
    from tests.core.test_allocator import blocks_in_own_pages_while_holding
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    print(applied, blocks_in_own_pages_while_holding())
""")


def _fresh_python(mode: str, **env: str) -> tuple[str, int]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "STOKE_WORKER_MALLOC"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=root), mode],
                         env={**clean, **env}, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_a_fresh_process_gives_big_blocks_fresh_pages_and_keeping_freed_memory_stops_it():
    assert _fresh_python("keep") == ("False", 1)  # not asked for: glibc's default
    assert _fresh_python("keep", STOKE_WORKER_MALLOC="keep") == ("True", 0)


def test_the_users_own_malloc_settings_win():
    applied, _ = _fresh_python("keep", STOKE_WORKER_MALLOC="keep",
                               MALLOC_TRIM_THRESHOLD_="1048576")
    assert applied == "False"


def test_keep_freed_memory_reads_the_environment_it_is_given():
    assert keep_freed_memory({}) is False
    assert keep_freed_memory({"STOKE_WORKER_MALLOC": "default"}) is False
    assert keep_freed_memory({"STOKE_WORKER_MALLOC": "keep", "MALLOC_TOP_PAD_": "0"}) is False


@pytest.mark.parametrize("setting,own_pages_after_the_first", [(None, 1), ("keep", 0)])
def test_process_workers_follow_the_setting(monkeypatch, setting, own_pages_after_the_first):
    if setting is None:
        monkeypatch.delenv("STOKE_WORKER_MALLOC", raising=False)
    else:
        monkeypatch.setenv("STOKE_WORKER_MALLOC", setting)
    pipe = stoke.from_sequence(list(range(8))).map(own_pages_sample).batch(8)
    own_pages = np.concatenate([x for x, _ in pipe.iter(executor="process", workers=1)])
    # sample 0 ran twice (the layout probe first), so its block came back from the heap
    assert own_pages[1:].tolist() == [own_pages_after_the_first] * 7
