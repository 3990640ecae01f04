"""Running code written for Keras 2 on Keras 3: ``shim.py`` (the patches of ``keras.Model``)
and ``run.py`` (``stoke run train.py``)."""

from stoke.legacy.shim import install, installed, uninstall

__all__ = ["install", "installed", "uninstall"]
