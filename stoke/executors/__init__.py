"""Executors: who runs the per-sample program. ``inline`` (the caller's thread), ``threads``
(worker threads) and ``processes`` (persistent worker processes writing into a shared-memory
ring). They share one protocol (``base.py``) and one chunk runner (``chunk.py``)."""
