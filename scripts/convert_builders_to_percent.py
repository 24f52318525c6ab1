"""One-off: write each lab's cells, as the three builder scripts define them, to a jupytext
percent source ``labs/src/NN_slug.py``. Removed once the sources are the labs' only source.

    python scripts/convert_builders_to_percent.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_lab02  # noqa: E402
import build_labs_00_01  # noqa: E402
import build_labs_03_06  # noqa: E402

SRC = ROOT / "labs" / "src"
# the header keeps the kernelspec (JupyterLab picks the kernel from it) and the filter itself, so
# that a save from JupyterLab writes no jupytext version stamp or language_info back
HEADER = {
    "jupytext": {"notebook_metadata_filter": "kernelspec,-jupytext.text_representation"},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
}


def labs() -> dict[str, list]:
    cells = {
        "00_welcome": build_labs_00_01.lab00().cells,
        "01_two_phases": build_labs_00_01.lab01().cells,
        "02_kernels": build_lab02.CELLS,
    }
    cells.update(build_labs_03_06.LABS)
    return cells


def main() -> None:
    SRC.mkdir(parents=True, exist_ok=True)
    for name, cells in labs().items():
        nb = nbformat.v4.new_notebook(cells=list(cells), metadata=HEADER)
        text = jupytext.writes(nb, fmt="py:percent")
        # a save from JupyterLab (read, then write) must leave the source as it is
        assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text, name
        (SRC / f"{name}.py").write_text(text)
        print("wrote", (SRC / f"{name}.py").relative_to(ROOT))


if __name__ == "__main__":
    main()
