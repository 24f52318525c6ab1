"""What the simulator predicts for larger disaggregated clusters: 1P1D, 2P2D, 4P4D and 8P8D
against aggregated and chunked replicas on the same number of GPUs (cost model: Llama-3-8B on
H100s), on a prompt-heavy (arXiv) and a chat (ShareGPT) workload.

    python bench/disagg_scale_sim.py            # writes bench/results/disagg-scale-sim-cpu-DATE.json

Up to 8 GPUs the KV crosses NVLink (one node); 8P8D needs two 8-GPU nodes, so its prefill and
decode pools are joined by InfiniBand NDR (the pessimistic placement: every transfer leaves the
node), and it is also given NVLink for comparison. Requests grow with the cluster (150 per GPU)
so every size sees the same per-GPU load. Every number here is simulated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdlab import SLO, ServingConfig, make_requests, run_serving  # noqa: E402
from pdlab import sweep  # noqa: E402
from pdlab.metrics import goodput_search, summarize  # noqa: E402
from pdlab.workload import with_rate  # noqa: E402

MODEL, GPU = "llama-3-8b", "h100"
SLOS = [SLO("ttft", 90, 0.5), SLO("itl", 99, 0.05)]      # lab 06's interactive targets
SIZES = [1, 2, 4, 8]                                    # P = D


def setups(n: int) -> dict[str, ServingConfig]:
    base = dict(model=MODEL, gpu=GPU)
    out = {f"disaggregated {n}P{n}D" + ("" if n < 8 else " ib-ndr"):
           ServingConfig(mode="disaggregated", prefill_gpus=n, decode_gpus=n, link="ib-ndr" if n >= 8 else "nvlink", **base),
           f"chunked x{2 * n}": ServingConfig(mode="chunked", num_gpus=2 * n, chunk_size=512, **base),
           f"aggregated x{2 * n}": ServingConfig(mode="aggregated", num_gpus=2 * n, **base)}
    if n >= 8:
        out[f"disaggregated {n}P{n}D nvlink"] = ServingConfig(mode="disaggregated", prefill_gpus=n, decode_gpus=n,
                                                             link="nvlink", **base)
    return out


def one(item) -> dict:
    workload, n, label, cfg, per_gpu_requests = item
    gpus = cfg.gpus
    base = make_requests(per_gpu_requests * gpus, 1.0, workload, seed=0)
    seen = {}

    def meets(rate):
        s = summarize(run_serving(with_rate(base, rate, 0), cfg).sequences, SLOS, gpus)
        seen[rate] = s
        return s["slo_attainment"]["all_met"]

    g = goodput_search(meets, start=gpus * 1.0, rel_tol=0.04)
    at = seen.get(g) or summarize(run_serving(with_rate(base, g, 0), cfg).sequences, SLOS, gpus) if g else None
    row = {"workload": workload, "pairs": n, "setup": label, "mode": cfg.mode, "gpus": gpus,
           "link": cfg.link if cfg.mode == "disaggregated" else None,
           "goodput_rps": g, "goodput_rps_per_gpu": g / gpus, "rates_tried": len(seen)}
    if at:
        row.update({f"{m}_p{q}_s_at_goodput": at[f"{m}_s"][f"p{q}"] for m in ("ttft", "itl", "tpot") for q in (50, 99)})
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--per-gpu-requests", type=int, default=150)
    args = p.parse_args(argv)
    items = [(w, n, label, cfg, args.per_gpu_requests) for w in ("arxiv", "sharegpt") for n in SIZES
             for label, cfg in setups(n).items()]
    rows = sweep.map(one, items, jobs=args.jobs, desc="goodput searches")
    date = datetime.date.today().isoformat()
    out = {"bench": "disagg_scale_sim", "date": date,
           "clock": f"simulated (cost model: {MODEL} on {GPU}); run on a CPU",
           "slos": [str(s) for s in SLOS], "per_gpu_requests": args.per_gpu_requests,
           "command": "python bench/disagg_scale_sim.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": rows}
    path = Path(args.out or ROOT / "bench" / "results" / f"disagg-scale-sim-cpu-{date}.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        print(f"{r['workload']:>9} {r['setup']:>28}: {r['goodput_rps_per_gpu']:6.2f} req/s per GPU "
              f"({r['goodput_rps']:.1f} total on {r['gpus']} GPUs)", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
