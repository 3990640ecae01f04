"""The CPUs as training uses them: thread settings against the usable cores, and other work
on the machine.

Owns: :func:`check_threads` (``OMP_NUM_THREADS`` and friends, a cgroup CPU quota the
frameworks do not see, torch's and TensorFlow's pools) and :func:`check_cpu_load` (contention,
judged as the doctor judges it).
Leaves to others: the host's core count and memory (:mod:`.host`), the contention levels
(:func:`stoke.diagnosis.judge.findings.contention_level`).
"""

from __future__ import annotations

from collections.abc import Mapping

from stoke.envcheck.facts import INFO, OK, WARN, Check, effective_cores

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def check_threads(
    *,
    cores_usable: int,
    cores_logical: int,
    cpu_quota_cores: float | None,
    env: Mapping[str, str],
    gpu_count: int,
    torch_threads: int | None = None,
    tf_intra_op: int | None = None,
    tf_inter_op: int | None = None,
) -> list[Check]:
    """Thread settings against the cores this process may use.

    Frameworks size their thread pools from the cores they see; a cgroup CPU quota (docker
    ``--cpus``) is not among them, so they oversubscribe a container. More threads than cores
    slow every op down; ``OMP_NUM_THREADS=1`` set globally (often copied from data-loader
    advice) makes the trainer's own CPU ops single-threaded. stoke limits BLAS/OpenMP threads
    inside its workers itself."""
    cores = effective_cores(cores_usable, cpu_quota_cores)
    evidence = {
        "cores_logical": cores_logical,
        "cores_usable": cores_usable,
        "cpu_quota_cores": cpu_quota_cores,
        "cores_effective": cores,
        "torch_threads": torch_threads,
        "tf_intra_op": tf_intra_op,
        "tf_inter_op": tf_inter_op,
        **{name: env[name] for name in _THREAD_VARS if name in env},
    }
    checks: list[Check] = []
    values: dict[str, int] = {}
    for name in _THREAD_VARS:
        raw = env.get(name)
        if raw is None:
            continue
        try:
            number = int(raw.strip())
            if number < 0:
                raise ValueError
        except ValueError:
            checks.append(
                Check(
                    "threads",
                    name,
                    WARN,
                    f"{name}={raw!r} is not a whole number of threads; it is ignored or, for "
                    "OpenMP, an error at start-up.",
                    f"export {name}={cores}",
                    evidence,
                )
            )
            continue
        values[name] = number
    for name, number in values.items():
        if number > cores:
            checks.append(
                Check(
                    "threads",
                    name,
                    WARN,
                    f"{name}={number} on {cores} usable core(s): threads oversubscribe the cores "
                    "and every CPU op slows down.",
                    f"export {name}={cores}",
                    evidence,
                )
            )
    if values.get("OMP_NUM_THREADS") == 1 and cores > 1:
        checks.append(
            Check(
                "threads",
                "OMP_NUM_THREADS",
                INFO if gpu_count else WARN,
                f"OMP_NUM_THREADS=1 makes the trainer's CPU ops single-threaded on {cores} cores "
                + (
                    "(minor while the model runs on the GPU)"
                    if gpu_count
                    else "(the model runs on the CPU here)"
                )
                + ". stoke already limits its own workers to one thread each.",
                "unset OMP_NUM_THREADS",
                evidence,
            )
        )
    if (
        cpu_quota_cores is not None
        and cores < cores_usable
        and "OMP_NUM_THREADS" not in values
        and "TF_NUM_INTRAOP_THREADS" not in values
    ):
        checks.append(
            Check(
                "threads",
                "CPU quota",
                WARN,
                f"this container may use {cpu_quota_cores:g} CPU(s), but frameworks see "
                f"{cores_usable} cores and start that many threads each: they oversubscribe.",
                f"export OMP_NUM_THREADS={cores} TF_NUM_INTRAOP_THREADS={cores} "
                "TF_NUM_INTEROP_THREADS=2",
                evidence,
            )
        )
    if torch_threads is not None and torch_threads > cores and "OMP_NUM_THREADS" not in values:
        checks.append(
            Check(
                "threads",
                "torch threads",
                WARN,
                f"torch uses {torch_threads} threads on {cores} usable core(s).",
                f"torch.set_num_threads({cores})   # or export OMP_NUM_THREADS={cores}",
                evidence,
            )
        )
    if tf_intra_op and tf_intra_op > cores and "TF_NUM_INTRAOP_THREADS" not in values:
        checks.append(
            Check(
                "threads",
                "TF intra-op",
                WARN,
                f"TensorFlow's intra-op pool has {tf_intra_op} threads on {cores} usable core(s).",
                f"tf.config.threading.set_intra_op_parallelism_threads({cores})",
                evidence,
            )
        )
    if not checks:
        restricted = f" of {cores_logical} (CPU affinity)" if cores_usable < cores_logical else ""
        quota = f", cgroup quota {cpu_quota_cores:g} CPUs" if cpu_quota_cores else ""
        settings = ", ".join(f"{n}={v}" for n, v in values.items()) or "no thread variables set"
        known = []
        if torch_threads is not None:
            known.append(f"torch {torch_threads} threads")
        if tf_intra_op is not None:
            known.append(f"TF intra-op {tf_intra_op or 'auto'}, inter-op {tf_inter_op or 'auto'}")
        extra = f"; {', '.join(known)}" if known else ""
        checks.append(
            Check(
                "threads",
                "threads",
                OK,
                f"{cores_usable} usable core(s){restricted}{quota}; {settings}{extra}",
                "",
                evidence,
            )
        )
    return checks


def check_cpu_load(
    load_avg_1m: float | None,
    cores: int,
    other_cores: float | None = None,
    busy_fraction: float | None = None,
) -> Check | None:
    """Other work on the machine: the trainer and the input pipeline get what is left.

    With a CPU sample (``other_cores``: cores kept busy by other processes, ``busy_fraction``:
    the machine's share busy, over a short window) the verdict is the doctor's own
    (:func:`stoke.diagnosis.judge.findings.contention_level`, cpu-contention), so the two agree on
    the same machine state; without one, the 1-minute load average stands in for it."""
    from stoke.diagnosis.judge.findings import contention_level

    if other_cores is None:
        if load_avg_1m is None:
            return None
        other_cores = load_avg_1m
        busy_fraction = min(1.0, load_avg_1m / max(1, cores))
        measured = f"load average {load_avg_1m:.1f}"
    else:
        measured = f"other processes keep {other_cores:.1f} core(s) busy"
        if load_avg_1m is not None:
            measured += f" (load average {load_avg_1m:.1f})"
    level = contention_level(other_cores, cores, busy_fraction or 0.0)
    evidence = {
        "load_avg_1m": load_avg_1m,
        "cores": cores,
        "other_processes_cores": other_cores,
        "machine_busy_fraction": busy_fraction,
        "contention": level,
    }
    if level == "high":
        return Check(
            "cpu-load",
            "CPU load",
            WARN,
            f"{measured} on {cores} core(s), the machine {busy_fraction:.0%} busy: contention "
            "HIGH (what `stoke doctor` reports as cpu-contention); input pipelines and the "
            "trainer get less than the core count suggests.",
            "top   # see who; `stoke doctor` measures this during a run (cpu-contention)",
            evidence,
        )
    if level == "low":
        return Check(
            "cpu-load",
            "CPU load",
            WARN,
            f"{measured} on {cores} core(s): contention LOW (cores are still free, but a "
            "faster input pipeline will compete with that work for them).",
            "top   # see who; `stoke doctor` measures this during a run (cpu-contention)",
            evidence,
        )
    return Check("cpu-load", "CPU load", OK, f"{measured} on {cores} core(s)", "", evidence)
