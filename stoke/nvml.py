"""NVIDIA's management library (NVML): the one place stoke imports ``pynvml``.

Owns: starting an NVML session, or saying why there is none (:class:`NvmlUnavailable`: the
``nvidia-ml-py`` package is not installed, or NVML found no driver, no library or no GPU to
talk to), ending it, and NVML's text (bytes in old bindings, str in new ones). Both of stoke's
readers go through it: ``stoke env`` takes one snapshot of the driver and its GPUs
(:func:`stoke.envcheck.gather.gather_nvidia`), the doctor samples kernel-active time, memory
and PCIe traffic during a run (:class:`stoke.diagnosis.measure.nvml.NvmlReader`). Leaves to them what
to read and what it means.

``pynvml`` is imported inside :func:`start` only, so ``import stoke`` never loads it.

    try:
        with session() as nvml:
            count = nvml.nvmlDeviceGetCount()
    except NvmlUnavailable as why:
        print(f"no NVML: {why}")  # e.g. "nvidia-ml-py is not installed ..."
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

NOT_INSTALLED = (
    "nvidia-ml-py is not installed, so there is no NVML here "
    '(pip install nvidia-ml-py, or pip install "stoke[gpu]")'
)


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here. ``str()`` says why; ``installed`` tells a machine without the
    bindings (nothing to report) from one whose driver or GPU NVML could not reach (the text
    is NVML's own error, such as ``NVMLError_LibraryNotFound: NVML Shared Library Not Found``
    or ``NVMLError_DriverNotLoaded: Driver Not Loaded``)."""

    def __init__(self, reason: str, installed: bool) -> None:
        super().__init__(reason)
        self.installed = installed


def start() -> Any:
    """Import ``pynvml`` and initialise NVML; returns the module, the handle for every NVML
    call. Raises :class:`NvmlUnavailable` when it cannot; the caller ends the session with
    :func:`shutdown` (or uses :func:`session`)."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as error:
        raise NvmlUnavailable(NOT_INSTALLED, installed=False) from error
    except Exception as error:  # a broken install: the bindings are there but do not load
        raise NvmlUnavailable(f"{type(error).__name__}: {error}", installed=True) from error
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError_*: no driver, no library, no permission
        raise NvmlUnavailable(f"{type(error).__name__}: {error}", installed=True) from error
    return pynvml


def shutdown(nvml: Any) -> None:
    """End the session :func:`start` opened; never raises (a driver that went away while the
    session was open has nothing left to close)."""
    with contextlib.suppress(Exception):
        nvml.nvmlShutdown()


@contextlib.contextmanager
def session() -> Iterator[Any]:
    """:func:`start`, then :func:`shutdown` however the block ends."""
    nvml = start()
    try:
        yield nvml
    finally:
        shutdown(nvml)


def text(value: Any) -> str:
    """NVML's text as ``str`` (older nvidia-ml-py releases return ``bytes``)."""
    return value.decode() if isinstance(value, bytes) else str(value)
