"""The diagnosis as a terminal report, one JSON object, or an HTML page with its figures."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path


def text(rep: dict) -> str:
    d, dep = rep["diagnosis"], rep["deployment"]
    out = [f"pdlab diagnose: {rep['num_requests']} requests; {rep['clock']}",
           f"deployment: {dep['mode']}, {dep['gpus']} x {dep['gpu']}, {dep['model']}"
           f"{', prefix cache' if dep['prefix_cache'] else ''}; SLOs: {', '.join(rep['slos']) or 'none'}",
           "", "Design questions"]
    for i, c in enumerate(rep["checklist"], 1):
        out.append(f"  {i}. {c['question']}")
        out.extend(textwrap.wrap(c["answer"], 96, initial_indent="     ", subsequent_indent="     "))
    out += ["", "Symptom table (each row: its test, the value it read)"]
    rank = {name: i for i, name in enumerate(d["ranked"], 1)}
    for r in d["rows"]:
        mark = f"FIRES #{rank[r['name']]}" if r["fired"] else ("cannot tell" if r["fired"] is None else "quiet")
        out.append(f"  [{mark:>9}] {r['name']}: {r['symptom']}")
        out.extend(textwrap.wrap(f"test: {r['test']}", 96, initial_indent="              ",
                                 subsequent_indent="                    "))
        out.extend(textwrap.wrap(f"read: {r['value']}", 96, initial_indent="              ",
                                 subsequent_indent="                    "))
    out += ["", "Verdict: " + d["verdict"]]
    if d["ranked"][1:]:
        out.append("Then: " + ", ".join(d["ranked"][1:]))
    out.append(f"({rep['baselines']})")
    return "\n".join(out)


def as_json(rep: dict) -> str:
    return json.dumps(rep, sort_keys=True, default=_plain)


def _plain(x):
    import numpy as np
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def html(rep: dict, obs, path: str | Path) -> Path:
    """A self-contained page (plotly.js inlined once): the text report and the figures."""
    import html as H

    from ..viz import diagnosis as vd
    figs = vd.figures(rep, obs)
    parts = [f"<h2>pdlab diagnose</h2><pre>{H.escape(text(rep))}</pre>"]
    for i, f in enumerate(figs):
        parts.append(f.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    path = Path(path)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>pdlab diagnose</title></head>"
                    "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
                    + "\n".join(parts) + "</body></html>")
    return path
