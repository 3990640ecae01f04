"""Facts about a measured run: its input, its model, its environment. Best effort: each
fact is None when unknown, and taking them never breaks the user's run.

Owns reading Keras' data adapter (the input's kind, batch size, workers, who produces the
batches), one batch's dtypes, shapes and bytes, a tf.data pipeline's graph, the model
(parameters, device, layers that move tensors to the host), the environment (GPUs, threads,
memory growth), the run's meta (versions, host, argv), and the small Keras version and backend
helpers the other modules share.
"""

from __future__ import annotations

import inspect
import os
import platform
import re
import socket
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stoke.diagnosis.measure.recorder import FitContext

_ADAPTER_KINDS = {
    "ArrayDataAdapter": "arrays",
    "TFDatasetAdapter": "tf.data",
    "PyDatasetAdapter": "pydataset",
    "GeneratorDataAdapter": "generator",
    "TorchDataLoaderAdapter": "torch_dataloader",
    "GrainDatasetAdapter": "grain",
}


def input_facts(epoch_iterator, arguments: dict[str, Any], backend: str, user_generator) -> dict:
    adapter = getattr(epoch_iterator, "data_adapter", None)
    x = arguments.get("x")
    kind = _ADAPTER_KINDS.get(type(adapter).__name__, "unknown")
    if _is_stoke_object(x) or _is_stoke_object(adapter):
        kind = "stoke"
    facts: dict[str, Any] = {
        "kind": kind,
        "adapter": type(adapter).__name__ if adapter is not None else None,
        "batch_size": arguments.get("batch_size") or getattr(adapter, "batch_size", None),
        "steps_per_epoch": arguments.get("steps_per_epoch"),
        "num_batches": getattr(epoch_iterator, "num_batches", None),
        "pydataset_workers": None,
        "use_multiprocessing": None,
        "tf_data_parallel_map": None,
        "tf_data_prefetch": None,
        "main_thread": None,
        "producer": None,
    }
    on_tf = backend == "tensorflow"
    if kind == "generator":
        facts["main_thread"] = not on_tf
        facts["producer"] = "tf.data-thread" if on_tf else "trainer-thread"
    elif kind == "pydataset":
        dataset = getattr(adapter, "py_dataset", x)
        workers = int(getattr(dataset, "workers", 1) or 0)
        multiprocessing = bool(getattr(dataset, "use_multiprocessing", False))
        facts["pydataset_workers"] = workers
        facts["use_multiprocessing"] = multiprocessing
        facts["max_queue_size"] = getattr(dataset, "max_queue_size", None)
        if getattr(adapter, "enqueuer", None) is not None:
            facts["main_thread"] = False
            facts["producer"] = "worker-processes" if multiprocessing else "worker-threads"
        else:
            facts["main_thread"] = not on_tf
            facts["producer"] = "tf.data-thread" if on_tf else "trainer-thread"
    elif kind == "arrays":
        facts["main_thread"] = not on_tf
        facts["producer"] = "native" if on_tf else "trainer-thread"
        if arguments.get("batch_size") is None:
            facts["batch_size"] = getattr(adapter, "batch_size", None) or 32
        # Keras casts float arrays to floatx once, when fit starts (a copy of the whole
        # dataset); the batches the trainer sees (``dtypes``) are already cast.
        source = (arguments.get("x"), arguments.get("y"), arguments.get("sample_weight"))
        facts["source_dtypes"] = {
            path: dtype
            for path, leaf in _leaves(source)
            if (dtype := _dtype_name(leaf)) is not None
        }
    elif kind == "tf.data":
        facts["main_thread"] = False
        facts["producer"] = "native"
        facts.update(tf_data_facts(x))
        if not facts.get("batch_size") and facts.get("tf_data_batch_size"):
            facts["batch_size"] = facts["tf_data_batch_size"]
        if facts.get("tf_data_py_function"):
            facts["producer"] = "tf.data-thread"
        if "dtypes" not in facts:
            facts.update(tf_element_spec_facts(x))
    elif kind == "torch_dataloader":
        workers = int(getattr(x, "num_workers", 0) or 0)
        facts["torch_num_workers"] = workers
        facts["torch_pin_memory"] = bool(getattr(x, "pin_memory", False))
        facts["torch_persistent_workers"] = bool(getattr(x, "persistent_workers", False))
        facts["batch_size"] = getattr(x, "batch_size", None)
        facts.update(torch_loader_shape(x))
        if workers > 0:
            facts["main_thread"] = False
            facts["producer"] = "worker-processes"
        else:
            facts["main_thread"] = not on_tf
            facts["producer"] = "tf.data-thread" if on_tf else "trainer-thread"
    elif kind == "stoke":
        options = getattr(getattr(x, "loader", None), "options", None)
        executor = getattr(options, "executor", None)
        facts["stoke_executor"] = executor
        facts["stoke_workers"] = getattr(options, "workers", None)
        facts["producer"] = {
            "process": "worker-processes",
            "ray": "worker-processes",
            "thread": "worker-threads",
            "inline": "trainer-thread",
        }.get(executor)
        facts["main_thread"] = executor == "inline"
    return facts


def _is_stoke_object(obj) -> bool:
    # a Sequence the Keras-2 shim reads as Keras 2 did (stoke.legacy.keras2_stream) is the
    # script's own input, read in the trainer: not a stoke feed
    return (obj is not None and type(obj).__module__.split(".")[0] == "stoke"
            and not hasattr(obj, "keras2_sequence"))


def batch_facts(batch) -> dict[str, Any]:
    """dtypes, shapes and bytes of one batch, keyed by path ("0", "1", "0/image", ...)."""
    dtypes: dict[str, str] = {}
    shapes: dict[str, list] = {}
    total_bytes = 0
    for path, leaf in _leaves(batch):
        dtype = _dtype_name(leaf)
        if dtype is None:
            continue
        shape = [int(d) if d is not None else None for d in getattr(leaf, "shape", ())]
        dtypes[path] = dtype
        shapes[path] = shape
        total_bytes += _nbytes(shape, dtype)
    return {
        "dtypes": dtypes,
        "shapes": shapes,
        "batch_bytes": total_bytes,
        "first_batch_size": leading_dim(batch),
    }


def _leaves(node, path: str = "", depth: int = 0):
    if depth > 10:
        return
    if isinstance(node, (tuple, list)):
        for index, child in enumerate(node):
            yield from _leaves(child, f"{path}/{index}" if path else str(index), depth + 1)
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _leaves(child, f"{path}/{key}" if path else str(key), depth + 1)
    elif node is not None:
        yield path or "0", node


def _dtype_name(leaf) -> str | None:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return None
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and not str(type(dtype)).startswith("<class 'numpy"):
        return name  # TensorFlow DType
    text = str(dtype)
    return text[len("torch.") :] if text.startswith("torch.") else text


def _nbytes(shape: list, dtype: str) -> int:
    itemsize = {"bfloat16": 2, "float16": 2, "bool": 1, "string": 0}.get(dtype)
    if itemsize is None:
        try:
            import numpy

            itemsize = numpy.dtype(dtype).itemsize
        except Exception:
            return 0
    count = 1
    for dim in shape:
        if dim is None:
            return 0
        count *= dim
    return count * itemsize


def leading_dim(batch) -> int:
    """The batch size of one batch: the leading dimension of its first leaf (a tuple, list or
    dict is followed to its first element); 0 when the batch has no shaped leaf."""
    node = batch
    for _ in range(8):
        if isinstance(node, (tuple, list)):
            if not node:
                return 0
            node = node[0]
        elif isinstance(node, dict):
            if not node:
                return 0
            node = next(iter(node.values()))
        else:
            break
    shape = getattr(node, "shape", None)
    try:
        return int(shape[0]) if shape is not None and len(shape) else 0
    except (TypeError, ValueError, IndexError):
        return 0


def torch_loader_shape(loader) -> dict[str, Any]:
    """What a torch ``DataLoader`` reads that stoke's own pipeline would not take as it is:
    an ``IterableDataset`` (no ``[i]``: ``torch_iterable_dataset``) and a ``collate_fn`` of the
    user's (``torch_collate_fn``: its name; padding variable-length samples, say). The input
    fix then keeps the loader and gives it workers."""
    facts: dict[str, Any] = {}
    try:
        from torch.utils.data import IterableDataset
        from torch.utils.data._utils.collate import default_collate

        facts["torch_iterable_dataset"] = isinstance(getattr(loader, "dataset", None), IterableDataset)
        collate = getattr(loader, "collate_fn", None)
        if collate is not None and collate is not default_collate:
            facts["torch_collate_fn"] = getattr(collate, "__name__", type(collate).__name__)
    except Exception:  # facts are best effort
        pass
    return facts


def tf_data_facts(dataset) -> dict[str, Any]:
    """Read a tf.data pipeline's graph: parallel or sequential maps, prefetch, Python inside.

    Best effort: serialises the dataset graph (``DatasetToGraphV2`` on ``_variant_tensor``) and
    reads its ops. Datasets built from Python generators show up as ``tf_data_py_function``.
    """
    facts: dict[str, Any] = {
        "tf_data_parallel_map": None,
        "tf_data_prefetch": None,
        "tf_data_py_function": None,
        "tf_data_map_parallelism": [],
    }
    try:
        import tensorflow as tf

        variant = dataset._variant_tensor
        serialized = tf.raw_ops.DatasetToGraphV2(input_dataset=variant)
        graph = tf.compat.v1.GraphDef()
        graph.ParseFromString(serialized.numpy())
    except Exception as error:
        facts["tf_data_graph_error"] = repr(error)
        return facts
    constants = {}
    for node in graph.node:
        if node.op == "Const":
            try:
                constants[node.name] = int(tf.make_ndarray(node.attr["value"].tensor))
            except Exception:
                pass
    sequential_maps = parallel_maps = 0
    parallelism = []
    ops = [node.op for node in graph.node]
    for node in graph.node:  # the batch size, for runs whose batches never reach Python
        if node.op in ("BatchDataset", "BatchDatasetV2", "PaddedBatchDatasetV2"):
            inputs = [i for i in node.input if not i.startswith("^")]
            size = constants.get(inputs[1].split(":")[0]) if len(inputs) > 1 else None
            if size:
                facts["tf_data_batch_size"] = size
    for node in graph.node:
        if node.op == "MapDataset":
            sequential_maps += 1
            parallelism.append(1)
        elif node.op in ("ParallelMapDataset", "ParallelMapDatasetV2", "MapAndBatchDataset"):
            inputs = [i for i in node.input if not i.startswith("^")]
            value = constants.get(inputs[-1].split(":")[0]) if len(inputs) > 1 else None
            if node.op == "MapAndBatchDataset" and len(inputs) >= 3:
                value = constants.get(inputs[-2].split(":")[0], value)
            parallelism.append(value if value is not None else -1)
            if value == 1:
                sequential_maps += 1
            else:
                parallel_maps += 1
    if sequential_maps or parallel_maps:
        facts["tf_data_parallel_map"] = sequential_maps == 0
    facts["tf_data_map_parallelism"] = parallelism
    facts["tf_data_prefetch"] = any(op == "PrefetchDataset" for op in ops)
    facts["tf_data_seeded_reshuffle"] = any(
        _reshuffles_from_a_seed(node, constants) for node in graph.node)
    python_ops = {"EagerPyFunc", "PyFunc", "PyFuncStateless"}
    in_functions = any(
        node.op in python_ops for function in graph.library.function for node in function.node_def
    )
    facts["tf_data_py_function"] = in_functions or any(op in python_ops for op in ops)
    facts["tf_data_ops"] = sorted({op for op in ops if op.endswith("Dataset") or "Dataset" in op})
    try:
        facts["tf_data_inject_prefetch"] = tf_data_injects_prefetch(dataset.options())
    except Exception:
        pass
    return facts


_SHUFFLE_OPS = ("ShuffleDataset", "ShuffleDatasetV3", "ShuffleAndRepeatDataset",
                "ShuffleAndRepeatDatasetV2")


def _reshuffles_from_a_seed(node, constants: dict[str, int]) -> bool:
    """A ``shuffle`` node that draws a new order for every iterator (reshuffle_each_iteration,
    the default) from a fixed seed (``seed=``, or TensorFlow's global seed: seed and seed2
    inputs not both 0). Every iterator made over such a pipeline, a probe's too, advances
    the orders the next epochs train on (a seeded run trained to other weights under the
    doctor: its input-alone probe's iterator had drawn an order)."""
    if node.op not in _SHUFFLE_OPS:
        return False
    reshuffle = node.attr["reshuffle_each_iteration"].b if "reshuffle_each_iteration" in node.attr else True
    inputs = [i for i in node.input if not i.startswith("^")]
    if not reshuffle or len(inputs) < 4:
        return False
    seeds = [constants.get(name.split(":")[0]) for name in inputs[2:4]]
    return any(seed for seed in seeds)


def tf_data_injects_prefetch(options) -> bool:
    """Whether tf.data adds ``prefetch(AUTOTUNE)`` after a pipeline's last transformation
    when that is not a prefetch (``tf.data.Options``: ``experimental_optimization
    .inject_prefetch``, "If None, defaults to True", one of the default optimizations; the
    rewrite is skipped with autotune off: tensorflow/core/grappler/optimizers/data/
    inject_prefetch.cc). An unset option read as False had ``no-prefetch`` recommend the
    prefetch TensorFlow 2.21 already adds to ``from_tensor_slices(...).map(f).batch(32)``."""
    optimization = options.experimental_optimization
    inject = optimization.inject_prefetch
    if inject is None:
        inject = optimization.apply_default_optimizations is not False
    return bool(inject) and options.autotune.enabled is not False


def tf_element_spec_facts(dataset) -> dict[str, Any]:
    """``dtypes`` and ``shapes`` (by field path) read off a tf.data dataset's element spec, for
    runs whose batches never pass through Python; ``{}`` when the spec cannot be read."""
    try:
        spec = dataset.element_spec
    except Exception:
        return {}
    dtypes, shapes = {}, {}
    for path, leaf in _leaves(spec):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            continue
        dtypes[path] = dtype.name
        shapes[path] = [d for d in leaf.shape.as_list()] if leaf.shape.rank is not None else None
    return {"dtypes": dtypes, "shapes": shapes}


def tf_static_batch_size(fit: FitContext | None) -> int:
    """The batch size of a ``fit`` on TensorFlow known without seeing a batch: the ``batch_size``
    argument, the adapter's, the dataset's static leading dimension or its batch op's size
    (read from the tf.data graph); 0 when none says."""
    if fit is None:
        return 0
    batch_size = fit.arguments.get("batch_size")
    if batch_size:
        return int(batch_size)
    adapter = getattr(fit.epoch_iterator, "data_adapter", None)
    size = getattr(adapter, "batch_size", None)
    if size:
        return int(size)
    try:
        dataset = fit.epoch_iterator._distributed_dataset
        first = next(iter(_leaves(dataset.element_spec)))[1]
        if first.shape[0]:
            return int(first.shape[0])
    except Exception:
        pass
    x = fit.arguments.get("x")  # a tf.data pipeline: its batch op's size, from its graph
    if x is not None and type(x).__module__.startswith("tensorflow"):
        return int(tf_data_facts(x).get("tf_data_batch_size") or 0)
    return 0


def batches_per_epoch(epoch_iterator) -> int | None:
    """The batches an epoch of this ``fit`` takes, when Keras knows it (``steps_per_epoch``,
    else the input's length)."""
    try:
        per_epoch = epoch_iterator.num_batches if epoch_iterator is not None else None
    except Exception:
        return None
    return int(per_epoch) if per_epoch else None


def known_fit_steps(epoch_iterator, arguments: dict[str, Any], model) -> int | None:
    """How many train-function calls this ``fit`` will make, when Keras knows it."""
    per_epoch = batches_per_epoch(epoch_iterator)
    if not per_epoch:
        return None
    epochs = int(arguments.get("epochs") or 1) - int(arguments.get("initial_epoch") or 0)
    per_execution = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
    calls_per_epoch = -(-int(per_epoch) // per_execution)
    return max(0, epochs) * calls_per_epoch


def batches_left_in_epoch(epoch_iterator, steps_in_epoch: int, model) -> int | None:
    """Batches the epoch in progress has still to train on after ``steps_in_epoch``
    train-function calls, when Keras knows the epoch's length (``steps_per_epoch``, or the
    input's ``num_batches``); None when it does not (a finite generator ends its epoch)."""
    per_epoch = batches_per_epoch(epoch_iterator)
    if not per_epoch:
        return None
    per_execution = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
    return max(0, per_epoch - steps_in_epoch * per_execution)


_HOST_MARKERS = (
    (re.compile(r"\bpy_function\b"), "tf.py_function"),
    (re.compile(r"\bnumpy_function\b"), "tf.numpy_function"),
    (re.compile(r"\bpure_callback\b"), "jax.pure_callback"),
    (re.compile(r"\bio_callback\b"), "jax.io_callback"),
    (re.compile(r"\.numpy\(\)"), ".numpy()"),
    (re.compile(r"\bconvert_to_numpy\("), "convert_to_numpy"),
    (re.compile(r"\.item\(\)"), ".item()"),
    (re.compile(r"\.cpu\(\)"), ".cpu()"),
    (re.compile(r"\.tolist\(\)"), ".tolist()"),
    (re.compile(r"\b(?:np|numpy|onp)\.(?:asarray|array|ascontiguousarray|copy)\("), "np.asarray"),
)


def host_op_layers(model) -> dict[str, str]:
    """Layers (and a subclassed model) whose ``call`` moves tensors to the host: NumPy
    conversions, ``py_function`` / ``numpy_function``, JAX host callbacks, ``.item()``.

    Best effort, by reading the source of each non-Keras ``call`` (and of ``Lambda``
    functions): ``np.sqrt(d)`` on a constant is not flagged, ``np.asarray(x)`` is.
    """
    found: dict[str, str] = {}
    candidates = [model]
    try:
        candidates += list(model._flatten_layers(include_self=False))
    except Exception:
        candidates += list(getattr(model, "layers", []))
    for layer in candidates:
        cls = type(layer)
        if cls.__module__.startswith("keras."):
            if cls.__name__ != "Lambda":
                continue
            function = getattr(layer, "function", None)
        else:
            function = cls.__dict__.get("call") or getattr(cls, "call", None)
            if function is not None and getattr(function, "__module__", "").startswith("keras."):
                continue
        if function is None:
            continue
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        source = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
        for pattern, label in _HOST_MARKERS:
            if pattern.search(source):
                found[layer.name] = label
                break
    return found


def batch_end_async(callbacks) -> bool | None:
    """Whether ``fit`` with these callbacks (its ``callbacks`` argument) dispatches each step's
    batch-end to Keras' thread pool: Keras' own ``CallbackList`` decides it (a thread-safe
    backend, JAX or torch, and no callback overriding ``on_batch_end``/``on_train_batch_end``
    unless it says ``async_safe``). Read off a ``CallbackList`` the script built, else off one
    built here over the same callbacks (no model, no parameters: nothing is set on them).
    None when Keras' list does not say."""
    try:
        import keras

        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = keras.callbacks.CallbackList(callbacks=list(callbacks or []))
        value = getattr(callbacks, "_async_train", None)
    except Exception:  # facts are best effort
        return None
    return value if isinstance(value, bool) else None


def model_facts(model, backend: str) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "name": getattr(model, "name", None),
        "class": type(model).__name__,
        "run_eagerly": bool(getattr(model, "run_eagerly", False)),
        "jit_compile": getattr(model, "jit_compile", None),
        "steps_per_execution": int(getattr(model, "steps_per_execution", 1) or 1),
        "params": None,
        "device": _model_device(model, backend),
        "host_ops": [],
    }
    try:
        facts["params"] = int(model.count_params())
    except Exception:
        pass
    try:
        facts["layers"] = len(list(model._flatten_layers(include_self=False)))
    except Exception:
        pass
    optimizer = getattr(model, "optimizer", None)
    facts["optimizer"] = type(optimizer).__name__ if optimizer is not None else None
    policy = getattr(model, "dtype_policy", None)
    facts["dtype_policy"] = getattr(policy, "name", None)
    try:
        host = host_op_layers(model)
        facts["host_ops"] = sorted(host)
        facts["host_op_evidence"] = host
    except Exception as error:
        facts["host_ops_error"] = repr(error)
    return facts


def _model_device(model, backend: str) -> str | None:
    try:
        variables = model.trainable_variables or model.variables
        value = variables[0].value
    except Exception:
        return None
    try:
        if backend == "jax":
            return _device_kind(next(iter(value.devices())).platform)
        if backend == "torch":
            return _device_kind(value.device.type)
        if backend == "tensorflow":
            text = str(value.device).upper()
            for kind in ("GPU", "TPU", "CPU"):
                if f"DEVICE:{kind}" in text or f"/{kind}:" in text:
                    return kind.lower()
    except Exception:
        return None
    return None


def _device_kind(name: str) -> str:
    name = name.lower()
    return {"cuda": "gpu", "rocm": "gpu"}.get(name, name)


def env_facts(backend: str, model_device: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "gpus_visible": 0,
        "gpus_used": 0,
        "accelerator_kind": None,
        "tf_intra_op_threads": None,
        "tf_inter_op_threads": None,
        "memory_growth": None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if backend == "jax":
        import jax

        platform_name = jax.default_backend()
        facts["jax_platform"] = platform_name
        try:
            facts["gpus_visible"] = len(jax.devices("gpu"))
        except Exception:
            facts["gpus_visible"] = 0
        facts["accelerator_kind"] = platform_name if platform_name != "cpu" else None
        preallocate = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true").lower()
        allocator = os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "").lower()
        if facts["gpus_visible"]:
            facts["memory_growth"] = preallocate == "false" or allocator == "platform"
        facts["gpus_used"] = _jax_devices_used(model_device)
    elif backend == "torch":
        import torch

        facts["torch_cuda"] = torch.version.cuda
        facts["gpus_visible"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        facts["accelerator_kind"] = "gpu" if facts["gpus_visible"] else None
        facts["gpus_used"] = 1 if model_device == "gpu" else 0
        facts["torch_threads"] = torch.get_num_threads()
    if "tensorflow" in sys.modules:
        tf_facts = _tensorflow_env_facts()
        if backend == "tensorflow":
            facts.update(tf_facts)
            facts["gpus_used"] = tf_facts.pop("_replicas", 1) if model_device == "gpu" else 0
        else:
            for key in ("tf_intra_op_threads", "tf_inter_op_threads"):
                facts[key] = tf_facts.get(key)
    facts.pop("_replicas", None)
    return facts


def _jax_devices_used(model_device: str | None) -> int:
    if model_device != "gpu":
        return 0
    try:
        import keras

        distribution = keras.distribution.distribution()
        if distribution is not None:
            return int(distribution.device_mesh.devices.size)
    except Exception:
        pass
    return 1


def _tensorflow_env_facts() -> dict[str, Any]:
    import tensorflow as tf

    facts: dict[str, Any] = {}
    gpus = tf.config.list_physical_devices("GPU")
    facts["gpus_visible"] = len(gpus)
    facts["accelerator_kind"] = "gpu" if gpus else None
    facts["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    facts["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    if gpus:
        try:
            facts["memory_growth"] = all(tf.config.experimental.get_memory_growth(g) for g in gpus)
        except Exception:
            facts["memory_growth"] = None
        if os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "").lower() == "true":
            facts["memory_growth"] = True
    try:
        facts["_replicas"] = int(tf.distribute.get_strategy().num_replicas_in_sync)
    except Exception:
        facts["_replicas"] = 1
    return facts


# ---------------------------------------------------------------------------------------------
# Small helpers: Keras' backend and version, the run's meta (used by the recorder and hooks).


def keras_backend() -> str:
    """The active Keras backend's name (``"jax"``, ``"tensorflow"``, ``"torch"``); imports Keras."""
    import keras

    return keras.backend.backend()


def keras_version_string() -> str | None:
    """The imported Keras' ``__version__``, or None when Keras is not imported (never imports it)."""
    keras = sys.modules.get("keras")
    return getattr(keras, "__version__", None) if keras is not None else None


def keras_version_tuple() -> tuple[int, ...] | None:
    """The imported Keras' version as up to three integers (``(3, 15, 1)``), or None."""
    text = keras_version_string()
    if not text:
        return None
    parts = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts) if parts else None


def base_meta(argv, script) -> dict[str, Any]:
    """The run's meta known before anything runs: versions, backend, argv, script, host, cores
    (the start of the run record's ``meta``)."""
    from stoke.version import __version__

    return {
        "stoke_version": __version__,
        "python": platform.python_version(),
        "keras_version": keras_version_string(),
        "backend": os.environ.get("KERAS_BACKEND"),
        "argv": list(argv) if argv is not None else list(sys.argv),
        "script": script,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "exit_status": None,
        "error": None,
    }
