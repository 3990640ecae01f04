"""Executors: who runs the per-sample program. ``inline`` (the caller's thread), ``threads``
(worker threads) and ``processes`` (persistent worker processes writing into a shared-memory
ring) and ``ray`` (a Ray cluster). They share one protocol (``base.py``), one chunk runner
(``chunk.py``) and the messages to the workers' program (``messages.py``: the named kinds of a
process worker's socket, ``ProgramUpdate``)."""
