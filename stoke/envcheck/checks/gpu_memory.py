"""GPU memory settings: who reserves what at start-up, and whether two frameworks in one
process fight over the memory.

Owns: :func:`check_gpu_memory` (TensorFlow's memory growth, JAX's pre-allocation and memory
fraction, torch's allocator; malformed values of their variables).
Leaves to others: who else holds GPU memory now (:func:`.gpu.check_gpu_processes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stoke.envcheck.facts import FAIL, INFO, OK, WARN, Check


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
