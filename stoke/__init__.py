"""stoke: keep the accelerator fed during Keras 3 training, and say when it is not.

Public API only; everything else may change.
"""

from stoke.accelerate import AcceleratedGenerator, AcceleratedSequence, accelerate
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
from stoke.version import __version__


def __getattr__(name: str):
    # DoctorCallback subclasses keras.callbacks.Callback: built on first use, so that
    # `import stoke` never imports Keras.
    if name == "DoctorCallback":
        from stoke.diagnosis.run.session import DoctorCallback

        return DoctorCallback
    if name == "BackupAndRestore":  # subclasses keras.callbacks.BackupAndRestore: same reason
        from stoke.keras.resume import backup_and_restore_class

        return backup_and_restore_class()
    raise AttributeError(f"module 'stoke' has no attribute {name!r}")


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
