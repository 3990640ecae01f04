"""Framework builds against the NVIDIA driver: CPU-only or CUDA, which CUDA and cuDNN, and
whether this driver runs them.

Owns: :func:`check_framework_build` (one framework), :func:`framework_build_checks` (every
installed framework, its build read from the facts and the probes), :func:`check_cuda_driver`
(does a driver run code built with a CUDA release), :func:`gpu_build_fix` (the install of a
framework built for the driver's CUDA) and :func:`cuda_frameworks` (the installed CUDA builds).
Leaves to others: version arithmetic and driver tables (:mod:`stoke.envcheck.versions`).
"""

from __future__ import annotations

import re
from typing import Any

from stoke.envcheck.facts import (
    FAIL,
    INFO,
    OK,
    WARN,
    Check,
    EnvFacts,
    framework_distribution,
    jax_cuda_packages,
)
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
)


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


def cuda_frameworks(facts: EnvFacts) -> list[str]:
    """The installed frameworks that are CUDA builds."""
    found = []
    if facts.tf_build and facts.tf_build.get("is_cuda_build"):
        found.append("tensorflow")
    if jax_cuda_packages(facts.packages) or "+cuda" in facts.packages.get("jaxlib", ""):
        found.append("jax")
    if facts.torch_build and facts.torch_build.get("cuda"):
        found.append("torch")
    return found


def framework_build_checks(facts: EnvFacts) -> list[Check]:
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
        plugins = jax_cuda_packages(packages)
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
