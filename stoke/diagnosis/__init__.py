"""The doctor (``stoke doctor``, ``stoke.doctor()``): measure where a Keras training run's time goes, say why, and what to change.

Pipeline of its own, one way: probes in ``measure/`` (``hooks.py`` patches Keras;
``recorder.py`` holds one run's measurements, timing steps with ``step_clock.py`` and
``timing.py``, scheduling the probes within one budget with ``probe_schedule.py``, borrowing
the training state with ``training_state.py``; ``facts.py``, ``model_probe.py``,
``input_free.py``, ``host_code.py``, ``compiled_step.py``, ``system.py``, ``nvml.py`` measure) write their
measurements, which ``record.py`` turns into a typed, serialisable :class:`~stoke.diagnosis.record.RunRecord`; ``judge/`` turns a record into
numbers (``analysis.py``), findings (``findings.py``, their fixes in ``fixes.py``) and the
:class:`~stoke.diagnosis.judge.diagnosis.Diagnosis` (pure functions); renderers in ``report/``
only read; ``run/`` runs a script under the doctor.
"""
