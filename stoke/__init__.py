"""stoke: keep the accelerator fed during Keras 3 training, and say when it is not.

Public API only; everything else may change.
"""

from stoke.errors import (
    LayoutError,
    SampleError,
    StokeError,
    StokeWarning,
    UnpicklableError,
    WorkerDiedError,
    WorkerHungError,
)
from stoke.loader import BatchIterator, Loader
from stoke.pipeline import Pipeline, from_arrays, from_files, from_sequence
from stoke.plan import IteratorState

__version__ = "0.1.0"
__all__ = [
    "BatchIterator",
    "IteratorState",
    "LayoutError",
    "Loader",
    "Pipeline",
    "SampleError",
    "StokeError",
    "StokeWarning",
    "UnpicklableError",
    "WorkerDiedError",
    "WorkerHungError",
    "__version__",
    "from_arrays",
    "from_files",
    "from_sequence",
]
