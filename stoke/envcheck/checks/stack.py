"""The software stack ``stoke env`` checks first: Python, Keras, the Keras backend, and the
framework versions that must agree with each other.

Owns: :func:`check_python`, :func:`check_keras` (and ``TF_USE_LEGACY_KERAS``),
:func:`check_backend` (a backend Keras knows, installed, able to train; the alias a user
probably meant) and :func:`check_packages` (one TensorFlow distribution, jaxlib within jax's
pin, JAX CUDA plugins at jaxlib's version).
Leaves to others: the builds against the driver (:mod:`.builds`) and what the backend does
once imported (:mod:`.devices`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from stoke.envcheck.facts import (
    FAIL,
    INFO,
    KERAS_BACKENDS,
    KERAS_DEFAULT_SOURCE,
    OK,
    TENSORFLOW_DISTRIBUTIONS,
    TRAINING_BACKENDS,
    WARN,
    Check,
    framework_distribution,
    jax_cuda_packages,
)
from stoke.envcheck.versions import parse_version, release_at_least, version_satisfies


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
    for major, plugins in jax_cuda_packages(packages).items():
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
