"""Reading what other programs write: TensorFlow's ``build_info.py`` and torch's
``version.py`` (without importing either), ``nvidia-smi``'s CSV and banner (read only when
NVML cannot be used: :func:`stoke.envcheck.gather.gather_nvidia`), cgroup v2
``cpu.max``, keras.json (the backend Keras picks), the device names backends print, and the
lines a backend writes to stderr when it cannot use the GPU.

Owns: text in, plain values out. Pure, so each format is tested on a sample string.
Leaves to others: reading the files and running the commands (:mod:`.gather`).
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from stoke.envcheck.facts import KERAS_DEFAULT_SOURCE, MIB, GpuInfo, GpuProcess


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
