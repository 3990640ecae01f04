"""How the doctor writes a figure, wherever it writes one: the findings' messages and every
report (terminal, HTML) print a rate, a time, a share or a speedup through these functions, so
that one figure reads the same everywhere (``×4.99`` in the headline and in the finding, not
``×5.0`` here and ``×4.99`` there). A figure that is missing (None, NaN) reads "not measured",
never "?" or "nan".

    rate(1600.0)        # "1,600 samples/s"
    speedup(17.88)      # "×18"
    ms(0.00573)         # "5.73 ms"
"""

from __future__ import annotations

import math

NOT_MEASURED = "not measured"


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def rate(samples_per_s: float | None) -> str:
    return f"{samples_per_s:,.0f} samples/s" if _known(samples_per_s) else NOT_MEASURED


def ms(seconds: float | None) -> str:
    if not _known(seconds):
        return NOT_MEASURED
    value = seconds * 1e3
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def pct(fraction: float | None, digits: int = 0) -> str:
    return f"{100.0 * fraction:.{digits}f}%" if _known(fraction) else NOT_MEASURED


def speedup(multiplier: float | None) -> str:
    if not _known(multiplier):
        return "not predicted"
    return f"×{multiplier:.2f}" if multiplier < 10 else f"×{multiplier:.0f}"

