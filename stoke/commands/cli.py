"""The ``stoke`` command line: one sub-command per job, each owned by its own module.

This module only dispatches. A sub-command's module provides ``add_arguments(parser)`` and
``main(args) -> int``; it is imported only when that sub-command runs, so ``stoke --help``
stays fast and needs no backend.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("stoke.commands.demo", "naive Keras run, the doctor's verdict on it, the same run fed by stoke"),
    "doctor": ("stoke.diagnosis.run.cli", "run a training script unchanged and say why the GPU waits"),
    "env": ("stoke.envcheck.report", "check the stack: versions, devices, threads, memory growth"),
    "run": ("stoke.legacy.run", "run a Keras-2-era training script on Keras 3, fed by stoke"),
    "bench": ("stoke.commands.bench", "measure a pipeline alone with each executor and worker count"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stoke", description="Keep the accelerator fed during Keras training."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        if name in _argv_commands():
            # Parse this sub-command's own options now: importing its module is cheap enough.
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def _argv_commands() -> set[str]:
    return {arg for arg in sys.argv[1:2] if arg in SUBCOMMANDS}


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:])
    if args.version:
        from stoke import __version__

        print(__version__)
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
