"""The decisions of ``stoke env``: plain values in, :class:`~stoke.envcheck.facts.Check`
objects out, one module per group of checks.

Nothing here reads the machine, so every GPU case is tested on a CPU-only box. Each
``check_*`` function answers one question and suggests the fix for each problem it finds:

- :mod:`.stack`: Python, Keras, the Keras backend, the framework versions that must agree;
- :mod:`.gpu`: what the NVIDIA driver sees (its GPUs, NVML), the variables that hide GPUs,
  and the other processes holding GPU memory;
- :mod:`.builds`: whether each framework build (CPU-only or CUDA, which CUDA and cuDNN)
  runs on this driver, and the install that fits;
- :mod:`.devices`: what the backend, imported in a child, sees, and its matmul;
- :mod:`.cpu`: thread settings against the usable cores, and other work on the CPUs;
- :mod:`.gpu_memory`: who reserves GPU memory at start-up (TensorFlow, JAX, torch settings);
- :mod:`.host`: ``/dev/shm``, the host's CPUs and memory;
- :mod:`.evaluate`: :func:`~.evaluate.evaluate`, which runs them all in the order they are
  printed, and :func:`~.evaluate.worst_status`.

Leaves to others: gathering the facts (:mod:`stoke.envcheck.gather`,
:mod:`stoke.envcheck.probe`) and printing the checks (:mod:`stoke.envcheck.report`).
"""
