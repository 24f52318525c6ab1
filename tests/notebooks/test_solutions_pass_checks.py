"""Every exercise solution of labs 03-07 passes its check. A check prints FAIL instead of raising
(so a workshop keeps flowing), which nbval cannot see; this test calls each check on the
solution's own code and asserts that it returns True."""

import re
from pathlib import Path

import nbformat
import pytest

LABS = Path(__file__).resolve().parents[2] / "labs" / "solutions"
MINE = ["03_kv_cache", "04_interference", "05_chunked_prefill", "06_disaggregation", "07_prefix_and_routing"]
PRELUDE = "import numpy as np\nfrom pdlab.lab import checks\nfrom pdlab.request import Status\n"


def _exercises(name):
    cells = nbformat.read(LABS / f"{name}.ipynb", as_version=4).cells
    code = [c.source for c in cells if c.cell_type == "code"]
    for i, src in enumerate(code):
        if "# BEGIN SOLUTION" in src:
            check = next(c for c in code[i + 1:] if re.search(r"checks\.check_\w+\(", c))
            yield src, re.search(r"checks\.check_\w+\([^)]*\)", check).group(0)


CASES = [(n, src, call) for n in MINE for src, call in _exercises(n)]


@pytest.mark.parametrize("name,solution,call", CASES, ids=[f"{n}:{c.split('(')[0]}" for n, _, c in CASES])
def test_solution_passes_its_check(name, solution, call, capsys):
    ns: dict = {}
    exec(PRELUDE + solution, ns)
    ok = eval(call, ns)
    out = capsys.readouterr().out
    assert ok is True, f"{name}: {call} did not pass:\n{out}"
    assert "[PASS]" in out


def test_every_lab_has_an_exercise():
    assert {n for n, _, _ in CASES} == set(MINE)
