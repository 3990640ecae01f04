"""The JSON report: the diagnosis in its public, versioned form.

The schema is :meth:`stoke.diagnosis.judge.diagnosis.Diagnosis.to_json_dict` (``schema_version``
``DIAGNOSIS_SCHEMA_VERSION``); this module only serialises it, strictly (no NaN).
"""

from __future__ import annotations

import json
from pathlib import Path

from stoke.diagnosis.judge.diagnosis import Diagnosis


def to_json(diagnosis: Diagnosis, indent: int | None = 1) -> str:
    return json.dumps(diagnosis.to_json_dict(), indent=indent, allow_nan=False, ensure_ascii=False)


def write_json(diagnosis: Diagnosis, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(to_json(diagnosis) + "\n", encoding="utf-8")
    return path
