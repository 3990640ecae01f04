"""Ending a process and every process it started, with no replacement left running:
:func:`end_tree`.

Killed one by one, a tree races whatever in it starts processes. A ``multiprocessing.Pool``'s
handler thread waits on its workers and starts a new one the moment one dies: the doctor's
script, killing its pool's workers and then exiting, had its workers replaced in between, and
the replacements ran on under init (a SIGKILLed ``stoke doctor`` left them 1 time in 3 on a
loaded 2-core machine). So the tree is frozen first, from the top down: each process is
stopped (SIGSTOP) before its children are listed. Once a process's SIGSTOP is queued it starts
no further child (a ``fork`` that has not yet attached its child is restarted by the kernel
after the signal, which never comes), so the listing after the stop is complete; a stopped
process cannot notice a death either. Then every frozen process is killed. Where there is no
SIGSTOP (Windows), the processes are killed children first.

A process cannot freeze itself and carry on: the measured script, when the doctor is gone, has
this run by a helper process (``python -m stoke.diagnosis.run.process_tree PID``,
:mod:`stoke.diagnosis.run.parent_watch`); the doctor's runner, outside the tree, calls
:func:`end_tree` itself (:mod:`stoke.diagnosis.run.runner`).
"""

from __future__ import annotations

import os
import signal
import sys

import psutil


def end_tree(root_pid: int, spare: frozenset[int] = frozenset()) -> int:
    """Freeze ``root_pid`` and its descendants, then kill them all; ``spare``: pids left alone
    (the helper that runs this, itself a descendant). Returns how many processes were killed.
    Processes gone already, or not ours to signal, are passed over."""
    try:
        root = psutil.Process(root_pid)
    except psutil.Error:
        return 0
    if not hasattr(signal, "SIGSTOP"):
        return _kill(_listed(root, spare))
    frozen: list[psutil.Process] = []
    pending = [root]
    while pending:
        process = pending.pop()
        if process.pid in spare:
            continue
        try:
            process.suspend()
        except psutil.Error:
            continue
        frozen.append(process)
        try:
            pending.extend(process.children())
        except psutil.Error:
            pass
    return _kill(frozen)


def _listed(root: psutil.Process, spare: frozenset[int]) -> list[psutil.Process]:
    try:
        processes = [*root.children(recursive=True), root]
    except psutil.Error:
        processes = [root]
    return [process for process in processes if process.pid not in spare]


def _kill(processes: list[psutil.Process]) -> int:
    killed = 0
    for process in processes:
        try:
            process.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed


def main(argv: list[str]) -> int:
    """``python -m stoke.diagnosis.run.process_tree PID``: end PID's tree, this process spared.
    PID must be this process's parent (the caller), so that a pid reused since is never hit."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m stoke.diagnosis.run.process_tree PID", file=sys.stderr)
        return 2
    root_pid = int(argv[0])
    if os.getppid() != root_pid:
        print(f"stoke: process {root_pid} is not this process's parent: not ended",
              file=sys.stderr)
        return 1
    end_tree(root_pid, spare=frozenset({os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
