"""The doctor's judgement: pure functions from a record to a diagnosis. No Keras, no clock.

One way: ``analysis`` (record -> numbers) -> ``findings`` (record + numbers -> findings; the
code each fix shows in ``fixes``) -> ``diagnosis`` (numbers + findings -> ``Diagnosis``, its JSON).
A new finding is a check in ``findings.py``, its entry in ``FINDING_CHECKS`` and, if it shows
code, a template in ``fixes.py``.
"""
