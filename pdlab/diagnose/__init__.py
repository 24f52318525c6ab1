""""Which phase is hurting us?": ``pdlab diagnose``.

    observe    a run (simulated here, or measured latencies read from a file) as one Observation
    evidence   the seven design questions answered with numbers for it
    symptoms   the symptom table: each row's test and threshold, the fired rows ranked
    render     the report: terminal text, JSON, HTML with figures (``pdlab.viz.diagnosis``)

``report(obs, config, slos)`` is the whole diagnosis as one JSON-ready dict.
"""

from __future__ import annotations

from ..config import ServingConfig
from ..metrics import SLO
from .evidence import gather
from .observe import Observation, read_measured, simulate
from .symptoms import diagnose

QUESTIONS = (
    ("lengths", "What are the input and output length distributions?"),
    ("phases", "Is the traffic prompt-heavy or decode-heavy (GPU-seconds of prefill vs decode)?"),
    ("multi_turn", "How much of it is multi-turn?"),
    ("reuse", "How much of the prompts is a reusable prefix, and is it reused?"),
    ("long_prompts", "What happens to decode latency when a large prefill arrives?"),
    ("binding", "Does TTFT or TPOT bind for these SLOs?"),
    ("kv", "Is KV memory or compute the limit?"),
)


def report(obs: Observation, config: ServingConfig, slos: list[SLO]) -> dict:
    from ..run import cost_model_for
    cm = cost_model_for(config)
    ev = gather(obs, cm, slos)
    out = {"clock": obs.clock, "source": obs.source, "num_requests": obs.n, "slos": [str(s) for s in slos],
           "deployment": {"mode": config.mode, "model": config.model, "gpu": config.gpu, "tp": config.tp,
                          "gpus": config.gpus, "router": config.router, "prefix_cache": config.prefix_cache},
           "baselines": f"unloaded prefill and decode steps: cost model of {config.model} on {config.gpu}"
                        f"{f' x tp{config.tp}' if config.tp > 1 else ''}",
           "evidence": ev, "diagnosis": diagnose(ev)}
    out["checklist"] = checklist(ev)
    return out


def checklist(ev: dict) -> list[dict]:
    """The design questions, each with its one-line answer."""
    L, P, R, LP, B, K = (ev[k] for k in ("lengths", "phases", "reuse", "long_prompts", "binding", "kv"))

    def ms(x):
        return "-" if x is None else f"{x * 1e3:.0f} ms"
    a = {
        "lengths": f"input median {L['input']['p50']:.0f} / p90 {L['input']['p90']:.0f} / p99 "
                   f"{L['input']['p99']:.0f} tokens; output median {L['output']['p50']:.0f} / p90 "
                   f"{L['output']['p90']:.0f} / p99 {L['output']['p99']:.0f}",
        "phases": f"{P['verdict']}: prefill {P['prefill_share']:.0%} of GPU-seconds ({P['how']}); "
                  f"{P['token_ratio_in_out']:.1f} prompt tokens per output token",
        "multi_turn": "unknown (no session or prefix ids in the trace)" if R["multi_turn_share"] is None else
                      f"{R['multi_turn_share']:.0%} of requests continue an earlier one ({R['how']})",
        "reuse": "unknown (no prefix ids in the trace)" if R["reusable_share"] is None else
                 f"{R['reusable_share']:.0%} of prompt blocks reusable; hit rate "
                 f"{'not measured' if R['hit_rate'] is None else format(R['hit_rate'], '.0%')}"
                 f"{' (prefix cache off)' if R['prefix_cache'] is False else ''}",
        "long_prompts": "not measured (needs token timestamps)" if LP["itl_ratio"] is None and LP["ttft_ratio"] is None
                        else f"while a prompt >= {LP['long_threshold_tokens']} tokens prefills, other streams' ITL "
                             f"p99 is {ms(LP['itl_inside'])} vs {ms(LP['itl_outside'])}"
                             f" and short TTFT p90 {ms(LP['ttft_short_inside'])} vs {ms(LP['ttft_short_outside'])}",
        "binding": "no SLOs given" if B["binding"] is None else
                   f"{B['binding']} binds ("
                   + ", ".join(f"{r['slo']}: {'-' if r['ratio'] is None else format(r['ratio'], '.2f')}x of target"
                               for r in B["slos"])
                   + f"); {B['requests_within_all']:.0%} of requests meet all at once",
        "kv": "not measured" if K["occupancy_p90"] is None and K["preempted_share"] is None else
              f"KV occupancy p90 {K['occupancy_p90'] or 0:.0%} (max {K['occupancy_max'] or 0:.0%}), "
              f"{K['preempted_share'] or 0:.1%} of requests preempted: "
              + ("memory binds" if (K["preempted_share"] or 0) >= 0.01 or (K["occupancy_p90"] or 0) >= 0.95
                 else "compute binds, memory has room"),
    }
    return [{"key": k, "question": q, "answer": a[k]} for k, q in QUESTIONS]


__all__ = ["Observation", "QUESTIONS", "checklist", "diagnose", "gather", "read_measured", "report", "simulate"]
