"""The labs as committed: no outputs, every notebook generated from its source in ``labs/src/``
(``scripts/make_labs.py``), and every lab has the parts a lab needs (objectives, time estimate, a
slider, a checked exercise, key points). nbval (``--nbval-lax`` over ``labs/``) is what executes
them."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
LABS = ROOT / "labs"
ALL = sorted(LABS.glob("**/*.ipynb"))
LEARNER = sorted(LABS.glob("[0-9][0-9]_*.ipynb"))
MINE = ["03_kv_cache", "04_interference", "05_chunked_prefill", "06_disaggregation", "07_prefix_and_routing"]


def _id(p):
    return str(p.relative_to(LABS))


def test_there_are_labs():
    assert LEARNER, "no labs/NN_*.ipynb"
    for name in MINE:
        assert (LABS / f"{name}.ipynb").exists() and (LABS / "solutions" / f"{name}.ipynb").exists()


@pytest.mark.parametrize("path", ALL, ids=_id)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{_id(path)} cell {i} has outputs (run scripts/make_labs.py)"
            assert cell.execution_count is None, f"{_id(path)} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{_id(path)}: saved widget state"


def test_notebooks_are_generated_from_their_sources():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_labs.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cell_metadata_and_solutions_carry_into_both_notebooks(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_labs
    finally:
        sys.path.pop(0)
    src = tmp_path / "07_demo.py"
    # one blank line after the def (PEP 8 asks for two): jupytext notes the layout in the cell's
    # metadata, which must not reach the notebooks
    src.write_text(textwrap.dedent("""\
        # ---
        # jupyter:
        #   kernelspec:
        #     display_name: Python 3
        #     language: python
        #     name: python3
        # ---

        # %% [markdown]
        # # Lab 07

        # %% tags=["raises-exception"]
        def f():
            # BEGIN SOLUTION
            return 1
            # END SOLUTION

        # %%
        f()
        """))
    sol = make_labs.solution_notebook(src)
    learner = make_labs.learner_copy(sol, "07_demo")
    assert [c.id for c in sol.cells] == ["07-00", "07-01", "07-02"]
    assert sol.metadata == {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                            "language_info": {"name": "python"}}
    for nb in (sol, learner):
        assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
        assert [dict(c.metadata) for c in nb.cells] == [{}, {"tags": ["raises-exception"]}, {}]
    assert "return 1" in sol.cells[1].source and "# BEGIN SOLUTION" in sol.cells[1].source
    assert learner.cells[1].source == "def f():\n    # TODO: your code here\n    raise NotImplementedError"


def _objectives(head: str) -> list[str]:
    """Numbered items of the header (wrapped lines joined)."""
    items = re.findall(r"^\s*\d+\.\s(.*?)(?=^\s*\d+\.\s|\n\s*\n|\Z)", head, flags=re.M | re.S)
    return [" ".join(i.split()) for i in items]


def _slider_makers() -> set[str]:
    """Names of pdlab functions and classes whose source builds an ipywidgets slider."""
    import importlib
    import inspect
    import pkgutil

    import pdlab
    names = set()
    for mod in pkgutil.walk_packages(pdlab.__path__, "pdlab."):
        if mod.name in ("pdlab.__main__", "pdlab.cli", "pdlab.demo") or mod.name.startswith("pdlab.kernels"):
            continue
        try:
            m = importlib.import_module(mod.name)
        except Exception:
            continue
        for name, obj in vars(m).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == m.__name__:
                try:
                    src = inspect.getsource(obj)
                except (OSError, TypeError):
                    continue
                if "Slider" in src or (inspect.isclass(obj) and any("Dashboard" in b.__name__ for b in obj.__mro__[1:])):
                    names.add(name)
    return names


def _text(nb, kind=None):
    return "\n".join(c.source for c in nb.cells if kind is None or c.cell_type == kind)


@pytest.mark.parametrize("path", LEARNER, ids=_id)
def test_lab_has_the_required_parts(path):
    nb = nbformat.read(path, as_version=4)
    md, src = _text(nb, "markdown"), _text(nb, "code")
    head = nb.cells[0].source
    assert head.startswith("# Lab "), "first cell: the title"
    assert re.search(r"\*\*Time:\*\*.*\d+ minutes", head), "time estimate in the header"
    assert "**Prerequisites:**" in head
    objectives = [o for o in _objectives(head) if "?" in o]
    assert 2 <= len(objectives) <= 4, "2-4 objectives phrased as questions"
    assert "env.report()" in src and "env.FAST" in src, "setup cell reports the environment and reads fast mode"
    called = set(re.findall(r"(\w+)\(", src))
    assert "Slider" in src or called & _slider_makers(), "at least one slider"
    assert re.search(r"checks\.check_\w+\(", src), "at least one checked exercise"
    assert "NotImplementedError" in src, "the learner copy has an exercise stub"
    assert re.search(r"^## Key points", md, flags=re.M), "key points"
    assert re.search(r"(?i)going further", md)


@pytest.mark.parametrize("name", MINE)
def test_my_labs_label_their_numbers_and_assert_their_claims(name):
    nb = nbformat.read(LABS / "solutions" / f"{name}.ipynb", as_version=4)
    md, src = _text(nb, "markdown"), _text(nb, "code")
    assert "simulated" in md.lower() and "CLOCK" in src
    assert src.count("assert ") >= 3, "teaching claims are asserted in the notebook"
    objectives = _objectives(nb.cells[0].source.split("Questions you will be able to answer")[1])
    assert 2 <= len(objectives) <= 4 and all(o.endswith("?") for o in objectives), objectives


def test_stub_cells_do_not_raise_on_definition():
    """A stub raises only when called; the check cell prints TODO, so learner copies run clean."""
    for path in LEARNER:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            src = "".join(cell["source"])
            if "raise NotImplementedError" in src and cell["cell_type"] == "code":
                assert src.lstrip().startswith(("def ", "from ", "import ", "#")) or "\ndef " in src, \
                    f"{_id(path)}: an exercise stub must sit inside a function"
