"""A static copy of the labs: execute every solution notebook (fast mode) and write HTML with PNG
figures under ``site/`` (git-ignored), for readers on GitHub or without Jupyter.

    python scripts/labs_html.py                 # all labs -> site/index.html + site/NN_*.html
    python scripts/labs_html.py 04 05           # only labs whose name starts with 04 or 05
    python scripts/labs_html.py --full          # full-size workloads instead of PDLAB_FAST=1

How: each notebook is copied to a temporary directory and executed there with nbclient, with
``PLOTLY_RENDERER="plotly_mimetype+png"`` (every ``fig.show()`` also yields a PNG, rendered by
kaleido >= 1 through Debian's Chromium) and ``PDLAB_STATIC=1`` (a dashboard displays its control
values and a PNG of its figures instead of live widgets; sweeps show no progress bar). A hidden
first cell keeps one kaleido browser running for the whole notebook. nbconvert's HTML exporter
then writes the page; the repository's notebooks stay output-free.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
SITE = ROOT / "site"

KALEIDO_CELL = """\
# (static build only) one kaleido browser for every figure of this notebook; pictures 900 px wide
import kaleido, warnings
import plotly.io as pio
warnings.filterwarnings("ignore", message="The kopts argument is ignored")
kaleido.start_sync_server(silence_warnings=True)
pio.renderers["png"].width = 900"""


def _env(fast: bool) -> dict:
    env = {**os.environ, "PLOTLY_RENDERER": "plotly_mimetype+png", "PDLAB_STATIC": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["PDLAB_FAST"] = "1" if fast else "0"
    try:
        import torch
        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:   # lab 02's Numba kernels run on the CUDA simulator without a GPU (as in the tests)
        env.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    return env


def execute(src: Path, env: dict, timeout: int = 900):
    from nbclient import NotebookClient

    nb = nbformat.read(src, as_version=4)
    setup = nbformat.v4.new_code_cell(KALEIDO_CELL)
    setup.metadata["tags"] = ["static-setup"]
    nb.cells.insert(0, setup)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / src.name
        shutil.copy(src, work)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)           # the kernel inherits this process's environment
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                           resources={"metadata": {"path": tmp}}).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    nb.cells = [c for c in nb.cells if "static-setup" not in c.metadata.get("tags", [])]
    for c in nb.cells:   # number the cells as if the hidden setup cell had not run
        if c.cell_type == "code" and c.get("execution_count"):
            c.execution_count -= 1
    nb.metadata.pop("widgets", None)   # live widget state: megabytes, and nothing on the page uses it
    for c in nb.cells:   # keep the PNG; the plotly JSON would only bloat the page (nbconvert cannot draw it)
        for o in c.get("outputs", []):
            if "data" in o and "image/png" in o["data"]:
                o["data"].pop("application/vnd.plotly.v1+json", None)
    return nb


def to_html(nb, title: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    note = ('<div style="background:#fff8e1;border:1px solid #f0c36d;padding:8px 14px;margin:10px;'
            'font-family:sans-serif">A static copy of <b>' + html.escape(title) + '</b>, executed in fast mode '
            '(small workloads). Figures are pictures and dashboards are snapshots: open the notebook in '
            'JupyterLab to use the sliders. <a href="index.html">All labs</a></div>')
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + note, body, count=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="lab name prefixes (default: all)")
    ap.add_argument("--full", action="store_true", help="full workloads (default: PDLAB_FAST=1)")
    ap.add_argument("--out", type=Path, default=SITE)
    args = ap.parse_args(argv)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        print("labs_html: needs kaleido >= 1 (pip install 'kaleido>=1.5,<1.6') and a Chromium", file=sys.stderr)
        return 2
    notebooks = sorted((LABS / "solutions").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in args.only)]
    args.out.mkdir(parents=True, exist_ok=True)
    env = _env(fast=not args.full)
    rows, failed = [], []
    for src in notebooks:
        t = time.perf_counter()
        try:
            nb = execute(src, env)
        except Exception as e:   # keep going: one broken lab should not hide the others
            failed.append(src.name)
            print(f"  {src.name}: FAILED ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            continue
        title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip() if nb.cells else src.stem
        out = args.out / f"{src.stem}.html"
        out.write_text(to_html(nb, title))
        dt = time.perf_counter() - t
        rows.append((src.stem, title))
        print(f"  {src.name} -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}  [{dt:.0f} s]")
    pages = []   # every lab page in the folder, also those of an earlier (partial) run
    for page in sorted(args.out.glob("[0-9][0-9]_*.html")):
        m = re.search(r"<title>(.*?)</title>", page.read_text(errors="replace"), flags=re.S)
        pages.append((page.name, html.unescape(m.group(1)).strip() if m else page.stem))
    items = "\n".join(f'<li><a href="{n}">{html.escape(t)}</a></li>' for n, t in pages)
    (args.out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>pdlab labs</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:800px;margin:2em auto'>"
        "<h1>pdlab labs (static copy)</h1><p>Executed in fast mode; every number is labelled simulated "
        f"or measured in the page itself.</p><ul>{items}</ul></body>")
    print(f"wrote {len(rows)} labs to {args.out}/" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
