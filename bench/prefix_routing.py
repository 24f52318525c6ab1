"""Prefix reuse and routing on the shipped Mooncake conversation trace (its own arrival times,
its hash_ids as prefix structure), 4 chunked replicas of Llama-3-8B on H100, simulated by the
cost model:

    routers     round-robin, least-loaded, session, kv-aware: hit rate, TTFT p50/p90, throughput
    index       kv-aware with KV events against the approximation (no events, TTL 120 s)
    weights     kv-aware's overlap weight swept (0 = load balancing only)
    host tier   --offload-gb per replica over PCIe 5, for kv-aware and round-robin
    sessions    the same routers on agent-sessions (a shared system prompt, 8 turns), where
                session affinity has session ids to stick to
    hot spot    one popular 6k-token prefix: kv-aware with load weight 0 (pure affinity) vs 1

    python bench/prefix_routing.py [--requests 3000] [--out bench/results/prefix-routing-cpu-<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import replace

from pdlab import ServingConfig, run_serving, sweep
from pdlab.paths import TRACES
from pdlab.request import Request
from pdlab.run import sim_clock
from pdlab.sessions import make_sessions
from pdlab.lab.routing import hot_spot
from pdlab.traces import read_trace

MODEL, GPU, REPLICAS = "llama-3-8b", "h100", 4
BASE = ServingConfig(mode="chunked", model=MODEL, gpu=GPU, num_gpus=REPLICAS, chunk_size=512, prefix_cache=True)


def mooncake(n: int) -> list[Request]:
    reqs = read_trace(TRACES / "mooncake_conv.jsonl")[:n]
    t0 = reqs[0].arrival
    return [replace(r, arrival=r.arrival - t0) for r in reqs]


def row(name: str, reqs, cfg: ServingConfig) -> dict:
    t = time.process_time()
    s = run_serving(reqs, cfg).summary()
    cpu = time.process_time() - t
    r = {"name": name, "router": cfg.router, "overlap_weight": cfg.overlap_weight, "load_weight": cfg.load_weight,
         "kv_events": cfg.kv_events, "offload_gb": cfg.offload_gb, "requests": s["num_requests"],
         "completed": s["completed"],
         "hit_rate": round(s["prefix_hit_rate_device"] + s["prefix_hit_rate_host"], 4),
         "hit_rate_device": round(s["prefix_hit_rate_device"], 4), "hit_rate_host": round(s["prefix_hit_rate_host"], 4),
         "upper_bound": round(s["prefix_hit_rate_upper_bound"], 4),
         "ttft_p50_s": round(s["ttft_s"]["p50"], 4), "ttft_p90_s": round(s["ttft_s"]["p90"], 4),
         "ttft_queueing_p90_s": round(s["ttft_split_s"]["queueing"]["p90"], 4),
         "ttft_transfer_p90_s": round(s["ttft_split_s"]["transfer"]["p90"], 4),
         "throughput_tok_s": round(s["throughput_tok_s"], 1), "throughput_rps": round(s["throughput_rps"], 3),
         "prefill_tokens_computed": s["prefill_tokens_computed"],
         "prefill_tokens_recomputed": s["prefill_tokens_recomputed"],
         "requests_per_replica": s["replica_load"]["requests"], "preemptions": s["preemptions"],
         "sim_cpu_s": round(cpu, 2)}
    print(f"{name:34s} hit {r['hit_rate']:.3f} (bound {r['upper_bound']:.3f})  TTFT p50 {r['ttft_p50_s']:.2f} s "
          f"p90 {r['ttft_p90_s']:.2f} s  {r['throughput_tok_s']:.0f} tok/s  per replica {r['requests_per_replica']}",
          flush=True)
    return r


def _job(item):
    name, which, cfg, n = item
    reqs = {"mooncake": lambda: mooncake(n), "agent": lambda: make_sessions(n, 1.0, "agent-sessions", seed=0),
            "hot": lambda: list(hot_spot())}[which]()
    return row(name, reqs, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    today = datetime.date.today().isoformat()
    ap.add_argument("--requests", type=int, default=3000, help="first N requests of the trace (12031 in all)")
    ap.add_argument("--jobs", type=int, default=2, help="simulations run in parallel (pdlab.sweep)")
    ap.add_argument("--out", default=f"bench/results/prefix-routing-cpu-{today}.json")
    args = ap.parse_args()
    n = args.requests
    kv = replace(BASE, router="kv-aware")
    plan = {
        "routers": [(r, "mooncake", replace(BASE, router=r)) for r in ("round-robin", "least-loaded", "session", "kv-aware")],
        "index": [("kv-aware, no KV events (ttl 120 s)", "mooncake", replace(kv, kv_events=False)),
                  ("kv-aware, no KV events (ttl 10 s)", "mooncake", replace(kv, kv_events=False, router_ttl=10.0))],
        "weights": [(f"kv-aware, overlap weight {w:g}", "mooncake", replace(kv, overlap_weight=w)) for w in (0.0, 4.0)],
        "host_tier": [(f"{c.router}, offload {gb:g} GB", "mooncake", replace(c, offload_gb=gb))
                      for c, gb in ((kv, 100.0), (kv, 400.0), (replace(BASE, router="round-robin"), 400.0))],
        "sessions": [(f"agent-sessions, {r}", "agent", replace(BASE, router=r))
                     for r in ("round-robin", "least-loaded", "session", "kv-aware")]
                    + [("agent-sessions, kv-aware w=4", "agent", replace(kv, overlap_weight=4.0))],
        "hot_spot": [(f"hot spot, kv-aware load weight {lw:g}", "hot", replace(kv, load_weight=lw)) for lw in (0.0, 1.0)]
                    + [("hot spot, round-robin", "hot", replace(BASE, router="round-robin"))],
    }
    items = [(name, which, cfg, n) for rows in plan.values() for name, which, cfg in rows]
    results = iter(sweep.map(_job, items, jobs=args.jobs, desc="prefix routing"))
    sections = {k: [next(results) for _ in rows] for k, rows in plan.items()}
    mc = mooncake(n)
    agent = make_sessions(n, 1.0, "agent-sessions", seed=0)
    out = {"what": "prefix reuse and KV-aware routing, 4 chunked replicas (token budget 512), prefix cache on",
           "clock": sim_clock(BASE), "model": MODEL, "gpu_preset": GPU, "replicas": REPLICAS,
           "trace": f"data/traces/mooncake_conv.jsonl, first {len(mc)} requests at their own timestamps",
           "sessions": f"agent-sessions preset, {len(agent)} requests, 1 session/s, seed 0",
           "hot_spot": "400 requests at 40/s sharing one 6144-token prefix + 512-1511 own tokens",
           "date": today, "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
           "load_average_1min": round(os.getloadavg()[0], 2), "sections": sections}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
