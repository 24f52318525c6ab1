"""environment.yml and pyproject.toml must list the same packages with the same pins."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONDA_NAMES = {"pytorch": "torch", "python-kaleido": "kaleido"}
# extras that are tools for one machine, not part of the environment: "ptx" (CUDA 13 compilers for
# kernel compile checks on CPU-only CI; wrong on a GPU machine with an older driver)
NOT_IN_ENV = {"ptx"}
NOT_PIP = {"python", "pip"}


def norm(spec: str) -> tuple[str, str]:
    spec = spec.split("#")[0].strip().replace(" ", "")
    m = re.match(r"([A-Za-z0-9_.\-\[\]]+)(.*)", spec)
    name = re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")
    return CONDA_NAMES.get(name, name), ",".join(sorted(m.group(2).split(","))) if m.group(2) else ""


def test_environment_and_pyproject_agree():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_specs = list(py["dependencies"])
    for name, extra in py["optional-dependencies"].items():
        if name not in NOT_IN_ENV:
            pip_specs += [s for s in extra if not s.startswith("pdlab")]
    pip = dict(norm(s) for s in pip_specs)
    conda = {}
    text = (ROOT / "environment.yml").read_text()
    deps = text.split("dependencies:")[1]
    for line in deps.splitlines():
        m = re.match(r"\s+-\s+([^#\s][^#]*)", line)
        if m and ":" not in m.group(1):
            name, ver = norm(m.group(1))
            if name not in NOT_PIP:
                conda[name] = ver
    assert pip == conda
    for core in ("jupyterlab", "ipywidgets", "anywidget", "plotly", "torch", "numba", "numba-cuda",
                 "numpy", "nbval"):
        assert core in pip, core
    assert "<2.5" in pip["numpy"]
    for name, ver in pip.items():
        assert "<" in ver, f"{name} has no upper pin"
    for extra in NOT_IN_ENV:
        for spec in py["optional-dependencies"][extra]:
            assert "<" in norm(spec)[1], f"{spec} has no upper pin"
