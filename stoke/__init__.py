"""stoke: keep the accelerator fed during Keras 3 training, and say when it is not.

Public API only; everything else may change.

Every public name is imported on first use (PEP 562 ``__getattr__``), so that ``import stoke``
costs a few milliseconds and imports neither NumPy nor Keras: ``stoke doctor`` pays it in two
processes, and ``stoke --help`` should not wait for a data pipeline. ``from stoke import X``,
``stoke.X`` and ``dir(stoke)`` work as if everything were imported here; ``_EXPORTS`` says
which module defines each name.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from stoke.lazy_exports import lazy_attributes
from stoke.version import __version__

if TYPE_CHECKING:  # what the names are, for type checkers and editors (imported lazily below;
    # BackupAndRestore and DoctorCallback subclass Keras classes, built on first use)
    from stoke.accelerate.entry import accelerate
    from stoke.accelerate.generator import AcceleratedGenerator
    from stoke.accelerate.sequence import AcceleratedSequence
    from stoke.data.cache import CacheFullError
    from stoke.data.formats.base import RecordError
    from stoke.data.formats.factories import (
        from_array_record,
        from_parquet,
        from_tfrecord,
        from_webdataset,
        parse_example,
    )
    from stoke.data.mix import mix
    from stoke.data.pipeline import Pipeline, from_arrays, from_files, from_sequence
    from stoke.data.plan import IteratorState
    from stoke.diagnosis.run.session import doctor
    from stoke.errors import (
        LayoutError,
        SampleError,
        StokeError,
        StokeWarning,
        UnpicklableError,
        WorkerDiedError,
        WorkerHungError,
    )
    from stoke.loader.iterator import BatchIterator
    from stoke.loader.loader import Loader

# public name -> the module that defines it (``BackupAndRestore`` and ``DoctorCallback`` are
# built there on first use: they subclass Keras classes).
_EXPORTS: dict[str, str] = {
    "AcceleratedGenerator": "stoke.accelerate.generator",
    "AcceleratedSequence": "stoke.accelerate.sequence",
    "BackupAndRestore": "stoke.keras.resume",
    "BatchIterator": "stoke.loader.iterator",
    "CacheFullError": "stoke.data.cache",
    "DoctorCallback": "stoke.diagnosis.run.session",
    "IteratorState": "stoke.data.plan",
    "LayoutError": "stoke.errors",
    "Loader": "stoke.loader.loader",
    "Pipeline": "stoke.data.pipeline",
    "RecordError": "stoke.data.formats.base",
    "SampleError": "stoke.errors",
    "StokeError": "stoke.errors",
    "StokeWarning": "stoke.errors",
    "UnpicklableError": "stoke.errors",
    "WorkerDiedError": "stoke.errors",
    "WorkerHungError": "stoke.errors",
    "accelerate": "stoke.accelerate.entry",
    "doctor": "stoke.diagnosis.run.session",
    "from_array_record": "stoke.data.formats.factories",
    "from_arrays": "stoke.data.pipeline",
    "from_files": "stoke.data.pipeline",
    "from_parquet": "stoke.data.formats.factories",
    "from_sequence": "stoke.data.pipeline",
    "from_tfrecord": "stoke.data.formats.factories",
    "from_webdataset": "stoke.data.formats.factories",
    "parse_example": "stoke.data.formats.factories",
    "mix": "stoke.data.mix",
}


__getattr__, __dir__ = lazy_attributes(
    __name__, globals(), _EXPORTS, built_by={"BackupAndRestore": "backup_and_restore_class"})


class _StokeModule(types.ModuleType):
    """``stoke`` itself. One rule beyond a plain module: after importing a sub-package, the
    import system binds it on its parent (``stoke.accelerate = <package stoke.accelerate>``),
    which would hide the public function of the same name (imported lazily, so not bound yet);
    that binding is skipped, and ``stoke.accelerate`` stays the function."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _StokeModule

__all__ = [
    "AcceleratedGenerator",
    "AcceleratedSequence",
    "BackupAndRestore",
    "BatchIterator",
    "CacheFullError",
    "DoctorCallback",
    "IteratorState",
    "LayoutError",
    "Loader",
    "Pipeline",
    "RecordError",
    "SampleError",
    "StokeError",
    "StokeWarning",
    "UnpicklableError",
    "WorkerDiedError",
    "WorkerHungError",
    "__version__",
    "accelerate",
    "doctor",
    "from_array_record",
    "from_arrays",
    "from_files",
    "from_parquet",
    "from_sequence",
    "from_tfrecord",
    "from_webdataset",
    "parse_example",
    "mix",
]
