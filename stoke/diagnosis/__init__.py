"""The doctor (``stoke doctor``, ``stoke.doctor()``): measure where a Keras training run's time goes, say why, and what to change.

Pipeline of its own, one way: probes in ``measure/`` write their measurements, which
``record.py`` turns into a typed, serialisable :class:`~stoke.diagnosis.record.RunRecord`;
``judge/`` turns a record into numbers (``analysis.py``), findings (``findings.py``, their fixes
in ``fixes.py``) and the :class:`~stoke.diagnosis.judge.diagnosis.Diagnosis` (pure functions);
renderers in ``report/`` only read; ``run/`` runs a script under the doctor.
"""
