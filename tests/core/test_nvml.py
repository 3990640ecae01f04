"""stoke.nvml: the one NVML session stoke opens, and what it says when there is none.

Each test expects what the machine it runs on has (no bindings, bindings but no driver, or a
working GPU), so the real library is what is tested wherever the suite runs. The CI machines
have no GPU: there NVML must say "not installed" or name the missing driver, and the doctor's
reader must open nothing, without raising.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from stoke.diagnosis.measure.nvml import NvmlReader
from stoke.nvml import NOT_INSTALLED, NvmlUnavailable, session, start, text

HAS_BINDINGS = importlib.util.find_spec("pynvml") is not None
HAS_DRIVER = os.path.exists("/proc/driver/nvidia/version")


def test_without_nvml_start_says_why():
    if HAS_BINDINGS and HAS_DRIVER:
        pytest.skip("NVML works here: test_a_session_reads_the_driver covers this machine")
    with pytest.raises(NvmlUnavailable) as raised:
        start()
    reason = str(raised.value)
    assert raised.value.installed is HAS_BINDINGS
    if HAS_BINDINGS:  # no driver: NVML's own error names what is missing
        assert reason.startswith("NVMLError_"), reason
    else:
        assert reason == NOT_INSTALLED and "pip install nvidia-ml-py" in reason


def test_bindings_that_are_not_there_are_not_installed(monkeypatch):
    # None in sys.modules is how Python refuses an import: as for a package not installed
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NvmlUnavailable, match="nvidia-ml-py is not installed") as raised:
        with session():
            pass
    assert raised.value.installed is False


def test_the_doctor_samples_no_gpu_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert NvmlReader.open() is None
    if not HAS_DRIVER:  # this machine as it is, bindings or not
        monkeypatch.delitem(sys.modules, "pynvml")
        assert NvmlReader.open() is None


@pytest.mark.skipif(
    not (HAS_BINDINGS and HAS_DRIVER), reason="needs nvidia-ml-py and an NVIDIA driver"
)
def test_a_session_reads_the_driver():
    with session() as nvml:
        assert text(nvml.nvmlSystemGetDriverVersion())
        count = nvml.nvmlDeviceGetCount()
    reader = NvmlReader.open()
    if count == 0:
        assert reader is None
        return
    try:
        samples = reader.read()
        assert samples and all(s.memory_total_bytes > 0 for s in samples)
    finally:
        reader.close()


def test_text_is_str_from_old_and_new_bindings():
    assert text(b"NVIDIA H100 80GB HBM3") == "NVIDIA H100 80GB HBM3"
    assert text("580.159.04") == "580.159.04"
