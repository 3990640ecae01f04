"""Gathering (impure): what ``stoke env`` reads off this machine into an :class:`EnvFacts`.

Owns: package metadata, the build files the framework wheels ship (read without importing
the framework), keras.json, the NVIDIA driver (NVML through :mod:`stoke.nvml` when
nvidia-ml-py is installed and NVML starts, else ``nvidia-smi``'s text), the host (CPU affinity, cgroup CPU and memory limits, load, memory,
``/dev/shm``), which backends to probe, and :func:`gather_facts`, which starts the first
backend probe and examines the host and the driver while it runs. Nothing heavy is imported
here. Leaves to others: parsing what it reads (:mod:`.parsers`), the backend's child process
(:mod:`.probe`), judging the facts (:mod:`.checks`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from stoke.envcheck.facts import (
    ENV_VARS,
    PACKAGES,
    TRAINING_BACKENDS,
    EnvFacts,
    GpuInfo,
    GpuProcess,
    HostFacts,
    NvidiaFacts,
    framework_distribution,
)
from stoke.envcheck.parsers import (
    parse_build_info,
    parse_cpu_max,
    parse_nvidia_smi_apps,
    parse_nvidia_smi_gpus,
    parse_nvidia_smi_header,
    parse_torch_version_file,
    resolve_backend,
)
from stoke.envcheck.probe import RunningProbe
from stoke.envcheck.versions import cuda_from_nvml
from stoke.executors.host import available_cores
from stoke.nvml import NvmlUnavailable
from stoke.nvml import session as nvml_session
from stoke.nvml import text as nvml_text


def installed_packages(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def jax_jaxlib_requirement() -> str | None:
    """The jaxlib specifier in jax's own metadata ("<=0.10.2,>=0.10.1"), or None: the
    requirement without a marker (those with one, such as ``extra == "cuda"``, are for extras)."""
    try:
        requires = importlib.metadata.requires("jax") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.name == "jaxlib" and requirement.marker is None and requirement.specifier:
            return str(requirement.specifier)
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
    """The driver's view: NVML (:mod:`stoke.nvml`) when nvidia-ml-py is installed and NVML
    starts, else the text ``nvidia-smi`` prints, as a fallback. Failing to reach a driver that
    is not there is no error: ``error`` is kept only when the kernel module or the device
    nodes say a driver exists."""
    facts = NvidiaFacts(
        kernel_module=os.path.exists("/proc/driver/nvidia/version"),
        device_nodes=any(os.path.exists(f"/dev/nvidia{i}") for i in range(16)),
    )
    try:
        with nvml_session() as nvml:
            _read_nvml(nvml, facts)
        return facts
    except NvmlUnavailable as why:  # no bindings: nothing to say; no driver: keep the reason
        if why.installed:
            facts.error = f"NVML: {why}"
    except Exception as error:  # NVMLError_* while reading: fall back, keep the reason
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


def _read_nvml(nvml: Any, facts: NvidiaFacts) -> None:
    """The driver version, each GPU and the processes on it, from an open NVML session."""
    facts.nvml_available = True
    facts.source = "nvml"
    facts.driver_version = nvml_text(nvml.nvmlSystemGetDriverVersion())
    with contextlib.suppress(Exception):
        facts.driver_cuda = cuda_from_nvml(nvml.nvmlSystemGetCudaDriverVersion_v2())
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        capability = None
        with contextlib.suppress(Exception):
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            capability = f"{major}.{minor}"
        uuid = None
        with contextlib.suppress(Exception):
            uuid = nvml_text(nvml.nvmlDeviceGetUUID(handle))
        facts.gpus.append(
            GpuInfo(
                index=index,
                name=nvml_text(nvml.nvmlDeviceGetName(handle)),
                memory_total_bytes=int(memory.total),
                memory_used_bytes=int(memory.used),
                compute_capability=capability,
                uuid=uuid,
            )
        )
        with contextlib.suppress(Exception):
            for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                name = ""
                with contextlib.suppress(Exception):
                    name = nvml_text(nvml.nvmlSystemGetProcessName(process.pid))
                used = getattr(process, "usedGpuMemory", None)
                facts.processes.append(
                    GpuProcess(
                        pid=int(process.pid),
                        name=os.path.basename(name),
                        gpu_index=index,
                        used_bytes=int(used) if used else None,
                    )
                )


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
    usable = available_cores()
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
    other_cores, busy = _cpu_sample(usable)
    return HostFacts(
        other_processes_cores=other_cores,
        machine_busy_fraction=busy,
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


def _cpu_sample(cores: int, seconds: float = 0.5) -> tuple[float | None, float | None]:
    """Cores kept busy by other processes, and the machine's busy share, over ``seconds``: the
    same quantities the doctor samples during a run (``cpu_other_pct``; niced work, which
    yields to a run at normal priority, is not counted), so that both judge contention on the
    same numbers."""
    import psutil

    from stoke.diagnosis.measure.core_load import CoreLoadMeter

    try:
        own = psutil.Process()
        own.cpu_percent(None)
        meter = CoreLoadMeter()
        time.sleep(seconds)
        busy_pct = meter.read().competing_pct
        own_pct = own.cpu_percent(None)
    except Exception:
        return None, None
    if not busy_pct:
        return None, None
    busy_cores = sum(busy_pct) / 100.0
    other = max(0.0, busy_cores - own_pct / 100.0)
    return round(other, 2), round(min(1.0, busy_cores / max(1, len(busy_pct))), 3)
