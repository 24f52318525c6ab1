"""Generate the lab notebooks from their sources: each ``labs/src/NN_slug.py`` (jupytext's percent
format) becomes the solution ``labs/solutions/NN_slug.ipynb`` and the learner copy
``labs/NN_slug.ipynb``.

In a source's code cell, the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are the
answer: the solution keeps them, the learner copy replaces them with a stub that raises
``NotImplementedError`` (same indentation). Cell metadata, such as tags, comes from the cell's
``# %%`` line (``# %% tags=["raises-exception"]``). Both notebooks are written without outputs,
with the source's kernelspec and cell ids ``NN-ii``, so regenerating unchanged sources leaves them
byte-identical.

    python scripts/make_labs.py           # write labs/solutions/NN_*.ipynb and labs/NN_*.ipynb
    python scripts/make_labs.py --check   # exit 1 naming each stale notebook (a test runs this)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.cell_metadata import _JUPYTEXT_CELL_METADATA

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
NOTEBOOK = "[0-9][0-9]_*.ipynb"


def solution_notebook(src: Path):
    nb = jupytext.read(src, fmt="py:percent")
    if "kernelspec" not in nb.metadata:
        raise SystemExit(f"{src.relative_to(ROOT)}: the header names no kernelspec")
    # language_info is what a kernel fills in on the first run; the name alone keeps files stable
    nb.metadata = {"kernelspec": nb.metadata["kernelspec"], "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.id = f"{src.name[:2]}-{i:02d}"
        # jupytext's notes on the text layout (blank lines between cells) mean nothing in a notebook
        for key in _JUPYTEXT_CELL_METADATA:
            cell.metadata.pop(key, None)
    nbformat.validate(nb)
    return nb


def stub_source(src: str, where: str) -> str:
    out, inside, indent = [], False, ""
    for line in src.splitlines():
        s = line.strip()
        if s.startswith(BEGIN):
            if inside:
                raise SystemExit(f"{where}: nested {BEGIN}")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# TODO: your code here")
            out.append(f"{indent}raise NotImplementedError")
        elif s.startswith(END):
            if not inside:
                raise SystemExit(f"{where}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SystemExit(f"{where}: {BEGIN} never closed")
    return "\n".join(out)


def learner_copy(solution, where: str):
    nb = copy.deepcopy(solution)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = stub_source(cell.source, f"{where} cell {i}")
    return nb


def generated() -> dict[Path, str]:
    """Every generated notebook's path and text."""
    out = {}
    for src in sorted((LABS / "src").glob("[0-9][0-9]_*.py")):
        sol = solution_notebook(src)
        name = src.with_suffix(".ipynb").name
        out[LABS / "solutions" / name] = nbformat.writes(sol) + "\n"
        out[LABS / name] = nbformat.writes(learner_copy(sol, str(src.relative_to(ROOT)))) + "\n"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report stale notebooks, write nothing")
    args = ap.parse_args(argv)
    want = generated()
    stale = [p for p, text in want.items() if not p.exists() or p.read_text() != text]
    # a notebook whose source was renamed or deleted would still be executed by the tests
    orphans = [p for p in sorted(LABS.glob(NOTEBOOK)) + sorted((LABS / "solutions").glob(NOTEBOOK))
               if p not in want]
    if not args.check:
        for p in stale:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(want[p])
            print("wrote", p.relative_to(ROOT))
        stale = []
    if stale:
        print("stale notebooks (run `python scripts/make_labs.py`): "
              + ", ".join(str(p.relative_to(ROOT)) for p in stale))
    if orphans:
        print("notebooks without a source in labs/src/ (delete them): "
              + ", ".join(str(p.relative_to(ROOT)) for p in orphans))
    return 1 if stale or orphans else 0


if __name__ == "__main__":
    sys.exit(main())
