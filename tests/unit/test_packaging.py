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


def _make_n(target, tmp_path, *args, gpu=False):
    """What `make -n target` would run, on a PATH with or without an nvidia-smi."""
    import os
    import shutil
    import subprocess
    if shutil.which("make") is None:
        import pytest
        pytest.skip("make not installed")
    bindir = tmp_path / f"bin{len(list(tmp_path.iterdir()))}"
    bindir.mkdir()
    for tool in ("sh", "uname", "make"):
        (bindir / tool).symlink_to(shutil.which(tool))
    if gpu:
        (bindir / "nvidia-smi").write_text("#!/bin/sh\n")
        (bindir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": str(bindir)}
    r = subprocess.run(["make", "-n", "-B", "--no-print-directory", "-C", str(ROOT), target, "VENV=" + str(tmp_path / "venv"), *args],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_demo_leaves_the_labs_ready_to_open(tmp_path):
    out = _make_n("demo", tmp_path)
    assert '-e ".[lab]"' in out                                    # JupyterLab and the widgets
    assert out.rstrip().splitlines()[-1].endswith('jupyter lab labs/00_welcome.ipynb)"')
    assert "jupyter lab labs/00_welcome.ipynb" in _make_n("lab", tmp_path)
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "labs" / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for text in (readme, guide):
        assert "make lab" in text and "jupyter lab labs/00_welcome.ipynb" in text
        assert 'pip install -e ".[lab]"' not in text     # no separate step left to forget
    assert "make demo" in ci and "jupyter lab --version" in ci


def test_torch_is_the_cpu_build_without_a_gpu(tmp_path):
    on_linux = __import__("platform").system() == "Linux"
    cpu = _make_n("demo", tmp_path)
    gpu = _make_n("demo", tmp_path, gpu=True)
    assert ("--index-url https://download.pytorch.org/whl/cpu" in cpu) == on_linux
    assert "--index-url" not in gpu and "the CUDA build, over 2 GB" in gpu
    chosen = _make_n("demo", tmp_path, "TORCH_INDEX=https://download.pytorch.org/whl/cu128")
    assert "--index-url https://download.pytorch.org/whl/cu128" in chosen
