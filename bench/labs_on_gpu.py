"""Execute lab notebooks headless (no Jupyter front end needed) and record what happened:
for a GPU machine where the labs' measured paths run. Writes each executed notebook and a
JSON summary (per notebook: ok, seconds, first error) to ``--out``.

    python bench/labs_on_gpu.py --out results/ labs/solutions/00_welcome.ipynb ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        t = time.perf_counter()
        row = {"notebook": path, "ok": True, "error": None}
        try:
            NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(Path(path).parent)}}).execute()
        except CellExecutionError as e:
            row["ok"], row["error"] = False, str(e).strip().splitlines()[-1][:500]
        row["seconds"] = round(time.perf_counter() - t, 1)
        nbformat.write(nb, out / Path(path).name)
        summary.append(row)
        print(json.dumps(row), flush=True)
        (out / "labs-summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
