"""``stoke run train.py ARGS``: run a Keras-2-era training script, unchanged, on Keras 3.

The script runs in this process as ``__main__`` (``sys.argv`` and ``sys.path[0]`` as
``python train.py ARGS`` would set them) with the shim of ``shim.py`` installed: Keras-2
``fit``/``evaluate``/``predict`` arguments and the ``*_generator`` methods work, and the
Sequences and generators they get are fed by ``stoke.accelerate``. The exit status is the
script's.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", default="auto",
                        help="stoke workers per dataset (default: tuned by measurement, "
                             "within the cores the script asks for with workers=)")
    parser.add_argument("--no-accelerate", action="store_true",
                        help="translate the Keras-2 calls only: the script's data runs as "
                             "Keras 3 runs it (as under `stoke doctor`; to compare)")
    parser.add_argument("--quiet", action="store_true",
                        help="do not print what to change in the script")
    parser.add_argument("--tuning", action="store_true",
                        help="when a training call returns, print what fed its data and why "
                             "(workers, ring depth: what was measured and chosen)")
    parser.add_argument("script", help="the training script, e.g. train.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER,
                        help="the script's own arguments")


def main(args: argparse.Namespace) -> int:
    from stoke.legacy import shim

    script = args.script
    if not os.path.isfile(script):
        print(f"stoke run: no such script: {script!r}. Usage: stoke run train.py [ARGS...]",
              file=sys.stderr)
        return 2
    workers = args.workers
    if workers != "auto":
        try:
            workers = int(workers)
            if workers < 1:
                raise ValueError
        except ValueError:
            print(f"stoke run: --workers must be a positive int or 'auto'. Received: "
                  f"{args.workers!r}", file=sys.stderr)
            return 2
    shim.install(workers=workers, quiet=args.quiet, keras2_only=args.no_accelerate,
                 show_tuning=args.tuning)
    return run_script(script, list(args.script_args))


def run_script(script: str, argv: list[str]) -> int:
    """Run ``script`` as ``python script ARGV`` would; return its exit status. An exception
    the script raises is printed as ``python`` prints it (its traceback starting at the
    script, not in stoke) and gives status 1."""
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exit_status(exc.code)
    except Exception as exc:  # noqa: BLE001 - the script's own: printed as python would
        print_from_script(exc, script)
        return 1
    return 0


def print_from_script(exc: BaseException, script: str) -> None:
    """Print ``exc`` with its traceback from the script's first frame on (the frames of
    ``stoke run`` and runpy above it are not the user's)."""
    import traceback

    target = os.path.abspath(script)
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != target:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
    sys.stderr.flush()


def exit_status(code) -> int:
    """The status ``sys.exit(code)`` gives a process, as Python does it: None -> 0, an int
    as is, anything else printed to stderr -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
