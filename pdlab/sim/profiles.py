"""Cost-model profiles: what ``--profile FILE`` loads, and the cost model it makes for a pool.

Two kinds:

    efficiency     the roofline's factors and overheads (``Efficiency``), fitted by ``pdlab
                   calibrate`` to steps of the real engine or to measured serving runs
    step-profile   a published step-time model (``pdlab.sim.stepprofile``: DistServe's fitted
                   per-iteration latencies), optionally with fitted engine overheads on top

No profile is the ideal engine (``Efficiency()`` defaults), named "ideal".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import PdlabError
from .costmodel import CostModel, Efficiency
from .stepprofile import KIND as STEP_KIND, StepProfileModel, is_step_profile

IDEAL = "ideal"


@dataclass
class Profile:
    path: str | None
    kind: str                      # "ideal" | "efficiency" | "step-profile"
    data: dict
    eff: Efficiency

    @property
    def name(self) -> str:
        """What results call it: the file's stem, or "ideal"."""
        return Path(self.path).stem if self.path else IDEAL

    @property
    def gpu(self) -> str | None:
        return self.data.get("gpu")

    def cost_model(self, gpu: str, model: str, tp: int = 1, block_size: int = 16):
        """The cost model of one replica (``tp`` GPUs) under this profile."""
        roof = CostModel.from_names(gpu, model, tp, self.eff, block_size)
        if self.kind != STEP_KIND:
            return roof
        if self.gpu and self.gpu != gpu:
            raise PdlabError(f"step profile {self.path} times steps on {self.gpu}, not {gpu}: pass --gpu {self.gpu}")
        return StepProfileModel.from_data(self.data, roof, self.path or "")

    def describe(self) -> dict:
        out = {"profile": self.name, "kind": self.kind}
        if self.path:
            out["file"] = self.path
        for k in ("engine", "fitted_on", "source"):
            if k in self.data:
                out[k] = self.data[k]
        return out


def load_profile(path: str | Path | None) -> Profile:
    """The profile in ``path`` (None: the ideal engine). A file that is neither kind, or not
    JSON, raises ``PdlabError`` naming it."""
    if path is None:
        return Profile(None, IDEAL, {}, Efficiency())
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PdlabError(f"cannot read cost-model profile {path}: {e}") from None
    if is_step_profile(data):
        # the step model already holds the per-step and per-sequence costs it was fitted to: the
        # overheads on top are zero unless a fit wrote them
        eff = {"step_overhead_s": 0.0, "seq_overhead_s": 0.0,
               **(data.get("efficiency", {}) if data.get("kind") == STEP_KIND else {})}
        return Profile(str(path), STEP_KIND, data, _efficiency(eff, path))
    if not isinstance(data, dict):
        raise PdlabError(f"cannot read cost-model profile {path}: expected a JSON object")
    return Profile(str(path), "efficiency", data, Efficiency.load(path))


def _efficiency(eff: dict, path) -> Efficiency:
    try:
        return Efficiency(**{k: eff[k] for k in Efficiency.__dataclass_fields__ if k in eff and k != "source"},
                          source=str(path))
    except TypeError as e:
        raise PdlabError(f"cannot read cost-model profile {path}: {e}") from None
