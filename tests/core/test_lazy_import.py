"""``import stoke`` is lazy (each public name is imported on first use), and so is every
process the command line starts: ``stoke --help``, ``stoke doctor`` before the script, the
doctor's child before the user's script. Each check runs in a fresh interpreter and reads
``sys.modules``: what was imported, never how long it took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import stoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(stoke.__file__)))
# what no start-up may import: the frameworks, and the heavy modules stoke uses for data
HEAVY = ("numpy", "keras", "tensorflow", "jax", "torch", "ray", "pyarrow", "fsspec", "grain",
         "stoke.data.pipeline", "stoke.accelerate.entry", "stoke.loader.loader")


# prefixed to every fresh interpreter's code: the heavy modules imported so far
LOADED = (f"import sys\n"
          f"def loaded():\n"
          f"    return sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r})\n")


def fresh(code: str, *args: str, env: dict | None = None) -> dict:
    """Run ``code`` in a new interpreter (this checkout's stoke first); it prints one JSON value."""
    environment = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    done = subprocess.run([sys.executable, *args, "-c", LOADED + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300, env=environment, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_stoke_imports_nothing_heavy():
    result = fresh("""
    import json, sys
    import stoke
    print(json.dumps({"heavy": loaded(), "stoke": sorted(m for m in sys.modules if m.startswith("stoke")),
                      "version": stoke.__version__}))
    """)
    assert result["heavy"] == []
    assert result["stoke"] == ["stoke", "stoke.lazy_exports", "stoke.version"]
    assert result["version"] == stoke.__version__


def test_every_public_name_imports_on_first_use_and_dir_lists_it():
    keras_names = {"BackupAndRestore", "DoctorCallback"}  # they import Keras: checked below
    result = fresh(f"""
    import importlib, json
    import stoke
    listed = set(dir(stoke))
    out = {{"missing_from_dir": sorted(set(stoke.__all__) - listed), "wrong": []}}
    for name in stoke.__all__:
        if name in {keras_names!r}:
            continue
        exec(f"from stoke import {{name}} as value")
        if value is not getattr(stoke, name):
            out["wrong"].append(name)
    print(json.dumps(out))
    """)
    assert result == {"missing_from_dir": [], "wrong": []}
    assert "does_not_exist" not in dir(stoke)
    try:
        stoke.does_not_exist  # noqa: B018
    except AttributeError as error:
        assert "does_not_exist" in str(error)
    else:
        raise AssertionError("stoke.does_not_exist did not raise AttributeError")


def test_the_keras_built_names_resolve_lazily():
    result = fresh("""
    import json, sys
    import stoke
    before = "keras" in sys.modules
    import keras
    from stoke import BackupAndRestore, DoctorCallback
    print(json.dumps({"before": before,
                      "backup": issubclass(BackupAndRestore, keras.callbacks.BackupAndRestore),
                      "doctor": issubclass(DoctorCallback, keras.callbacks.Callback),
                      "same": stoke.DoctorCallback is DoctorCallback}))
    """, env={"KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")})
    assert result == {"before": False, "backup": True, "doctor": True, "same": True}


def test_accelerate_stays_the_function_when_its_subpackage_is_imported_first():
    # the import system binds a sub-package on its parent after importing it; stoke.accelerate
    # (the package) must not hide stoke.accelerate (the function)
    result = fresh("""
    import json
    import stoke
    import stoke.accelerate.items
    first = callable(stoke.accelerate)
    from stoke import accelerate
    from stoke.accelerate.entry import accelerate as defined
    print(json.dumps([first, accelerate is defined, stoke.accelerate is defined]))
    """)
    assert result == [True, True, True]


def test_the_command_line_imports_only_what_each_command_needs():
    result = fresh("""
    import contextlib, io, json, sys
    from stoke.commands.cli import main
    seen = {}
    for argv in (["--help"], ["--version"], ["doctor", "--help"], ["run", "--help"],
                 ["env", "--help"]):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
            except SystemExit:
                pass
        seen[" ".join(argv)] = loaded()
    # what `stoke doctor` imports around the run: the runner, then the analysis and reports
    import stoke.diagnosis.judge.diagnosis, stoke.diagnosis.report, stoke.diagnosis.run.runner
    seen["doctor's own process"] = loaded()
    print(json.dumps(seen))
    """)
    assert result == {command: [] for command in result} and len(result) == 6


def test_stoke_doctor_imports_none_of_the_measuring_side_the_script_imports():
    # stoke doctor only starts the script and reads its record: the recorder, the hooks, the
    # bootstrap and the Keras-2 shim are the script's process's to import (importing them in
    # both processes cost stoke doctor's start 0.13 s of CPU against 0.09 s without)
    result = fresh("""
    import json, sys
    from stoke.commands.cli import main
    from stoke.diagnosis.run.cli import main as doctor_main
    from stoke.diagnosis.measure.options import DoctorOptions
    from stoke.diagnosis.run.runner import run_measured
    from stoke.diagnosis.run.session import budget_floors
    print(json.dumps(sorted(m for m in sys.modules if m.startswith(("stoke.diagnosis.measure.",
          "stoke.diagnosis.run.bootstrap", "stoke.legacy")))))
    """)
    assert result == ["stoke.diagnosis.measure.options", "stoke.diagnosis.measure.phases",
                      "stoke.diagnosis.measure.probe_schedule"]


def test_the_doctors_child_imports_nothing_heavy_before_the_script():
    # the bootstrap runs `-c CODE` as the user's script: CODE sees what the doctor imported
    heavy = fresh("import json; print(json.dumps(loaded()))", "-m", "stoke.diagnosis.run.bootstrap")
    assert heavy == []


def test_a_generator_worker_imports_its_program_without_the_trainer_side():
    # a worker process (python -m stoke.executors.worker) loads the program's module only:
    # the package stoke.accelerate re-exports lazily, so its trainer side stays out
    result = fresh("""
    import json, sys
    import stoke.executors.worker, stoke.accelerate.generator_program
    trainer_side = [m for m in ("stoke.accelerate.entry", "stoke.accelerate.generator",
                                "stoke.accelerate.sequence", "stoke.loader.loader",
                                "stoke.data.pipeline") if m in sys.modules]
    from stoke.accelerate import AcceleratedGenerator, AcceleratedSequence, accelerate
    package = sys.modules["stoke.accelerate"]
    print(json.dumps({"trainer_side": trainer_side,
                      "same": accelerate is stoke.accelerate is package.accelerate,
                      "dir": sorted(set(package.__all__) - set(dir(package)))}))
    """)
    assert result == {"trainer_side": [], "same": True, "dir": []}
