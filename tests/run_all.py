"""Run the whole suite: backend-free tests once, Keras tests once per backend.

``tests/backends/`` holds the tests that train or touch Keras; each backend gets its own
process (Keras picks its backend at import, once). Everything else runs once, with no backend
forced. Exit status is non-zero if any run failed. Extra arguments go to every pytest run.

    python -m tests.run_all                 # everything
    python -m tests.run_all -k shm -x       # a subset, stop at first failure
    STOKE_BACKENDS=jax python -m tests.run_all
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


def _pytest(paths: list[str], extra: list[str], env: dict[str, str], label: str) -> int:
    started = time.monotonic()
    print(f"\n=== {label} ===", flush=True)
    # the slowest tests of each part, listed after it: CI's budget is 45 minutes
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10",
           *paths, *extra]
    code = subprocess.call(cmd, env=env)
    # pytest exits 5 when a -k filter selects nothing in this part: that is not a failure.
    if code == 5:
        code = 0
    print(f"=== {label}: exit {code} in {time.monotonic() - started:.0f}s ===", flush=True)
    return code


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    backend_dir = os.path.join(here, "backends")
    others = sorted(
        os.path.join(here, name)
        for name in os.listdir(here)
        if os.path.isdir(os.path.join(here, name)) and name not in ("backends", "__pycache__")
        and not name.startswith(".")
    )
    base_env = dict(os.environ)
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    codes = [_pytest(others, argv, base_env, "backend-free tests")]
    chosen = os.environ.get("STOKE_BACKENDS", ",".join(BACKENDS)).split(",")
    for backend in chosen:
        env = {**base_env, "KERAS_BACKEND": backend}
        codes.append(_pytest([backend_dir], argv, env, f"Keras tests on {backend}"))
    failed = sum(1 for c in codes if c != 0)
    print(f"\n{len(codes) - failed} passed, {failed} failed (test runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
