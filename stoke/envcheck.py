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
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_SCHEMA_VERSION = 1

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


# --------------------------------------------------------------------------------------------
# What a check says, and the facts it is decided from
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Pure helpers: versions, CUDA, parsing
# --------------------------------------------------------------------------------------------


def parse_version(text: str | None) -> tuple[int, ...]:
    """The leading numeric release of a version: ``"2.13.0+cpu"`` -> ``(2, 13, 0)``;
    ``"580.159.04"`` -> ``(580, 159, 4)``; nothing numeric -> ``()``."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def version_at_least(version: str | None, minimum: str) -> bool:
    a, b = _padded(parse_version(version), parse_version(minimum))
    return a >= b


def version_satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a requirement specifier such as ``">=0.10.1,<=0.10.2"``.

    Enough of PEP 440 for the pins frameworks put on each other: ``== != >= <= > < ~=`` and
    ``==X.*``; local labels (``+cpu``) and pre-release tags are ignored."""
    have = parse_version(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = re.match(r"(===|==|!=|>=|<=|~=|>|<)\s*(\S+)", clause)
        if not match:
            continue
        op, target = match.groups()
        if op in ("==", "!=") and target.endswith(".*"):
            prefix = parse_version(target[:-2])
            equal = have[: len(prefix)] == prefix
            if equal != (op == "=="):
                return False
            continue
        a, b = _padded(have, parse_version(target))
        ok = {
            "==": a == b,
            "===": a == b,
            "!=": a != b,
            ">=": a >= b,
            "<=": a <= b,
            ">": a > b,
            "<": a < b,
            "~=": a >= b,
        }[op]
        if not ok:
            return False
    return True


# Minimum Linux x86_64 driver of each CUDA toolkit release (CUDA toolkit release notes,
# "CUDA Toolkit and Corresponding Driver Versions", GA releases).
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.0": "450.36.06",
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}
# The oldest driver that runs any release of a CUDA major through minor-version compatibility
# (same major, older driver: works, but PTX compiled at run time needs the newer driver).
CUDA_MAJOR_MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def _major_minor(version: str | None) -> tuple[int, ...]:
    return parse_version(version)[:2]


def _format_cuda(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def min_driver_for_cuda(cuda: str) -> str | None:
    """The oldest Linux driver that runs CUDA ``cuda`` at full feature ("12.4" ->
    "550.54.14"). A release missing from the table gets the newest known one before it of the
    same major (a lower bound); an unknown major gives ``None``."""
    wanted = _major_minor(cuda)
    if not wanted:
        return None
    candidates = [
        (parse_version(release), driver)
        for release, driver in CUDA_MIN_DRIVER.items()
        if parse_version(release)[0] == wanted[0]
    ]
    if not candidates:
        return None
    if len(wanted) == 1:  # only the major is known: the major's first release
        return min(candidates)[1]
    at_or_before = [c for c in candidates if c[0] <= wanted]
    return max(at_or_before)[1] if at_or_before else min(candidates)[1]


def cuda_supported_by_driver(driver_version: str | None) -> str | None:
    """The newest CUDA release in :data:`CUDA_MIN_DRIVER` that ``driver_version`` runs
    ("550.54.15" -> "12.4"); ``None`` when unknown or older than every release listed."""
    driver = parse_version(driver_version)
    if not driver:
        return None
    runs = [
        parse_version(release)
        for release, minimum in CUDA_MIN_DRIVER.items()
        if version_at_least(driver_version, minimum)
    ]
    return _format_cuda(max(runs)) if runs else None


def cuda_from_nvml(version: int) -> str:
    """NVML's integer CUDA driver version (12040) as "12.4"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def torch_wheel_tag(driver_cuda: str | None) -> str:
    """The PyTorch wheel index tag (``cu126``) to suggest for a driver running ``driver_cuda``:
    the newest tag PyTorch has published that the driver runs."""
    known = ((11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (12, 9), (13, 0))
    have = _major_minor(driver_cuda)
    fitting = [tag for tag in known if have and tag <= _padded(have, tag)[0][:2]]
    major, minor = max(fitting) if fitting else known[-2]
    return f"cu{major}{minor}"


def jax_cuda_extra(driver_cuda: str | None) -> str:
    """``cuda13`` when the driver runs CUDA 13, else ``cuda12``."""
    have = _major_minor(driver_cuda)
    return "cuda13" if have and have[0] >= 13 else "cuda12"


def device_kind(device: str) -> str:
    """``gpu``, ``tpu``, ``mps`` or ``cpu`` from a device name as a backend prints it: JAX
    ``cuda:0`` / ``TFRT_CPU_0``, torch ``cuda:0`` / ``cpu``, TF ``/device:GPU:0``."""
    name = device.lower()
    if any(word in name for word in ("cuda", "gpu", "rocm")):
        return "gpu"
    if "tpu" in name:
        return "tpu"
    if "mps" in name:
        return "mps"
    return "cpu"


def short_device(device: str) -> str:
    """A device name without TensorFlow's placement prefix: ``/job:localhost/replica:0/task:0/
    device:GPU:0`` and ``/physical_device:GPU:0`` -> ``GPU:0``."""
    return re.sub(r"^.*/(?:physical_)?device:", "", device)


def effective_cores(cores_usable: int, cpu_quota_cores: float | None) -> int:
    """The cores work can actually use: the affinity set, capped by a cgroup quota."""
    if cpu_quota_cores is None:
        return max(1, cores_usable)
    return max(1, min(cores_usable, math.floor(cpu_quota_cores)))


def parse_build_info(source: str) -> dict[str, Any]:
    """TensorFlow's ``tensorflow/python/platform/build_info.py`` as a dict, read without
    importing TensorFlow: the file is one ``OrderedDict([(key, literal), ...])``."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "build_info" for t in node.targets
        ):
            value = node.value
            if isinstance(value, ast.Call) and value.args:
                value = value.args[0]
            try:
                return dict(ast.literal_eval(value))
            except (ValueError, TypeError, SyntaxError):
                return {}
    return {}


def parse_torch_version_file(source: str) -> dict[str, Any]:
    """torch's ``torch/version.py`` (``__version__``, ``cuda``, ``hip``) as a dict, read
    without importing torch."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        target = value = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("__version__", "cuda", "hip", "debug"):
            with contextlib.suppress(ValueError, TypeError, SyntaxError):
                found[target.id.strip("_")] = ast.literal_eval(value)
    return found


def parse_nvidia_smi_gpus(csv_text: str) -> list[GpuInfo]:
    """Rows of ``nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,compute_cap
    --format=csv,noheader,nounits`` (memory in MiB)."""
    gpus = []
    for line in csv_text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        cells += [""] * (6 - len(cells))
        gpus.append(
            GpuInfo(
                index=int(cells[0]),
                name=cells[1],
                uuid=cells[2] or None,
                memory_total_bytes=_mib(cells[3]),
                memory_used_bytes=_mib(cells[4]),
                compute_capability=cells[5] if re.fullmatch(r"\d+\.\d+", cells[5]) else None,
            )
        )
    return gpus


def _mib(cell: str) -> int | None:
    try:
        return int(float(cell) * MIB)
    except ValueError:
        return None


def parse_nvidia_smi_apps(csv_text: str, uuid_to_index: Mapping[str, int]) -> list[GpuProcess]:
    """Rows of ``nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid
    --format=csv,noheader,nounits``."""
    processes = []
    for line in csv_text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 4 or not cells[0].isdigit():
            continue
        processes.append(
            GpuProcess(
                pid=int(cells[0]),
                name=cells[1],
                used_bytes=_mib(cells[2]),
                gpu_index=uuid_to_index.get(cells[3]),
            )
        )
    return processes


def parse_nvidia_smi_header(text: str) -> tuple[str | None, str | None]:
    """(driver version, CUDA version) from plain ``nvidia-smi``'s banner."""
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` ("200000 100000" -> 2.0; "max 100000" -> None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return int(parts[0]) / int(parts[1])
    except (ValueError, ZeroDivisionError):
        return None


def resolve_backend(
    env_backend: str | None, keras_json_text: str | None, keras_json_path: str
) -> tuple[str, str, str | None]:
    """The backend Keras will pick, as Keras picks it: ``KERAS_BACKEND`` if set and not
    empty, else ``"backend"`` of keras.json, else ``tensorflow``.

    Returns (backend, where it came from, the keras.json backend or None)."""
    json_backend = None
    if keras_json_text:
        with contextlib.suppress(ValueError, AttributeError):
            json_backend = json.loads(keras_json_text).get("backend") or None
    if env_backend:
        return env_backend, "KERAS_BACKEND", json_backend
    if json_backend:
        return json_backend, keras_json_path, json_backend
    return "tensorflow", KERAS_DEFAULT_SOURCE, None


# Lines a backend writes to stderr when it cannot use the GPU, and what they mean.
_STDERR_HINTS = (
    ("CUDA-enabled jaxlib is not installed", "JAX has no CUDA plugin: it fell back to the CPU"),
    ("Unable to initialize backend 'cuda'", "JAX could not initialise CUDA"),
    ("Cannot dlopen some GPU libraries", "TensorFlow could not load its CUDA/cuDNN libraries"),
    ("Could not find cuda drivers", "TensorFlow found no CUDA driver"),
    ("failed call to cuInit", "the CUDA driver failed to initialise"),
    ("CUDA_ERROR_", "a CUDA driver error"),
    ("is older than the ptxas CUDA version", "the driver is older than JAX's ptxas"),
    ("not compatible with the installed jaxlib", "the JAX CUDA plugin does not match jaxlib"),
    ("Found no NVIDIA driver", "torch found no NVIDIA driver"),
    ("NVIDIA driver on your system is too old", "the NVIDIA driver is too old for torch"),
)


def stderr_hints(stderr: str) -> list[str]:
    """What a backend's stderr says about its GPU, in words (for the devices check)."""
    lines = stderr.splitlines()
    found = []
    for needle, meaning in _STDERR_HINTS:
        for line in lines:
            if needle in line:
                found.append(f'{meaning} ("{line.strip()[:160]}")')
                break
    return found


# --------------------------------------------------------------------------------------------
# Pure checks: plain values in, Checks out
# --------------------------------------------------------------------------------------------


def check_python(version: str) -> Check:
    have = parse_version(version)
    if _padded(have, (3, 10))[0] < (3, 10):
        return Check(
            "python",
            "Python",
            FAIL,
            f"Python {version}: stoke and Keras 3 need Python 3.10 or newer.",
            "Create an environment with Python >= 3.10, e.g. `uv venv -p 3.12`.",
            {"version": version},
        )
    return Check("python", "Python", OK, f"Python {version}", "", {"version": version})


def check_keras(keras_version: str | None, env: Mapping[str, str]) -> list[Check]:
    checks = []
    if keras_version is None:
        checks.append(
            Check("keras", "Keras", FAIL, "Keras is not installed.", "pip install -U keras")
        )
    elif parse_version(keras_version)[:1] < (3,):
        checks.append(
            Check(
                "keras",
                "Keras",
                FAIL,
                f"Keras {keras_version} is Keras 2; stoke needs Keras 3.",
                "pip install -U 'keras>=3'",
                {"version": keras_version},
            )
        )
    else:
        checks.append(
            Check("keras", "Keras", OK, f"Keras {keras_version}", "", {"version": keras_version})
        )
    legacy = env.get("TF_USE_LEGACY_KERAS", "").strip().lower()
    if legacy in ("1", "true", "yes"):
        checks.append(
            Check(
                "legacy-keras",
                "TF_USE_LEGACY_KERAS",
                WARN,
                f"TF_USE_LEGACY_KERAS={env['TF_USE_LEGACY_KERAS']}: `tf.keras` is Keras 2 "
                "(tf_keras) in this shell; stoke works with Keras 3 (`import keras`).",
                "unset TF_USE_LEGACY_KERAS   # and `import keras` instead of `tf.keras`",
                {"TF_USE_LEGACY_KERAS": env["TF_USE_LEGACY_KERAS"]},
            )
        )
    return checks


def check_backend(
    backend: str,
    source: str,
    keras_json_backend: str | None,
    packages: Mapping[str, str],
) -> Check:
    evidence = {"backend": backend, "source": source, "keras_json_backend": keras_json_backend}
    if backend not in KERAS_BACKENDS:
        meant = _BACKEND_ALIASES.get(backend.strip().lower()) or next(
            iter(difflib.get_close_matches(backend, KERAS_BACKENDS, n=1)), None
        )
        hint = f" Did you mean {meant!r}?" if meant else ""
        return Check(
            "backend",
            "Keras backend",
            FAIL,
            f"Keras backend {backend!r} ({_source_phrase(source)}) is not one Keras knows; "
            f"the valid choices are {', '.join(KERAS_BACKENDS)}.{hint}",
            f"export KERAS_BACKEND={meant or 'jax'}"
            + ("" if source == "KERAS_BACKEND" else f'   # or fix "backend" in {source}'),
            evidence,
        )
    distribution = framework_distribution(backend, packages)
    if distribution is None:
        installed = [b for b in TRAINING_BACKENDS if framework_distribution(b, packages)]
        other = f"\n# or: export KERAS_BACKEND={installed[0]}   # installed" if installed else ""
        return Check(
            "backend",
            "Keras backend",
            FAIL,
            f"Keras backend is {backend} ({_source_phrase(source)}) but {backend} is not "
            "installed: `import keras` will fail.",
            f"pip install {backend}{other}",
            evidence,
        )
    where = f" ({_source_phrase(source)})"
    if source == "KERAS_BACKEND" and keras_json_backend and keras_json_backend != backend:
        where = f" (KERAS_BACKEND overrides {keras_json_backend} in keras.json)"
    if backend not in TRAINING_BACKENDS:
        return Check(
            "backend",
            "Keras backend",
            WARN,
            f"Keras backend is {backend}{where}: it runs inference only; `fit` needs "
            "tensorflow, jax or torch.",
            "export KERAS_BACKEND=jax   # or tensorflow, torch",
            evidence,
        )
    version = packages[distribution]
    return Check(
        "backend",
        "Keras backend",
        OK,
        f"{backend}{where}, {distribution} {version}",
        "",
        evidence,
    )


_BACKEND_ALIASES = {"pytorch": "torch", "tf": "tensorflow", "jaxlib": "jax", "flax": "jax"}


def _source_phrase(source: str) -> str:
    if source == KERAS_DEFAULT_SOURCE:
        return "Keras' default: neither KERAS_BACKEND nor keras.json sets one"
    return f"from {source}"


def framework_distribution(framework: str, packages: Mapping[str, str]) -> str | None:
    """The installed distribution that provides ``framework`` (``tensorflow-cpu`` for
    tensorflow...), or None."""
    for name in BACKEND_DISTRIBUTIONS.get(framework, (framework,)):
        if name in packages:
            return name
    return None


def _jax_cuda_packages(packages: Mapping[str, str]) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    for major in JAX_CUDA_MAJORS:
        for part in ("plugin", "pjrt"):
            name = f"jax-cuda{major}-{part}"
            if name in packages:
                found.setdefault(major, {})[name] = packages[name]
    return found


def check_packages(packages: Mapping[str, str], jax_requires_jaxlib: str | None) -> list[Check]:
    """Versions of the frameworks, and the pairs that must agree: one TensorFlow distribution,
    jaxlib within jax's pin, JAX CUDA plugins at jaxlib's version."""
    names = [
        n
        for n in (*TENSORFLOW_DISTRIBUTIONS, "tf-keras", "jax", "jaxlib", "torch", "nvidia-ml-py")
        if n in packages
    ]
    names += [n for n in packages if n.startswith("jax-cuda")]
    listing = ", ".join(f"{n} {packages[n]}" for n in names) or "no framework installed"
    checks = [Check("packages", "frameworks", INFO, listing, "", {n: packages[n] for n in names})]

    tensorflows = [n for n in TENSORFLOW_DISTRIBUTIONS if n in packages]
    if len(tensorflows) > 1:
        checks.append(
            Check(
                "tensorflow-duplicate",
                "TensorFlow installs",
                WARN,
                f"{' and '.join(tensorflows)} are both installed; they write the same "
                "`tensorflow/` folder, so which one you get depends on install order.",
                f"pip uninstall -y {' '.join(tensorflows)} && pip install {tensorflows[0]}",
                {n: packages[n] for n in tensorflows},
            )
        )
    jax_version, jaxlib_version = packages.get("jax"), packages.get("jaxlib")
    if jax_version and not jaxlib_version:
        checks.append(
            Check(
                "jaxlib",
                "jax / jaxlib",
                FAIL,
                f"jax {jax_version} is installed without jaxlib: `import jax` fails.",
                f'pip install "jax[cpu]=={jax_version}"',
            )
        )
    elif jax_version and jaxlib_version and jax_requires_jaxlib:
        if not version_satisfies(jaxlib_version, jax_requires_jaxlib):
            checks.append(
                Check(
                    "jaxlib",
                    "jax / jaxlib",
                    FAIL,
                    f"jax {jax_version} needs jaxlib {jax_requires_jaxlib}, but jaxlib "
                    f"{jaxlib_version} is installed: `import jax` raises.",
                    f'pip install "jax[cpu]=={jax_version}"   # or jax[cuda12] / jax[cuda13]',
                    {"jax": jax_version, "jaxlib": jaxlib_version, "requires": jax_requires_jaxlib},
                )
            )
    for major, plugins in _jax_cuda_packages(packages).items():
        wrong = {
            n: v for n, v in plugins.items() if parse_version(v) != parse_version(jaxlib_version)
        }
        if jaxlib_version and wrong:
            checks.append(
                Check(
                    f"jax-cuda{major}-plugin",
                    "JAX CUDA plugin",
                    FAIL,
                    f"{', '.join(f'{n} {v}' for n, v in wrong.items())} does not match jaxlib "
                    f"{jaxlib_version}: JAX ignores the plugin and runs on the CPU.",
                    f'pip install -U "jax[cuda{major}]=={jax_version or jaxlib_version}"',
                    {**plugins, "jaxlib": jaxlib_version},
                )
            )
        missing = {f"jax-cuda{major}-plugin", f"jax-cuda{major}-pjrt"} - set(plugins)
        if missing:
            checks.append(
                Check(
                    f"jax-cuda{major}-plugin",
                    "JAX CUDA plugin",
                    FAIL,
                    f"{', '.join(sorted(plugins))} is installed without {', '.join(sorted(missing))}: "
                    "JAX needs both to use the GPU.",
                    f'pip install -U "jax[cuda{major}]=={jax_version or jaxlib_version}"',
                    dict(plugins),
                )
            )
    return checks


def check_nvidia(nvidia: NvidiaFacts, nvml_installed: bool) -> list[Check]:
    """Is there an NVIDIA GPU, which driver, and can stoke doctor read it through NVML."""
    evidence = {
        "source": nvidia.source,
        "driver_version": nvidia.driver_version,
        "driver_cuda": nvidia.driver_cuda,
        "kernel_module": nvidia.kernel_module,
        "device_nodes": nvidia.device_nodes,
    }
    if nvidia.gpu_count == 0:
        if nvidia.kernel_module and not nvidia.device_nodes:
            return [
                Check(
                    "nvidia",
                    "NVIDIA GPU",
                    WARN,
                    "The NVIDIA driver is loaded on this host, but no GPU device "
                    "(/dev/nvidia0) is visible here: a container started without GPUs?",
                    "docker run --gpus all ...   # or --runtime=nvidia; in Kubernetes request "
                    "nvidia.com/gpu",
                    evidence,
                )
            ]
        if nvidia.error:
            return [
                Check(
                    "nvidia",
                    "NVIDIA GPU",
                    WARN,
                    f"The NVIDIA driver could not be queried: {nvidia.error}",
                    "nvidia-smi   # run it; a driver/library version mismatch needs a reboot",
                    evidence,
                )
            ]
        return [
            Check(
                "nvidia",
                "NVIDIA GPU",
                INFO,
                "no NVIDIA GPU visible: the backend trains on the CPU (GPU checks skipped).",
                "",
                evidence,
            )
        ]
    names: dict[str, int] = {}
    for gpu in nvidia.gpus:
        memory = f", {gpu.memory_total_bytes / GIB:.0f} GiB" if gpu.memory_total_bytes else ""
        arch = f", sm_{gpu.compute_capability.replace('.', '')}" if gpu.compute_capability else ""
        label = f"{gpu.name}{memory}{arch}"
        names[label] = names.get(label, 0) + 1
    gpus = "; ".join(f"{count} × {label}" for label, count in names.items())
    cuda = f" (runs CUDA ≤ {nvidia.driver_cuda})" if nvidia.driver_cuda else ""
    checks = [
        Check(
            "nvidia",
            "NVIDIA GPU",
            OK,
            f"{gpus}; driver {nvidia.driver_version or 'unknown'}{cuda}, read via {nvidia.source}",
            "",
            {**evidence, "gpus": [dataclasses.asdict(g) for g in nvidia.gpus]},
        )
    ]
    if not nvml_installed:
        checks.append(
            Check(
                "nvml",
                "NVML",
                INFO,
                "nvidia-ml-py is not installed: `stoke doctor` cannot sample GPU kernel-active "
                "time and memory while you train.",
                'pip install nvidia-ml-py   # or: pip install "stoke[gpu]"',
            )
        )
    return checks


def check_gpu_visibility(env: Mapping[str, str], gpu_count: int, backend: str) -> list[Check]:
    """Environment variables that hide GPUs the driver sees."""
    if gpu_count == 0:
        return []
    checks = []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if not entries or entries[0] in ("-1", "NoDevFiles"):
            checks.append(
                Check(
                    "cuda-visible-devices",
                    "CUDA_VISIBLE_DEVICES",
                    FAIL,
                    f"CUDA_VISIBLE_DEVICES={visible!r} hides all {gpu_count} GPU(s) from every "
                    "framework: training runs on the CPU.",
                    "unset CUDA_VISIBLE_DEVICES   # or list the GPUs: export CUDA_VISIBLE_DEVICES=0",
                    {"CUDA_VISIBLE_DEVICES": visible, "gpu_count": gpu_count},
                )
            )
        else:
            numbered = [int(e) for e in entries if e.isdigit()]
            beyond = [n for n in numbered if n >= gpu_count]
            if beyond:
                checks.append(
                    Check(
                        "cuda-visible-devices",
                        "CUDA_VISIBLE_DEVICES",
                        WARN,
                        f"CUDA_VISIBLE_DEVICES={visible!r} names GPU {beyond[0]}, but the driver "
                        f"sees {gpu_count} (0-{gpu_count - 1}); CUDA stops at the first bad entry.",
                        f"export CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(gpu_count))}",
                        {"CUDA_VISIBLE_DEVICES": visible, "gpu_count": gpu_count},
                    )
                )
            elif len(entries) < gpu_count:
                checks.append(
                    Check(
                        "cuda-visible-devices",
                        "CUDA_VISIBLE_DEVICES",
                        INFO,
                        f"CUDA_VISIBLE_DEVICES={visible!r}: {len(entries)} of the {gpu_count} "
                        "GPUs are used.",
                        "",
                        {"CUDA_VISIBLE_DEVICES": visible, "gpu_count": gpu_count},
                    )
                )
    if backend == "jax":
        for name in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME"):
            value = env.get(name)
            if value and not any(p in value.lower() for p in ("cuda", "gpu")):
                checks.append(
                    Check(
                        "jax-platforms",
                        name,
                        FAIL,
                        f"{name}={value!r} keeps JAX off the GPU although the driver sees "
                        f"{gpu_count}.",
                        f"unset {name}",
                        {name: value},
                    )
                )
    return checks


def check_framework_build(
    framework: str,
    distribution: str,
    version: str,
    cuda_build: bool | None,
    built_cuda: str | None,
    built_cudnn: str | None,
    installed_cudnn: str | None,
    gpu_count: int,
    driver_version: str | None,
    driver_cuda: str | None,
    active: bool,
) -> Check:
    """Does this framework build fit this machine: a CPU-only build where the driver sees a
    GPU, a CUDA build whose CUDA is newer than the driver runs, a cuDNN of another major."""
    check_id, title = f"{framework}-build", f"{framework} build"
    evidence = {
        "distribution": distribution,
        "version": version,
        "cuda_build": cuda_build,
        "built_cuda": built_cuda,
        "built_cudnn": built_cudnn,
        "installed_cudnn": installed_cudnn,
        "driver_version": driver_version,
        "driver_cuda": driver_cuda,
        "active_backend": active,
    }
    what = f"{distribution} {version}"
    cuda_text = f"CUDA {built_cuda}" if built_cuda else "CUDA"
    if built_cudnn:
        cuda_text += f", cuDNN {built_cudnn}"
    if gpu_count == 0:
        kind = (
            f"{cuda_text} build"
            if cuda_build
            else "CPU-only build"
            if cuda_build is False
            else "build"
        )
        return Check(check_id, title, INFO, f"{what}: {kind}; no NVIDIA GPU visible.", "", evidence)
    if cuda_build is None:
        return Check(
            check_id, title, INFO, f"{what}: cannot tell whether it is a CUDA build.", "", evidence
        )
    unused = (
        "Keras trains on the CPU"
        if active
        else f"switching KERAS_BACKEND to {framework} would train on the CPU"
    )
    if not cuda_build:
        return Check(
            check_id,
            title,
            FAIL if active else WARN,
            f"{what} is a CPU-only build, but the driver sees {gpu_count} GPU(s): {unused}.",
            gpu_build_fix(framework, distribution, version, driver_cuda),
            evidence,
        )
    verdict = check_cuda_driver(built_cuda, driver_version, driver_cuda)
    status, detail, driver_fix = verdict
    if status == OK and built_cudnn and installed_cudnn:
        if parse_version(built_cudnn)[:1] != parse_version(installed_cudnn)[:1]:
            return Check(
                check_id,
                title,
                FAIL if active else WARN,
                f"{what} was built with cuDNN {built_cudnn}, but cuDNN {installed_cudnn} is "
                "installed: convolutions fail to load.",
                gpu_build_fix(framework, distribution, version, driver_cuda),
                evidence,
            )
    if status == FAIL and not active:
        status = WARN
    fix = ""
    if status != OK and driver_fix:
        fix = f"{driver_fix}\n# or a build for the CUDA your driver runs:\n" + gpu_build_fix(
            framework, distribution, version, driver_cuda
        )
    return Check(check_id, title, status, f"{what}: {cuda_text} build; {detail}", fix, evidence)


def check_cuda_driver(
    built_cuda: str | None, driver_version: str | None, driver_cuda: str | None
) -> tuple[str, str, str]:
    """Does a driver run code built with CUDA ``built_cuda``? Returns (status, the reason in
    words, the driver update to suggest or "").

    Newer driver CUDA than the build: ok. Same major, older minor, driver at least the major's
    minor-compatibility minimum: warn (runs, but PTX compiled at run time, and JAX's parallel
    compilation, need the newer driver). Older major, or below that minimum: fail."""
    runs = driver_cuda or cuda_supported_by_driver(driver_version)
    built = _major_minor(built_cuda)
    if not built:
        return INFO, "cannot tell which CUDA it was built with", ""
    if not runs:
        return INFO, f"cannot tell which CUDA driver {driver_version or '(unknown)'} runs", ""
    have = _major_minor(runs)
    built_text = _format_cuda(built)
    if _padded(have, built)[0] >= _padded(have, built)[1]:
        return OK, f"the driver runs CUDA {runs}", ""
    wanted = min_driver_for_cuda(built_text) or "a newer version"
    update = f"update the NVIDIA driver to >= {wanted} (CUDA {built_text})"
    major_minimum = CUDA_MAJOR_MIN_DRIVER.get(built[0])
    if (
        have[0] == built[0]
        and major_minimum
        and (driver_version is None or version_at_least(driver_version, major_minimum))
    ):
        return (
            WARN,
            f"the driver runs CUDA {runs} only: it works through minor-version compatibility, but "
            "kernels compiled from PTX at run time fail and JAX compiles serially",
            update,
        )
    return (
        FAIL,
        f"the driver runs CUDA {runs} only: too old for CUDA {built_text}, the GPU cannot be used",
        update,
    )


def gpu_build_fix(framework: str, distribution: str, version: str, driver_cuda: str | None) -> str:
    """The command that installs ``framework`` at ``version`` built for the driver's CUDA."""
    release = ".".join(str(p) for p in parse_version(version)) or version
    if framework == "tensorflow":
        uninstall = f"pip uninstall -y {distribution} && " if distribution != "tensorflow" else ""
        return f'{uninstall}pip install "tensorflow[and-cuda]=={release}"'
    if framework == "torch":
        tag = torch_wheel_tag(driver_cuda)
        return (
            f"pip install --force-reinstall torch=={release} "
            f"--index-url https://download.pytorch.org/whl/{tag}"
        )
    if framework == "jax":
        return f'pip install -U "jax[{jax_cuda_extra(driver_cuda)}]=={release}"'
    return f"pip install -U {distribution}"


def check_gpu_processes(processes: Iterable[GpuProcess], own_pids: Iterable[int]) -> Check | None:
    """Other processes holding GPU memory: they compete with training for memory and time."""
    own = set(own_pids)
    others = [p for p in processes if p.pid not in own]
    if not others:
        return None
    total = sum(p.used_bytes or 0 for p in others)
    listed = ", ".join(
        f"{p.name or '?'} (pid {p.pid}, GPU {p.gpu_index if p.gpu_index is not None else '?'}"
        + (f", {p.used_bytes / GIB:.1f} GiB" if p.used_bytes else "")
        + ")"
        for p in others[:5]
    )
    more = f" and {len(others) - 5} more" if len(others) > 5 else ""
    return Check(
        "gpu-processes",
        "other GPU users",
        WARN,
        f"{len(others)} other process(es) hold {total / GIB:.1f} GiB of GPU memory: {listed}{more}. "
        "They take memory and kernel time from your training.",
        "nvidia-smi   # see who; stop them, or pick a free GPU with CUDA_VISIBLE_DEVICES",
        {"processes": [dataclasses.asdict(p) for p in others]},
    )


def check_backend_devices(probe: Mapping[str, Any], gpu_count: int, fix: str = "") -> Check:
    """What the backend sees, against what the driver sees. ``fix`` is what to suggest when
    the backend sees no GPU (a check above that explains it, or the install that fits)."""
    backend = probe.get("requested_backend") or probe.get("backend") or "?"
    check_id, title = f"devices-{backend}", f"devices ({backend})"
    evidence = {k: probe.get(k) for k in ("backend", "devices", "gpu_count", "framework_version")}
    hints = stderr_hints(probe.get("stderr_tail") or "")
    evidence["hints"] = hints
    if probe.get("error"):
        because = f" {'; '.join(hints)}." if hints else ""
        return Check(
            check_id,
            title,
            FAIL,
            f"the {backend} backend failed during {probe.get('stage', 'start-up')}: "
            f"{probe['error']}.{because}",
            _pip_command(probe["error"])
            or f'KERAS_BACKEND={backend} python -c "import keras; print(keras.ops.ones(1))"'
            "   # see the whole error",
            {**evidence, "stderr_tail": probe.get("stderr_tail")},
        )
    devices = ", ".join(probe.get("devices") or []) or "none"
    seen = int(probe.get("gpu_count") or 0)
    if gpu_count and seen == 0:
        because = f" {'; '.join(hints)}." if hints else ""
        return Check(
            check_id,
            title,
            FAIL,
            f"{backend} sees no GPU although the driver sees {gpu_count}: {devices}.{because}",
            fix or "see the build and CUDA checks above for the install that fits",
            evidence,
        )
    if gpu_count and seen < gpu_count:
        return Check(
            check_id,
            title,
            INFO,
            f"{backend} sees {seen} of the {gpu_count} GPUs: {devices}",
            "",
            evidence,
        )
    if not gpu_count and seen == 0:
        return Check(check_id, title, INFO, f"{devices} (no NVIDIA GPU visible)", "", evidence)
    return Check(check_id, title, OK, devices, "", evidence)


def _pip_command(error: str) -> str:
    """The ``pip install ...`` an error message asks for, if it names one (Keras: "Install it
    via `pip install optree`")."""
    match = re.search(r"`(pip install [^`]+)`", error) or re.search(r"(pip install \S+)", error)
    return match.group(1).rstrip(".,;") if match else ""


def check_matmul(probe: Mapping[str, Any], gpu_count: int) -> Check | None:
    """Where a matmul through the Keras backend ran, how fast, and whether it was right."""
    backend = probe.get("requested_backend") or probe.get("backend") or "?"
    matmul = probe.get("matmul")
    if probe.get("error") or not matmul:
        return None
    check_id, title = f"matmul-{backend}", f"matmul ({backend})"
    size = matmul["size"]
    device = short_device(matmul["device"])
    kind = device_kind(device)
    speed = matmul["gflops"]
    rate = f"{speed / 1000:.1f} TFLOP/s" if speed >= 1000 else f"{speed:.1f} GFLOP/s"
    what = (
        f"{size}×{size} float32 matmul through keras.ops ran on {device}: "
        f"{matmul['seconds'] * 1e3:.2f} ms each, {rate} (first call {matmul['first_s']:.2f} s)"
    )
    evidence = dict(matmul)
    if not matmul.get("correct", True):
        return Check(
            check_id,
            title,
            FAIL,
            f"{what}, but the result was wrong ({matmul.get('value')} instead of {size}).",
            "nvidia-smi -q | grep -i -A3 ecc   # check the GPU for errors; update the driver",
            evidence,
        )
    if kind == "cpu" and gpu_count:
        return Check(
            check_id,
            title,
            FAIL,
            f"{what}, although the driver sees {gpu_count} GPU(s): your model trains on the CPU.",
            "see the devices, build and CUDA checks above",
            evidence,
        )
    if kind == "cpu":
        return Check(check_id, title, INFO, f"{what} (no NVIDIA GPU visible)", "", evidence)
    return Check(check_id, title, OK, what, "", evidence)


_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def check_threads(
    *,
    cores_usable: int,
    cores_logical: int,
    cpu_quota_cores: float | None,
    env: Mapping[str, str],
    gpu_count: int,
    torch_threads: int | None = None,
    tf_intra_op: int | None = None,
    tf_inter_op: int | None = None,
) -> list[Check]:
    """Thread settings against the cores this process may use.

    Frameworks size their thread pools from the cores they see; a cgroup CPU quota (docker
    ``--cpus``) is not among them, so they oversubscribe a container. More threads than cores
    slow every op down; ``OMP_NUM_THREADS=1`` set globally (often copied from data-loader
    advice) makes the trainer's own CPU ops single-threaded. stoke limits BLAS/OpenMP threads
    inside its workers itself."""
    cores = effective_cores(cores_usable, cpu_quota_cores)
    evidence = {
        "cores_logical": cores_logical,
        "cores_usable": cores_usable,
        "cpu_quota_cores": cpu_quota_cores,
        "cores_effective": cores,
        "torch_threads": torch_threads,
        "tf_intra_op": tf_intra_op,
        "tf_inter_op": tf_inter_op,
        **{name: env[name] for name in _THREAD_VARS if name in env},
    }
    checks: list[Check] = []
    values: dict[str, int] = {}
    for name in _THREAD_VARS:
        raw = env.get(name)
        if raw is None:
            continue
        try:
            number = int(raw.strip())
            if number < 0:
                raise ValueError
        except ValueError:
            checks.append(
                Check(
                    "threads",
                    name,
                    WARN,
                    f"{name}={raw!r} is not a whole number of threads; it is ignored or, for "
                    "OpenMP, an error at start-up.",
                    f"export {name}={cores}",
                    evidence,
                )
            )
            continue
        values[name] = number
    for name, number in values.items():
        if number > cores:
            checks.append(
                Check(
                    "threads",
                    name,
                    WARN,
                    f"{name}={number} on {cores} usable core(s): threads oversubscribe the cores "
                    "and every CPU op slows down.",
                    f"export {name}={cores}",
                    evidence,
                )
            )
    if values.get("OMP_NUM_THREADS") == 1 and cores > 1:
        checks.append(
            Check(
                "threads",
                "OMP_NUM_THREADS",
                INFO if gpu_count else WARN,
                f"OMP_NUM_THREADS=1 makes the trainer's CPU ops single-threaded on {cores} cores "
                + (
                    "(minor while the model runs on the GPU)"
                    if gpu_count
                    else "(the model runs on the CPU here)"
                )
                + ". stoke already limits its own workers to one thread each.",
                "unset OMP_NUM_THREADS",
                evidence,
            )
        )
    if (
        cpu_quota_cores is not None
        and cores < cores_usable
        and "OMP_NUM_THREADS" not in values
        and "TF_NUM_INTRAOP_THREADS" not in values
    ):
        checks.append(
            Check(
                "threads",
                "CPU quota",
                WARN,
                f"this container may use {cpu_quota_cores:g} CPU(s), but frameworks see "
                f"{cores_usable} cores and start that many threads each: they oversubscribe.",
                f"export OMP_NUM_THREADS={cores} TF_NUM_INTRAOP_THREADS={cores} "
                "TF_NUM_INTEROP_THREADS=2",
                evidence,
            )
        )
    if torch_threads is not None and torch_threads > cores and "OMP_NUM_THREADS" not in values:
        checks.append(
            Check(
                "threads",
                "torch threads",
                WARN,
                f"torch uses {torch_threads} threads on {cores} usable core(s).",
                f"torch.set_num_threads({cores})   # or export OMP_NUM_THREADS={cores}",
                evidence,
            )
        )
    if tf_intra_op and tf_intra_op > cores and "TF_NUM_INTRAOP_THREADS" not in values:
        checks.append(
            Check(
                "threads",
                "TF intra-op",
                WARN,
                f"TensorFlow's intra-op pool has {tf_intra_op} threads on {cores} usable core(s).",
                f"tf.config.threading.set_intra_op_parallelism_threads({cores})",
                evidence,
            )
        )
    if not checks:
        restricted = f" of {cores_logical} (CPU affinity)" if cores_usable < cores_logical else ""
        quota = f", cgroup quota {cpu_quota_cores:g} CPUs" if cpu_quota_cores else ""
        settings = ", ".join(f"{n}={v}" for n, v in values.items()) or "no thread variables set"
        known = []
        if torch_threads is not None:
            known.append(f"torch {torch_threads} threads")
        if tf_intra_op is not None:
            known.append(f"TF intra-op {tf_intra_op or 'auto'}, inter-op {tf_inter_op or 'auto'}")
        extra = f"; {', '.join(known)}" if known else ""
        checks.append(
            Check(
                "threads",
                "threads",
                OK,
                f"{cores_usable} usable core(s){restricted}{quota}; {settings}{extra}",
                "",
                evidence,
            )
        )
    return checks


def check_cpu_load(load_avg_1m: float | None, cores: int) -> Check | None:
    """Other work on the machine: the trainer and the input pipeline get what is left."""
    if load_avg_1m is None:
        return None
    evidence = {"load_avg_1m": load_avg_1m, "cores": cores}
    if load_avg_1m >= cores:
        return Check(
            "cpu-load",
            "CPU load",
            WARN,
            f"load average {load_avg_1m:.1f} on {cores} core(s): other processes already keep "
            "the CPUs busy, so input pipelines and the trainer get less than the core count "
            "suggests.",
            "top   # see who; `stoke doctor` measures this during a run (cpu-contention)",
            evidence,
        )
    return Check(
        "cpu-load",
        "CPU load",
        OK,
        f"load average {load_avg_1m:.1f} on {cores} core(s)",
        "",
        evidence,
    )


def _true(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    return None


def check_gpu_memory(
    *,
    backend: str,
    env: Mapping[str, str],
    gpu_count: int,
    cuda_frameworks: Iterable[str],
    other_gpu_processes: int = 0,
) -> list[Check]:
    """GPU memory settings: who reserves what at start-up, and whether two frameworks in one
    process (a tf.data pipeline under JAX, JAX next to torch) fight over the memory.

    TensorFlow maps nearly all GPU memory when it starts, unless memory growth is on; Keras
    turns growth on itself when its backend is not tensorflow. JAX reserves
    ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default 75%) at its first GPU op unless
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false``. torch allocates on demand.

    A framework merely installed next to the backend is advice (info): it fights for memory
    only if the script uses it on the GPU. Other processes already on the GPU are a warning.
    ``backend`` is "" when the backend's framework is not installed (nothing to advise)."""
    evidence = {
        name: env[name]
        for name in (
            "TF_FORCE_GPU_ALLOW_GROWTH",
            "XLA_PYTHON_CLIENT_PREALLOCATE",
            "XLA_PYTHON_CLIENT_MEM_FRACTION",
            "XLA_PYTHON_CLIENT_ALLOCATOR",
            "PYTORCH_CUDA_ALLOC_CONF",
            "PYTORCH_ALLOC_CONF",
        )
        if name in env
    }
    others = sorted(set(cuda_frameworks) - {backend})
    evidence.update(
        {
            "backend": backend,
            "gpu_count": gpu_count,
            "other_cuda_frameworks": others,
            "other_gpu_processes": other_gpu_processes,
        }
    )
    also = " and ".join(others)
    checks: list[Check] = []

    growth = env.get("TF_FORCE_GPU_ALLOW_GROWTH")
    if growth is not None and growth.strip() not in ("true", "false"):
        checks.append(
            Check(
                "gpu-memory",
                "TF_FORCE_GPU_ALLOW_GROWTH",
                WARN,
                f"TF_FORCE_GPU_ALLOW_GROWTH={growth!r}: TensorFlow accepts only 'true' or "
                "'false' and ignores anything else.",
                "export TF_FORCE_GPU_ALLOW_GROWTH=true",
                evidence,
            )
        )
    preallocate_raw = env.get("XLA_PYTHON_CLIENT_PREALLOCATE")
    if preallocate_raw is not None and _true(preallocate_raw) is None:
        checks.append(
            Check(
                "gpu-memory",
                "XLA_PYTHON_CLIENT_PREALLOCATE",
                WARN,
                f"XLA_PYTHON_CLIENT_PREALLOCATE={preallocate_raw!r} is neither true nor false.",
                "export XLA_PYTHON_CLIENT_PREALLOCATE=false",
                evidence,
            )
        )
    fraction_raw = env.get("XLA_PYTHON_CLIENT_MEM_FRACTION")
    fraction = 0.75
    if fraction_raw is not None:
        try:
            fraction = float(fraction_raw)
            if not 0 < fraction <= 1:
                raise ValueError
        except ValueError:
            checks.append(
                Check(
                    "gpu-memory",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION",
                    FAIL if backend == "jax" and gpu_count else WARN,
                    f"XLA_PYTHON_CLIENT_MEM_FRACTION={fraction_raw!r} is not a fraction in (0, 1]: "
                    "JAX fails to start its GPU backend.",
                    "export XLA_PYTHON_CLIENT_MEM_FRACTION=.75",
                    evidence,
                )
            )
            fraction = 0.75
    if env.get("XLA_PYTHON_CLIENT_ALLOCATOR", "").strip().lower() == "platform":
        checks.append(
            Check(
                "gpu-memory",
                "XLA_PYTHON_CLIENT_ALLOCATOR",
                WARN,
                "XLA_PYTHON_CLIENT_ALLOCATOR=platform allocates and frees every buffer on "
                "demand: slow, meant for debugging memory use.",
                "unset XLA_PYTHON_CLIENT_ALLOCATOR   # or XLA_PYTHON_CLIENT_PREALLOCATE=false",
                evidence,
            )
        )
    if gpu_count == 0:
        if not checks:
            checks.append(
                Check(
                    "gpu-memory",
                    "GPU memory",
                    INFO,
                    "no NVIDIA GPU visible: memory-growth settings have no effect.",
                    "",
                    evidence,
                )
            )
        return checks

    preallocate = _true(preallocate_raw) is not False
    busy = other_gpu_processes
    if backend == "tensorflow":
        if _true(growth) is True:
            checks.append(
                Check(
                    "gpu-memory", "GPU memory", OK, "TensorFlow memory growth is on.", "", evidence
                )
            )
        else:
            message = (
                "TensorFlow reserves almost all free GPU memory when it starts (growth is off)"
            )
            if busy:
                message += f": the {busy} other process(es) on the GPU then fail to allocate."
            elif others:
                message += (
                    f": fine alone; if your script also runs {also} on the GPU, that runs out of "
                    "memory."
                )
            else:
                message += ": fine while it is alone on the GPU."
            checks.append(
                Check(
                    "gpu-memory",
                    "GPU memory",
                    WARN if busy else INFO,
                    message,
                    "export TF_FORCE_GPU_ALLOW_GROWTH=true",
                    evidence,
                )
            )
    elif backend == "jax":
        if not preallocate:
            checks.append(
                Check(
                    "gpu-memory",
                    "GPU memory",
                    OK,
                    "JAX pre-allocation is off: it allocates as it goes (a little slower, more "
                    "fragmentation).",
                    "",
                    evidence,
                )
            )
        else:
            message = f"JAX reserves {fraction:.0%} of GPU memory at its first op"
            fix = ""
            if busy:
                message += (
                    f"; {busy} other process(es) already use the GPU: JAX fails to reserve it, "
                    "or starves them."
                )
                fix = "export XLA_PYTHON_CLIENT_PREALLOCATE=false   # or MEM_FRACTION=.5"
            elif others:
                message += (
                    f"; if your script also uses {also} on the GPU (tf.data, torch ops, pinned "
                    f"DataLoaders), they share the other {1 - fraction:.0%}."
                )
                fix = "export XLA_PYTHON_CLIENT_MEM_FRACTION=.6   # leave room for the others"
                if "tensorflow" in others:
                    message += (
                        " Keras turns TensorFlow's memory growth on for you; hiding the GPU from "
                        "TF is surer."
                    )
                    fix += (
                        "\n# and, before tf.data starts TensorFlow:\n"
                        'import tensorflow as tf; tf.config.set_visible_devices([], "GPU")'
                    )
            else:
                message += "."
            checks.append(
                Check("gpu-memory", "GPU memory", WARN if busy else INFO, message, fix, evidence)
            )
    elif backend == "torch":
        alloc = env.get("PYTORCH_CUDA_ALLOC_CONF") or env.get("PYTORCH_ALLOC_CONF")
        message = "torch allocates GPU memory on demand" + (
            f" (allocator: {alloc})" if alloc else ""
        )
        if "jax" in others and preallocate:
            checks.append(
                Check(
                    "gpu-memory",
                    "GPU memory",
                    INFO,
                    f"{message}; jax (CUDA build) is installed too: if your script runs a JAX op, "
                    f"JAX reserves {fraction:.0%} of GPU memory and torch runs out.",
                    "export XLA_PYTHON_CLIENT_PREALLOCATE=false",
                    evidence,
                )
            )
        else:
            checks.append(Check("gpu-memory", "GPU memory", OK, message + ".", "", evidence))
    return checks


def check_shm(total_bytes: int | None, free_bytes: int | None) -> Check:
    """A small /dev/shm (docker's default is 64 MiB) breaks loaders that pass batches through
    it: torch DataLoader workers ("Bus error"), multiprocessing queues, Keras PyDataset with
    processes. stoke's ring uses memfd, not /dev/shm."""
    evidence = {"total_bytes": total_bytes, "free_bytes": free_bytes}
    unaffected = "stoke itself is unaffected: its worker ring uses memfd, not /dev/shm."
    if total_bytes is None:
        return Check(
            "shm", "/dev/shm", INFO, f"no /dev/shm on this system. {unaffected}", "", evidence
        )
    size = f"{total_bytes / GIB:.1f} GiB" if total_bytes >= GIB else f"{total_bytes / MIB:.0f} MiB"
    free = free_bytes if free_bytes is not None else total_bytes
    if total_bytes < GIB or free < 512 * MIB:
        return Check(
            "shm",
            "/dev/shm",
            WARN,
            f"/dev/shm is {size} ({free / MIB:.0f} MiB free): torch DataLoader workers, "
            "multiprocessing queues and PyDataset(use_multiprocessing=True) fail with 'Bus error' "
            f"or 'No space left on device' on large batches. {unaffected}",
            "docker run --shm-size=8g ...   # or --ipc=host; Kubernetes: an emptyDir with "
            "medium: Memory at /dev/shm",
            evidence,
        )
    return Check(
        "shm",
        "/dev/shm",
        OK,
        f"/dev/shm is {size} ({free / GIB:.1f} GiB free). {unaffected}",
        "",
        evidence,
    )


def check_host(host: HostFacts) -> list[Check]:
    """CPU count and memory, as the process may use them."""
    physical = f", {host.cores_physical} physical" if host.cores_physical else ""
    usable = (
        f", {host.cores_usable} usable (affinity)" if host.cores_usable < host.cores_logical else ""
    )
    quota = f", cgroup quota {host.cpu_quota_cores:g}" if host.cpu_quota_cores else ""
    evidence = dataclasses.asdict(host)
    checks = [
        Check(
            "cpu",
            "CPUs",
            INFO,
            f"{host.cores_logical} logical core(s){physical}{usable}{quota}",
            "",
            evidence,
        )
    ]
    total = host.memory_total_bytes
    limit = host.memory_limit_bytes
    available = host.memory_available_bytes
    if total is None:
        return checks
    usable_total = min(total, limit) if limit else total
    text = f"{usable_total / GIB:.1f} GiB"
    if limit and limit < total:
        text += f" (cgroup limit; the host has {total / GIB:.1f} GiB)"
    if available is not None:
        text += f", {available / GIB:.1f} GiB available"
    if available is not None and available < 2 * GIB:
        checks.append(
            Check(
                "memory",
                "memory",
                WARN,
                f"{text}: little room for prefetched batches and workers; the kernel may kill "
                "the run (OOM).",
                "free -h   # close other programs, or lower batch size / prefetch depth",
                evidence,
            )
        )
    else:
        checks.append(Check("memory", "memory", OK, text, "", evidence))
    return checks


def cuda_frameworks(facts: EnvFacts) -> list[str]:
    """The installed frameworks that are CUDA builds."""
    found = []
    if facts.tf_build and facts.tf_build.get("is_cuda_build"):
        found.append("tensorflow")
    if _jax_cuda_packages(facts.packages) or "+cuda" in facts.packages.get("jaxlib", ""):
        found.append("jax")
    if facts.torch_build and facts.torch_build.get("cuda"):
        found.append("torch")
    return found


def _framework_build_checks(facts: EnvFacts) -> list[Check]:
    nvidia = facts.nvidia
    checks = []
    packages = facts.packages
    probes = {p.get("backend"): p for p in facts.probes if not p.get("error")}

    tf_dist = framework_distribution("tensorflow", packages)
    if tf_dist:
        build = facts.tf_build or (probes.get("tensorflow") or {}).get("build") or {}
        cuda_build = build.get("is_cuda_build")
        if cuda_build is None and tf_dist.endswith("-cpu"):
            cuda_build = False
        cudnn_pkg = next(
            (
                packages[f"nvidia-cudnn-cu{m}"]
                for m in (13, 12, 11)
                if f"nvidia-cudnn-cu{m}" in packages
            ),
            None,
        )
        checks.append(
            check_framework_build(
                "tensorflow",
                tf_dist,
                packages[tf_dist],
                cuda_build,
                build.get("cuda_version"),
                build.get("cudnn_version"),
                cudnn_pkg,
                nvidia.gpu_count,
                nvidia.driver_version,
                nvidia.driver_cuda,
                facts.backend == "tensorflow",
            )
        )
    if "jax" in packages:
        plugins = _jax_cuda_packages(packages)
        jaxlib = packages.get("jaxlib", "")
        built_cuda = None
        if plugins:
            major = max(plugins)
            built_cuda = str(major)
            for name in (
                f"nvidia-cuda-nvcc-cu{major}",
                f"nvidia-cuda-runtime-cu{major}",
                "nvidia-cuda-nvcc",
                "nvidia-cuda-runtime",
            ):
                if name in packages and parse_version(packages[name])[:1] == (major,):
                    built_cuda = _format_cuda(_major_minor(packages[name]))
                    break
        elif "+cuda" in jaxlib:
            match = re.search(r"\+cuda(\d+)", jaxlib)
            built_cuda = match.group(1) if match else None
        checks.append(
            check_framework_build(
                "jax",
                "jax",
                packages["jax"],
                bool(plugins) or "+cuda" in jaxlib,
                built_cuda,
                None,
                None,
                nvidia.gpu_count,
                nvidia.driver_version,
                nvidia.driver_cuda,
                facts.backend == "jax",
            )
        )
    if "torch" in packages:
        build = dict(facts.torch_build or {})
        probe_build = (probes.get("torch") or {}).get("build") or {}
        cuda = build.get("cuda") or probe_build.get("cuda")
        cuda_build: bool | None = bool(cuda) if (build or probe_build) else None
        if "+cpu" in packages["torch"]:
            cuda_build = False
        cudnn = probe_build.get("cudnn")
        checks.append(
            check_framework_build(
                "torch",
                "torch",
                packages["torch"],
                cuda_build,
                cuda,
                _format_cudnn(cudnn) if cudnn else None,
                None,
                nvidia.gpu_count,
                nvidia.driver_version,
                nvidia.driver_cuda,
                facts.backend == "torch",
            )
        )
    return checks


def _format_cudnn(version: Any) -> str:
    """torch.backends.cudnn.version() (90100) as "9.1.0"; strings pass through."""
    if isinstance(version, int) and version >= 1000:
        return f"{version // 10000}.{(version % 10000) // 100}.{version % 100}"
    return str(version)


def _devices_fix(facts: EnvFacts, probe: Mapping[str, Any], so_far: list[Check]) -> str:
    """For a backend that sees no GPU: the checks above that explain why, or else the install
    of its framework built for the driver's CUDA."""
    backend = probe.get("requested_backend") or probe.get("backend") or ""
    causes = [
        c.title
        for c in so_far
        if c.status in (WARN, FAIL)
        and (
            c.id in ("cuda-visible-devices", "jaxlib", f"{backend}-build")
            or (
                backend == "jax"
                and c.id in ("jax-platforms", *(f"jax-cuda{m}-plugin" for m in JAX_CUDA_MAJORS))
            )
        )
    ]
    if causes:
        return f"fix {' and '.join(dict.fromkeys(causes))} above"
    distribution = framework_distribution(backend, facts.packages)
    if not distribution:
        return ""
    return gpu_build_fix(
        backend, distribution, facts.packages[distribution], facts.nvidia.driver_cuda
    )


def evaluate(facts: EnvFacts, jax_requires_jaxlib: str | None = None) -> list[Check]:
    """All checks, in the order they are printed: the stack, the GPU, the backend at work,
    threads, memory."""
    gpu_count = facts.nvidia.gpu_count
    checks: list[Check] = [check_python(facts.python_version)]
    checks += check_keras(facts.packages.get("keras"), facts.env)
    checks.append(
        check_backend(facts.backend, facts.backend_source, facts.keras_json_backend, facts.packages)
    )
    checks += check_packages(facts.packages, jax_requires_jaxlib)
    checks += check_nvidia(facts.nvidia, "nvidia-ml-py" in facts.packages)
    checks += check_gpu_visibility(facts.env, gpu_count, facts.backend)
    checks += _framework_build_checks(facts)
    processes = check_gpu_processes(facts.nvidia.processes, own_pids=[os.getpid()])
    if processes:
        checks.append(processes)
    for probe in facts.probes:
        checks.append(check_backend_devices(probe, gpu_count, _devices_fix(facts, probe, checks)))
        matmul = check_matmul(probe, gpu_count)
        if matmul:
            checks.append(matmul)
    threads = {}
    for probe in facts.probes:
        threads.update({k: v for k, v in (probe.get("threads") or {}).items() if v is not None})
    checks += check_threads(
        cores_usable=facts.host.cores_usable,
        cores_logical=facts.host.cores_logical,
        cpu_quota_cores=facts.host.cpu_quota_cores,
        env=facts.env,
        gpu_count=gpu_count,
        torch_threads=threads.get("torch_num_threads"),
        tf_intra_op=threads.get("tf_intra_op"),
        tf_inter_op=threads.get("tf_inter_op"),
    )
    load = check_cpu_load(facts.host.load_avg_1m, facts.host.cores_effective)
    if load:
        checks.append(load)
    checks += check_gpu_memory(
        backend=facts.backend if framework_distribution(facts.backend, facts.packages) else "",
        env=facts.env,
        gpu_count=gpu_count,
        cuda_frameworks=cuda_frameworks(facts),
        other_gpu_processes=len([p for p in facts.nvidia.processes if p.pid != os.getpid()]),
    )
    checks.append(check_shm(facts.host.shm_total_bytes, facts.host.shm_free_bytes))
    checks += check_host(facts.host)
    return checks


def worst_status(checks: Iterable[Check]) -> str:
    return max((c.status for c in checks), key=STATUSES.index, default=OK)


# --------------------------------------------------------------------------------------------
# Gathering (impure): metadata, files, the driver, the host
# --------------------------------------------------------------------------------------------


def installed_packages(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def jax_jaxlib_requirement() -> str | None:
    """The jaxlib specifier in jax's own metadata (">=0.10.1,<=0.10.2"), or None."""
    try:
        requires = importlib.metadata.requires("jax") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requires:
        if ";" in requirement:
            continue
        match = re.match(r"jaxlib\s*([<>=!~][^;]*)$", requirement.strip())
        if match:
            return match.group(1).replace(" ", "")
    return None


def _package_file(package: str, relative: str) -> str | None:
    """Text of a file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location, relative)
        if path.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                return path.read_text()
    return None


def read_tf_build() -> dict[str, Any] | None:
    source = _package_file("tensorflow", "python/platform/build_info.py")
    return parse_build_info(source) if source else None


def read_torch_build() -> dict[str, Any] | None:
    source = _package_file("torch", "version.py")
    return parse_torch_version_file(source) if source else None


def keras_json_path(env: Mapping[str, str]) -> str:
    """Where Keras reads keras.json: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when
    the home folder is not writable)."""
    if "KERAS_HOME" in env:
        base = env["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    return os.path.expanduser(os.path.join(base, "keras.json"))


def _run(command: list[str], timeout_s: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


def gather_nvidia() -> NvidiaFacts:
    """The driver's view: NVML when nvidia-ml-py is installed, else ``nvidia-smi``. Failing to
    reach a driver that is not there is no error: ``error`` is kept only when the kernel
    module or the device nodes say a driver exists."""
    facts = NvidiaFacts(
        kernel_module=os.path.exists("/proc/driver/nvidia/version"),
        device_nodes=any(os.path.exists(f"/dev/nvidia{i}") for i in range(16)),
    )
    try:
        _gather_nvml(facts)
        return facts
    except ImportError:
        pass
    except Exception as error:  # NVMLError_*: fall back to nvidia-smi, keep the reason
        facts.source, facts.gpus, facts.processes = "none", [], []
        facts.error = f"NVML: {type(error).__name__}: {error}"
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        _gather_nvidia_smi(facts, smi)
    if facts.error and not (facts.kernel_module or facts.device_nodes):
        facts.error = None  # no driver here: "no NVIDIA GPU visible" says it all
    return facts


def _gather_nvidia_smi(facts: NvidiaFacts, smi: str) -> None:
    try:
        query = _run(
            [
                smi,
                "--query-gpu=index,name,uuid,memory.total,memory.used,compute_cap",
                "--format=csv,noheader,nounits",
            ]
        )
        if query.returncode != 0:
            facts.error = (query.stderr or query.stdout).strip()[:300] or f"exit {query.returncode}"
            return
        facts.gpus = parse_nvidia_smi_gpus(query.stdout)
        facts.source = "nvidia-smi"
        facts.error = None
        banner = _run([smi])
        facts.driver_version, facts.driver_cuda = parse_nvidia_smi_header(banner.stdout)
        apps = _run(
            [
                smi,
                "--query-compute-apps=pid,process_name,used_memory,gpu_uuid",
                "--format=csv,noheader,nounits",
            ]
        )
        uuids = {g.uuid: g.index for g in facts.gpus if g.uuid}
        facts.processes = parse_nvidia_smi_apps(apps.stdout, uuids)
    except subprocess.TimeoutExpired:
        facts.error = "nvidia-smi did not answer within 10 s (a hung driver?)"
    except OSError as error:
        facts.error = f"nvidia-smi: {error}"


def _gather_nvml(facts: NvidiaFacts) -> None:
    import pynvml  # nvidia-ml-py

    pynvml.nvmlInit()
    try:
        facts.nvml_available = True
        facts.source = "nvml"
        facts.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        with contextlib.suppress(Exception):
            facts.driver_cuda = cuda_from_nvml(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            capability = None
            with contextlib.suppress(Exception):
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability = f"{major}.{minor}"
            uuid = None
            with contextlib.suppress(Exception):
                uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            facts.gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_bytes=int(memory.total),
                    memory_used_bytes=int(memory.used),
                    compute_capability=capability,
                    uuid=uuid,
                )
            )
            with contextlib.suppress(Exception):
                for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    name = ""
                    with contextlib.suppress(Exception):
                        name = _text(pynvml.nvmlSystemGetProcessName(process.pid))
                    used = getattr(process, "usedGpuMemory", None)
                    facts.processes.append(
                        GpuProcess(
                            pid=int(process.pid),
                            name=os.path.basename(name),
                            gpu_index=index,
                            used_bytes=int(used) if used else None,
                        )
                    )
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cgroup_cpu_quota() -> float | None:
    """The tightest cgroup CPU limit on this process's cgroup path (v2 or v1)."""
    quotas = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and controllers == "":  # v2
                for folder in _ancestors(Path("/sys/fs/cgroup"), path):
                    with contextlib.suppress(OSError):
                        quota = parse_cpu_max((folder / "cpu.max").read_text())
                        if quota:
                            quotas.append(quota)
            elif "cpu" in controllers.split(","):  # v1
                for folder in _ancestors(Path("/sys/fs/cgroup/cpu"), path):
                    with contextlib.suppress(OSError, ValueError, ZeroDivisionError):
                        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
                        period_us = int((folder / "cpu.cfs_period_us").read_text())
                        if quota_us > 0:
                            quotas.append(quota_us / period_us)
    return min(quotas) if quotas else None


def _ancestors(root: Path, path: str) -> list[Path]:
    parts = [p for p in path.split("/") if p]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _cgroup_memory_limit() -> int | None:
    limits = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and controllers == "":
                candidates = [f / "memory.max" for f in _ancestors(Path("/sys/fs/cgroup"), path)]
            elif "memory" in controllers.split(","):
                candidates = [
                    f / "memory.limit_in_bytes"
                    for f in _ancestors(Path("/sys/fs/cgroup/memory"), path)
                ]
            else:
                continue
            for candidate in candidates:
                with contextlib.suppress(OSError, ValueError):
                    text = candidate.read_text().strip()
                    if text != "max" and int(text) < 2**60:
                        limits.append(int(text))
    return min(limits) if limits else None


def gather_host() -> HostFacts:
    import psutil

    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    try:
        memory = psutil.virtual_memory()
        total, available = int(memory.total), int(memory.available)
    except Exception:  # psutil may fail in odd sandboxes
        total = available = None
    shm_total = shm_free = None
    if os.path.isdir("/dev/shm"):
        with contextlib.suppress(OSError):
            stat = os.statvfs("/dev/shm")
            shm_total, shm_free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    return HostFacts(
        system=platform.system(),
        machine=platform.machine(),
        cores_logical=logical,
        cores_physical=psutil.cpu_count(logical=False),
        cores_usable=usable,
        cpu_quota_cores=_cgroup_cpu_quota(),
        load_avg_1m=load,
        memory_total_bytes=total,
        memory_available_bytes=available,
        memory_limit_bytes=_cgroup_memory_limit(),
        shm_total_bytes=shm_total,
        shm_free_bytes=shm_free,
    )


# --------------------------------------------------------------------------------------------
# The backend probe: runs in a child process
# --------------------------------------------------------------------------------------------

PROBE_MARKER = "STOKE_ENV_PROBE "
_PROBE_CODE = (
    "import json, stoke.envcheck as m; "
    "print(m.PROBE_MARKER + json.dumps(m.probe_backend()), flush=True)"
)


def probe_backend(matmul_budget_s: float = 0.5) -> dict[str, Any]:
    """Import Keras on the backend ``KERAS_BACKEND`` names, list the devices it sees, and time
    a float32 matmul through ``keras.ops``: where the result lives, how fast, and whether it
    is right (ones @ ones = n).

    ``stoke env`` runs this in a child process; it is importable for tests. Returns plain
    values; a Python exception is caught and returned as ``error`` with the ``stage``."""
    result: dict[str, Any] = {"backend": os.environ.get("KERAS_BACKEND"), "error": None}
    stage = "import keras"
    try:
        started = time.perf_counter()
        import keras

        result["backend"] = keras.backend.backend()
        result["keras_version"] = keras.__version__
        stage = f"import {result['backend']}"
        result.update(_framework_details(result["backend"]))
        result["import_s"] = time.perf_counter() - started
        stage = "matmul"
        result["matmul"] = _time_matmul(keras.ops, matmul_budget_s)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"[:1000]
        result["stage"] = stage
    return result


def _framework_details(backend: str) -> dict[str, Any]:
    if backend == "jax":
        import jax

        devices = jax.devices()
        return {
            "framework_version": jax.__version__,
            "devices": [
                str(d) if d.device_kind.lower() in str(d).lower() else f"{d} ({d.device_kind})"
                for d in devices
            ],
            "gpu_count": sum(1 for d in devices if device_kind(f"{d} {d.platform}") == "gpu"),
            "default_platform": jax.default_backend(),
        }
    if backend == "torch":
        import torch

        devices = ["cpu"]
        gpus = 0
        build: dict[str, Any] = {
            "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
        }
        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(gpus)]
            with contextlib.suppress(Exception):
                build["cudnn"] = torch.backends.cudnn.version()
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append("mps")
        return {
            "framework_version": torch.__version__,
            "devices": devices,
            "gpu_count": gpus,
            "build": build,
            "threads": {
                "torch_num_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
            },
        }
    if backend == "tensorflow":
        import tensorflow as tf

        physical = tf.config.list_physical_devices()
        build = {}
        with contextlib.suppress(Exception):
            build = {k: _plain(v) for k, v in tf.sysconfig.get_build_info().items()}
        return {
            "framework_version": tf.__version__,
            "devices": [short_device(d.name) for d in physical],
            "gpu_count": sum(1 for d in physical if d.device_type == "GPU"),
            "build": build,
            "threads": {
                "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            },
        }
    return {"devices": ["cpu"], "gpu_count": 0}


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _tensor_device(tensor: Any) -> str:
    devices = getattr(tensor, "devices", None)
    if callable(devices):  # a jax Array
        return ",".join(sorted(str(d) for d in devices()))
    return str(getattr(tensor, "device", "unknown"))


def _time_matmul(ops: Any, budget_s: float) -> dict[str, Any]:
    def matmul_once(a: Any, b: Any) -> tuple[Any, float]:
        product = ops.matmul(a, b)
        return product, float(product[0, 0])  # copies one value to the host: waits

    size = 1024
    a = ops.ones((size, size), dtype="float32")
    started = time.perf_counter()
    product, value = matmul_once(a, a)
    first_s = time.perf_counter() - started
    device = _tensor_device(product)
    if device_kind(device) != "cpu":  # an accelerator: big enough to see its speed
        size = 4096
        a = ops.ones((size, size), dtype="float32")
        product, value = matmul_once(a, a)
    reps, started = 0, time.perf_counter()
    while reps < 3 or (time.perf_counter() - started < budget_s and reps < 200):
        product, value = matmul_once(a, a)
        reps += 1
    seconds = (time.perf_counter() - started) / reps
    return {
        "size": size,
        "device": device,
        "device_kind": device_kind(device),
        "first_s": first_s,
        "seconds": seconds,
        "gflops": 2 * size**3 / seconds / 1e9,
        "repeats": reps,
        "value": value,
        "correct": abs(value - size) <= 1e-3 * size,
    }


def _probe_environment(backend: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    # Check without taking the memory of a run that may share the GPU.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


class RunningProbe:
    """A :func:`probe_backend` child process. :meth:`result` waits for it (at most
    ``timeout_s`` from the start) and always leaves no process behind."""

    def __init__(self, backend: str | None, timeout_s: float) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PROBE_CODE],
            env=_probe_environment(backend),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group: killed as one, with its children
        )

    def result(self) -> dict[str, Any]:
        remaining = max(0.1, self.timeout_s - (time.monotonic() - self.started))
        try:
            stdout, stderr = self.process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.kill()
            stdout, stderr = self.process.communicate()
            return self._failed(
                f"did not finish within {self.timeout_s:g} s (a hung GPU driver, or a very slow "
                "first compile)",
                "start-up",
                stderr,
            )
        finally:
            self.kill()
        for line in reversed(stdout.splitlines()):
            if line.startswith(PROBE_MARKER):
                result = json.loads(line[len(PROBE_MARKER) :])
                result["requested_backend"] = self.backend or result.get("backend")
                result["stderr_tail"] = _tail(stderr)
                result["wall_s"] = time.monotonic() - self.started
                return result
        code = self.process.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return self._failed(
                f"the process crashed with {name} (usually CUDA/cuDNN libraries that do not "
                "match the framework or the driver)",
                "start-up",
                stderr,
            )
        return self._failed(
            f"the process exited with code {code} and no result", "start-up", stderr
        )

    def _failed(self, error: str, stage: str, stderr: str) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "requested_backend": self.backend,
            "error": error,
            "stage": stage,
            "stderr_tail": _tail(stderr),
            "wall_s": time.monotonic() - self.started,
        }

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if hasattr(os, "killpg"):
                    os.killpg(self.process.pid, signal.SIGKILL)  # the child and what it started
                else:  # pragma: no cover - Windows
                    self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join((text or "").splitlines()[-lines:])


def gather_facts(
    backend: str | None = None, probe: bool = True, probe_timeout_s: float = 120.0
) -> EnvFacts:
    """Everything ``stoke env`` looks at.

    ``backend`` picks what to import and run a matmul on: None for the active backend, a name,
    or ``"all"`` (the installed training backends, one after another); ``probe=False`` imports
    nothing. Each probe runs in a child process; the first one runs while the host and the
    driver are examined."""
    started = time.monotonic()
    env = {name: os.environ[name] for name in ENV_VARS if name in os.environ}
    json_path = keras_json_path(os.environ)
    active, source, json_backend = resolve_backend(
        os.environ.get("KERAS_BACKEND"),
        _read_or_none(json_path),
        json_path.replace(os.path.expanduser("~"), "~", 1),
    )
    packages = installed_packages()
    pending = backends_to_probe(backend, active, packages) if probe else []
    running = RunningProbe(pending.pop(0), probe_timeout_s) if pending else None
    probes = []
    try:
        facts = EnvFacts(
            python_version=platform.python_version(),
            python_executable=sys.executable,
            packages=packages,
            backend=active,
            backend_source=source,
            keras_json_backend=json_backend,
            env=env,
            tf_build=read_tf_build(),
            torch_build=read_torch_build(),
            host=gather_host(),
            nvidia=gather_nvidia(),
        )
        if running:
            probes.append(running.result())
        for name in pending:
            running = RunningProbe(name, probe_timeout_s)
            probes.append(running.result())
    finally:
        if running:
            running.kill()
    facts.probes = probes
    facts.gather_s = time.monotonic() - started
    return facts


def backends_to_probe(requested: str | None, active: str, packages: Mapping[str, str]) -> list[str]:
    """The backends to import: the installed training backends for ``"all"``; else the
    requested (or active) one, if Keras and its framework are installed."""
    if "keras" not in packages:
        return []
    if requested == "all":
        return [b for b in TRAINING_BACKENDS if framework_distribution(b, packages)]
    backend = requested or active
    if backend in TRAINING_BACKENDS and framework_distribution(backend, packages):
        return [backend]
    return []


def _read_or_none(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------------------------
# Renderers and the command
# --------------------------------------------------------------------------------------------

_STYLES = {OK: "green", INFO: "blue", WARN: "bold yellow", FAIL: "bold red"}


def to_json(facts: EnvFacts, checks: list[Check]) -> dict[str, Any]:
    from stoke import __version__

    counts = {status: sum(1 for c in checks if c.status == status) for status in STATUSES}
    return {
        "schema_version": ENV_SCHEMA_VERSION,
        "stoke_version": __version__,
        "status": worst_status(checks),
        "counts": counts,
        "checks": [dataclasses.asdict(c) for c in checks],
        "facts": dataclasses.asdict(facts),
    }


def render(facts: EnvFacts, checks: list[Check], console: Any = None) -> None:
    """The checks as a rich table. Every cell is plain text (fixes hold brackets such as
    ``jax[cuda12]`` that rich markup would eat)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    keras_version = facts.packages.get("keras", "not installed")
    gpu = f"{facts.nvidia.gpu_count} NVIDIA GPU(s)" if facts.nvidia.gpu_count else "no NVIDIA GPU"
    console.print(
        Text.assemble(
            ("stoke env", "bold"),
            f"  Python {facts.python_version} · Keras {keras_version} on {facts.backend} · "
            f"{facts.host.cores_usable} core(s) · {gpu} · took {facts.gather_s:.1f} s",
        )
    )
    table = Table(show_lines=False, expand=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True, style="bold")
    table.add_column("what stoke found", overflow="fold")
    with_fixes = any(check.fix for check in checks)
    if with_fixes:
        table.add_column("fix", overflow="fold", style="cyan")
    for check in checks:
        cells = [
            Text(check.status, style=_STYLES[check.status]),
            Text(check.title),
            Text(check.message),
        ]
        table.add_row(*cells, *([Text(check.fix)] if with_fixes else []))
    console.print(table)
    counts = {status: sum(1 for c in checks if c.status == status) for status in STATUSES}
    summary = Text.assemble(
        (f"{counts[FAIL]} failed", _STYLES[FAIL] if counts[FAIL] else ""),
        ", ",
        (f"{counts[WARN]} warning(s)", _STYLES[WARN] if counts[WARN] else ""),
        f", {counts[OK]} ok, {counts[INFO]} info.",
    )
    console.print(summary)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write the checks and the facts as JSON ('-' prints only the JSON)",
    )
    parser.add_argument(
        "--backend",
        choices=[*TRAINING_BACKENDS, "all"],
        help="the Keras backend to import and run a matmul on (default: the active one; "
        "'all': each installed backend in turn)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not import the backend: no device list, no matmul (under a second)",
    )
    parser.add_argument(
        "--probe-timeout-s",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up on a backend that has not started after this long (default 120)",
    )


def main(args: argparse.Namespace) -> int:
    if args.probe_timeout_s <= 0:
        raise SystemExit(
            f"stoke env: --probe-timeout-s must be > 0. Received: {args.probe_timeout_s}"
        )
    facts = gather_facts(args.backend, not args.no_probe, args.probe_timeout_s)
    checks = evaluate(facts, jax_jaxlib_requirement())
    payload = to_json(facts, checks)
    if args.json == "-":
        print(json.dumps(payload, indent=2))
    else:
        render(facts, checks)
        if args.json:
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
            print(f"wrote {args.json}")
    return 1 if any(c.status == FAIL for c in checks) else 0
