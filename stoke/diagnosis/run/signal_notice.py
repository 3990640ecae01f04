"""Whether the measured script got a Ctrl-C (or SIGTERM) itself, told to the doctor at once.

A terminal's Ctrl-C goes to its whole foreground process group: the doctor and the script
both get SIGINT. So does a scheduler's ``kill -INT -PGID``, or SIGTERM to every process of a
job. A ``kill`` aimed at the doctor alone reaches only the doctor, which must then pass it on.
Passing it on when the script already had it gave the script two: a user's ``except
KeyboardInterrupt:`` that saves a checkpoint was interrupted inside ``model.save`` (a 0-byte
``.keras`` file, exit status 130 where the plain run exited 3: the red-team's s01_sigint.py).

The script's side (:func:`install_in_script`, from the bootstrap) sets Python's signal
wake-up file descriptor to the write end of a pipe the doctor made (:func:`open_pipe`): the
interpreter's C-level handler writes the signal's number there the moment the signal arrives,
whatever Python handler runs later (the default's KeyboardInterrupt, the bootstrap's
SIGTERM, one of the user's), and even while the main thread is busy in a long C call. Forked
children (a DataLoader's or PyDataset's workers) stop writing there: only the script's own
process speaks. The doctor's side (:func:`script_got_signal`) reads the pipe when it is
interrupted itself, and passes the signal on only when the script did not get one.

A script that sets a wake-up descriptor of its own (asyncio's signal handlers do) silences
this: the doctor then passes the signal on, as it always did. Owns nothing else.
"""

from __future__ import annotations

import os
import select
import signal

SIGNAL_FD_ENV = "STOKE_DOCTOR_SIGNAL_FD"  # the write end the script's interpreter writes to

# how long the doctor waits for the script's note after its own signal: both come from one
# kill() or keypress, within microseconds; the margin is for a loaded machine
NOTICE_WAIT_S = 0.25

_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def open_pipe() -> tuple[int, int]:
    """The pipe: (read end, kept by the doctor; write end, passed to the script). The write end
    does not block (the interpreter requires it: a full pipe drops the byte, never stalls a
    signal handler)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    os.set_blocking(read_end, False)
    return read_end, write_end


def install_in_script() -> None:
    """In the script's process, main thread: signals arriving here are written to the doctor's
    pipe (``SIGNAL_FD_ENV``), not from forked children. Nothing when the doctor gave none."""
    text = os.environ.pop(SIGNAL_FD_ENV, None)
    if not text:
        return
    try:
        signal.set_wakeup_fd(int(text), warn_on_full_buffer=False)
    except (ValueError, OSError):
        return  # not the main thread, or the descriptor is gone: the doctor passes it on
    os.register_at_fork(after_in_child=_silence_forked_child)


def _silence_forked_child() -> None:
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass


def script_got_signal(read_end: int, wait_s: float = NOTICE_WAIT_S) -> bool:
    """Whether the script's process noted a SIGINT or SIGTERM since the last look (waiting up
    to ``wait_s`` for the note): the pipe is drained."""
    got = False
    ready, _, _ = select.select([read_end], [], [], wait_s)
    while ready:
        try:
            data = os.read(read_end, 4096)
        except BlockingIOError:
            break
        if not data:
            break
        got = got or any(byte in _INTERRUPTS for byte in data)
        ready, _, _ = select.select([read_end], [], [], 0)
    return got
