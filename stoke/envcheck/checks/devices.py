"""The backend at work: the devices it sees when imported (in a child process,
:mod:`stoke.envcheck.probe`) and the matmul it ran on them.

Owns: :func:`check_backend_devices` (against what the driver sees; a failed start-up and the
``pip install`` its error asks for), :func:`devices_fix` (for a backend that sees no GPU: the
checks above that explain it, or the install that fits) and :func:`check_matmul` (where it
ran, how fast, whether right).
Leaves to others: running the probe (:mod:`stoke.envcheck.probe`), the build checks whose
fixes it points at (:mod:`.builds`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stoke.envcheck.checks.builds import gpu_build_fix
from stoke.envcheck.facts import (
    FAIL,
    INFO,
    JAX_CUDA_MAJORS,
    OK,
    WARN,
    Check,
    EnvFacts,
    framework_distribution,
)
from stoke.envcheck.parsers import device_kind, short_device, stderr_hints


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


def devices_fix(facts: EnvFacts, probe: Mapping[str, Any], so_far: list[Check]) -> str:
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
