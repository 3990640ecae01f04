"""Executors: who runs the per-sample program. ``inline`` (the caller's thread), ``threads``
(worker threads) and ``processes`` (persistent worker processes writing into a shared-memory
ring), ``ray`` (a Ray cluster), ``auto`` (a pool of those the tuner resizes and switches), and
``trainer_first`` (the caller stands in for process workers still starting).
They share one protocol (``base.py``), one chunk runner (``chunk.py``) and the messages to the
workers' program (``messages.py``: the named kinds of a process worker's socket,
``ProgramUpdate``). Which one a loader gets, with how many workers and which budgets, is
decided in ``choose.py`` from ``options.py``'s ``LoaderOptions``; the host's limits (cores,
memory) are read in ``host.py``."""
