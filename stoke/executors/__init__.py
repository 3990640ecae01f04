"""Executors: who runs the per-sample program. ``inline`` (the caller's thread), ``threads``
(worker threads) and ``processes`` (persistent worker processes writing into a shared-memory
ring), and ``auto`` (a pool of those the tuner resizes and switches). They share one
protocol (``base.py``) and one chunk runner (``chunk.py``). Which one a loader gets, with
how many workers and which budgets, is decided in ``choose.py`` from ``options.py``'s
``LoaderOptions``; the host's limits (cores, memory) are read in ``host.py``."""
