"""Measured results the labs show, read from the committed benchmark runs (``bench/results``).
Figures never read files: a lab loads the numbers here and passes them in."""

from __future__ import annotations

import json

from ..errors import PdlabError
from ..paths import ROOT

RESULTS = ROOT / "bench" / "results"
KERNELS_H200 = "kernels-h200-2026-11-29.json"
#: bench/kernels.py with the tensor-core prefill, newest first (whichever GPU the run had)
KERNELS_TC_RUNS = ("kernels-h200-2026-12-07.json", "kernels-h100-2026-12-07.json")


#: bench/engine_steps.py (the 1B shape's decode and prefill steps), newest first
ENGINE_STEPS_RUNS = ("engine-steps-h200-2026-12-07.json", "engine-steps-h100-2026-12-07.json")


def engine_steps_run() -> str | None:
    """The file name of the newest committed engine-steps run, None if there is none."""
    return next((n for n in ENGINE_STEPS_RUNS if (RESULTS / n).is_file()), None)


def tensor_core_run() -> str | None:
    """The file name of the newest committed kernels run that timed the tensor-core prefill."""
    return next((n for n in KERNELS_TC_RUNS if (RESULTS / n).is_file()), None)


def load(name: str = KERNELS_H200) -> dict:
    """A committed benchmark result by file name (``bench/results/NAME``)."""
    path = RESULTS / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PdlabError(f"cannot read measured results {path}: {e}") from None
