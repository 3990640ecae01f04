"""``stoke env`` without a backend: the pure decisions (versions, CUDA and drivers, threads,
memory settings), the parsers, the renderers, and the command with ``--no-probe``.

GPU machines are described by plain values here, so every GPU case runs on a CPU-only box.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import types

import pytest
from rich.console import Console

import stoke
from stoke.envcheck.checks.builds import check_cuda_driver, check_framework_build
from stoke.envcheck.checks.cpu import check_cpu_load, check_threads
from stoke.envcheck.checks.devices import check_backend_devices, check_matmul
from stoke.envcheck.checks.evaluate import evaluate, worst_status
from stoke.envcheck.checks.gpu import check_gpu_processes, check_gpu_visibility, check_nvidia
from stoke.envcheck.checks.gpu_memory import check_gpu_memory
from stoke.envcheck.checks.host import check_host, check_shm
from stoke.envcheck.checks.stack import check_backend, check_keras, check_packages, check_python
from stoke.envcheck.facts import (
    FAIL,
    GIB,
    INFO,
    KERAS_DEFAULT_SOURCE,
    MIB,
    OK,
    WARN,
    Check,
    EnvFacts,
    GpuInfo,
    GpuProcess,
    HostFacts,
    NvidiaFacts,
    effective_cores,
)
from stoke.envcheck.gather import (
    backends_to_probe,
    gather_nvidia,
    installed_packages,
    jax_jaxlib_requirement,
)
from stoke.envcheck.parsers import (
    device_kind,
    parse_build_info,
    parse_cpu_max,
    parse_nvidia_smi_apps,
    parse_nvidia_smi_gpus,
    parse_nvidia_smi_header,
    parse_torch_version_file,
    resolve_backend,
    short_device,
    stderr_hints,
)
from stoke.envcheck.probe import RunningProbe
from stoke.envcheck.report import ENV_SCHEMA_VERSION, add_arguments, main, render, to_json
from stoke.envcheck.versions import (
    cuda_from_nvml,
    cuda_supported_by_driver,
    jax_cuda_extra,
    major_minor,
    min_driver_for_cuda,
    parse_version,
    release_at_least,
    torch_wheel_tag,
    version_at_least,
    version_satisfies,
)

# --- versions -------------------------------------------------------------------------------


def test_parse_version_keeps_the_numeric_release():
    assert parse_version("2.13.0+cpu") == (2, 13, 0)
    assert parse_version("580.159.04") == (580, 159, 4)
    assert parse_version("0.4.30.dev20240601") == (0, 4, 30)
    assert parse_version("") == ()
    assert parse_version(None) == ()


@pytest.mark.parametrize(
    ("version", "specifier", "expected"),
    [
        ("0.10.2", ">=0.10.1,<=0.10.2", True),
        ("0.10.0", ">=0.10.1,<=0.10.2", False),
        ("0.10.3", ">=0.10.1,<=0.10.2", False),
        ("2.13.0+cpu", "==2.13.0", True),
        ("2.13.1", "==2.13.*", True),
        ("2.14.0", "==2.13.*", False),
        ("1.0", "!=1.0.0", False),
        ("3.0", "", True),
    ],
)
def test_version_satisfies(version, specifier, expected):
    assert version_satisfies(version, specifier) is expected


# Where PEP 440 (the ``packaging`` library, as pip judges) and stoke's former hand-written
# parser disagreed; PEP 440 is right in each case, and these pin it.
@pytest.mark.parametrize(
    ("version", "specifier", "expected", "why"),
    [
        ("3.0", "~=2.2", False, "~=2.2 is >=2.2,==2.* (PEP 440 'compatible release')"),
        ("2.2.9", "~=2.2", True, "~=2.2 is >=2.2,==2.*"),
        ("0.10.2rc1", ">=0.10.2", False, "a pre-release sorts before its release"),
        ("0.4.31.dev20240601", ">=0.4.31.dev20240701", False, "nightlies are ordered by date"),
        ("2.13.0+cpu", "===2.13.0", False, "=== compares the text, local label included"),
        ("1!2.0", ">=3.0", True, "an epoch sorts after every version of the epochs before"),
        ("", "<1.0", False, "no version satisfies nothing (the old parser read it as 0)"),
    ],
)
def test_version_satisfies_follows_pep_440(version, specifier, expected, why):
    assert version_satisfies(version, specifier) is expected, why


def test_version_order_is_pep_440():
    assert not version_at_least("0.4.30.dev20240601", "0.4.30")  # the old parser said yes
    assert version_at_least("2.13.0+cpu", "2.13.0")
    assert version_at_least("580.159.04", "550.54.14") and not version_at_least(None, "1")
    assert parse_version("1!2.0") == (2, 0)  # the epoch is not the release (old: (1,))
    assert parse_version("11.8.89_1") == (11, 8, 89)  # not PEP 440: its leading release
    assert major_minor("12.4.1") == (12, 4) and major_minor("12") == (12,)
    # missing parts are zeros, as PEP 440 compares releases; Python 3.10.0rc1 is a 3.10
    assert release_at_least((12,), (12, 0)) and not release_at_least((12,), (12, 1))
    assert check_python("3.10.0rc1").status == OK


def test_jaxlib_requirement_read_from_the_installed_jax():
    requirement = jax_jaxlib_requirement()
    if "jax" not in installed_packages(["jax"]):
        assert requirement is None
        return
    # jax pins jaxlib (the unconditional requirement, not an extra's), and the jaxlib that
    # pip installed beside it meets the pin
    assert requirement and requirement[0] in "<>=!~", requirement
    assert version_satisfies(importlib.metadata.version("jaxlib"), requirement)


def test_unreadable_specifier_clauses_are_skipped():
    assert version_satisfies("0.10.2", ">=0.10.1,not-a-clause")
    assert not version_satisfies("0.10.0", ">=0.10.1,not-a-clause")


# --- CUDA and the driver ----------------------------------------------------------------------


def test_min_driver_for_cuda():
    assert min_driver_for_cuda("12.4") == "550.54.14"
    assert min_driver_for_cuda("12.4.1") == "550.54.14"
    assert min_driver_for_cuda("12.7") == "560.28.03"  # no 12.7 GA: the one before
    assert min_driver_for_cuda("12") == "525.60.13"
    assert min_driver_for_cuda("13.0") == "580.65.06"
    assert min_driver_for_cuda("9.0") is None


def test_cuda_supported_by_driver():
    assert cuda_supported_by_driver("550.54.15") == "12.4"
    assert cuda_supported_by_driver("580.159.04") == "13.0"
    assert cuda_supported_by_driver("470.57.02") == "11.4"
    assert cuda_supported_by_driver("390.1") is None
    assert cuda_supported_by_driver(None) is None


def test_cuda_from_nvml():
    assert cuda_from_nvml(12040) == "12.4"
    assert cuda_from_nvml(13000) == "13.0"


@pytest.mark.parametrize(
    ("built", "driver", "driver_cuda", "status"),
    [
        ("12.4", "550.54.15", "12.4", OK),
        ("12.4", "580.65.06", "13.0", OK),
        ("12.5", "550.54.15", "12.4", WARN),  # minor-version compatibility
        ("12.5", "550.54.15", None, WARN),  # driver CUDA inferred from the driver number
        ("12.5", "520.61.05", "11.8", FAIL),  # older major
        ("13.0", "570.86.10", "12.8", FAIL),
        ("12", "535.104.05", "12.2", OK),  # only the major known (JAX plugin)
        (None, "550.54.15", "12.4", INFO),
        ("12.4", None, None, INFO),
    ],
)
def test_check_cuda_driver(built, driver, driver_cuda, status):
    got, reason, update = check_cuda_driver(built, driver, driver_cuda)
    assert got == status, reason
    if status in (WARN, FAIL):
        assert update.startswith("update the NVIDIA driver to >= ")


def test_wheel_choices_follow_the_driver():
    assert torch_wheel_tag("12.4") == "cu124"
    assert torch_wheel_tag("12.7") == "cu126"
    assert torch_wheel_tag("13.0") == "cu130"
    assert jax_cuda_extra("13.0") == "cuda13"
    assert jax_cuda_extra("12.2") == "cuda12"
    assert jax_cuda_extra(None) == "cuda12"


def _build(framework, distribution, version, cuda_build, built_cuda=None, **kw):
    values = dict(
        built_cudnn=None,
        installed_cudnn=None,
        gpu_count=1,
        driver_version="550.54.15",
        driver_cuda="12.4",
        active=True,
    )
    values.update(kw)
    return check_framework_build(framework, distribution, version, cuda_build, built_cuda, **values)


def test_cpu_only_builds_on_a_gpu_machine_fail_for_the_active_backend():
    tf = _build("tensorflow", "tensorflow-cpu", "2.21.0", False)
    assert tf.status == FAIL
    assert "CPU-only" in tf.message
    assert 'pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]==2.21.0"' in tf.fix

    torch = _build("torch", "torch", "2.13.0+cpu", False)
    assert torch.status == FAIL
    assert "torch==2.13.0 " in torch.fix and "/whl/cu124" in torch.fix

    jax = _build("jax", "jax", "0.10.2", False, driver_cuda="13.0", driver_version="580.65.06")
    assert jax.status == FAIL
    assert "jax[cuda13]==0.10.2" in jax.fix


def test_cpu_only_build_of_another_backend_only_warns():
    assert _build("torch", "torch", "2.13.0+cpu", False, active=False).status == WARN


def test_builds_without_a_gpu_are_information():
    check = _build("torch", "torch", "2.13.0+cpu", False, gpu_count=0)
    assert check.status == INFO
    assert "no NVIDIA GPU visible" in check.message


def test_cuda_build_newer_than_the_driver():
    too_new = _build("torch", "torch", "2.13.0", True, "13.0")
    assert too_new.status == FAIL
    assert "580.65.06" in too_new.fix and "/whl/cu124" in too_new.fix
    assert _build("torch", "torch", "2.13.0", True, "12.4").status == OK
    assert _build("torch", "torch", "2.13.0", True, "13.0", active=False).status == WARN


def test_cudnn_major_mismatch():
    check = _build(
        "tensorflow", "tensorflow", "2.21.0", True, "12.4", built_cudnn="9", installed_cudnn="8.9.7"
    )
    assert check.status == FAIL
    assert "cuDNN" in check.message


# --- packages -------------------------------------------------------------------------------


def test_packages_agree():
    packages = {"keras": "3.15.1", "jax": "0.10.2", "jaxlib": "0.10.2", "torch": "2.13.0"}
    checks = check_packages(packages, ">=0.10.1,<=0.10.2")
    assert [c.id for c in checks] == ["packages"]
    assert "jax 0.10.2" in checks[0].message


def test_packages_that_fight():
    packages = {
        "tensorflow": "2.21.0",
        "tensorflow-cpu": "2.21.0",
        "jax": "0.10.2",
        "jaxlib": "0.9.0",
        "jax-cuda12-plugin": "0.10.0",
    }
    checks = {c.id: c for c in check_packages(packages, ">=0.10.1,<=0.10.2")}
    assert checks["tensorflow-duplicate"].status == WARN
    assert checks["jaxlib"].status == FAIL
    assert "jaxlib 0.9.0" in checks["jaxlib"].message
    plugin = checks["jax-cuda12-plugin"]
    assert plugin.status == FAIL
    assert "jax[cuda12]==0.10.2" in plugin.fix


# --- the backend ----------------------------------------------------------------------------


def test_resolve_backend_in_keras_order():
    path = "~/.keras/keras.json"
    assert resolve_backend("jax", '{"backend": "torch"}', path) == (
        "jax",
        "KERAS_BACKEND",
        "torch",
    )
    assert resolve_backend("", '{"backend": "torch"}', path) == ("torch", path, "torch")
    assert resolve_backend(None, "not json", path)[0] == "tensorflow"
    assert resolve_backend(None, None, path)[0] == "tensorflow"


def test_check_backend():
    packages = {"keras": "3.15.1", "tensorflow-cpu": "2.21.0", "torch": "2.13.0"}
    ok = check_backend("tensorflow", "KERAS_BACKEND", None, packages)
    assert ok.status == OK and "tensorflow-cpu 2.21.0" in ok.message

    typo = check_backend("pytorch", "KERAS_BACKEND", None, packages)
    assert typo.status == FAIL
    assert "Did you mean 'torch'" in typo.message
    assert typo.fix.startswith("export KERAS_BACKEND=torch")

    missing = check_backend("jax", "KERAS_BACKEND", None, packages)
    assert missing.status == FAIL
    assert "pip install jax" in missing.fix
    assert "# or: export KERAS_BACKEND=tensorflow" in missing.fix
    default = check_backend("tensorflow", KERAS_DEFAULT_SOURCE, None, {})
    assert default.status == FAIL
    assert "neither KERAS_BACKEND nor keras.json" in default.message

    assert check_backend("numpy", "KERAS_BACKEND", None, {"numpy": "2"}).status == WARN


def test_keras_two_and_legacy_keras():
    assert check_keras("2.15.0", {})[0].status == FAIL
    assert check_keras(None, {})[0].status == FAIL
    checks = check_keras("3.15.1", {"TF_USE_LEGACY_KERAS": "1"})
    assert [c.status for c in checks] == [OK, WARN]


def test_python_version():
    assert check_python("3.9.18").status == FAIL
    assert check_python("3.12.3").status == OK


def test_backends_to_probe():
    packages = {"keras": "3", "tensorflow-cpu": "2.21", "torch": "2.13"}
    assert backends_to_probe(None, "torch", packages) == ["torch"]
    assert backends_to_probe("all", "torch", packages) == ["tensorflow", "torch"]
    assert backends_to_probe(None, "jax", packages) == []  # not installed
    assert backends_to_probe(None, "torch", {"torch": "2"}) == []  # no keras


# --- the GPU as the driver and the backend see it --------------------------------------------


def _h100(**kw) -> NvidiaFacts:
    gpu = GpuInfo(0, "NVIDIA H100 80GB HBM3", 80 * GIB, 0, "9.0", "GPU-1")
    values = dict(source="nvml", driver_version="580.159.04", driver_cuda="13.0", gpus=[gpu])
    values.update(kw)
    return NvidiaFacts(**values)


def test_no_gpu_is_information_not_a_failure():
    checks = check_nvidia(NvidiaFacts(), nvml_installed=False)
    assert [(c.id, c.status) for c in checks] == [("nvidia", INFO)]
    assert "no NVIDIA GPU visible" in checks[0].message


def test_driver_without_device_nodes_means_a_container_without_gpus():
    checks = check_nvidia(NvidiaFacts(kernel_module=True), nvml_installed=False)
    assert checks[0].status == WARN
    assert "--gpus all" in checks[0].fix


def test_gpu_seen_and_nvml_suggested():
    checks = check_nvidia(_h100(), nvml_installed=False)
    assert checks[0].status == OK
    assert "NVIDIA H100 80GB HBM3, 80 GiB, sm_90" in checks[0].message
    assert "CUDA ≤ 13.0" in checks[0].message
    assert checks[1].id == "nvml" and "nvidia-ml-py" in checks[1].fix


def test_gpu_visibility_variables():
    hidden = check_gpu_visibility({"CUDA_VISIBLE_DEVICES": ""}, 2, "torch")
    assert [c.status for c in hidden] == [FAIL]
    beyond = check_gpu_visibility({"CUDA_VISIBLE_DEVICES": "0,3"}, 2, "torch")
    assert [c.status for c in beyond] == [WARN]
    jax_cpu = check_gpu_visibility({"JAX_PLATFORMS": "cpu"}, 1, "jax")
    assert [c.id for c in jax_cpu] == ["jax-platforms"]
    assert check_gpu_visibility({"JAX_PLATFORMS": "cpu"}, 1, "torch") == []
    assert check_gpu_visibility({"CUDA_VISIBLE_DEVICES": ""}, 0, "torch") == []


def test_other_gpu_processes():
    processes = [GpuProcess(1, "python", 0, 30 * GIB), GpuProcess(2, "me", 0, 1)]
    check = check_gpu_processes(processes, own_pids=[2])
    assert check.status == WARN and "30.0 GiB" in check.message and "pid 1" in check.message
    assert check_gpu_processes(processes[1:], own_pids=[2]) is None


def _probe(device="cuda:0", gpu_count=1, **kw):
    probe = {
        "backend": "jax",
        "devices": [device],
        "gpu_count": gpu_count,
        "matmul": {
            "size": 4096,
            "device": device,
            "first_s": 0.5,
            "seconds": 0.003,
            "gflops": 45000.0,
            "value": 4096.0,
            "correct": True,
        },
    }
    probe.update(kw)
    return probe


def test_matmul_on_the_gpu():
    assert check_backend_devices(_probe(), 1).status == OK
    check = check_matmul(_probe(), 1)
    assert check.status == OK and "45.0 TFLOP/s" in check.message and "cuda:0" in check.message


def test_matmul_on_the_cpu_while_a_gpu_is_there_fails():
    probe = _probe("TFRT_CPU_0", gpu_count=0)
    probe["stderr_tail"] = (
        "WARNING: An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is "
        "not installed. Falling back to cpu."
    )
    devices = check_backend_devices(probe, 1)
    assert devices.status == FAIL and "no CUDA plugin" in devices.message
    assert check_matmul(probe, 1).status == FAIL


def test_matmul_on_the_cpu_without_a_gpu_is_information():
    probe = _probe("/job:localhost/replica:0/task:0/device:CPU:0", gpu_count=0)
    assert check_backend_devices(probe, 0).status == INFO
    check = check_matmul(probe, 0)
    assert check.status == INFO and "ran on CPU:0" in check.message


def test_wrong_matmul_result_fails():
    probe = _probe()
    probe["matmul"] = {**probe["matmul"], "value": 17.0, "correct": False}
    assert check_matmul(probe, 1).status == FAIL


def test_failed_probe():
    probe = {"backend": "torch", "error": "crashed with SIGSEGV", "stage": "start-up"}
    check = check_backend_devices(probe, 1)
    assert check.status == FAIL and "SIGSEGV" in check.message
    assert check_matmul(probe, 1) is None


def test_failed_probe_suggests_the_install_the_error_names():
    error = "ImportError: To use Keras, you need to have `optree` installed. Install it via `pip install optree`"
    probe = {"backend": "jax", "error": error, "stage": "import keras"}
    assert check_backend_devices(probe, 0).fix == "pip install optree"
    probe["error"] = "ModuleNotFoundError: run pip install foo, then retry"
    assert check_backend_devices(probe, 0).fix == "pip install foo"
    probe["error"] = "RuntimeError: no advice here"
    fix = check_backend_devices(probe, 0).fix
    assert fix.startswith('KERAS_BACKEND=jax python -c "import keras') and "pip" not in fix


def test_devices_fix_points_at_the_cause():
    hidden = _facts(nvidia=_h100(), env={"CUDA_VISIBLE_DEVICES": "-1"})
    checks = {c.id: c for c in evaluate(hidden)}
    assert "CUDA_VISIBLE_DEVICES" in checks["devices-jax"].fix
    assert "jax build" in checks["devices-jax"].fix


def test_device_names():
    assert device_kind("cuda:0") == "gpu"
    assert device_kind("/job:localhost/replica:0/task:0/device:GPU:0") == "gpu"
    assert device_kind("TFRT_CPU_0") == "cpu"
    assert device_kind("TPU_0(process=0)") == "tpu"
    assert short_device("/job:localhost/replica:0/task:0/device:GPU:0") == "GPU:0"
    assert short_device("/physical_device:CPU:0") == "CPU:0"
    assert short_device("cuda:0") == "cuda:0"


def test_stderr_hints():
    hints = stderr_hints("noise\nI0000 Could not find cuda drivers on your machine\n")
    assert len(hints) == 1 and "no CUDA driver" in hints[0]
    assert stderr_hints("all fine") == []


# --- threads and CPUs -----------------------------------------------------------------------


def _threads(env=None, **kw):
    values = dict(cores_usable=8, cores_logical=8, cpu_quota_cores=None, gpu_count=0)
    values.update(kw)
    return check_threads(env=env or {}, **values)


def test_default_threads_are_fine():
    checks = _threads()
    assert [(c.id, c.status) for c in checks] == [("threads", OK)]
    assert "8 usable core(s)" in checks[0].message


def test_oversubscribed_threads():
    checks = _threads({"OMP_NUM_THREADS": "32"})
    assert [c.status for c in checks] == [WARN]
    assert checks[0].fix == "export OMP_NUM_THREADS=8"


def test_affinity_limits_the_cores():
    checks = _threads({"OMP_NUM_THREADS": "8"}, cores_usable=4)
    assert checks[0].status == WARN and "4 usable core(s)" in checks[0].message


def test_container_quota_without_thread_settings():
    checks = _threads(cpu_quota_cores=2.0)
    assert [c.title for c in checks] == ["CPU quota"]
    assert "OMP_NUM_THREADS=2" in checks[0].fix


def test_single_thread_trainer():
    assert _threads({"OMP_NUM_THREADS": "1"})[0].status == WARN
    assert _threads({"OMP_NUM_THREADS": "1"}, gpu_count=1)[0].status == INFO
    assert _threads({"OMP_NUM_THREADS": "1"}, cores_usable=1)[0].status == OK


def test_bad_thread_values_and_framework_pools():
    assert _threads({"OMP_NUM_THREADS": "four"})[0].status == WARN
    assert _threads(torch_threads=16)[0].title == "torch threads"
    assert _threads(tf_intra_op=16)[0].title == "TF intra-op"
    assert _threads(tf_intra_op=0, tf_inter_op=0)[0].status == OK


def test_effective_cores():
    assert effective_cores(16, None) == 16
    assert effective_cores(16, 2.5) == 2
    assert effective_cores(1, 8.0) == 1
    assert effective_cores(4, 0.5) == 1


def test_cpu_load():
    assert check_cpu_load(3.5, 2).status == WARN
    assert check_cpu_load(0.3, 2).status == OK
    # the doctor's rule (cpu-contention): half a core of 2 taken by others is contention
    assert check_cpu_load(0.5, 2).status == WARN
    # a CPU sample decides when there is one, with the doctor's thresholds and words
    high = check_cpu_load(0.1, 2, other_cores=1.2, busy_fraction=0.95)
    assert high.status == WARN and "HIGH" in high.message
    assert check_cpu_load(3.0, 2, other_cores=0.2, busy_fraction=0.3).status == OK
    assert check_cpu_load(None, 2) is None


# --- memory ---------------------------------------------------------------------------------


def _memory(backend, env=None, gpu_count=1, cuda=(), busy=0):
    return check_gpu_memory(
        backend=backend,
        env=env or {},
        gpu_count=gpu_count,
        cuda_frameworks=cuda,
        other_gpu_processes=busy,
    )


def test_gpu_memory_without_a_gpu():
    assert [c.status for c in _memory("jax", gpu_count=0)] == [INFO]


def test_gpu_memory_tensorflow():
    alone = _memory("tensorflow", cuda=["tensorflow"])[0]
    assert alone.status == INFO and alone.fix == "export TF_FORCE_GPU_ALLOW_GROWTH=true"
    assert _memory("tensorflow", cuda=["tensorflow", "torch"])[0].status == INFO
    busy = _memory("tensorflow", cuda=["tensorflow"], busy=2)[0]
    assert busy.status == WARN and "2 other process(es)" in busy.message
    grown = _memory("tensorflow", {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}, cuda=["tensorflow"])
    assert grown[0].status == OK
    assert _memory("tensorflow", {"TF_FORCE_GPU_ALLOW_GROWTH": "1"})[0].status == WARN


def test_gpu_memory_jax_next_to_another_framework():
    shared = _memory("jax", cuda=["jax", "tensorflow"])[0]
    assert shared.status == INFO and "75%" in shared.message and "25%" in shared.message
    assert 'tf.config.set_visible_devices([], "GPU")' in shared.fix
    assert _memory("jax", cuda=["jax", "tensorflow"], busy=1)[0].status == WARN
    alone = _memory("jax", cuda=["jax"])[0]
    assert alone.status == INFO and alone.fix == ""
    off = _memory("jax", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, cuda=["jax", "torch"])
    assert off[0].status == OK
    bad = _memory("jax", {"XLA_PYTHON_CLIENT_MEM_FRACTION": "75"}, cuda=["jax"])
    assert bad[0].status == FAIL


def test_gpu_memory_torch():
    assert _memory("torch", cuda=["torch"])[0].status == OK
    with_jax = _memory("torch", cuda=["torch", "jax"])[0]
    assert with_jax.status == INFO and with_jax.fix == "export XLA_PYTHON_CLIENT_PREALLOCATE=false"


def test_gpu_memory_for_a_backend_that_is_not_installed():
    assert _memory("", cuda=["torch"]) == []


def test_shm():
    small = check_shm(64 * MIB, 64 * MIB)
    assert small.status == WARN and "--shm-size" in small.fix and "memfd" in small.message
    assert check_shm(16 * GIB, 16 * GIB).status == OK
    assert check_shm(None, None).status == INFO


def _host(**kw) -> HostFacts:
    values = dict(
        system="Linux",
        machine="x86_64",
        cores_logical=2,
        cores_physical=1,
        cores_usable=2,
        cpu_quota_cores=None,
        load_avg_1m=0.1,
        memory_total_bytes=8 * GIB,
        memory_available_bytes=6 * GIB,
        memory_limit_bytes=None,
        shm_total_bytes=4 * GIB,
        shm_free_bytes=4 * GIB,
    )
    values.update(kw)
    return HostFacts(**values)


def test_host_memory():
    checks = {c.id: c for c in check_host(_host())}
    assert checks["cpu"].status == INFO and checks["memory"].status == OK
    low = {c.id: c for c in check_host(_host(memory_available_bytes=GIB))}
    assert low["memory"].status == WARN
    limited = {c.id: c for c in check_host(_host(memory_limit_bytes=2 * GIB))}
    assert "cgroup limit" in limited["memory"].message


# --- parsers --------------------------------------------------------------------------------


def test_parse_build_info():
    source = (
        '"""Auto-generated."""\nimport collections\n\n'
        "build_info = collections.OrderedDict([('cpu_compiler', '/usr/bin/clang'), "
        "('cuda_compute_capabilities', ['sm_60', 'compute_90']), ('cuda_version', '12.5.1'), "
        "('cudnn_version', '9'), ('is_cuda_build', True), ('is_rocm_build', False)])\n"
    )
    info = parse_build_info(source)
    assert info["cuda_version"] == "12.5.1" and info["is_cuda_build"] is True
    assert parse_build_info("x = 1") == {}


def test_parse_torch_version_file():
    source = (
        "from typing import Optional\n__version__ = '2.13.0+cu126'\ndebug = False\n"
        "cuda: Optional[str] = '12.6'\nhip: Optional[str] = None\n"
    )
    assert parse_torch_version_file(source) == {
        "version": "2.13.0+cu126",
        "debug": False,
        "cuda": "12.6",
        "hip": None,
    }


def test_parse_nvidia_smi():
    gpus = parse_nvidia_smi_gpus(
        "0, NVIDIA H100 80GB HBM3, GPU-aa, 81559, 120, 9.0\n1, Tesla T4, GPU-bb, 15360, [N/A], 7.5\n"
    )
    assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3", "Tesla T4"]
    assert gpus[0].memory_total_bytes == 81559 * MIB
    assert gpus[1].memory_used_bytes is None and gpus[1].compute_capability == "7.5"
    apps = parse_nvidia_smi_apps("4242, python, 30000, GPU-bb\n", {"GPU-bb": 1})
    assert apps == [GpuProcess(4242, "python", 1, 30000 * MIB)]
    banner = "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0 |"
    assert parse_nvidia_smi_header(banner) == ("580.159.04", "13.0")
    assert parse_nvidia_smi_header("") == (None, None)


# What nvidia-smi prints, recorded in the formats of drivers 450-580 (the banner's layout
# changed at 545; the CSV queries did not). A real program on PATH prints it, so the fallback
# is read through the same subprocess calls as on a GPU machine.
_SMI_GPUS = (
    "0, NVIDIA H100 80GB HBM3, GPU-5f2c1a8e-77b0-4c1e-9d2a-0c3e6b1f4a10, 81559, 30221, 9.0\n"
    "1, NVIDIA H100 80GB HBM3, GPU-a1d0e3b4-2c9f-4e07-8b6a-5d4c3b2a1908, 81559, 1, 9.0\n"
)
_SMI_APPS = "31337, /usr/bin/python3, 30208, GPU-5f2c1a8e-77b0-4c1e-9d2a-0c3e6b1f4a10\n"
_SMI_BANNER = (
    "Tue Dec  1 09:14:02 2026       \n"
    "+-----------------------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"
    "|-----------------------------------------+------------------------+----------------------+\n"
)
_SMI_BANNER_OLD = (
    "+-----------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 470.57.02    Driver Version: 470.57.02    CUDA Version: 11.4     |\n"
    "|-------------------------------+----------------------+----------------------+\n"
)
_SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running.\n"
)


def _nvidia_smi_on_path(monkeypatch, tmp_path, banner=_SMI_BANNER, fail=False):
    """An ``nvidia-smi`` program first on PATH that prints the recorded text, and no NVML
    (nvidia-ml-py refused as Python refuses a package that is not installed)."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"if {fail!r}:\n"
        f"    sys.stdout.write({_SMI_NO_DRIVER!r}); sys.exit(9)\n"
        "args = ' '.join(sys.argv[1:])\n"
        f"sys.stdout.write({_SMI_GPUS!r} if '--query-gpu' in args else {_SMI_APPS!r} "
        f"if '--query-compute-apps' in args else {banner!r})\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_nvidia_smi_is_the_fallback_without_nvml(monkeypatch, tmp_path):
    _nvidia_smi_on_path(monkeypatch, tmp_path)
    facts = gather_nvidia()
    assert facts.source == "nvidia-smi" and not facts.nvml_available and facts.error is None
    assert (facts.driver_version, facts.driver_cuda) == ("550.54.15", "12.4")
    assert [(g.index, g.name, g.compute_capability) for g in facts.gpus] == [
        (0, "NVIDIA H100 80GB HBM3", "9.0"),
        (1, "NVIDIA H100 80GB HBM3", "9.0"),
    ]
    assert facts.gpus[0].memory_total_bytes == 81559 * MIB
    assert facts.processes == [GpuProcess(31337, "/usr/bin/python3", 0, 30208 * MIB)]
    assert check_nvidia(facts, nvml_installed=False)[0].status == OK


def test_nvidia_smi_banner_before_driver_545(monkeypatch, tmp_path):
    _nvidia_smi_on_path(monkeypatch, tmp_path, banner=_SMI_BANNER_OLD)
    facts = gather_nvidia()
    assert (facts.driver_version, facts.driver_cuda) == ("470.57.02", "11.4")


def test_nvidia_smi_without_a_driver_is_no_gpu(monkeypatch, tmp_path):
    if os.path.exists("/proc/driver/nvidia/version"):
        pytest.skip("a driver is loaded here: its failure would rightly be an error")
    _nvidia_smi_on_path(monkeypatch, tmp_path, fail=True)
    facts = gather_nvidia()
    assert facts.gpus == [] and facts.error is None  # no driver: nothing is broken
    assert check_nvidia(facts, nvml_installed=False)[0].status == INFO


def test_this_machine_without_a_driver_has_no_gpu_and_no_error():
    if os.path.exists("/proc/driver/nvidia/version"):
        pytest.skip("an NVIDIA driver is loaded here")
    facts = gather_nvidia()  # NVML or not, nvidia-smi or not: whatever this machine has
    assert facts.gpus == [] and facts.error is None, facts
    assert not facts.nvml_available
    checks = check_nvidia(facts, nvml_installed=False)
    assert checks[0].status == INFO and "no NVIDIA GPU visible" in checks[0].message


class _FakeProcess:
    def __init__(self, pid, used):
        self.pid, self.usedGpuMemory = pid, used


class _FakeMemory:
    total, used = 80 * GIB, 2 * GIB


def _fake_nvml(fail_init=False) -> types.ModuleType:
    """The calls of nvidia-ml-py that stoke env makes, answering like one H100 would."""
    nvml = types.ModuleType("pynvml")

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlSystemGetDriverVersion = lambda: b"580.159.04"  # old versions return bytes
    nvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: 13000
    nvml.nvmlDeviceGetCount = lambda: 1
    nvml.nvmlDeviceGetHandleByIndex = lambda index: ("handle", index)
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: _FakeMemory()
    nvml.nvmlDeviceGetCudaComputeCapability = lambda handle: (9, 0)
    nvml.nvmlDeviceGetUUID = lambda handle: "GPU-1"
    nvml.nvmlDeviceGetName = lambda handle: "NVIDIA H100 80GB HBM3"
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda handle: [_FakeProcess(4242, 30 * GIB)]
    nvml.nvmlSystemGetProcessName = lambda pid: "/usr/bin/python3"
    return nvml


def test_gather_nvidia_through_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    facts = gather_nvidia()
    assert facts.source == "nvml" and facts.nvml_available
    assert (facts.driver_version, facts.driver_cuda) == ("580.159.04", "13.0")
    assert facts.gpus == [GpuInfo(0, "NVIDIA H100 80GB HBM3", 80 * GIB, 2 * GIB, "9.0", "GPU-1")]
    assert facts.processes == [GpuProcess(4242, "python3", 0, 30 * GIB)]


def test_nvml_without_a_driver_is_no_gpu_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_init=True))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    facts = gather_nvidia()
    assert facts.gpu_count == 0 and facts.error is None
    assert check_nvidia(facts, nvml_installed=True)[0].status == INFO


def test_nvml_failing_next_to_a_loaded_driver_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_init=True))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os.path, "exists", lambda path: path == "/proc/driver/nvidia/version")
    facts = gather_nvidia()
    assert facts.error == "NVML: RuntimeError: NVML Shared Library Not Found"
    assert facts.kernel_module and not facts.nvml_available


def test_parse_cpu_max():
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("max 100000") is None
    assert parse_cpu_max("") is None


# --- facts -> checks -> renderers -------------------------------------------------------------


def _facts(**kw) -> EnvFacts:
    values = dict(
        python_version="3.11.7",
        python_executable=sys.executable,
        packages={
            "keras": "3.15.1",
            "tensorflow-cpu": "2.21.0",
            "jax": "0.10.2",
            "jaxlib": "0.10.2",
        },
        backend="jax",
        backend_source="KERAS_BACKEND",
        keras_json_backend=None,
        env={},
        tf_build={"is_cuda_build": False},
        torch_build=None,
        host=_host(),
        nvidia=NvidiaFacts(),
        probes=[_probe("TFRT_CPU_0", gpu_count=0)],
    )
    values.update(kw)
    return EnvFacts(**values)


def test_a_cpu_only_machine_has_no_failures():
    checks = evaluate(_facts(), ">=0.10.1,<=0.10.2")
    assert not [c for c in checks if c.status == FAIL]
    ids = [c.id for c in checks]
    for expected in (
        "python",
        "keras",
        "backend",
        "nvidia",
        "devices-jax",
        "matmul-jax",
        "threads",
        "gpu-memory",
        "shm",
        "cpu",
        "memory",
    ):
        assert expected in ids
    assert worst_status(checks) in (OK, INFO)


def test_a_gpu_machine_with_cpu_builds_fails():
    facts = _facts(nvidia=_h100())
    checks = {c.id: c for c in evaluate(facts)}
    assert checks["jax-build"].status == FAIL
    assert checks["tensorflow-build"].status == WARN  # not the active backend
    assert checks["devices-jax"].status == FAIL
    assert checks["matmul-jax"].status == FAIL


def test_check_rejects_unknown_status():
    with pytest.raises(ValueError, match="Received: status='bad'"):
        Check("x", "x", "bad", "message")


def test_json_is_versioned_and_round_trips(tmp_path):
    facts = _facts(nvidia=_h100())
    checks = evaluate(facts)
    payload = to_json(facts, checks)
    text = json.dumps(payload)
    loaded = json.loads(text)
    assert loaded["schema_version"] == ENV_SCHEMA_VERSION
    assert loaded["status"] == FAIL
    assert loaded["counts"][FAIL] >= 1
    assert {"id", "title", "status", "message", "fix", "evidence"} <= set(loaded["checks"][0])
    assert loaded["facts"]["nvidia"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"


def test_render_keeps_brackets_in_fixes():
    facts = _facts(nvidia=_h100())
    checks = evaluate(facts)
    out = io.StringIO()
    render(facts, checks, Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert "jax[cuda13]==0.10.2" in text
    assert "jax build" in text and "fail" in text
    assert "failed" in text.splitlines()[-1]


# --- the command, without a backend ---------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_without_probe_writes_json(tmp_path, capsys):
    path = tmp_path / "env.json"
    code = main(_args("--no-probe", "--json", str(path)))
    payload = json.loads(path.read_text())
    assert code == (1 if payload["status"] == FAIL else 0)
    assert payload["facts"]["probes"] == []
    assert payload["facts"]["python_version"]
    out = capsys.readouterr().out
    assert "stoke env" in out and f"wrote {path}" in out


def test_command_rejects_a_bad_timeout():
    with pytest.raises(SystemExit, match="Received: -1"):
        main(_args("--probe-timeout-s", "-1"))


def test_gathering_imports_no_framework():
    code = (
        "import sys; from stoke.envcheck.gather import gather_facts; "
        "from stoke.envcheck.checks.evaluate import evaluate; "
        "facts = gather_facts(probe=False); evaluate(facts); "
        "heavy = {'tensorflow', 'torch', 'jax', 'keras'} & set(sys.modules); "
        "assert not heavy, heavy; print(facts.gather_s)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(stoke.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 5.0


def test_a_crashing_probe_is_reported():
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    result = RunningProbe("torch", timeout_s=30, code=crash).result()
    assert "SIGSEGV" in result["error"]
    assert check_backend_devices(result, 0).status == FAIL


def test_a_hanging_probe_is_killed():
    probe = RunningProbe("jax", timeout_s=1, code="import time; time.sleep(60)")
    result = probe.result()
    assert "did not finish within 1 s" in result["error"]
    assert probe.process.poll() is not None


def test_json_without_a_path_prints_to_stdout():
    """README: `stoke env --json` (a bare flag) prints the JSON, nothing else, to stdout."""
    out = subprocess.run([sys.executable, "-m", "stoke", "env", "--no-probe", "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode in (0, 1), out.stderr
    payload = json.loads(out.stdout)
    assert payload["schema_version"] >= 1
    load = next(c for c in payload["checks"] if c["id"] == "cpu-load")
    assert load["evidence"]["contention"] in ("none", "low", "high")


def test_json_into_a_folder_that_does_not_exist_yet(tmp_path):
    path = tmp_path / "reports" / "env" / "env.json"
    out = subprocess.run([sys.executable, "-m", "stoke", "env", "--no-probe", "--json", str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert json.loads(path.read_text())["schema_version"] >= 1
