"""The doctor's answer: a run's numbers and its findings, and their public JSON form.

The last step of the judgement, one way: the record (what was measured) gives the numbers
(:func:`stoke.diagnosis.judge.analysis.analyse_run`), the record and the numbers give the
findings (:func:`stoke.diagnosis.judge.findings.find`), and both make the :class:`Diagnosis`
the renderers read. Nothing here computes a number or decides a finding.

    record = RunRecord.load("run.json")
    diagnosis = analyse(record)
    diagnosis.verdict              # "input-bound"
    diagnosis.predicted_speedup    # 3.4
    diagnosis.to_json_dict()       # the public, versioned JSON form
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from stoke.diagnosis.judge.analysis import Analysis, analyse_run, as_number
from stoke.diagnosis.judge.findings import Finding, find
from stoke.diagnosis.judge.fits import FitSummary, fit_summaries
from stoke.diagnosis.record import RunRecord

DIAGNOSIS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Diagnosis(Analysis):
    """The doctor's answer for one run: the numbers (:class:`Analysis`), the findings in
    report order, and the record they came from. Build it with :func:`analyse`."""

    findings: tuple[Finding, ...] = ()
    # each fit of the run, as every report shows it (:mod:`stoke.diagnosis.judge.fits`)
    fits: tuple[FitSummary, ...] = ()
    record: RunRecord = field(default_factory=RunRecord, repr=False, compare=False)

    def finding(self, finding_id: str) -> Finding | None:
        return next((f for f in self.findings if f.id == finding_id), None)

    def to_json_dict(self) -> dict[str, Any]:
        """The public JSON form (schema ``DIAGNOSIS_SCHEMA_VERSION``): plain types, no NaN.

        Keys (add freely in later versions, never change a meaning without a new version):
        ``schema_version``, ``record_schema_version``, ``units``; ``verdict`` (one of
        ``VERDICTS``), ``verdict_reason``; ``input_wait_fraction`` (0-1),
        ``input_wait_source`` (``"measured"``: timed; anything else is an estimate, see
        :class:`~stoke.diagnosis.judge.analysis.Analysis`) and ``input_wait_estimated_steps``
        (steady steps whose wait was estimated, not timed); ``throughput``, ``predicted_throughput``, ``model_alone``,
        ``input_alone`` (samples/s or null); ``predicted_speedup`` (>= 1 or null: the input
        made free, capped at 1.3/(1 - wait)); ``predicted_speedup_with_stoke`` (stoke's
        workers on the cores this run can use, shared with the trainer; >= 1 or null);
        ``prediction`` (how both were made: cap, confidence, what was not measured, the
        shared-cores numbers); ``input_is_limit`` (bool or null);
        ``bound`` (``limited_by``, per-step ``step_s``/``wait_s``/``compute_s``, probe step
        times); ``overhead_signals`` (sentences); ``doctor_overhead_fraction``;
        ``steady_state`` (which steps count and which were left out); ``fits`` (each ``fit``
        call: ``number``, ``batch_size``, ``epochs``, ``steps``, ``steps_counted``, and over
        its counted steps ``seconds_counted``, ``samples_per_s`` and ``wait_fraction``, null when
        not known per step; weighted by ``seconds_counted`` the fits' waits make the run's); ``cpu`` and ``gpus``
        (summaries over the steady window); ``findings`` (objects with ``id``, ``severity``,
        ``category``, ``message``, ``fix``, ``fix_language``, ``evidence``,
        ``expected_gain``), ordered as reported; and the record itself: ``steps``,
        ``system``, ``probes``, ``meta``, ``input``, ``model``, ``env``, ``overhead``.
        """
        record = self.record
        data = {
            "schema_version": DIAGNOSIS_SCHEMA_VERSION,
            "record_schema_version": record.schema_version,
            "units": {
                "throughput": "samples/s",
                "time": "s",
                "fractions": "0-1",
                "pct": "0-100",
                "bytes": "bytes",
            },
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "input_wait_fraction": self.input_wait_fraction,
            "input_wait_source": self.input_wait_source,
            "input_wait_estimated_steps": self.wait_estimated_steps,
            "input_wait_in_graph_steps": self.in_graph_steps,
            "throughput": self.throughput,
            "predicted_throughput": self.predicted_throughput,
            "predicted_speedup": self.predicted_speedup,
            "predicted_speedup_with_stoke": (
                None if self.prediction is None else self.prediction.with_stoke_here
            ),
            "prediction": None if self.prediction is None else _asdict(self.prediction),
            "input_is_limit": self.input_is_limit,
            "model_alone": self.model_alone,
            "input_alone": self.input_alone,
            "bound": _asdict(self.bound),
            "overhead_signals": list(self.overhead_signals),
            "doctor_overhead_fraction": self.doctor_overhead_fraction,
            "steady_state": _asdict(self.steady),
            "fits": [_asdict(f) for f in self.fits],
            "cpu": None if self.cpu is None else _asdict(self.cpu),
            "gpus": [_asdict(g) for g in self.gpus],
            "findings": [f.to_json_dict() for f in self.findings],
            "steps": [_asdict(s) for s in record.steps],
            "system": [_asdict(s) for s in record.system],
            "probes": {name: _asdict(p) for name, p in record.probes.items()},
            "meta": record.meta.to_dict(),
            "input": record.input.to_dict(),
            "model": record.model.to_dict(),
            "env": record.env.to_dict(),
            "overhead": record.overhead.to_dict(),
        }
        return json_safe(data)


def analyse(record: RunRecord) -> Diagnosis:
    """Diagnose one run: its numbers (steady state, verdict, bound, predicted speedup), then
    its findings, ordered for the report (see :func:`stoke.diagnosis.judge.findings.find`)."""
    numbers = analyse_run(record)
    return Diagnosis(
        **{item.name: getattr(numbers, item.name) for item in dataclasses.fields(Analysis)},
        findings=find(record, numbers),
        fits=fit_summaries(record, numbers),
        record=record,
    )


def json_safe(value: Any) -> Any:
    """Plain JSON types only: NaN and infinities become null, tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    number = as_number(value)  # numpy scalars and the like
    if number is not None:
        return json_safe(number)
    return str(value)


def _asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
