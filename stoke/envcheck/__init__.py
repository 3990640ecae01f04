"""``stoke env``: check the user's stack, say what is wrong and how to fix it.

Owns: collecting facts about this machine and its Python stack (Python, Keras and its
backend, framework builds, NVIDIA driver and CUDA, the devices the backend sees, a matmul on
them, threads, GPU memory settings, ``/dev/shm``, CPUs and memory), turning them into
:class:`Check` objects, and printing them (a rich table, or JSON with ``--json``).
Leaves to others: measuring a training run (``stoke doctor``, ``stoke.diagnosis``).

It reads like the doctor: gather (impure) -> :class:`EnvFacts` (plain values, serialisable)
-> pure ``check_*`` functions -> renderers. The decisions (does this driver run that CUDA, are
these threads oversubscribed, ...) take plain values, so they are tested without a GPU.

Nothing heavy is imported in this process. Versions come from package metadata and from the
small files the wheels ship (TensorFlow's ``build_info.py``, torch's ``version.py``); the
backend itself is imported in a child process (:func:`probe_backend`), so that a CUDA library
that crashes or hangs on import is reported as a failed check instead of killing
``stoke env``. The child turns GPU memory pre-allocation off (JAX) and growth on (TF) so that
checking never takes the memory of a training run that shares the GPU; the memory-growth
check reports the user's own settings.

    stoke env                      # the active backend (KERAS_BACKEND or keras.json)
    stoke env --backend all        # probe tensorflow, jax and torch, one after another
    stoke env --no-probe           # no backend import: versions, driver, threads only (< 1 s)
    stoke env --json env.json      # also write the facts and checks for machines ("-": stdout)

The command is :mod:`.report` (``add_arguments``, ``main``, run by :mod:`stoke.commands.cli`);
this package module re-exports nothing. Each step has a module of its own:

- :mod:`.facts`: the plain values (:class:`EnvFacts`, :class:`Check`, the statuses, the names
  of the backends, packages and environment variables looked for);
- :mod:`.versions`: version numbers and specifiers (PEP 440, through ``packaging``), and
  which driver each CUDA release needs;
- :mod:`.parsers`: the text other programs write (framework build files, ``nvidia-smi``,
  cgroups, keras.json, device names, a backend's stderr);
- :mod:`.gather`: reading this machine into :class:`EnvFacts` (impure; the NVIDIA driver
  through :mod:`stoke.nvml`, ``nvidia-smi``'s text as the fallback);
- :mod:`.probe`: the backend imported in a child process, its devices and a matmul;
- :mod:`.checks`: the ``check_*`` decisions, one module per group (the stack, the driver
  and its GPUs, the builds, the backend's devices, CPUs, GPU memory, the host), and
  :func:`~.checks.evaluate.evaluate`, which runs them all;
- :mod:`.report`: the command (``add_arguments``, ``main``), the table and the JSON.
"""
