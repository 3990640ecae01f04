"""The doctor (``stoke doctor``, ``stoke.doctor()``): measure where a Keras training run's time goes, say why, and what to change.

Pipeline of its own: probes (``probes.py``, ``system.py``, ``nvml.py``) fill a serialisable
:class:`~stoke.diagnosis.record.RunRecord`; ``analysis.py`` turns a record into a verdict and
findings (pure functions); renderers in ``report/`` only read.
"""
