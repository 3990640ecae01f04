"""stoke's version: one place, read by the package (``stoke.__version__``) and by what
records it (the doctor's run record, the environment report) without importing the package's
public surface."""

__version__ = "0.1.0"
