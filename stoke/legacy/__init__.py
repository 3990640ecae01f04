"""Running code written for Keras 2 on Keras 3: ``shim.py`` (the patches of Keras),
``conversions.py`` (what was translated, and where), ``imports.py`` (patching Keras however
it is imported), ``preprocessing.py`` (Keras 2's import paths), ``optimizers.py`` (``lr``,
``decay``), ``keras2_stream.py`` (a Sequence read as Keras 2's ``fit_generator`` read it,
without stoke's feed) and ``run.py`` (``stoke run train.py``)."""

from stoke.legacy.conversions import Conversion
from stoke.legacy.shim import Keras2CallError, conversions, install, installed, uninstall

__all__ = ["Conversion", "Keras2CallError", "conversions", "install", "installed", "uninstall"]
