"""A local Ray that stoke starts is this machine's only: its servers listen on the loopback
address, its session files lie in a private directory (removed afterwards), and its token
file is readable by its owner only. Run in a fresh process with its own HOME and RAY_TMPDIR, as
a user's training script would start it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

import stoke

pytest.importorskip("ray")

SCRIPT = textwrap.dedent("""
    import glob, json, os
    import numpy as np, psutil
    import stoke

    pipe = stoke.from_arrays(np.arange(8)).batch(4)
    iterator = pipe.iter(executor="ray", workers=1)
    batches = [next(iterator).tolist()]
    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = sorted({c.laddr.ip for c in psutil.net_connections("inet")
                        if c.status == psutil.CONN_LISTEN and c.pid in ray_pids})
    session_dirs = glob.glob(os.path.join(os.environ["RAY_TMPDIR"], "stoke-ray-*"))
    modes = {path: os.stat(path).st_mode & 0o777 for path in session_dirs}
    token = os.path.expanduser("~/.ray/auth_token")
    token_mode = os.stat(token).st_mode & 0o777 if os.path.exists(token) else None
    batches += [b.tolist() for b in iterator]
    print(json.dumps({"batches": batches, "listening": listening, "session_dirs": modes,
                      "token_mode": token_mode,
                      "left_behind": [p for p in session_dirs if os.path.exists(p)]}))
""")

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_and_keeps_its_files_private(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    short_tmp = tempfile.mkdtemp(prefix="s2r", dir="/tmp")  # Ray's sockets: <= 107 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_TMPDIR=short_tmp,
               PYTHONPATH=os.path.dirname(os.path.dirname(stoke.__file__)))
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["batches"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert report["listening"] and set(report["listening"]) <= LOOPBACK, report["listening"]
    assert len(report["session_dirs"]) == 1
    assert all(mode & 0o077 == 0 for mode in report["session_dirs"].values())
    assert report["token_mode"] is not None and report["token_mode"] & 0o077 == 0
    assert report["left_behind"] == []  # closing the iterator removed the session directory
