"""How the doctor measures a run (:class:`DoctorOptions`), and the environment that carries
the options and the record's file from ``stoke doctor`` to the script's process.

Kept apart from the recorder so that ``stoke doctor``'s own process, which only starts the
script and reads its record, imports none of the measuring machinery (the script's process
imports it; importing it in both cost stoke doctor's start 0.13 s of CPU against 0.09 s
without, more wall time on a loaded machine). Leaves the measuring to
:mod:`stoke.diagnosis.measure.recorder` and running the script to :mod:`stoke.diagnosis.run`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from stoke.diagnosis.measure.probe_schedule import ProbeBudget

# where the script's process writes its record: a descriptor of an anonymous file the doctor
# made and passed (nothing is left on disk however either process ends)
RECORD_FD_ENV = "STOKE_DOCTOR_RECORD_FD"
OPTIONS_ENV = "STOKE_DOCTOR_OPTIONS"  # DoctorOptions.to_json()


@dataclass(frozen=True)
class DoctorOptions:
    """How the doctor measures a run.

    ``stop_after_steps``: end the run after this many measured steps (``None``: run to the end).
    ``probe_after_steps``: run the bounding probes after this many steps (or at
    ``stop_after_steps``, or at the last step of a shorter ``fit`` when its length is known).
    ``sync_every_steps`` and ``sync_min_interval_s``: block on the device at most every N-th
    step and at most every S seconds (both must have passed), plus on the first steady step
    and the last step before the probes or the step limit, so that windows of steps are timed
    exactly while the run keeps its asynchronous dispatch (1 and 0 make every step
    synchronous: not the user's run).
    ``on_step_limit``: ``"raise"`` ends the script (``stoke doctor``); ``"stop_training"`` sets
    ``model.stop_training`` and lets ``fit`` return (notebooks).
    ``probe_budget_fraction`` and ``probe_budget_min_s``: all probes together (the input-free
    window, the model alone, the input alone) take at most that share of the run's expected
    steps' wall time when ``fit`` knows its length (steps x epochs, timed by its first steps);
    or ``probe_budget_known_min_s`` seconds, whichever is larger; otherwise (or with
    ``stop_after_steps``) that share of the measured steps' wall time, or
    ``probe_budget_min_s`` seconds, whichever is larger. A probe cut short by the budget says so; one that
    does not fit in what is left is not run
    (:class:`~stoke.diagnosis.measure.probe_schedule.ProbeBudget`).

        DoctorOptions(stop_after_steps=200, probe_seconds=3.0)
    """

    stop_after_steps: int | None = None
    probe_after_steps: int = 50
    probes: bool = True
    probe_seconds: float = 2.0
    sync_every_steps: int = 10
    sync_min_interval_s: float = 0.25
    warmup_steps: int = 2
    system_interval_s: float = 0.25
    on_step_limit: str = "raise"
    max_recorded_steps: int = 200_000
    probe_budget_fraction: float = 0.25
    probe_budget_min_s: float = 60.0
    probe_budget_known_min_s: float = 1.0

    def __post_init__(self):
        self.probe_budget()  # says what is wrong
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            raise ValueError(
                f"stop_after_steps must be >= 1 (or None to run to the end). "
                f"Received: stop_after_steps={self.stop_after_steps}"
            )
        if self.probe_after_steps < 1:
            raise ValueError(
                f"probe_after_steps must be >= 1. Received: probe_after_steps={self.probe_after_steps}"
            )
        if not self.probe_seconds > 0:
            raise ValueError(
                f"probe_seconds must be > 0. Received: probe_seconds={self.probe_seconds}"
            )
        if self.sync_every_steps < 1:
            raise ValueError(
                f"sync_every_steps must be >= 1. Received: sync_every_steps={self.sync_every_steps}"
            )
        if self.sync_min_interval_s < 0:
            raise ValueError(
                f"sync_min_interval_s must be >= 0 seconds. "
                f"Received: sync_min_interval_s={self.sync_min_interval_s}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0. Received: warmup_steps={self.warmup_steps}")
        if not self.system_interval_s > 0:
            raise ValueError(
                f"system_interval_s must be > 0 seconds. "
                f"Received: system_interval_s={self.system_interval_s}"
            )
        if self.on_step_limit not in ("raise", "stop_training"):
            raise ValueError(
                f"on_step_limit must be 'raise' or 'stop_training'. "
                f"Received: on_step_limit={self.on_step_limit!r}"
            )

    def probe_budget(self) -> ProbeBudget:
        return ProbeBudget(
            self.probe_budget_fraction, self.probe_budget_min_s, self.probe_budget_known_min_s
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DoctorOptions:
        data = json.loads(text) if text else {}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
