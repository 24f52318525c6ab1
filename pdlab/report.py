"""The terminal table every command prints: one row per run summary."""

from __future__ import annotations

import sys


def _fmt(x, unit="ms"):
    if x is None:
        return "-"
    return f"{x * 1e3:.1f}" if unit == "ms" else f"{x:.2f}"


def print_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    head = ["mode", "gpus", "done", "rej", "req/s", "tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
            "TPOT p99", "ITL p99", "E2E p99"]
    lines = [head]
    for s in rows:
        lines.append([s["mode"], str(s["gpus"]), str(s["completed"]), str(s["rejected"]),
                      f"{s['throughput_rps']:.2f}", f"{s['throughput_tok_s']:.0f}",
                      _fmt(s["ttft_s"]["p50"]), _fmt(s["ttft_s"]["p99"]), _fmt(s["tpot_s"]["p50"]),
                      _fmt(s["tpot_s"]["p99"]), _fmt(s["itl_s"]["p99"]), _fmt(s["e2e_s"]["p99"])])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    for k, r in enumerate(lines):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)), file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print("(latencies in ms)", file=out)
