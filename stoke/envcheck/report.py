"""The ``stoke env`` command and what it prints: a rich table of the checks, or JSON
(``--json``) whose ``schema_version`` is :data:`ENV_SCHEMA_VERSION`.

Owns: the command's options (:func:`add_arguments`), :func:`main` (gather, evaluate, print;
exit status 1 when a check fails), :func:`to_json` and :func:`render`; the renderers only
read. Leaves to others: what they print (:mod:`.gather`, :mod:`.probe`, :mod:`.checks`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from stoke.envcheck.checks.evaluate import evaluate, worst_status
from stoke.envcheck.facts import FAIL, INFO, OK, STATUSES, TRAINING_BACKENDS, WARN, Check, EnvFacts
from stoke.envcheck.gather import gather_facts, jax_jaxlib_requirement

ENV_SCHEMA_VERSION = 1


_STYLES = {OK: "green", INFO: "blue", WARN: "bold yellow", FAIL: "bold red"}


def to_json(facts: EnvFacts, checks: list[Check]) -> dict[str, Any]:
    from stoke.version import __version__

    counts = {status: sum(1 for c in checks if c.status == status) for status in STATUSES}
    return {
        "schema_version": ENV_SCHEMA_VERSION,
        "stoke_version": __version__,
        "status": worst_status(checks),
        "counts": counts,
        "checks": [dataclasses.asdict(c) for c in checks],
        "facts": dataclasses.asdict(facts),
    }


def render(facts: EnvFacts, checks: list[Check], console: Any = None) -> None:
    """The checks as a rich table. Every cell is plain text (fixes hold brackets such as
    ``jax[cuda12]`` that rich markup would eat)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    keras_version = facts.packages.get("keras", "not installed")
    gpu = f"{facts.nvidia.gpu_count} NVIDIA GPU(s)" if facts.nvidia.gpu_count else "no NVIDIA GPU"
    console.print(
        Text.assemble(
            ("stoke env", "bold"),
            f"  Python {facts.python_version} · Keras {keras_version} on {facts.backend} · "
            f"{facts.host.cores_usable} core(s) · {gpu} · took {facts.gather_s:.1f} s",
        )
    )
    table = Table(show_lines=False, expand=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True, style="bold")
    table.add_column("what stoke found", overflow="fold")
    with_fixes = any(check.fix for check in checks)
    if with_fixes:
        table.add_column("fix", overflow="fold", style="cyan")
    for check in checks:
        cells = [
            Text(check.status, style=_STYLES[check.status]),
            Text(check.title),
            Text(check.message),
        ]
        table.add_row(*cells, *([Text(check.fix)] if with_fixes else []))
    console.print(table)
    counts = {status: sum(1 for c in checks if c.status == status) for status in STATUSES}
    summary = Text.assemble(
        (f"{counts[FAIL]} failed", _STYLES[FAIL] if counts[FAIL] else ""),
        ", ",
        (f"{counts[WARN]} warning(s)", _STYLES[WARN] if counts[WARN] else ""),
        f", {counts[OK]} ok, {counts[INFO]} info.",
    )
    console.print(summary)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="PATH",
        nargs="?",
        const="-",
        help="also write the checks and the facts as JSON to PATH; without PATH (or '-') "
        "print only the JSON, to stdout",
    )
    parser.add_argument(
        "--backend",
        choices=[*TRAINING_BACKENDS, "all"],
        help="the Keras backend to import and run a matmul on (default: the active one; "
        "'all': each installed backend in turn)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not import the backend: no device list, no matmul (under a second)",
    )
    parser.add_argument(
        "--probe-timeout-s",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up on a backend that has not started after this long (default 120)",
    )


def main(args: argparse.Namespace) -> int:
    if args.probe_timeout_s <= 0:
        raise SystemExit(
            f"stoke env: --probe-timeout-s must be > 0. Received: {args.probe_timeout_s}"
        )
    facts = gather_facts(args.backend, not args.no_probe, args.probe_timeout_s)
    checks = evaluate(facts, jax_jaxlib_requirement())
    payload = to_json(facts, checks)
    if args.json == "-":
        print(json.dumps(payload, indent=2))
    else:
        render(facts, checks)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
            print(f"wrote {args.json}")
    return 1 if any(c.status == FAIL for c in checks) else 0
