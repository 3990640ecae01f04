"""The autotuner: measures delivered batches and the trainer's own CPU use and picks the
executor and worker count. ``tuner.py`` decides, ``meter.py`` measures the machine,
``report.py`` says what was chosen and why (``it.tuning()``); ``prefetch.py`` tunes the one
thing of a generator's feed that can change without changing its items: how far ahead its
copies run."""
