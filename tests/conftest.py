"""Suite-wide checks: after every test, no stoke worker process, no stoke shared-memory
segment and no stoke temporary file is left behind (the standards: also after crashes, kills
and Ctrl-C).

The session, and every process it starts, gets a temporary directory of its own (``TMPDIR``,
removed at the end): what a test leaves there is its own, not another run's on a shared
machine, and a check of it cannot be flaky.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import psutil
import pytest

SUITE_TMP = tempfile.mkdtemp(prefix="stoke-suite-")
os.environ["TMPDIR"] = SUITE_TMP
tempfile.tempdir = None  # gettempdir() reads TMPDIR again
# what stoke (stoke-doctor-..., stoke-ray-...) and the test scripts (keras2-...) name theirs
OWN_TEMP_PREFIXES = ("stoke-", "keras2-")


def pytest_unconfigure(config):
    shutil.rmtree(SUITE_TMP, ignore_errors=True)


def _stoke_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        if " -m stoke" in f" {cmdline}":  # our workers, the doctor's and env's children
            found.append(child)
    return found


def _stoke_shm() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if "stoke" in name}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaks():
    shm_before = _stoke_shm()
    temp_before = _own_temp()
    yield
    deadline = time.monotonic() + 60.0  # ending workers wait for a CPU on a loaded machine
    while _stoke_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = _stoke_children()
    for child in children:
        child.kill()
    assert not children, f"stoke left child processes behind: {[c.pid for c in children]}"
    leaked = _stoke_shm() - shm_before
    assert not leaked, f"stoke left shared memory behind: {sorted(leaked)}"
    left = _own_temp() - temp_before
    for name in left:
        shutil.rmtree(os.path.join(SUITE_TMP, name), ignore_errors=True)  # not the next test's
    assert not left, f"left temporary files behind in {SUITE_TMP}: {sorted(left)}"


def _own_temp() -> set[str]:
    return {name for name in os.listdir(SUITE_TMP) if name.startswith(OWN_TEMP_PREFIXES)}
