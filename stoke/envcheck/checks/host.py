"""The host's shared resources as this process may use them: ``/dev/shm``, the CPU count and
memory.

Owns: :func:`check_shm` (a small ``/dev/shm`` breaks other loaders, not stoke's memfd ring)
and :func:`check_host` (cores, affinity, cgroup quota; memory, its cgroup limit and what is
available).
Leaves to others: threads and CPU load against those cores (:mod:`.cpu`).
"""

from __future__ import annotations

import dataclasses

from stoke.envcheck.facts import GIB, INFO, MIB, OK, WARN, Check, HostFacts


def check_shm(total_bytes: int | None, free_bytes: int | None) -> Check:
    """A small /dev/shm (docker's default is 64 MiB) breaks loaders that pass batches through
    it: torch DataLoader workers ("Bus error"), multiprocessing queues, Keras PyDataset with
    processes. stoke's ring uses memfd, not /dev/shm."""
    evidence = {"total_bytes": total_bytes, "free_bytes": free_bytes}
    unaffected = "stoke itself is unaffected: its worker ring uses memfd, not /dev/shm."
    if total_bytes is None:
        return Check(
            "shm", "/dev/shm", INFO, f"no /dev/shm on this system. {unaffected}", "", evidence
        )
    size = f"{total_bytes / GIB:.1f} GiB" if total_bytes >= GIB else f"{total_bytes / MIB:.0f} MiB"
    free = free_bytes if free_bytes is not None else total_bytes
    if total_bytes < GIB or free < 512 * MIB:
        return Check(
            "shm",
            "/dev/shm",
            WARN,
            f"/dev/shm is {size} ({free / MIB:.0f} MiB free): torch DataLoader workers, "
            "multiprocessing queues and PyDataset(use_multiprocessing=True) fail with 'Bus error' "
            f"or 'No space left on device' on large batches. {unaffected}",
            "docker run --shm-size=8g ...   # or --ipc=host; Kubernetes: an emptyDir with "
            "medium: Memory at /dev/shm",
            evidence,
        )
    return Check(
        "shm",
        "/dev/shm",
        OK,
        f"/dev/shm is {size} ({free / GIB:.1f} GiB free). {unaffected}",
        "",
        evidence,
    )


def check_host(host: HostFacts) -> list[Check]:
    """CPU count and memory, as the process may use them."""
    physical = f", {host.cores_physical} physical" if host.cores_physical else ""
    usable = (
        f", {host.cores_usable} usable (affinity)" if host.cores_usable < host.cores_logical else ""
    )
    quota = f", cgroup quota {host.cpu_quota_cores:g}" if host.cpu_quota_cores else ""
    evidence = dataclasses.asdict(host)
    checks = [
        Check(
            "cpu",
            "CPUs",
            INFO,
            f"{host.cores_logical} logical core(s){physical}{usable}{quota}",
            "",
            evidence,
        )
    ]
    total = host.memory_total_bytes
    limit = host.memory_limit_bytes
    available = host.memory_available_bytes
    if total is None:
        return checks
    usable_total = min(total, limit) if limit else total
    text = f"{usable_total / GIB:.1f} GiB"
    if limit and limit < total:
        text += f" (cgroup limit; the host has {total / GIB:.1f} GiB)"
    if available is not None:
        text += f", {available / GIB:.1f} GiB available"
    if available is not None and available < 2 * GIB:
        checks.append(
            Check(
                "memory",
                "memory",
                WARN,
                f"{text}: little room for prefetched batches and workers; the kernel may kill "
                "the run (OOM).",
                "free -h   # close other programs, or lower batch size / prefetch depth",
                evidence,
            )
        )
    else:
        checks.append(Check("memory", "memory", OK, text, "", evidence))
    return checks
