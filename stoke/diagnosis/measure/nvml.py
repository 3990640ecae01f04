"""Read NVIDIA GPUs through NVML: kernel-active %, memory, PCIe traffic.

The NVML session comes from :mod:`stoke.nvml` (the one import of ``pynvml``, the
``nvidia-ml-py`` package, stoke's ``gpu`` extra), started inside :meth:`NvmlReader.open`. No
package, no driver or no GPU means ``open()`` returns ``None``: the doctor then records no GPU
samples and raises nothing.

Vocabulary: NVML's ``utilization.gpu`` is the share of the last sample period during which
*any* kernel ran on the GPU. The doctor calls it "kernel-active", never "SM utilisation": a
single tiny kernel keeps it at 100% while most of the chip idles.

Sampling is left to :mod:`stoke.diagnosis.measure.system`, which calls :meth:`NvmlReader.read` from its
thread; judging the numbers is left to the analysis.
"""

from __future__ import annotations

import os
from typing import Any

from stoke.diagnosis.record import GpuSample
from stoke.nvml import NvmlUnavailable, shutdown, start, text

# NVML's counter ids for nvmlDeviceGetPcieThroughput (stable across NVML versions).
_PCIE_TX_BYTES = 0
_PCIE_RX_BYTES = 1


def _visible_indices(device_count: int) -> list[int]:
    """The NVML indices this process may use: CUDA_VISIBLE_DEVICES when it lists plain
    indices, else all (UUIDs and MIG names are not mapped: all GPUs are sampled)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(device_count))
    indices = []
    for part in visible.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            return list(range(device_count))
        index = int(part)
        if 0 <= index < device_count:
            indices.append(index)
    return indices


class NvmlReader:
    """One open NVML session over the GPUs this process can see.

    Build it with :meth:`open` (``None`` when NVML is unusable); :meth:`read` returns one
    :class:`GpuSample` per GPU and never raises; :meth:`close` ends the session.
    """

    def __init__(self, nvml: Any, handles: list[tuple[int, Any]], names: list[str]):
        self._nvml = nvml
        self._handles = handles
        self.names = names
        self._pcie_works = True

    @classmethod
    def open(cls) -> NvmlReader | None:
        try:
            nvml = start()
        except NvmlUnavailable:
            return None
        try:
            count = nvml.nvmlDeviceGetCount()
            handles = []
            names = []
            for index in _visible_indices(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                handles.append((index, handle))
                names.append(text(nvml.nvmlDeviceGetName(handle)))
        except Exception:
            shutdown(nvml)
            return None
        if not handles:
            shutdown(nvml)
            return None
        return cls(nvml, handles, names)

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    def read(self) -> list[GpuSample]:
        """One sample per GPU; a GPU whose reading fails is left out."""
        nvml = self._nvml
        samples = []
        for index, handle in self._handles:
            try:
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:
                continue
            tx = rx = None
            if self._pcie_works:
                try:
                    # NVML answers in KB/s, measured over a 20 ms window (the call blocks
                    # that long, outside the GIL).
                    tx = float(nvml.nvmlDeviceGetPcieThroughput(handle, _PCIE_TX_BYTES)) * 1024
                    rx = float(nvml.nvmlDeviceGetPcieThroughput(handle, _PCIE_RX_BYTES)) * 1024
                except Exception:
                    self._pcie_works = False  # not supported here (some vGPUs, MIG): stop asking
                    tx = rx = None
            samples.append(
                GpuSample(
                    index=index,
                    kernel_active_pct=float(utilization.gpu),
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    pcie_tx_bytes_per_s=tx,
                    pcie_rx_bytes_per_s=rx,
                )
            )
        return samples

    def close(self) -> None:
        shutdown(self._nvml)
