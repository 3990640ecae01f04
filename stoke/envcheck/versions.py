"""Version numbers, and what a CUDA release needs from the NVIDIA driver.

Owns: reading and comparing versions and requirement specifiers (PEP 440, through the
``packaging`` library that pip itself uses), the table of the oldest Linux driver each CUDA
release needs, and the install tags that fit a driver (PyTorch's ``cu126`` wheel index, JAX's
``cuda12`` extra). Pure functions of strings. Leaves to others: reading versions off the
machine (:mod:`.gather`) and deciding what a mismatch means (:mod:`.checks`).

Text that is not PEP 440 (a driver or library string such as ``"11.8.89_1"``) is read as its
leading numeric release, so that a version is never lost to its suffix.
"""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, Specifier
from packaging.version import InvalidVersion, Version


def as_version(text: str | None) -> Version | None:
    """``text`` as a PEP 440 :class:`~packaging.version.Version`; text that is not PEP 440 as
    its leading numeric release (``"11.8.89_1"`` -> ``11.8.89``); nothing numeric -> None."""
    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
        return Version(match.group(1)) if match else None


def parse_version(text: str | None) -> tuple[int, ...]:
    """The numeric release of a version: ``"2.13.0+cpu"`` -> ``(2, 13, 0)``;
    ``"580.159.04"`` -> ``(580, 159, 4)``; ``"0.4.30.dev20240601"`` -> ``(0, 4, 30)``;
    nothing numeric -> ``()``."""
    version = as_version(text)
    return version.release if version else ()


def major_minor(version: str | None) -> tuple[int, ...]:
    """The first two numbers of the release (``"12.4.1"`` -> ``(12, 4)``; ``"12"`` -> ``(12,)``)."""
    return parse_version(version)[:2]


def format_release(release: tuple[int, ...]) -> str:
    """A release tuple as text: ``(12, 4)`` -> ``"12.4"``."""
    return ".".join(str(part) for part in release)


def release_at_least(release: tuple[int, ...], minimum: tuple[int, ...]) -> bool:
    """Release numbers compared as PEP 440 compares them, missing parts as zeros: ``(12,)`` is
    ``(12, 0)``, so it is at least ``(12, 0)`` (plain tuples would say it is less)."""
    width = max(len(release), len(minimum))
    return release + (0,) * (width - len(release)) >= minimum + (0,) * (width - len(minimum))


def version_at_least(version: str | None, minimum: str) -> bool:
    """``version >= minimum`` in PEP 440 order (a pre- or dev release sorts before its release).
    An unreadable ``version`` is not at least anything."""
    have, wanted = as_version(version), as_version(minimum)
    return have is not None and (wanted is None or have >= wanted)


def version_satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a requirement specifier such as ``">=0.10.1,<=0.10.2"``, as
    pip judges it (PEP 440: ``==2.13.0`` ignores the local label of ``2.13.0+cpu``, ``~=2.2``
    means ``>=2.2,==2.*``). The version is the one installed, so a pre-release is judged by its
    place in the order, not refused. A clause that is not a PEP 440 specifier is skipped: it
    cannot say the install is wrong."""
    have = as_version(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        try:
            wanted = Specifier(clause)
        except InvalidSpecifier:
            continue
        if have is None or not wanted.contains(have, prereleases=True):
            return False
    return True


# Minimum Linux x86_64 driver of each CUDA toolkit release (CUDA toolkit release notes,
# "CUDA Toolkit and Corresponding Driver Versions", GA releases).
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.0": "450.36.06",
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}
# The oldest driver that runs any release of a CUDA major through minor-version compatibility
# (same major, older driver: works, but PTX compiled at run time needs the newer driver).
CUDA_MAJOR_MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def min_driver_for_cuda(cuda: str) -> str | None:
    """The oldest Linux driver that runs CUDA ``cuda`` at full feature ("12.4" ->
    "550.54.14"). A release missing from the table gets the newest known one before it of the
    same major (a lower bound); an unknown major gives ``None``."""
    wanted = major_minor(cuda)
    if not wanted:
        return None
    candidates = [
        (parse_version(release), driver)
        for release, driver in CUDA_MIN_DRIVER.items()
        if parse_version(release)[0] == wanted[0]
    ]
    if not candidates:
        return None
    if len(wanted) == 1:  # only the major is known: the major's first release
        return min(candidates)[1]
    at_or_before = [c for c in candidates if c[0] <= wanted]
    return max(at_or_before)[1] if at_or_before else min(candidates)[1]


def cuda_supported_by_driver(driver_version: str | None) -> str | None:
    """The newest CUDA release in :data:`CUDA_MIN_DRIVER` that ``driver_version`` runs
    ("550.54.15" -> "12.4"); ``None`` when unknown or older than every release listed."""
    driver = parse_version(driver_version)
    if not driver:
        return None
    runs = [
        parse_version(release)
        for release, minimum in CUDA_MIN_DRIVER.items()
        if version_at_least(driver_version, minimum)
    ]
    return format_release(max(runs)) if runs else None


def cuda_from_nvml(version: int) -> str:
    """NVML's integer CUDA driver version (12040) as "12.4"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def torch_wheel_tag(driver_cuda: str | None) -> str:
    """The PyTorch wheel index tag (``cu126``) to suggest for a driver running ``driver_cuda``:
    the newest tag PyTorch has published that the driver runs."""
    known = ((11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (12, 9), (13, 0))
    have = major_minor(driver_cuda)
    fitting = [tag for tag in known if have and release_at_least(have, tag)]
    major, minor = max(fitting) if fitting else known[-2]
    return f"cu{major}{minor}"


def jax_cuda_extra(driver_cuda: str | None) -> str:
    """``cuda13`` when the driver runs CUDA 13, else ``cuda12``."""
    have = major_minor(driver_cuda)
    return "cuda13" if have and have[0] >= 13 else "cuda12"
