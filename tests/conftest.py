"""Suite-wide checks: after every test, no stoke worker process and no stoke shared-memory
segment is left behind (the standards: also after crashes, kills and Ctrl-C)."""

from __future__ import annotations

import os
import time

import psutil
import pytest


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
