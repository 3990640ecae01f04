"""The fixes the doctor's findings recommend: the code (Python or shell) a user can paste.

Owns the text of every fix: stoke for each input kind, tf.data settings, compiling the step,
batch size and ``steps_per_execution``, threads, GPUs, memory growth, other processes on the
cores. Each template takes the facts it fills in (an input kind, a batch size, a backend, core
counts) and nothing else; which fix a run gets, and why, is decided by the checks in
:mod:`stoke.diagnosis.judge.findings`.
"""

from __future__ import annotations

import math
import textwrap

from stoke.diagnosis.judge.analysis import Prediction
from stoke.diagnosis.judge.words import speedup
from stoke.diagnosis.record import InputFacts

# -- input --------------------------------------------------------------------------------------


def input_fix(inputs: InputFacts, prediction: Prediction | None,
              data_name: str | None = None) -> str:
    """stoke's fix for this input kind, unless the shared-cores model says stoke's workers
    would bring nothing on these cores: then that comes first, with what would help.
    ``data_name``: the script's own text for its data, where known (see :func:`stoke_fix`)."""
    fix = stoke_fix(inputs, data_name)
    if prediction is None or prediction.with_stoke_here is None or prediction.with_stoke_here > 1.05:
        return fix
    shared = prediction.shared_cores
    if "accelerate_workers_start_after_batches" in shared:
        longer = shared["accelerate_workers_start_in_a_long_run_after_batches"]
        if longer is None:
            return (
                "# stoke.accelerate makes the batches in the trainer, as Keras does now, until\n"
                "# its workers would pay; here they would not make the steps enough shorter\n"
                "# in a run of any length (beside the model, on these cores). Make\n"
                "# __getitem__ cheaper first, or train on a GPU; then:\n"
                + fix
            )
        return (
            "# stoke.accelerate makes the batches in the trainer, as Keras does now, until\n"
            "# its workers would pay for their start-up: in this run's "
            f"{shared['run_batches']:,} batches they\n"
            f"# would save {shared['accelerate_workers_saved_s']:.2f} s, so it would not start "
            "them.\n"
            + f"# A run of more than {longer:,} batches starts them "
            f"({speedup(shared['speedup_once_workers_run'])} once they run):\n"
            + fix
        )
    return (
        f"# On these cores stoke's workers would not be faster: {plain_number(shared.get('cores_for_this_run'))}"
        " core(s)\n"
        f"# are left to this run (others take {plain_number(shared.get('other_processes_cores'))}),"
        " and the trainer and the input\n"
        "# already fill them. First free cores (stop or renice other jobs), move the\n"
        "# model to a GPU, or make the per-batch work cheaper; then:\n"
        + fix
    )


def persistent_workers_fix(inputs: InputFacts) -> str:
    """A torch ``DataLoader`` that starts its worker processes again every epoch: the same
    loader, its own arguments as they are (``...``: its shuffle, sampler, collate_fn), with
    ``persistent_workers=True``."""
    workers = inputs.torch_num_workers or 2
    return (
        f"# Keep the DataLoader's {workers} worker process(es) alive between epochs: without\n"
        "# persistent_workers it starts new ones, and waits for their first batches, at\n"
        "# every epoch's start. Your other arguments (...) stay as they are:\n"
        f"train_loader = DataLoader(dataset, ..., num_workers={workers}, persistent_workers=True)\n"
        "model.fit(train_loader, epochs=10)\n"
    )


def stoke_pipeline(batch: int) -> str:
    """The stoke pipeline every per-sample fix ends with, fed to ``fit``."""
    return (
        "train = (\n"
        "    stoke.from_sequence(samples)\n"
        "    .map(load_and_augment)\n"
        f"    .batch({batch})\n"
        "    .to_keras()\n"
        ")\n"
        "model.fit(train, epochs=10)\n"
    )


def stoke_takes_the_loaders_dataset(inputs: InputFacts) -> bool:
    """Whether stoke's pipeline can take a torch ``DataLoader``'s dataset as it is: by index,
    its samples stacked (not an ``IterableDataset``, nor a ``collate_fn`` of the user's)."""
    return not (inputs.torch_iterable_dataset or inputs.torch_collate_fn)


def stoke_fix(inputs: InputFacts, data_name: str | None = None) -> str:
    """stoke, with the code for this input kind: the first fix for an input-bound run.
    ``data_name``: what the script calls its generator or Sequence, where the doctor knows it
    (a Keras-2 call's argument); else a generic name."""
    kind = inputs.kind or "unknown"
    batch = inputs.batch_size or 64
    if kind == "generator":
        return (
            "import stoke\n"
            "\n"
            "# One line: stoke runs the generator off the trainer's thread and\n"
            "# prefetches to the device: batch n+1 is made while the model trains on n.\n"
            f"model.fit(stoke.accelerate({data_name or 'train_generator'}), "
            "steps_per_epoch=steps, epochs=10)\n"
            "\n"
            "# All cores: give stoke the samples (anything with len() and [i]) and\n"
            "# your per-sample function; its worker processes build batches in parallel.\n"
            + stoke_pipeline(batch)
        )
    if kind == "pydataset":
        return (
            "import stoke\n"
            "\n"
            "# One line: your PyDataset's batches are built in parallel worker processes and\n"
            "# handed to fit() through shared memory (no pickling), prefetched to the device.\n"
            f"model.fit(stoke.accelerate({data_name or 'train_dataset'}), epochs=10)\n"
        )
    if kind == "torch_dataloader" and not stoke_takes_the_loaders_dataset(inputs):
        # stoke's pipeline takes samples by index and stacks them: not an IterableDataset,
        # not what a collate_fn of the user's makes (the red-team's a06, a18: both raised)
        keep = ", ".join(filter(None, (
            "an IterableDataset" if inputs.torch_iterable_dataset else None,
            f"collate_fn={inputs.torch_collate_fn}" if inputs.torch_collate_fn else None)))
        workers = max(2, 2 * (inputs.torch_num_workers or 0))
        collate = f", collate_fn={inputs.torch_collate_fn}" if inputs.torch_collate_fn else ""
        split = ("\n# (an IterableDataset splits its stream among workers itself: see\n"
                 "# torch.utils.data.get_worker_info() in its __iter__)"
                 if inputs.torch_iterable_dataset else "")
        return (
            f"# Keep the DataLoader ({keep}: stoke's pipeline takes samples by\n"
            "# index and stacks them) and let it make batches in worker processes,\n"
            f"# alive between epochs:{split}\n"
            f"train_loader = DataLoader(dataset, batch_size={batch}{collate},\n"
            f"                          num_workers={workers}, persistent_workers=True,\n"
            "                          prefetch_factor=4)\n"
            "model.fit(train_loader, epochs=10)\n"
        )
    if kind == "torch_dataloader":
        return (
            "import stoke\n"
            "\n"
            "# The same torch Dataset (len() and [i]); stoke's workers write samples\n"
            "# straight into shared memory and prefetch to the device.\n"
            f"train = stoke.from_sequence(train_loader.dataset).batch({batch}).to_keras()\n"
            "model.fit(train, epochs=10)\n"
        )
    if kind == "tf.data" and not inputs.tf_data_py_function:
        # the stoke line is for Python per-sample work: not offered where the graph was read
        # and holds none (issue 14: "suggests stoke for py_function work" on TF ops)
        python_hint = "" if inputs.tf_data_py_function is False else (
            "# and if its per-sample work is Python, stoke runs it in worker processes:\n"
            f"# stoke.from_sequence(samples).map(load_and_augment).batch({batch}).to_keras()\n")
        return (
            "# This pipeline runs TF ops only: keep tf.data and\n"
            + _comment(f"{_tf_data_steps(inputs)}.")
            + _tf_data_lines(inputs)
            + python_hint
        )
    if kind == "tf.data":
        return (
            "import stoke\n"
            "\n"
            "# Python per-sample work (py_function / numpy_function) runs in stoke's worker\n"
            "# processes, outside the GIL, and is prefetched to the device:\n"
            + stoke_pipeline(batch)
            + "\n"
            + "# Staying with tf.data (TF ops only):\n"
            + _comment(f"{_tf_data_steps(inputs)}.")
            + _tf_data_lines(inputs)
        )
    if kind == "grain":
        return (
            "import stoke\n"
            "\n"
            "# Grain reads this dataset with threads (ReadOptions: 16 by default), and its\n"
            "# Python per-sample work holds the GIL against the trainer. A MapDataset has\n"
            "# len() and [i]: stoke's worker processes build its batches outside the GIL,\n"
            "# in shared memory, prefetched to the device.\n"
            f"model.fit(stoke.accelerate({data_name or 'dataset'}), epochs=10)\n"
        )
    if kind == "train_on_batch":
        return (
            "import stoke\n"
            "\n"
            "# stoke's worker processes build the batches ahead of your loop:\n"
            f"batches = stoke.from_sequence(samples).map(load_and_augment).batch({batch})\n"
            "for x, y in batches.iter():\n"
            "    model.train_on_batch(x, y)\n"
        )
    if kind == "arrays":
        return (
            "import stoke\n"
            "\n"
            f"train = stoke.from_arrays(x_train, y_train).batch({batch}).to_keras()\n"
            "model.fit(train, epochs=10)\n"
        )
    if kind == "stoke":
        return (
            "# stoke already feeds this run and its workers cannot keep up. Measure\n"
            "# the pipeline alone with each executor and worker count (shell:\n"
            "# `stoke bench`), then give it more workers or cores, or run its map\n"
            "# stage on a Ray cluster.\n"
        )
    return (
        "import stoke\n"
        "\n"
        "# A PyDataset, keras.utils.Sequence or generator: one line.\n"
        "model.fit(stoke.accelerate(train_data), epochs=10)\n"
    )


def keras2_fix(script: str | None, method: str, data_name: str | None = None,
               class_weight: bool = False) -> str:
    """A Keras-2 script: ``stoke run`` runs it unchanged, fed by ``stoke.accelerate`` (a
    generator off the trainer's thread; a Sequence's workers once they pay: see
    :mod:`stoke.accelerate.worker_start`); or the one-line change in the script
    (``data_name``: the call's argument). ``class_weight``: the call gave a generator a
    ``class_weight``, which Keras 3 refuses (``stoke run`` turns it into sample weights, as
    Keras 2 did; in the script, the generator yields them)."""
    script = str(script or "train.py")
    weights = (
        "#   (Keras 3 takes no class_weight with a generator: yield (x, y, w),\n"
        "#   w = np.array([class_weight[int(c)] for c in y], 'float32'),\n"
        "#   and drop class_weight=)\n"
        if class_weight else ""
    )
    return (
        f"stoke run {script}   # the script unchanged: {method}"
        "() is fed by stoke.accelerate\n"
        "# or in the script, for Keras 3:\n"
        f"{weights}"
        f"#   model.fit(stoke.accelerate({data_name or 'train_generator'}), "
        "steps_per_epoch=steps, epochs=10)\n"
    )


def _comment(text: str) -> str:
    """``text`` as Python comment lines of at most 80 characters."""
    return "".join(f"# {line}\n" for line in textwrap.wrap(text, 78))


def _tf_data_missing(inputs: InputFacts) -> tuple[bool, bool]:
    """What a tf.data pipeline lacks of "map in parallel and prefetch": (a map that runs one
    element at a time, no prefetch). A map already parallel, a pipeline with no map, or a
    prefetch of its own or tf.data's are never recommended (issue 14: a fix is never what the
    run already does; s18_tfrecord_noprefetch.py, ``map(num_parallel_calls=AUTOTUNE)``, was
    told to map in parallel)."""
    if not inputs.tf_data_ops and inputs.tf_data_parallel_map is None:
        # the graph was not read (tf_data_graph_error): nothing is known to be there
        return True, True
    return inputs.tf_data_parallel_map is False, inputs.tf_data_prefetches is not True


def _tf_data_steps(inputs: InputFacts) -> str:
    """What a tf.data pipeline still lacks of "map in parallel and prefetch", in words; when
    it lacks neither, what is left to tf.data: caching what repeats every epoch, and cores."""
    sequential, no_prefetch = _tf_data_missing(inputs)
    if sequential and no_prefetch:
        return "map in parallel and prefetch"
    if sequential:
        return "map in parallel (it already prefetches)"
    already = ("it already maps in parallel" if inputs.tf_data_parallel_map
               else "it has no map")
    if no_prefetch:
        return f"prefetch ({already})"
    return (f"{already} and prefetches, so tf.data has no step left to add: cache what "
            "every epoch repeats (reading, decoding) if it fits in memory, or give the "
            "input more cores")


def _tf_data_lines(inputs: InputFacts) -> str:
    """The code for :func:`_tf_data_steps`."""
    sequential, no_prefetch = _tf_data_missing(inputs)
    lines = ""
    if sequential:
        lines += "ds = ds.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE)\n"
    if no_prefetch:
        lines += "ds = ds.prefetch(tf.data.AUTOTUNE)\n"
    if not lines:
        lines = ("ds = ds.cache()  # after the deterministic map, before shuffle and the "
                 "random augmentation\n")
    return lines


def validation_generator_fix(script: str | None) -> str:
    """A Python generator as ``fit``'s ``validation_data``: made once before ``fit`` when it
    fits in memory, or fed by stoke's workers (``stoke run`` routes it as it routes ``x``)."""
    script = str(script or "train.py")
    return (
        "# the script unchanged, validation_data's generator fed by stoke's workers:\n"
        f"stoke run {script}\n"
        "# or in the script:\n"
        "#   model.fit(..., validation_data=stoke.accelerate(val_generator),\n"
        "#             validation_steps=validation_steps)\n"
        "# or, when the validation set fits in memory, make its batches once, before fit:\n"
        "#   batches = [next(val_generator) for _ in range(validation_steps)]\n"
        "#   x_val, y_val = (np.concatenate(part) for part in zip(*batches))\n"
        "#   model.fit(..., validation_data=(x_val, y_val))\n"
    )


def float64_fix(kind: str, generator_like: bool, fields: list[str] | None = None) -> str:
    """float64 inputs: cast where the batches are made, or let stoke ship float32. ``fields``:
    the float64 ones, named in the fix (a multi-output dict's ``sample_weight, y/priority`` was
    told ``x_train = x_train.astype(...)``)."""
    named = f"# float64 here: {', '.join(fields)}\n" if fields else ""
    if kind == "tf.data":
        return (
            named
            + "ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y),\n"
            "            num_parallel_calls=tf.data.AUTOTUNE)\n"
        )
    if kind == "torch_dataloader":
        # stoke.accelerate refuses a DataLoader (it batches in its own workers)
        return (
            named
            + "# where each sample is made (the Dataset's __getitem__ or __iter__, or your\n"
            "# collate_fn): float32, not float64 (the default of np.random, np.zeros)\n"
            "x = torch.as_tensor(x, dtype=torch.float32)  # or x.astype(np.float32)\n"
        )
    if generator_like:
        return (
            named
            + "# where each batch is made (__getitem__, the generator): float32, not\n"
            "# float64 (the default of np.empty, np.zeros, np.random)\n"
            "x = np.empty((batch_size, *shape), dtype=np.float32)\n"
            "y = y.astype(np.float32)  # each float64 field, where it is made\n"
            "# or let stoke feed fit(): it ships float64 as float32 by default\n"
            "import stoke\n"
            "model.fit(stoke.accelerate(train_data), epochs=10)\n"
        )
    return (
        named
        + "x_train = x_train.astype(\"float32\")  # once, where the arrays are made\n"
        "# or let stoke feed fit(): it ships float64 as float32 by default\n"
        "import stoke\n"
        "model.fit(stoke.accelerate(train_data), epochs=10)\n"
    )


# a tf.data pipeline without prefetch (no-prefetch)
PREFETCH_FIX = (
    "# last in the chain: batch n+1 is made while the model trains on batch n\n"
    "ds = ds.prefetch(tf.data.AUTOTUNE)\n"
    "model.fit(ds, epochs=10)\n"
)


def shared_cores_fix(input_cores: float, rate: float, batch_size: int,
                     inputs: InputFacts | None = None, stoke_gain: float | None = None) -> str:
    """The cores, not the workers, are the limit: size the workers to what the input needs.
    A tf.data pipeline of TF ops (``inputs``) keeps tf.data, its parallelism bounded: stoke's
    workers are for Python per-sample work (s18_tfrecord_noprefetch.py on TF, input alone 2.5x
    the model, was told to move to ``stoke.from_sequence``). Where stoke on these cores is
    predicted no faster (``stoke_gain`` below 1.05), it is not offered: the red-team's
    s17_pydataset_mp.py (a PyDataset on 4 processes, 2 cores) was pointed to stoke's tuner
    beside "with stoke on these cores: x1.00"."""
    workers_needed = max(1, math.ceil(input_cores))
    kind = inputs.kind if inputs is not None else None
    # never what the run already does: a DataLoader with those workers keeps them (the
    # red-team's a19 and torch_persistent_loader.py were told "give it 2" with 2)
    loader_has_them = kind == "torch_dataloader" and inputs.torch_num_workers == workers_needed

    def head(what: str = "give it") -> str:
        return (
            "# The cores, not the workers, are the limit: more workers take cores from the model.\n"
            f"# The input needs about {input_cores:.1f} core(s) at {rate:,.0f} samples/s: {what}\n"
        )

    if kind == "tf.data" and inputs.tf_data_py_function is False:
        # the pipeline's own thread pool, capped: it holds for maps a Keras utility made too
        # (image_dataset_from_directory has no map in the script: the red-team's s09 was told
        # ds.map(load_and_augment, ...) about a function it does not have)
        return (
            head()
            + f"# {workers_needed} thread(s), not AUTOTUNE's one per core, and leave the rest to the\n"
            "# model's threads: cap the pipeline's thread pool (its maps, yours or a Keras\n"
            "# utility's like image_dataset_from_directory, share it):\n"
            "options = tf.data.Options()\n"
            f"options.threading.private_threadpool_size = {workers_needed}\n"
            "ds = ds.with_options(options)\n"
            "# or, in a map of your own: ds.map(fn, "
            f"num_parallel_calls={workers_needed})\n"
            "# More speed needs more cores or a GPU for the model.\n"
        )
    if stoke_gain is not None and stoke_gain < 1.05:
        how = {
            "pydataset": f"super().__init__(workers={workers_needed}, use_multiprocessing=True)",
            "torch_dataloader": f"DataLoader(dataset, num_workers={workers_needed}, ...)",
        }.get(kind)
        if loader_has_them:
            how = f"# (the DataLoader's {workers_needed} worker(s) already are that: keep them)"
        return (
            head()
            + f"# {workers_needed} worker(s) and leave the rest to the model's threads"
            + (f":\n{how}\n" if how else ".\n")
            + f"# stoke on these cores is predicted no faster (x{stoke_gain:.2f}): they are the limit.\n"
            "# More speed needs more cores or a GPU for the model.\n"
        )
    if loader_has_them:
        workers = (head(f"the DataLoader's {workers_needed} worker(s)")
                   + "# are that: keep them and leave the rest to the model's threads, or\n")
    else:
        workers = (head()
                   + f"# {workers_needed} worker(s) and leave the rest to the model's threads, or\n")
    samples = ("stoke.from_sequence(train_loader.dataset)"
               if kind == "torch_dataloader" and stoke_takes_the_loaders_dataset(inputs)
               else "stoke.from_sequence(samples).map(load)")
    return (
        workers
        + "# let stoke's tuner budget the cores (it measures the trainer's own CPU per step):\n"
        "import stoke\n"
        f"train = {samples}.batch({batch_size}).to_keras()\n"
        "model.fit(train, epochs=10)\n"
        "# More speed needs more cores or a GPU for the model.\n"
    )


# -- model --------------------------------------------------------------------------------------


# host code in the model: move it onto the device (host-op-in-model, run-eagerly)
HOST_OP_FIX = (
    "import keras\n"
    "from keras import ops\n"
    "\n"
    "class Normalise(keras.layers.Layer):\n"
    "    def call(self, x):\n"
    "        # was: np.sin(x), np.asarray(x) or a tf.py_function (on the host)\n"
    "        return ops.sin(x)  # keras.ops: on the device, inside the compiled step\n"
    "\n"
    "# or do that preprocessing in the input pipeline, before the model\n"
)
# the same, when the host code is a Lambda layer's function (s06_lambda_numpy.py)
HOST_OP_LAMBDA_FIX = (
    "import keras\n"
    "from keras import ops\n"
    "\n"
    "# for example, was: keras.layers.Lambda(lambda x: np.log1p(np.abs(x)))  (on the host)\n"
    "keras.layers.Lambda(lambda x: ops.log1p(ops.abs(x)))  # keras.ops: on the device\n"
    "\n"
    "# or do that preprocessing in the input pipeline, before the model\n"
)


def host_op_fix(in_lambda: bool) -> str:
    """Host code in the model onto the device: in a layer's ``call``, or in a Lambda layer's
    function (``in_lambda``)."""
    return HOST_OP_LAMBDA_FIX if in_lambda else HOST_OP_FIX


def compile_fix(host_code: bool, in_lambda: bool = False) -> str:
    """Compile the step (no ``run_eagerly``); with host code in the model, move it first (in a
    Lambda layer's function: ``in_lambda``)."""
    if host_code:
        return host_op_fix(in_lambda) + (
            "\n# then, and only then, compile the step:\n"
            "model.compile(optimizer=optimizer, loss=loss)  # no run_eagerly\n"
        )
    return (
        "# compile without run_eagerly=True (the default is a compiled step)\n"
        "model.compile(optimizer=optimizer, loss=loss, metrics=metrics)\n"
        "model.run_eagerly = False  # if it was set on the model\n"
    )


def small_batch_fix(backend: str | None, input_kind: str | None,
                    jit_compile: bool | None) -> str:
    """Too little work per step for its fixed cost (small-batch): more steps per dispatch and
    a larger batch, as this run can take them. No ``steps_per_execution`` on torch (Keras'
    torch trainer refuses any but 1), no ``jit_compile=True`` over the user's own
    ``jit_compile=False`` (a model that does not compile), and the batch where the input
    makes it: ``.batch()`` of a tf.data pipeline (``fit`` ignores ``batch_size`` for a
    dataset), the generator or Sequence's own, ``batch_size=`` for arrays."""
    lines = []
    if backend != "torch":
        compile_args = "steps_per_execution=32"  # one dispatch runs 32 steps
        if jit_compile is not False:
            compile_args += ", jit_compile=True"
        lines.append("model.compile(optimizer=optimizer, loss=loss,\n"
                     f"              {compile_args})  # one dispatch runs 32 steps\n")
    lines.append("# a larger batch (scale the learning rate with it):\n")
    if input_kind == "tf.data":
        lines.append("dataset = dataset.unbatch().batch(256)  # or .batch(256) where it is built\n"
                     "model.fit(dataset, epochs=10)\n")
    elif input_kind == "arrays":
        lines.append("model.fit(x_train, y_train, batch_size=256, epochs=10)\n")
    else:
        lines.append("# make 256 samples a batch where the batches are made (the generator,\n"
                     "# the Sequence's __getitem__, the DataLoader's batch_size)\n")
    return "".join(lines)


# -- system -------------------------------------------------------------------------------------


def one_shape_fix(input_kind: str | None, last_batch_only: bool, sizes_vary: bool = False,
                  tf_data_shapes_batches: str | None = None) -> str:
    """Batches of one shape, so the step compiles once: for a smaller last batch, drop it;
    for lengths or sizes that vary, pad or resize to one (or bucket into a few lengths,
    each compiled once). A tf.data pipeline that buckets already
    (``InputFacts.tf_data_shapes_batches`` "buckets") is not told to bucket (the red-team's
    s3: it was); one that pads per batch ("pads": ``padded_batch`` with no ``padded_shapes``,
    each batch as long as its longest) is told which argument it lacks."""
    if last_batch_only:
        if input_kind == "tf.data":
            return ("# Only the epoch's smaller last batch has another shape: drop it\n"
                    "ds = ds.batch(64, drop_remainder=True)\n")
        return ("# Only the epoch's smaller last batch has another shape: leave it out\n"
                "# (__len__ = len(samples) // batch_size), or pad it to the full batch size\n")
    sizes = ("# and one batch size: every batch as large as the others\n" if sizes_vary else
             "# and one batch size (drop or pad the epoch's smaller last batch)\n")
    if input_kind == "tf.data" and tf_data_shapes_batches == "buckets":
        return (
            "# The pipeline buckets already: each bucket's length compiles once, and every\n"
            "# batch shorter than its bucket or smaller than its bucket's batch size again.\n"
            "# Pad each batch to its bucket's boundary (the last boundary above your longest)\n"
            "# and drop the buckets' smaller batches; fewer buckets compile fewer shapes:\n"
            "ds = ds.bucket_by_sequence_length(lambda x, y: tf.shape(x)[0],\n"
            "                                  bucket_boundaries=[64, MAXLEN + 1],\n"
            "                                  bucket_batch_sizes=[64, 64, 64],\n"
            "                                  pad_to_bucket_boundary=True,\n"
            "                                  drop_remainder=True)\n"
            "# or one length for every batch: one compilation in all\n"
            "ds = ds.padded_batch(64, padded_shapes=([MAXLEN, FEATURES], []),\n"
            "                     drop_remainder=True)\n"
        )
    if input_kind == "tf.data":
        pads_per_batch = tf_data_shapes_batches == "pads"
        return (
            ("# padded_batch without padded_shapes pads each batch to its own longest: one\n"
             "# length for every batch (MAXLEN: your longest, or a cap)\n" if pads_per_batch else
             "# One shape for every batch: pad to one length (MAXLEN: your longest, or a cap)\n")
            + "ds = ds.padded_batch(64, padded_shapes=([MAXLEN, FEATURES], []),\n"
            "                     drop_remainder=True)\n"
            "# or a few lengths, each compiled once\n"
            "ds = ds.bucket_by_sequence_length(lambda x, y: tf.shape(x)[0],\n"
            "                                  bucket_boundaries=[32, 64, 128],\n"
            "                                  bucket_batch_sizes=[64, 64, 64, 64],\n"
            "                                  pad_to_bucket_boundary=True,\n"
            "                                  drop_remainder=True)\n"
            "# images: ds.map(lambda x, y: (tf.image.resize(x, (SIZE, SIZE)), y)) first\n"
            + sizes
        )
    return (
        "# One shape for every batch. Sequences: pad to one length (MAXLEN: your longest,\n"
        "# or a cap), with the dtype you use now\n"
        "x = keras.utils.pad_sequences(rows, maxlen=MAXLEN, padding=\"post\")\n"
        "# images: resize or crop each to one size\n"
        "x = np.stack([keras.ops.convert_to_numpy(keras.ops.image.resize(image, (SIZE, SIZE)))\n"
        "              for image in images])\n"
        + sizes
    )


def contention_fix(cores: int, other_cores: float) -> str:
    """Who takes the cores, and how to keep them off training's: core numbers that exist on
    this machine only."""
    fix = (
        "# who takes the cores?\n"
        "ps -eo pid,pcpu,comm --sort=-pcpu | head\n"
        "# stop them or lower their priority:\n"
        "renice -n 19 -p PID_OF_OTHER_JOB\n"
    )
    others = max(1, math.ceil(other_cores))
    if cores - others >= 2:
        last_training = cores - others - 1
        fix += (
            f"# or split this machine's {cores} cores: training on 0-{last_training}, the other "
            f"job on {last_training + 1}-{cores - 1}\n"
            f"taskset -cp {last_training + 1}-{cores - 1} PID_OF_OTHER_JOB\n"
            f"taskset -c 0-{last_training} python train.py\n"
        )
    else:
        fix += f"# with {cores} core(s) there are none to set aside: run the other job later\n"
    return fix


def gpu_install_fix(backend: str) -> str:
    """No GPU visible to the backend: check the driver, then install the CUDA build."""
    install = {
        "jax": 'pip install -U "jax[cuda12]"',
        "tensorflow": 'pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]"',
        "torch": "pip install torch --index-url https://download.pytorch.org/whl/cu124",
    }.get(backend, 'pip install -U "jax[cuda12]"  # or the CUDA build of your backend')
    return (
        "nvidia-smi                      # the driver sees the GPU?\n"
        "echo $CUDA_VISIBLE_DEVICES      # empty or unset, not -1\n"
        f"{install}\n"
        "stoke env                       # checks that a matmul really runs on the GPU\n"
    )


def use_gpu_fix(backend: str) -> str:
    """A GPU is visible but the model runs on the CPU: find what keeps it there."""
    if backend == "tensorflow":
        return (
            "import tensorflow as tf\n"
            "print(tf.config.list_logical_devices(\"GPU\"))\n"
            "# remove any `with tf.device(\"/CPU:0\"):` around model building and fit()\n"
        )
    if backend == "torch":
        return (
            "import torch\n"
            "print(torch.cuda.is_available())\n"
            "# Keras places the model on cuda when it is available; remove any .to(\"cpu\") or\n"
            "# keras.device(\"cpu\") scope around model building and fit()\n"
        )
    return (
        "import jax\n"
        "print(jax.devices())  # expect CudaDevice entries\n"
        "# remove JAX_PLATFORMS=cpu and any keras.device(\"cpu\") scope around the model\n"
    )


def data_parallel_fix(backend: str) -> str:
    """Train on every visible GPU, the way this backend does it."""
    if backend == "tensorflow":
        return (
            "import tensorflow as tf\n"
            "\n"
            "strategy = tf.distribute.MirroredStrategy()  # every visible GPU\n"
            "with strategy.scope():\n"
            "    model = build_model()\n"
            "    model.compile(optimizer=optimizer, loss=loss)\n"
            "model.fit(train, epochs=10)  # batch size is global: scale it with the GPU count\n"
        )
    if backend == "torch":
        return (
            "# Keras' distribution API needs the JAX backend; with torch, run one\n"
            "# process per GPU (torch.distributed / DDP), or switch:\n"
            "import os\n"
            "os.environ[\"KERAS_BACKEND\"] = \"jax\"  # before importing keras\n"
            "import keras\n"
            "keras.distribution.set_distribution(keras.distribution.DataParallel())\n"
        )
    return (
        "import keras\n"
        "\n"
        "# before building the model: shard every batch over all visible GPUs\n"
        "keras.distribution.set_distribution(keras.distribution.DataParallel())\n"
        "model = build_model()\n"
        "model.fit(train, epochs=10)  # batch size is global: scale it with the GPU count\n"
    )


# no GPU visible, and none on the machine either (no-accelerator, info)
STOKE_ENV_FIX = "stoke env  # shows the devices each backend sees and why\n"

# TensorFlow set to more intra-op threads than cores (thread-config)
TF_OVERSUBSCRIBED_FIX = (
    "# 0 (the default): one thread per core\n"
    "tf.config.threading.set_intra_op_parallelism_threads(0)\n"
)


def torch_threads_fix(cores: int) -> str:
    """torch set to more threads than the machine has cores."""
    return f"# at most one thread per core (torch's default)\ntorch.set_num_threads({cores})\n"


def thread_limit_fix(tf_intra_op: bool) -> str:
    """A CPU model held to few threads: TensorFlow's intra-op setting, or OMP_NUM_THREADS."""
    if tf_intra_op:
        return (
            "# before any op runs; 0 (the default): one thread per core\n"
            "tf.config.threading.set_intra_op_parallelism_threads(0)\n"
        )
    return "unset OMP_NUM_THREADS  # or export OMP_NUM_THREADS=<cores>\npython train.py\n"


# TensorFlow holding all GPU memory up front (gpu-memory-growth)
MEMORY_GROWTH_FIX = (
    "import tensorflow as tf\n"
    "for gpu in tf.config.list_physical_devices(\"GPU\"):\n"
    "    tf.config.experimental.set_memory_growth(gpu, True)  # before any op runs\n"
)


def plain_number(value: float | None) -> float | int | None:
    """A number as a person writes it: whole numbers without ``.0``, others to one decimal."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 1)
