"""stoke: keep the accelerator fed during Keras 3 training, and say when it is not.

Public API only; everything else may change.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
