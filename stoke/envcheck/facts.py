"""What ``stoke env`` knows and what it says, as plain values: the :class:`EnvFacts` it
gathers (the host, the NVIDIA driver, the installed packages, the backend probes) and the
:class:`Check` objects it decides from them.

Owns: the check statuses, the names stoke env looks for (the Keras backends, the
distributions that provide their frameworks, the packages and environment variables it
records), the dataclasses, and what the facts answer directly (the cores work can use,
which installed distribution provides a framework, which JAX CUDA plugins are installed).
Everything here is serialisable.
Leaves to others: filling the facts (:mod:`.gather`, :mod:`.probe`), judging them
(:mod:`.checks`), printing them (:mod:`.report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
STATUSES = (OK, INFO, WARN, FAIL)  # mildest first

KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")
KERAS_DEFAULT_SOURCE = "Keras' default"
# The distribution that provides each backend's framework (first found wins).
TENSORFLOW_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tf-nightly",
    "tf-nightly-cpu",
    "tensorflow-gpu",
    "tensorflow-intel",
    "tensorflow-macos",
    "tensorflow-aarch64",
)
BACKEND_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorflow": TENSORFLOW_DISTRIBUTIONS,
    "jax": ("jax",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "openvino": ("openvino",),
}
JAX_CUDA_MAJORS = (11, 12, 13)
PACKAGES = (
    "keras",
    *TENSORFLOW_DISTRIBUTIONS,
    "tf-keras",
    "jax",
    "jaxlib",
    *(f"jax-cuda{major}-{part}" for major in JAX_CUDA_MAJORS for part in ("plugin", "pjrt")),
    "torch",
    "numpy",
    "nvidia-ml-py",
    "pynvml",
    # CUDA libraries from pip (``tensorflow[and-cuda]``, ``jax[cuda12]``, torch's CUDA wheels).
    # CUDA 13 dropped the ``-cuXX`` suffix for most of them.
    "nvidia-cudnn-cu11",
    "nvidia-cudnn-cu12",
    "nvidia-cudnn-cu13",
    "nvidia-cuda-runtime-cu11",
    "nvidia-cuda-runtime-cu12",
    "nvidia-cuda-runtime",
    "nvidia-cuda-nvcc-cu12",
    "nvidia-cuda-nvcc",
)
# The environment variables this check reads; the JSON records those that are set.
ENV_VARS = (
    "KERAS_BACKEND",
    "KERAS_HOME",
    "TF_USE_LEGACY_KERAS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "JAX_PLATFORMS",
    "JAX_PLATFORM_NAME",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "TF_GPU_ALLOCATOR",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
    "LD_LIBRARY_PATH",
)

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Check:
    """One finding of ``stoke env``.

    ``id`` is stable (scripts may match on it); ``status`` is one of ``ok``, ``info``,
    ``warn``, ``fail`` (``fail`` makes ``stoke env`` exit 1); ``fix`` is a command or code to
    run, empty when there is nothing to do; ``evidence`` holds the values it was decided from.
    """

    id: str
    title: str
    status: str
    message: str
    fix: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(
                f"Check status must be one of {STATUSES}. Received: status={self.status!r}"
            )


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    compute_capability: str | None = None  # "9.0"
    uuid: str | None = None


@dataclass
class GpuProcess:
    pid: int
    name: str
    gpu_index: int | None = None
    used_bytes: int | None = None


@dataclass
class NvidiaFacts:
    """What the NVIDIA driver says, from NVML (nvidia-ml-py) or else ``nvidia-smi``.

    ``driver_cuda`` is the newest CUDA the driver runs (nvidia-smi's "CUDA Version").
    ``kernel_module`` says ``/proc/driver/nvidia/version`` exists; ``device_nodes`` says
    ``/dev/nvidia0``-style nodes exist (a container started without ``--gpus`` has the first
    and not the second)."""

    source: str = "none"  # "nvml", "nvidia-smi" or "none"
    driver_version: str | None = None
    driver_cuda: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    kernel_module: bool = False
    device_nodes: bool = False
    nvml_available: bool = False
    error: str | None = None

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


@dataclass
class HostFacts:
    system: str
    machine: str
    cores_logical: int
    cores_physical: int | None
    cores_usable: int  # CPU affinity: the cores this process may run on
    cpu_quota_cores: float | None  # cgroup CPU limit (docker --cpus), None when unlimited
    load_avg_1m: float | None
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    memory_limit_bytes: int | None  # cgroup memory limit, None when unlimited
    shm_total_bytes: int | None
    shm_free_bytes: int | None
    # a short CPU sample (as the doctor takes during a run): cores busy with other processes
    # and the machine's busy share; None when it could not be taken
    other_processes_cores: float | None = None
    machine_busy_fraction: float | None = None

    @property
    def cores_effective(self) -> int:
        return effective_cores(self.cores_usable, self.cpu_quota_cores)


@dataclass
class EnvFacts:
    """Everything ``stoke env`` looked at; plain values only (its JSON form is ``facts``)."""

    python_version: str
    python_executable: str
    packages: dict[str, str]  # installed distribution -> version, for PACKAGES
    backend: str  # the active Keras backend
    backend_source: str  # "KERAS_BACKEND", the keras.json path, or Keras' default
    keras_json_backend: str | None
    env: dict[str, str]  # the ENV_VARS that are set
    tf_build: dict[str, Any] | None  # tensorflow's build_info (is_cuda_build, cuda_version...)
    torch_build: dict[str, Any] | None  # torch.version: version, cuda, hip
    host: HostFacts
    nvidia: NvidiaFacts
    probes: list[dict[str, Any]] = field(default_factory=list)  # one per probed backend
    gather_s: float = 0.0


def effective_cores(cores_usable: int, cpu_quota_cores: float | None) -> int:
    """The cores work can actually use: the affinity set, capped by a cgroup quota."""
    if cpu_quota_cores is None:
        return max(1, cores_usable)
    return max(1, min(cores_usable, math.floor(cpu_quota_cores)))


def framework_distribution(framework: str, packages: Mapping[str, str]) -> str | None:
    """The installed distribution that provides ``framework`` (``tensorflow-cpu`` for
    tensorflow...), or None."""
    for name in BACKEND_DISTRIBUTIONS.get(framework, (framework,)):
        if name in packages:
            return name
    return None


def jax_cuda_packages(packages: Mapping[str, str]) -> dict[int, dict[str, str]]:
    """The JAX CUDA plugins installed, by CUDA major: {12: {"jax-cuda12-plugin": "0.10.2"}}."""
    found: dict[int, dict[str, str]] = {}
    for major in JAX_CUDA_MAJORS:
        for part in ("plugin", "pjrt"):
            name = f"jax-cuda{major}-{part}"
            if name in packages:
                found.setdefault(major, {})[name] = packages[name]
    return found
