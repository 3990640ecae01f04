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
                        help="stoke workers per dataset (default: what the script asks for, "
                             "at most one per core)")
    parser.add_argument("--quiet", action="store_true",
                        help="do not print what to change in the script")
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
    shim.install(workers=workers, quiet=args.quiet)
    return run_script(script, list(args.script_args))


def run_script(script: str, argv: list[str]) -> int:
    """Run ``script`` as ``python script ARGV`` would; return its exit status."""
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exit_status(exc.code)
    return 0


def exit_status(code) -> int:
    """The status ``sys.exit(code)`` gives a process, as Python does it: None -> 0, an int
    as is, anything else printed to stderr -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
