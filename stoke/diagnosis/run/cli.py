"""``stoke doctor``: run a training script unchanged, measure it, and say why the GPU waits.

    stoke doctor [--steps N] [--json OUT] [--html OUT] [--record OUT] [--no-probes]
                 [--probe-after N] [--probe-seconds S] [--probe-budget-min S]
                 [--sync-every N] [--timeout S]
                 -- python train.py ARGS

Owns the sub-command's options and its exit status; the measured run is
:mod:`stoke.diagnosis.run.runner`, the verdict :mod:`stoke.diagnosis.judge.diagnosis`, the reports
:mod:`stoke.diagnosis.report`. Exit status: the script's own when it failed (non-zero), else 0;
2 for a command the doctor cannot run or a report folder it cannot make (said before the
run; missing folders are made). What was measured is reported even when the script failed
part-way.
"""

from __future__ import annotations

import argparse
import sys

EXAMPLE = "stoke doctor --steps 200 --html doctor.html -- python train.py --epochs 5"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "stoke doctor [options] -- python train.py ARGS"
    parser.epilog = f"example: {EXAMPLE}"
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="measure N training steps, run the probes, then stop the script (default: run it "
        "to the end)",
    )
    parser.add_argument("--json", dest="json_path", metavar="OUT", help="write the JSON report")
    parser.add_argument("--html", dest="html_path", metavar="OUT", help="write the HTML report")
    parser.add_argument(
        "--record", dest="record_path", metavar="OUT", help="save the raw run record (JSON)"
    )
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="skip the input-alone and model-alone probes (no predicted speedup then)",
    )
    parser.add_argument(
        "--probe-after",
        type=_positive_int,
        default=50,
        metavar="N",
        help="without --steps: run the probes after N steps (default: 50)",
    )
    parser.add_argument(
        "--probe-seconds",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="time each probe runs (default: 2 s)",
    )
    parser.add_argument(
        "--probe-budget-min",
        type=_positive_float,
        default=None,
        metavar="S",
        help="let the probes take at least S seconds in all (default: 25%% of the run's "
        "expected steps, at least 1 s, once fit knows its length; 60 s otherwise)",
    )
    parser.add_argument(
        "--sync-every",
        type=_positive_int,
        default=10,
        metavar="N",
        help="wait for the device at most every N-th step (and at most every 0.25 s), so "
        "windows of steps are timed exactly (default: 10)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="S",
        help="interrupt the script after S seconds (default: no limit)",
    )
    parser.add_argument(
        "command_line",
        nargs=argparse.REMAINDER,
        metavar="-- python train.py ARGS",
        help="the training command, after --",
    )


def main(args: argparse.Namespace) -> int:
    from stoke.diagnosis.measure.options import DoctorOptions
    from stoke.diagnosis.run.runner import CommandError, run_measured
    from stoke.diagnosis.run.session import budget_floors

    command = list(args.command_line or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print(
            "stoke doctor: give the training command after `--`, e.g.\n"
            f"    {EXAMPLE}",
            file=sys.stderr,
        )
        return 2
    unwritable = _unwritable_output(args)
    if unwritable:
        print(f"stoke doctor: {unwritable}", file=sys.stderr)
        return 2
    options = DoctorOptions(
        stop_after_steps=args.steps,
        probe_after_steps=args.probe_after,
        probes=not args.no_probes,
        probe_seconds=args.probe_seconds,
        sync_every_steps=args.sync_every,
        on_step_limit="raise",
        **budget_floors(args.probe_budget_min),
    )
    try:
        run = run_measured(command, options, timeout_s=args.timeout,
                           on_started=_import_report_in_background)
    except CommandError as error:
        print(f"stoke doctor: {error}", file=sys.stderr)
        return 2
    if run.message:
        print(f"stoke doctor: {run.message}", file=sys.stderr)
    if run.record is None:
        return run.exit_code or 1
    if args.record_path:
        run.record.save(args.record_path)
    try:
        report(run.record, json_path=args.json_path, html_path=args.html_path)
    except Exception as error:  # keep what was measured even if the analysis breaks
        saved = args.record_path or "stoke-doctor-record.json"
        if not args.record_path:
            run.record.save(saved)
        print(
            f"stoke doctor: could not analyse the run ({type(error).__name__}: {error}). "
            f"The raw record is in {saved}; please report this with it.",
            file=sys.stderr,
        )
        return 1
    if run.script_failed:
        status = run.record.meta.exit_status
        error = run.record.meta.error or f"exit status {run.exit_code}"
        print(
            f"stoke doctor: the script {status} ({error}); the report above covers the "
            f"{len(run.record.steps)} steps measured before that.",
            file=sys.stderr,
        )
        return run.exit_code or 1
    return 0


def report(record, json_path=None, html_path=None, console=None) -> None:
    """Analyse a record and print/write its reports. The one place the CLI meets the
    analysis and the renderers."""
    from stoke.diagnosis.judge.diagnosis import analyse
    from stoke.diagnosis.report import render_terminal, write_html, write_json

    diagnosis = analyse(record)
    render_terminal(diagnosis, console)
    if json_path:
        write_json(diagnosis, json_path)
        print(f"stoke doctor: JSON report written to {json_path}", file=sys.stderr)
    if html_path:
        write_html(diagnosis, html_path)
        print(f"stoke doctor: HTML report written to {html_path}", file=sys.stderr)


def _import_report_in_background() -> None:
    """Import the analysis and the renderers while the script runs (this process only waits
    for it then), so the report follows the script's end sooner: measured 0.4-0.8 s of a
    short script's wall time under the doctor on a loaded 2-core machine. Started once the
    script's process is (``run_measured(on_started=...)``): before, it would hold this
    process's GIL while the script's start waits for it. Best effort: :func:`report`
    imports them again and raises what is wrong."""
    import threading

    def load() -> None:
        try:
            import stoke.diagnosis.judge.diagnosis  # noqa: F401
            import stoke.diagnosis.report  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=load, name="stoke-doctor-report-import", daemon=True).start()


def _unwritable_output(args: argparse.Namespace) -> str:
    """Make the folders of ``--json``/``--html``/``--record`` (as ``mkdir -p``) before the
    run, so a report path is never found unwritable after the training ran; the problem
    when one cannot be made, else ``""``."""
    import os

    for option, path in (("--json", args.json_path), ("--html", args.html_path),
                         ("--record", args.record_path)):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            return (f"cannot write {option} {path}: its folder {folder} cannot be made "
                    f"({error.strerror or error}); nothing was run")
    return ""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
    return value
