"""Renderers of a diagnosis: terminal (rich), JSON (the public schema), single-file HTML.

Renderers only read a :class:`~stoke.diagnosis.judge.diagnosis.Diagnosis`; the numbers come from
:mod:`stoke.diagnosis.judge.analysis`. One renderer per module:

    diagnosis = analyse(record)
    render_terminal(diagnosis)
    write_json(diagnosis, "doctor.json")
    write_html(diagnosis, "doctor.html")
"""

from stoke.diagnosis.report.html import render_html, write_html
from stoke.diagnosis.report.json_report import to_json, write_json
from stoke.diagnosis.report.terminal import render_terminal, terminal_text

__all__ = ["render_html", "render_terminal", "terminal_text", "to_json", "write_html", "write_json"]
