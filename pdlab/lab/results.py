"""Measured results the labs show, read from the committed benchmark runs (``bench/results``).
Figures never read files: a lab loads the numbers here and passes them in."""

from __future__ import annotations

import json

from ..errors import PdlabError
from ..paths import ROOT

RESULTS = ROOT / "bench" / "results"
KERNELS_H200 = "kernels-h200-2026-11-29.json"


def load(name: str = KERNELS_H200) -> dict:
    """A committed benchmark result by file name (``bench/results/NAME``)."""
    path = RESULTS / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PdlabError(f"cannot read measured results {path}: {e}") from None
