"""The doctor (``stoke doctor``, ``stoke.doctor()``): measure where a Keras training run's time goes, say why, and what to change.

Pipeline of its own: probes (``hooks.py``, ``timing.py``, ``recorder.py``, ``step_clock.py``,
``probe_schedule.py``, ``facts.py``, ``model_probe.py``, ``input_free.py``,
``training_state.py``, ``system.py``, ``nvml.py``) fill a serialisable
:class:`~stoke.diagnosis.record.RunRecord`; ``analysis.py`` turns a record into a verdict and
findings (pure functions); renderers in ``report/`` only read.
"""
