"""What the NVIDIA driver sees, and who else uses it.

Owns: :func:`check_nvidia` (GPUs, driver, NVML for ``stoke doctor``; a container started
without GPUs), :func:`check_gpu_visibility` (``CUDA_VISIBLE_DEVICES``, ``JAX_PLATFORMS``
hiding GPUs the driver sees) and :func:`check_gpu_processes` (other processes holding GPU
memory).
Leaves to others: whether the installed builds can use those GPUs (:mod:`.builds`), whether
the backend does (:mod:`.devices`), GPU memory settings (:mod:`.gpu_memory`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from stoke.envcheck.facts import FAIL, GIB, INFO, OK, WARN, Check, GpuProcess, NvidiaFacts


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
