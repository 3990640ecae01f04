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

This package module only re-exports; each step has a module of its own:

- :mod:`.facts`: the plain values (:class:`EnvFacts`, :class:`Check`, the statuses, the names
  of the backends, packages and environment variables looked for);
- :mod:`.versions`: version numbers, and which driver each CUDA release needs;
- :mod:`.parsers`: the text other programs write (framework build files, ``nvidia-smi``,
  cgroups, keras.json, device names, a backend's stderr);
- :mod:`.gather`: reading this machine into :class:`EnvFacts` (impure);
- :mod:`.probe`: the backend imported in a child process, its devices and a matmul;
- :mod:`.checks`: the ``check_*`` decisions, and :func:`evaluate`, which runs them all;
- :mod:`.report`: the command (``add_arguments``, ``main``), the table and the JSON.
"""

from __future__ import annotations

# Names the single envcheck.py had that its tests still reach through the package: the
# standard modules they patch (``envcheck.shutil.which``, ``envcheck.os.path.exists``), a
# private helper.
import os as os
import shutil as shutil

from stoke.envcheck.checks import _pip_command as _pip_command
from stoke.envcheck.checks import (
    check_backend,
    check_backend_devices,
    check_cpu_load,
    check_cuda_driver,
    check_framework_build,
    check_gpu_memory,
    check_gpu_processes,
    check_gpu_visibility,
    check_host,
    check_keras,
    check_matmul,
    check_nvidia,
    check_packages,
    check_python,
    check_shm,
    check_threads,
    cuda_frameworks,
    evaluate,
    gpu_build_fix,
    worst_status,
)
from stoke.envcheck.facts import (
    BACKEND_DISTRIBUTIONS,
    ENV_VARS,
    FAIL,
    GIB,
    INFO,
    JAX_CUDA_MAJORS,
    KERAS_BACKENDS,
    KERAS_DEFAULT_SOURCE,
    MIB,
    OK,
    PACKAGES,
    STATUSES,
    TENSORFLOW_DISTRIBUTIONS,
    TRAINING_BACKENDS,
    WARN,
    Check,
    EnvFacts,
    GpuInfo,
    GpuProcess,
    HostFacts,
    NvidiaFacts,
    effective_cores,
    framework_distribution,
)
from stoke.envcheck.gather import (
    backends_to_probe,
    gather_facts,
    gather_host,
    gather_nvidia,
    installed_packages,
    jax_jaxlib_requirement,
    keras_json_path,
    read_tf_build,
    read_torch_build,
)
from stoke.envcheck.parsers import (
    device_kind,
    parse_build_info,
    parse_cpu_max,
    parse_nvidia_smi_apps,
    parse_nvidia_smi_gpus,
    parse_nvidia_smi_header,
    parse_torch_version_file,
    resolve_backend,
    short_device,
    stderr_hints,
)
from stoke.envcheck.probe import (
    PROBE_CODE,
    PROBE_MARKER,
    RunningProbe,
    probe_backend,
)
from stoke.envcheck.report import (
    ENV_SCHEMA_VERSION,
    add_arguments,
    main,
    render,
    to_json,
)
from stoke.envcheck.versions import (
    CUDA_MAJOR_MIN_DRIVER,
    CUDA_MIN_DRIVER,
    cuda_from_nvml,
    cuda_supported_by_driver,
    jax_cuda_extra,
    min_driver_for_cuda,
    parse_version,
    torch_wheel_tag,
    version_at_least,
    version_satisfies,
)

__all__ = [
    "BACKEND_DISTRIBUTIONS",
    "CUDA_MAJOR_MIN_DRIVER",
    "CUDA_MIN_DRIVER",
    "Check",
    "ENV_SCHEMA_VERSION",
    "ENV_VARS",
    "EnvFacts",
    "FAIL",
    "GIB",
    "GpuInfo",
    "GpuProcess",
    "HostFacts",
    "INFO",
    "JAX_CUDA_MAJORS",
    "KERAS_BACKENDS",
    "KERAS_DEFAULT_SOURCE",
    "MIB",
    "NvidiaFacts",
    "OK",
    "PACKAGES",
    "PROBE_CODE",
    "PROBE_MARKER",
    "RunningProbe",
    "STATUSES",
    "TENSORFLOW_DISTRIBUTIONS",
    "TRAINING_BACKENDS",
    "WARN",
    "add_arguments",
    "backends_to_probe",
    "check_backend",
    "check_backend_devices",
    "check_cpu_load",
    "check_cuda_driver",
    "check_framework_build",
    "check_gpu_memory",
    "check_gpu_processes",
    "check_gpu_visibility",
    "check_host",
    "check_keras",
    "check_matmul",
    "check_nvidia",
    "check_packages",
    "check_python",
    "check_shm",
    "check_threads",
    "cuda_frameworks",
    "cuda_from_nvml",
    "cuda_supported_by_driver",
    "device_kind",
    "effective_cores",
    "evaluate",
    "framework_distribution",
    "gather_facts",
    "gather_host",
    "gather_nvidia",
    "gpu_build_fix",
    "installed_packages",
    "jax_cuda_extra",
    "jax_jaxlib_requirement",
    "keras_json_path",
    "main",
    "min_driver_for_cuda",
    "parse_build_info",
    "parse_cpu_max",
    "parse_nvidia_smi_apps",
    "parse_nvidia_smi_gpus",
    "parse_nvidia_smi_header",
    "parse_torch_version_file",
    "parse_version",
    "probe_backend",
    "read_tf_build",
    "read_torch_build",
    "render",
    "resolve_backend",
    "short_device",
    "stderr_hints",
    "to_json",
    "torch_wheel_tag",
    "version_at_least",
    "version_satisfies",
    "worst_status",
]
