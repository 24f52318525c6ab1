"""Where pdlab's shipped data lives (``data/`` at the repository root): one locator for every
module that reads a trace, a profile or the tiny model."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TRACES = DATA / "traces"
PROFILES = DATA / "profiles"
TINY = DATA / "tiny"
MEASURED = DATA / "measured"
