"""Generate the learner notebooks ``labs/NN_*.ipynb`` from the authored solutions in
``labs/solutions/``.

One authoring source: in a solution notebook, the lines of a code cell between ``# BEGIN
SOLUTION`` and ``# END SOLUTION`` are the answer. The learner copy replaces them with a stub that
raises ``NotImplementedError`` (same indentation), and every copy is written without outputs.

    python scripts/make_labs.py           # write labs/NN_*.ipynb
    python scripts/make_labs.py --check   # exit 1 if a learner copy is stale (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

LABS = Path(__file__).resolve().parent.parent / "labs"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"


def strip_outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
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


def learner_copy(solution: Path):
    nb = strip_outputs(nbformat.read(solution, as_version=4))
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = stub_source(cell.source, f"{solution.name} cell {i}")
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report stale learner copies, write nothing")
    args = ap.parse_args(argv)
    stale = []
    for sol in sorted((LABS / "solutions").glob("[0-9][0-9]_*.ipynb")):
        # the solution itself is kept output-free too
        sol_nb = nbformat.read(sol, as_version=4)
        clean = strip_outputs(nbformat.read(sol, as_version=4))
        target = LABS / sol.name
        text = nbformat.writes(learner_copy(sol)) + "\n"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target.relative_to(LABS.parent)))
            if nbformat.writes(sol_nb) != nbformat.writes(clean):
                stale.append(str(sol.relative_to(LABS.parent)) + " (has outputs)")
        else:
            target.write_text(text)
            sol.write_text(nbformat.writes(clean) + "\n")
    if stale:
        print("stale learner notebooks (run `python scripts/make_labs.py`): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
