"""The decisions of ``stoke env``: plain values in, :class:`~stoke.envcheck.facts.Check`
objects out.

Owns: one ``check_*`` function per question (are Python, Keras, the backend, the framework
builds, CUDA and the driver fit to train; does the backend see the GPU and run a correct
matmul on it; who else holds GPU memory; are threads, GPU memory settings, ``/dev/shm``, CPUs
and memory set up well), the fix each problem suggests, and :func:`evaluate`, which runs
them all on one :class:`~stoke.envcheck.facts.EnvFacts` in the order they are printed.
Nothing here reads the machine, so every GPU case is tested on a CPU-only box.
Leaves to others: gathering the facts (:mod:`.gather`, :mod:`.probe`) and printing the
checks (:mod:`.report`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from stoke.envcheck.facts import (
    FAIL,
    GIB,
    INFO,
    JAX_CUDA_MAJORS,
    KERAS_BACKENDS,
    KERAS_DEFAULT_SOURCE,
    MIB,
    OK,
    STATUSES,
    TENSORFLOW_DISTRIBUTIONS,
    TRAINING_BACKENDS,
    WARN,
    Check,
    EnvFacts,
    GpuProcess,
    HostFacts,
    NvidiaFacts,
    effective_cores,
    framework_distribution,
)
from stoke.envcheck.parsers import device_kind, short_device, stderr_hints
from stoke.envcheck.versions import (
    CUDA_MAJOR_MIN_DRIVER,
    cuda_supported_by_driver,
    format_release,
    jax_cuda_extra,
    major_minor,
    min_driver_for_cuda,
    parse_version,
    release_at_least,
    torch_wheel_tag,
    version_at_least,
    version_satisfies,
)


def check_python(version: str) -> Check:
    if not release_at_least(parse_version(version), (3, 10)):
        return Check(
            "python",
            "Python",
            FAIL,
            f"Python {version}: stoke and Keras 3 need Python 3.10 or newer.",
            "Create an environment with Python >= 3.10, e.g. `uv venv -p 3.12`.",
            {"version": version},
        )
    return Check("python", "Python", OK, f"Python {version}", "", {"version": version})


def check_keras(keras_version: str | None, env: Mapping[str, str]) -> list[Check]:
    checks = []
    if keras_version is None:
        checks.append(
            Check("keras", "Keras", FAIL, "Keras is not installed.", "pip install -U keras")
        )
    elif parse_version(keras_version)[:1] < (3,):
        checks.append(
            Check(
                "keras",
                "Keras",
                FAIL,
                f"Keras {keras_version} is Keras 2; stoke needs Keras 3.",
                "pip install -U 'keras>=3'",
                {"version": keras_version},
            )
        )
    else:
        checks.append(
            Check("keras", "Keras", OK, f"Keras {keras_version}", "", {"version": keras_version})
        )
    legacy = env.get("TF_USE_LEGACY_KERAS", "").strip().lower()
    if legacy in ("1", "true", "yes"):
        checks.append(
            Check(
                "legacy-keras",
                "TF_USE_LEGACY_KERAS",
                WARN,
                f"TF_USE_LEGACY_KERAS={env['TF_USE_LEGACY_KERAS']}: `tf.keras` is Keras 2 "
                "(tf_keras) in this shell; stoke works with Keras 3 (`import keras`).",
                "unset TF_USE_LEGACY_KERAS   # and `import keras` instead of `tf.keras`",
                {"TF_USE_LEGACY_KERAS": env["TF_USE_LEGACY_KERAS"]},
            )
        )
    return checks


def check_backend(
    backend: str,
    source: str,
    keras_json_backend: str | None,
    packages: Mapping[str, str],
) -> Check:
    evidence = {"backend": backend, "source": source, "keras_json_backend": keras_json_backend}
    if backend not in KERAS_BACKENDS:
        meant = _BACKEND_ALIASES.get(backend.strip().lower()) or next(
            iter(difflib.get_close_matches(backend, KERAS_BACKENDS, n=1)), None
        )
        hint = f" Did you mean {meant!r}?" if meant else ""
        return Check(
            "backend",
            "Keras backend",
            FAIL,
            f"Keras backend {backend!r} ({_source_phrase(source)}) is not one Keras knows; "
            f"the valid choices are {', '.join(KERAS_BACKENDS)}.{hint}",
            f"export KERAS_BACKEND={meant or 'jax'}"
            + ("" if source == "KERAS_BACKEND" else f'   # or fix "backend" in {source}'),
            evidence,
        )
    distribution = framework_distribution(backend, packages)
    if distribution is None:
        installed = [b for b in TRAINING_BACKENDS if framework_distribution(b, packages)]
        other = f"\n# or: export KERAS_BACKEND={installed[0]}   # installed" if installed else ""
        return Check(
            "backend",
            "Keras backend",
            FAIL,
            f"Keras backend is {backend} ({_source_phrase(source)}) but {backend} is not "
            "installed: `import keras` will fail.",
            f"pip install {backend}{other}",
            evidence,
        )
    where = f" ({_source_phrase(source)})"
    if source == "KERAS_BACKEND" and keras_json_backend and keras_json_backend != backend:
        where = f" (KERAS_BACKEND overrides {keras_json_backend} in keras.json)"
    if backend not in TRAINING_BACKENDS:
        return Check(
            "backend",
            "Keras backend",
            WARN,
            f"Keras backend is {backend}{where}: it runs inference only; `fit` needs "
            "tensorflow, jax or torch.",
            "export KERAS_BACKEND=jax   # or tensorflow, torch",
            evidence,
        )
    version = packages[distribution]
    return Check(
        "backend",
        "Keras backend",
        OK,
        f"{backend}{where}, {distribution} {version}",
        "",
        evidence,
    )


_BACKEND_ALIASES = {"pytorch": "torch", "tf": "tensorflow", "jaxlib": "jax", "flax": "jax"}


def _source_phrase(source: str) -> str:
    if source == KERAS_DEFAULT_SOURCE:
        return "Keras' default: neither KERAS_BACKEND nor keras.json sets one"
    return f"from {source}"


def _jax_cuda_packages(packages: Mapping[str, str]) -> dict[int, dict[str, str]]:
    """The JAX CUDA plugins installed, by CUDA major: {12: {"jax-cuda12-plugin": "0.10.2"}}."""
    found: dict[int, dict[str, str]] = {}
    for major in JAX_CUDA_MAJORS:
        for part in ("plugin", "pjrt"):
            name = f"jax-cuda{major}-{part}"
            if name in packages:
                found.setdefault(major, {})[name] = packages[name]
    return found


def check_packages(packages: Mapping[str, str], jax_requires_jaxlib: str | None) -> list[Check]:
    """Versions of the frameworks, and the pairs that must agree: one TensorFlow distribution,
    jaxlib within jax's pin, JAX CUDA plugins at jaxlib's version."""
    names = [
        n
        for n in (*TENSORFLOW_DISTRIBUTIONS, "tf-keras", "jax", "jaxlib", "torch", "nvidia-ml-py")
        if n in packages
    ]
    names += [n for n in packages if n.startswith("jax-cuda")]
    listing = ", ".join(f"{n} {packages[n]}" for n in names) or "no framework installed"
    checks = [Check("packages", "frameworks", INFO, listing, "", {n: packages[n] for n in names})]

    tensorflows = [n for n in TENSORFLOW_DISTRIBUTIONS if n in packages]
    if len(tensorflows) > 1:
        checks.append(
            Check(
                "tensorflow-duplicate",
                "TensorFlow installs",
                WARN,
                f"{' and '.join(tensorflows)} are both installed; they write the same "
                "`tensorflow/` folder, so which one you get depends on install order.",
                f"pip uninstall -y {' '.join(tensorflows)} && pip install {tensorflows[0]}",
                {n: packages[n] for n in tensorflows},
            )
        )
    jax_version, jaxlib_version = packages.get("jax"), packages.get("jaxlib")
    if jax_version and not jaxlib_version:
        checks.append(
            Check(
                "jaxlib",
                "jax / jaxlib",
                FAIL,
                f"jax {jax_version} is installed without jaxlib: `import jax` fails.",
                f'pip install "jax[cpu]=={jax_version}"',
            )
        )
    elif jax_version and jaxlib_version and jax_requires_jaxlib:
        if not version_satisfies(jaxlib_version, jax_requires_jaxlib):
            checks.append(
                Check(
                    "jaxlib",
                    "jax / jaxlib",
                    FAIL,
                    f"jax {jax_version} needs jaxlib {jax_requires_jaxlib}, but jaxlib "
                    f"{jaxlib_version} is installed: `import jax` raises.",
                    f'pip install "jax[cpu]=={jax_version}"   # or jax[cuda12] / jax[cuda13]',
                    {"jax": jax_version, "jaxlib": jaxlib_version, "requires": jax_requires_jaxlib},
                )
            )
    for major, plugins in _jax_cuda_packages(packages).items():
        wrong = {
            n: v for n, v in plugins.items() if parse_version(v) != parse_version(jaxlib_version)
        }
        if jaxlib_version and wrong:
            checks.append(
                Check(
                    f"jax-cuda{major}-plugin",
                    "JAX CUDA plugin",
                    FAIL,
                    f"{', '.join(f'{n} {v}' for n, v in wrong.items())} does not match jaxlib "
                    f"{jaxlib_version}: JAX ignores the plugin and runs on the CPU.",
                    f'pip install -U "jax[cuda{major}]=={jax_version or jaxlib_version}"',
                    {**plugins, "jaxlib": jaxlib_version},
                )
            )
        missing = {f"jax-cuda{major}-plugin", f"jax-cuda{major}-pjrt"} - set(plugins)
        if missing:
            checks.append(
                Check(
                    f"jax-cuda{major}-plugin",
                    "JAX CUDA plugin",
                    FAIL,
                    f"{', '.join(sorted(plugins))} is installed without {', '.join(sorted(missing))}: "
                    "JAX needs both to use the GPU.",
                    f'pip install -U "jax[cuda{major}]=={jax_version or jaxlib_version}"',
                    dict(plugins),
                )
            )
    return checks


def check_nvidia(nvidia: NvidiaFacts, nvml_installed: bool) -> list[Check]:
    """Is there an NVIDIA GPU, which driver, and can stoke doctor read it through NVML."""
    evidence = {
        "source": nvidia.source,
        "driver_version": nvidia.driver_version,
        "driver_cuda": nvidia.driver_cuda,
        "kernel_module": nvidia.kernel_module,
        "device_nodes": nvidia.device_nodes,
    }
    if nvidia.gpu_count == 0:
        if nvidia.kernel_module and not nvidia.device_nodes:
            return [
                Check(
                    "nvidia",
                    "NVIDIA GPU",
                    WARN,
                    "The NVIDIA driver is loaded on this host, but no GPU device "
                    "(/dev/nvidia0) is visible here: a container started without GPUs?",
                    "docker run --gpus all ...   # or --runtime=nvidia; in Kubernetes request "
                    "nvidia.com/gpu",
                    evidence,
                )
            ]
        if nvidia.error:
            return [
                Check(
                    "nvidia",
                    "NVIDIA GPU",
                    WARN,
                    f"The NVIDIA driver could not be queried: {nvidia.error}",
                    "nvidia-smi   # run it; a driver/library version mismatch needs a reboot",
                    evidence,
                )
            ]
        return [
            Check(
                "nvidia",
                "NVIDIA GPU",
                INFO,
                "no NVIDIA GPU visible: the backend trains on the CPU (GPU checks skipped).",
                "",
                evidence,
            )
        ]
    names: dict[str, int] = {}
    for gpu in nvidia.gpus:
        memory = f", {gpu.memory_total_bytes / GIB:.0f} GiB" if gpu.memory_total_bytes else ""
        arch = f", sm_{gpu.compute_capability.replace('.', '')}" if gpu.compute_capability else ""
        label = f"{gpu.name}{memory}{arch}"
        names[label] = names.get(label, 0) + 1
    gpus = "; ".join(f"{count} × {label}" for label, count in names.items())
    cuda = f" (runs CUDA ≤ {nvidia.driver_cuda})" if nvidia.driver_cuda else ""
    checks = [
        Check(
            "nvidia",
            "NVIDIA GPU",
            OK,
            f"{gpus}; driver {nvidia.driver_version or 'unknown'}{cuda}, read via {nvidia.source}",
            "",
            {**evidence, "gpus": [dataclasses.asdict(g) for g in nvidia.gpus]},
        )
    ]
    if not nvml_installed:
        checks.append(
            Check(
                "nvml",
                "NVML",
                INFO,
                "nvidia-ml-py is not installed: `stoke doctor` cannot sample GPU kernel-active "
                "time and memory while you train.",
                'pip install nvidia-ml-py   # or: pip install "stoke[gpu]"',
            )
        )
    return checks


def check_gpu_visibility(env: Mapping[str, str], gpu_count: int, backend: str) -> list[Check]:
    """Environment variables that hide GPUs the driver sees."""
    if gpu_count == 0:
        return []
    checks = []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if not entries or entries[0] in ("-1", "NoDevFiles"):
            checks.append(
                Check(
                    "cuda-visible-devices",
                    "CUDA_VISIBLE_DEVICES",
                    FAIL,
                    f"CUDA_VISIBLE_DEVICES={visible!r} hides all {gpu_count} GPU(s) from every "
                    "framework: training runs on the CPU.",
                    "unset CUDA_VISIBLE_DEVICES   # or list the GPUs: export CUDA_VISIBLE_DEVICES=0",
                    {"CUDA_VISIBLE_DEVICES": visible, "gpu_count": gpu_count},
                )
            )
        else:
            numbered = [int(e) for e in entries if e.isdigit()]
            beyond = [n for n in numbered if n >= gpu_count]
            if beyond:
                checks.append(
                    Check(
                        "cuda-visible-devices",
                        "CUDA_VISIBLE_DEVICES",
                        WARN,
                        f"CUDA_VISIBLE_DEVICES={visible!r} names GPU {beyond[0]}, but the driver "
                        f"sees {gpu_count} (0-{gpu_count - 1}); CUDA stops at the first bad entry.",
                        f"export CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(gpu_count))}",
                        {"CUDA_VISIBLE_DEVICES": visible, "gpu_count": gpu_count},
                    )
                )
            elif len(entries) < gpu_count:
                checks.append(
                    Check(
                        "cuda-visible-devices",
                        "CUDA_VISIBLE_DEVICES",
                        INFO,
                        f"CUDA_VISIBLE_DEVICES={visible!r}: {len(entries)} of the {gpu_count} "
                        "GPUs are used.",
                        "",
                        {"CUDA_VISIBLE_DEVICES": visible, "gpu_count": gpu_count},
                    )
                )
    if backend == "jax":
        for name in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME"):
            value = env.get(name)
            if value and not any(p in value.lower() for p in ("cuda", "gpu")):
                checks.append(
                    Check(
                        "jax-platforms",
                        name,
                        FAIL,
                        f"{name}={value!r} keeps JAX off the GPU although the driver sees "
                        f"{gpu_count}.",
                        f"unset {name}",
                        {name: value},
                    )
                )
    return checks


def check_framework_build(
    framework: str,
    distribution: str,
    version: str,
    cuda_build: bool | None,
    built_cuda: str | None,
    built_cudnn: str | None,
    installed_cudnn: str | None,
    gpu_count: int,
    driver_version: str | None,
    driver_cuda: str | None,
    active: bool,
) -> Check:
    """Does this framework build fit this machine: a CPU-only build where the driver sees a
    GPU, a CUDA build whose CUDA is newer than the driver runs, a cuDNN of another major."""
    check_id, title = f"{framework}-build", f"{framework} build"
    evidence = {
        "distribution": distribution,
        "version": version,
        "cuda_build": cuda_build,
        "built_cuda": built_cuda,
        "built_cudnn": built_cudnn,
        "installed_cudnn": installed_cudnn,
        "driver_version": driver_version,
        "driver_cuda": driver_cuda,
        "active_backend": active,
    }
    what = f"{distribution} {version}"
    cuda_text = f"CUDA {built_cuda}" if built_cuda else "CUDA"
    if built_cudnn:
        cuda_text += f", cuDNN {built_cudnn}"
    if gpu_count == 0:
        kind = (
            f"{cuda_text} build"
            if cuda_build
            else "CPU-only build"
            if cuda_build is False
            else "build"
        )
        return Check(check_id, title, INFO, f"{what}: {kind}; no NVIDIA GPU visible.", "", evidence)
    if cuda_build is None:
        return Check(
            check_id, title, INFO, f"{what}: cannot tell whether it is a CUDA build.", "", evidence
        )
    unused = (
        "Keras trains on the CPU"
        if active
        else f"switching KERAS_BACKEND to {framework} would train on the CPU"
    )
    if not cuda_build:
        return Check(
            check_id,
            title,
            FAIL if active else WARN,
            f"{what} is a CPU-only build, but the driver sees {gpu_count} GPU(s): {unused}.",
            gpu_build_fix(framework, distribution, version, driver_cuda),
            evidence,
        )
    verdict = check_cuda_driver(built_cuda, driver_version, driver_cuda)
    status, detail, driver_fix = verdict
    if status == OK and built_cudnn and installed_cudnn:
        if parse_version(built_cudnn)[:1] != parse_version(installed_cudnn)[:1]:
            return Check(
                check_id,
                title,
                FAIL if active else WARN,
                f"{what} was built with cuDNN {built_cudnn}, but cuDNN {installed_cudnn} is "
                "installed: convolutions fail to load.",
                gpu_build_fix(framework, distribution, version, driver_cuda),
                evidence,
            )
    if status == FAIL and not active:
        status = WARN
    fix = ""
    if status != OK and driver_fix:
        fix = f"{driver_fix}\n# or a build for the CUDA your driver runs:\n" + gpu_build_fix(
            framework, distribution, version, driver_cuda
        )
    return Check(check_id, title, status, f"{what}: {cuda_text} build; {detail}", fix, evidence)


def check_cuda_driver(
    built_cuda: str | None, driver_version: str | None, driver_cuda: str | None
) -> tuple[str, str, str]:
    """Does a driver run code built with CUDA ``built_cuda``? Returns (status, the reason in
    words, the driver update to suggest or "").

    Newer driver CUDA than the build: ok. Same major, older minor, driver at least the major's
    minor-compatibility minimum: warn (runs, but PTX compiled at run time, and JAX's parallel
    compilation, need the newer driver). Older major, or below that minimum: fail."""
    runs = driver_cuda or cuda_supported_by_driver(driver_version)
    built = major_minor(built_cuda)
    if not built:
        return INFO, "cannot tell which CUDA it was built with", ""
    if not runs:
        return INFO, f"cannot tell which CUDA driver {driver_version or '(unknown)'} runs", ""
    have = major_minor(runs)
    built_text = format_release(built)
    if release_at_least(have, built):
        return OK, f"the driver runs CUDA {runs}", ""
    wanted = min_driver_for_cuda(built_text) or "a newer version"
    update = f"update the NVIDIA driver to >= {wanted} (CUDA {built_text})"
    major_minimum = CUDA_MAJOR_MIN_DRIVER.get(built[0])
    if (
        have[0] == built[0]
        and major_minimum
        and (driver_version is None or version_at_least(driver_version, major_minimum))
    ):
        return (
            WARN,
            f"the driver runs CUDA {runs} only: it works through minor-version compatibility, but "
            "kernels compiled from PTX at run time fail and JAX compiles serially",
            update,
        )
    return (
        FAIL,
        f"the driver runs CUDA {runs} only: too old for CUDA {built_text}, the GPU cannot be used",
        update,
    )


def gpu_build_fix(framework: str, distribution: str, version: str, driver_cuda: str | None) -> str:
    """The command that installs ``framework`` at ``version`` built for the driver's CUDA."""
    release = format_release(parse_version(version)) or version
    if framework == "tensorflow":
        uninstall = f"pip uninstall -y {distribution} && " if distribution != "tensorflow" else ""
        return f'{uninstall}pip install "tensorflow[and-cuda]=={release}"'
    if framework == "torch":
        tag = torch_wheel_tag(driver_cuda)
        return (
            f"pip install --force-reinstall torch=={release} "
            f"--index-url https://download.pytorch.org/whl/{tag}"
        )
    if framework == "jax":
        return f'pip install -U "jax[{jax_cuda_extra(driver_cuda)}]=={release}"'
    return f"pip install -U {distribution}"


def check_gpu_processes(processes: Iterable[GpuProcess], own_pids: Iterable[int]) -> Check | None:
    """Other processes holding GPU memory: they compete with training for memory and time."""
    own = set(own_pids)
    others = [p for p in processes if p.pid not in own]
    if not others:
        return None
    total = sum(p.used_bytes or 0 for p in others)
    listed = ", ".join(
        f"{p.name or '?'} (pid {p.pid}, GPU {p.gpu_index if p.gpu_index is not None else '?'}"
        + (f", {p.used_bytes / GIB:.1f} GiB" if p.used_bytes else "")
        + ")"
        for p in others[:5]
    )
    more = f" and {len(others) - 5} more" if len(others) > 5 else ""
    return Check(
        "gpu-processes",
        "other GPU users",
        WARN,
        f"{len(others)} other process(es) hold {total / GIB:.1f} GiB of GPU memory: {listed}{more}. "
        "They take memory and kernel time from your training.",
        "nvidia-smi   # see who; stop them, or pick a free GPU with CUDA_VISIBLE_DEVICES",
        {"processes": [dataclasses.asdict(p) for p in others]},
    )


def check_backend_devices(probe: Mapping[str, Any], gpu_count: int, fix: str = "") -> Check:
    """What the backend sees, against what the driver sees. ``fix`` is what to suggest when
    the backend sees no GPU (a check above that explains it, or the install that fits)."""
    backend = probe.get("requested_backend") or probe.get("backend") or "?"
    check_id, title = f"devices-{backend}", f"devices ({backend})"
    evidence = {k: probe.get(k) for k in ("backend", "devices", "gpu_count", "framework_version")}
    hints = stderr_hints(probe.get("stderr_tail") or "")
    evidence["hints"] = hints
    if probe.get("error"):
        because = f" {'; '.join(hints)}." if hints else ""
        return Check(
            check_id,
            title,
            FAIL,
            f"the {backend} backend failed during {probe.get('stage', 'start-up')}: "
            f"{probe['error']}.{because}",
            _pip_command(probe["error"])
            or f'KERAS_BACKEND={backend} python -c "import keras; print(keras.ops.ones(1))"'
            "   # see the whole error",
            {**evidence, "stderr_tail": probe.get("stderr_tail")},
        )
    devices = ", ".join(probe.get("devices") or []) or "none"
    seen = int(probe.get("gpu_count") or 0)
    if gpu_count and seen == 0:
        because = f" {'; '.join(hints)}." if hints else ""
        return Check(
            check_id,
            title,
            FAIL,
            f"{backend} sees no GPU although the driver sees {gpu_count}: {devices}.{because}",
            fix or "see the build and CUDA checks above for the install that fits",
            evidence,
        )
    if gpu_count and seen < gpu_count:
        return Check(
            check_id,
            title,
            INFO,
            f"{backend} sees {seen} of the {gpu_count} GPUs: {devices}",
            "",
            evidence,
        )
    if not gpu_count and seen == 0:
        return Check(check_id, title, INFO, f"{devices} (no NVIDIA GPU visible)", "", evidence)
    return Check(check_id, title, OK, devices, "", evidence)


def _pip_command(error: str) -> str:
    """The ``pip install ...`` an error message asks for, if it names one (Keras: "Install it
    via `pip install optree`")."""
    match = re.search(r"`(pip install [^`]+)`", error) or re.search(r"(pip install \S+)", error)
    return match.group(1).rstrip(".,;") if match else ""


def check_matmul(probe: Mapping[str, Any], gpu_count: int) -> Check | None:
    """Where a matmul through the Keras backend ran, how fast, and whether it was right."""
    backend = probe.get("requested_backend") or probe.get("backend") or "?"
    matmul = probe.get("matmul")
    if probe.get("error") or not matmul:
        return None
    check_id, title = f"matmul-{backend}", f"matmul ({backend})"
    size = matmul["size"]
    device = short_device(matmul["device"])
    kind = device_kind(device)
    speed = matmul["gflops"]
    rate = f"{speed / 1000:.1f} TFLOP/s" if speed >= 1000 else f"{speed:.1f} GFLOP/s"
    what = (
        f"{size}×{size} float32 matmul through keras.ops ran on {device}: "
        f"{matmul['seconds'] * 1e3:.2f} ms each, {rate} (first call {matmul['first_s']:.2f} s)"
    )
    evidence = dict(matmul)
    if not matmul.get("correct", True):
        return Check(
            check_id,
            title,
            FAIL,
            f"{what}, but the result was wrong ({matmul.get('value')} instead of {size}).",
            "nvidia-smi -q | grep -i -A3 ecc   # check the GPU for errors; update the driver",
            evidence,
        )
    if kind == "cpu" and gpu_count:
        return Check(
            check_id,
            title,
            FAIL,
            f"{what}, although the driver sees {gpu_count} GPU(s): your model trains on the CPU.",
            "see the devices, build and CUDA checks above",
            evidence,
        )
    if kind == "cpu":
        return Check(check_id, title, INFO, f"{what} (no NVIDIA GPU visible)", "", evidence)
    return Check(check_id, title, OK, what, "", evidence)


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
    evidence = {"load_avg_1m": load_avg_1m, "cores": cores, "other_processes_cores": other_cores,
                "machine_busy_fraction": busy_fraction, "contention": level}
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


def cuda_frameworks(facts: EnvFacts) -> list[str]:
    """The installed frameworks that are CUDA builds."""
    found = []
    if facts.tf_build and facts.tf_build.get("is_cuda_build"):
        found.append("tensorflow")
    if _jax_cuda_packages(facts.packages) or "+cuda" in facts.packages.get("jaxlib", ""):
        found.append("jax")
    if facts.torch_build and facts.torch_build.get("cuda"):
        found.append("torch")
    return found


def _framework_build_checks(facts: EnvFacts) -> list[Check]:
    nvidia = facts.nvidia
    checks = []
    packages = facts.packages
    probes = {p.get("backend"): p for p in facts.probes if not p.get("error")}

    tf_dist = framework_distribution("tensorflow", packages)
    if tf_dist:
        build = facts.tf_build or (probes.get("tensorflow") or {}).get("build") or {}
        cuda_build = build.get("is_cuda_build")
        if cuda_build is None and tf_dist.endswith("-cpu"):
            cuda_build = False
        cudnn_pkg = next(
            (
                packages[f"nvidia-cudnn-cu{m}"]
                for m in (13, 12, 11)
                if f"nvidia-cudnn-cu{m}" in packages
            ),
            None,
        )
        checks.append(
            check_framework_build(
                "tensorflow",
                tf_dist,
                packages[tf_dist],
                cuda_build,
                build.get("cuda_version"),
                build.get("cudnn_version"),
                cudnn_pkg,
                nvidia.gpu_count,
                nvidia.driver_version,
                nvidia.driver_cuda,
                facts.backend == "tensorflow",
            )
        )
    if "jax" in packages:
        plugins = _jax_cuda_packages(packages)
        jaxlib = packages.get("jaxlib", "")
        built_cuda = None
        if plugins:
            major = max(plugins)
            built_cuda = str(major)
            for name in (
                f"nvidia-cuda-nvcc-cu{major}",
                f"nvidia-cuda-runtime-cu{major}",
                "nvidia-cuda-nvcc",
                "nvidia-cuda-runtime",
            ):
                if name in packages and parse_version(packages[name])[:1] == (major,):
                    built_cuda = format_release(major_minor(packages[name]))
                    break
        elif "+cuda" in jaxlib:
            match = re.search(r"\+cuda(\d+)", jaxlib)
            built_cuda = match.group(1) if match else None
        checks.append(
            check_framework_build(
                "jax",
                "jax",
                packages["jax"],
                bool(plugins) or "+cuda" in jaxlib,
                built_cuda,
                None,
                None,
                nvidia.gpu_count,
                nvidia.driver_version,
                nvidia.driver_cuda,
                facts.backend == "jax",
            )
        )
    if "torch" in packages:
        build = dict(facts.torch_build or {})
        probe_build = (probes.get("torch") or {}).get("build") or {}
        cuda = build.get("cuda") or probe_build.get("cuda")
        cuda_build: bool | None = bool(cuda) if (build or probe_build) else None
        if "+cpu" in packages["torch"]:
            cuda_build = False
        cudnn = probe_build.get("cudnn")
        checks.append(
            check_framework_build(
                "torch",
                "torch",
                packages["torch"],
                cuda_build,
                cuda,
                _format_cudnn(cudnn) if cudnn else None,
                None,
                nvidia.gpu_count,
                nvidia.driver_version,
                nvidia.driver_cuda,
                facts.backend == "torch",
            )
        )
    return checks


def _format_cudnn(version: Any) -> str:
    """torch.backends.cudnn.version() (90100) as "9.1.0"; strings pass through."""
    if isinstance(version, int) and version >= 1000:
        return f"{version // 10000}.{(version % 10000) // 100}.{version % 100}"
    return str(version)


def _devices_fix(facts: EnvFacts, probe: Mapping[str, Any], so_far: list[Check]) -> str:
    """For a backend that sees no GPU: the checks above that explain why, or else the install
    of its framework built for the driver's CUDA."""
    backend = probe.get("requested_backend") or probe.get("backend") or ""
    causes = [
        c.title
        for c in so_far
        if c.status in (WARN, FAIL)
        and (
            c.id in ("cuda-visible-devices", "jaxlib", f"{backend}-build")
            or (
                backend == "jax"
                and c.id in ("jax-platforms", *(f"jax-cuda{m}-plugin" for m in JAX_CUDA_MAJORS))
            )
        )
    ]
    if causes:
        return f"fix {' and '.join(dict.fromkeys(causes))} above"
    distribution = framework_distribution(backend, facts.packages)
    if not distribution:
        return ""
    return gpu_build_fix(
        backend, distribution, facts.packages[distribution], facts.nvidia.driver_cuda
    )


def evaluate(facts: EnvFacts, jax_requires_jaxlib: str | None = None) -> list[Check]:
    """All checks, in the order they are printed: the stack, the GPU, the backend at work,
    threads, memory."""
    gpu_count = facts.nvidia.gpu_count
    checks: list[Check] = [check_python(facts.python_version)]
    checks += check_keras(facts.packages.get("keras"), facts.env)
    checks.append(
        check_backend(facts.backend, facts.backend_source, facts.keras_json_backend, facts.packages)
    )
    checks += check_packages(facts.packages, jax_requires_jaxlib)
    checks += check_nvidia(facts.nvidia, "nvidia-ml-py" in facts.packages)
    checks += check_gpu_visibility(facts.env, gpu_count, facts.backend)
    checks += _framework_build_checks(facts)
    processes = check_gpu_processes(facts.nvidia.processes, own_pids=[os.getpid()])
    if processes:
        checks.append(processes)
    for probe in facts.probes:
        checks.append(check_backend_devices(probe, gpu_count, _devices_fix(facts, probe, checks)))
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
    load = check_cpu_load(facts.host.load_avg_1m, facts.host.cores_effective,
                          facts.host.other_processes_cores, facts.host.machine_busy_fraction)
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
    return max((c.status for c in checks), key=STATUSES.index, default=OK)
