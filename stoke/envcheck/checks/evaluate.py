"""Runs every check of ``stoke env`` on one :class:`~stoke.envcheck.facts.EnvFacts`, in the
order they are printed, and says which status is the worst.

Owns: the order of the checks (the stack, the driver and its GPUs, the framework builds, the
backend at work, threads and CPU load, GPU memory settings, the host) and which facts each
group is given. A new check is a ``check_*`` function in the module of its group (see
:mod:`stoke.envcheck.checks`) and one call here, where it is to be printed.
Leaves to others: the decisions themselves (the group modules), gathering the facts
(:mod:`stoke.envcheck.gather`) and printing (:mod:`stoke.envcheck.report`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from stoke.envcheck.checks.builds import cuda_frameworks, framework_build_checks
from stoke.envcheck.checks.cpu import check_cpu_load, check_threads
from stoke.envcheck.checks.devices import check_backend_devices, check_matmul, devices_fix
from stoke.envcheck.checks.gpu import check_gpu_processes, check_gpu_visibility, check_nvidia
from stoke.envcheck.checks.gpu_memory import check_gpu_memory
from stoke.envcheck.checks.host import check_host, check_shm
from stoke.envcheck.checks.stack import check_backend, check_keras, check_packages, check_python
from stoke.envcheck.facts import OK, STATUSES, Check, EnvFacts, framework_distribution


def evaluate(facts: EnvFacts, jax_requires_jaxlib: str | None = None) -> list[Check]:
    """All checks, in the order they are printed: the stack, the GPU, the backend at work,
    threads, memory. ``jax_requires_jaxlib`` is the jaxlib specifier jax pins
    (:func:`stoke.envcheck.gather.jax_jaxlib_requirement`), None when unknown."""
    gpu_count = facts.nvidia.gpu_count
    checks: list[Check] = [check_python(facts.python_version)]
    checks += check_keras(facts.packages.get("keras"), facts.env)
    checks.append(
        check_backend(facts.backend, facts.backend_source, facts.keras_json_backend, facts.packages)
    )
    checks += check_packages(facts.packages, jax_requires_jaxlib)
    checks += check_nvidia(facts.nvidia, "nvidia-ml-py" in facts.packages)
    checks += check_gpu_visibility(facts.env, gpu_count, facts.backend)
    checks += framework_build_checks(facts)
    processes = check_gpu_processes(facts.nvidia.processes, own_pids=[os.getpid()])
    if processes:
        checks.append(processes)
    for probe in facts.probes:
        checks.append(check_backend_devices(probe, gpu_count, devices_fix(facts, probe, checks)))
        matmul = check_matmul(probe, gpu_count)
        if matmul:
            checks.append(matmul)
    threads = {}
    for probe in facts.probes:
        threads.update({k: v for k, v in (probe.get("threads") or {}).items() if v is not None})
    checks += check_threads(
        cores_usable=facts.host.cores_usable,
        cores_logical=facts.host.cores_logical,
        cpu_quota_cores=facts.host.cpu_quota_cores,
        env=facts.env,
        gpu_count=gpu_count,
        torch_threads=threads.get("torch_num_threads"),
        tf_intra_op=threads.get("tf_intra_op"),
        tf_inter_op=threads.get("tf_inter_op"),
    )
    load = check_cpu_load(
        facts.host.load_avg_1m,
        facts.host.cores_effective,
        facts.host.other_processes_cores,
        facts.host.machine_busy_fraction,
    )
    if load:
        checks.append(load)
    checks += check_gpu_memory(
        backend=facts.backend if framework_distribution(facts.backend, facts.packages) else "",
        env=facts.env,
        gpu_count=gpu_count,
        cuda_frameworks=cuda_frameworks(facts),
        other_gpu_processes=len([p for p in facts.nvidia.processes if p.pid != os.getpid()]),
    )
    checks.append(check_shm(facts.host.shm_total_bytes, facts.host.shm_free_bytes))
    checks += check_host(facts.host)
    return checks


def worst_status(checks: Iterable[Check]) -> str:
    """The most serious status among ``checks`` (``ok`` when there are none)."""
    return max((c.status for c in checks), key=STATUSES.index, default=OK)
