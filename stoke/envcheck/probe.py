"""The backend probe: import Keras on one backend in a child process, list the devices it
sees and time a matmul on them.

Owns: :func:`probe_backend` (what the child runs; importable for tests), the child's
environment (JAX's GPU memory pre-allocation off and TensorFlow's memory growth on, so that
checking never takes the memory of a training run that shares the GPU), and
:class:`RunningProbe`, which starts the child, waits for it at most its timeout and turns a
crash, a hang or a missing result into an ``error``, leaving no process behind: a CUDA
library that crashes or hangs on import is a failed check, not a dead ``stoke env``.
Leaves to others: deciding what the devices and the matmul mean (:mod:`.checks`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stoke.envcheck.parsers import device_kind, short_device

PROBE_MARKER = "STOKE_ENV_PROBE "
# What the child runs: :func:`probe_backend`, its result printed as one marked JSON line.
PROBE_CODE = (
    "import json; from stoke.envcheck.probe import PROBE_MARKER, probe_backend; "
    "print(PROBE_MARKER + json.dumps(probe_backend()), flush=True)"
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
    package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds stoke/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


class RunningProbe:
    """A :func:`probe_backend` child process. :meth:`result` waits for it (at most
    ``timeout_s`` from the start) and always leaves no process behind.

    ``code`` is the Python the child runs (:data:`PROBE_CODE`); the tests give it code that
    crashes or hangs on purpose."""

    def __init__(self, backend: str | None, timeout_s: float, code: str = PROBE_CODE) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
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
