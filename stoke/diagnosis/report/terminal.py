"""The terminal report (rich): verdict, key numbers, then each finding with its fix.

Reads a :class:`~stoke.diagnosis.judge.diagnosis.Diagnosis`, prints; never computes a number of its
own (that is :mod:`stoke.diagnosis.judge.analysis`). Text from the user's run goes through
``rich.text.Text``, never through markup, so ``[bold]`` in a script name prints as written.

    render_terminal(analyse(record))             # to stdout
    text = terminal_text(analyse(record))        # plain text, for logs and tests
"""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from stoke.diagnosis.judge.diagnosis import Diagnosis
from stoke.diagnosis.judge.findings import Finding
from stoke.diagnosis.judge.words import speedup
from stoke.diagnosis.report._format import (
    SEVERITY_RICH_STYLES,
    VERDICT_RICH_STYLES,
    evidence_text,
    headline,
    key_numbers,
    no_findings_text,
    run_description,
    verdict_meaning,
)


def render_terminal(diagnosis: Diagnosis, console: Console | None = None) -> None:
    """Print the report to ``console`` (default: a new stdout console)."""
    console = console or Console()
    # a progress bar may have left the cursor mid-line: the report starts on a line of its own
    console.file.write("\n")
    for renderable in _renderables(diagnosis):
        console.print(renderable)


def terminal_text(diagnosis: Diagnosis, width: int = 100, colour: bool = False) -> str:
    """The report as a string: plain text, or with ANSI colours when ``colour``."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=colour,
        color_system="standard" if colour else None,
        highlight=False,
    )
    render_terminal(diagnosis, console)
    return buffer.getvalue()


def _renderables(diagnosis: Diagnosis) -> list:
    title = Text("stoke doctor")
    script = diagnosis.record.meta.script
    if script:
        title.append(" · ")
        title.append(str(script))
    verdict = Text(f" {diagnosis.verdict.upper()} ", style=VERDICT_RICH_STYLES[diagnosis.verdict])
    verdict.append("  ")
    verdict.append(verdict_meaning(diagnosis), style="bold")
    header = Group(verdict, Text(headline(diagnosis)))
    parts: list = [Panel(header, title=title, title_align="left", border_style="dim")]

    error = diagnosis.record.meta.error
    if error:
        parts.append(Text.assemble(("The script ended with an error: ", "bold red"), str(error)))

    numbers = Table(show_header=False, box=None, padding=(0, 2), pad_edge=False)
    numbers.add_column(style="dim", no_wrap=True)
    numbers.add_column()
    for label, value in key_numbers(diagnosis):
        numbers.add_row(label, Text(value))
    parts.append(numbers)

    if diagnosis.findings:
        parts.append(Text(f"\nFindings ({len(diagnosis.findings)})", style="bold underline"))
        for number, finding in enumerate(diagnosis.findings, start=1):
            parts.extend(_finding(number, finding))
    elif diagnosis.verdict != "unknown":
        parts.append(Text("\n" + no_findings_text(diagnosis), style="bold green"))

    run = Table(show_header=False, box=None, padding=(0, 2), pad_edge=False)
    run.add_column(style="dim", no_wrap=True)
    run.add_column()
    for label, value in run_description(diagnosis):
        run.add_row(label, Text(value))
    parts.extend([Text(""), run])
    return parts


def _finding(number: int, finding: Finding) -> list:
    head = Text(f"\n{number}. ")
    head.append(f"[{finding.severity.upper()}]", style=SEVERITY_RICH_STYLES[finding.severity])
    head.append(" ")
    head.append(finding.id, style="bold")
    if finding.expected_gain is not None:
        head.append(f"   expected {speedup(finding.expected_gain)}", style="bold green")
    body = Text(finding.message)
    evidence = Text("evidence: ", style="dim")
    evidence.append(
        "; ".join(f"{k}={evidence_text(v)}" for k, v in finding.evidence.items() if v is not None),
        style="dim",
    )
    fix = Syntax(
        finding.fix.rstrip("\n"),
        finding.fix_language,
        theme="ansi_dark",
        background_color="default",
        word_wrap=True,
    )
    return [head, body, evidence, Text("fix:", style="bold"), fix]
