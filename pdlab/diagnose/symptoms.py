"""The symptom table: each row names a pressure, the test that detects it (with its threshold
stated), and the first thing to inspect or change when it fires. Rows are ranked by severity
(how far past its threshold the test is); when none fires, nothing is wrong.

    row                 fires when                                                  inspect first
    prefill queueing    queueing >= 50% of TTFT and TTFT p90 >= 2x an unloaded prefill   prefill capacity
    decode scheduling   TPOT p90 >= 2.5x one unloaded decode step, or a TPOT/ITL SLO missed  decode batch, decode pool
    KV capacity         >= 1% of requests preempted, or KV p90 occupancy >= 95%,        KV blocks, TP, max-num-seqs
                        or a request rejected for memory
    phase interference  short requests' ITL p99 (or TTFT p90) while a long prompt       token budget / disaggregation
                        prefills >= 3x the same without one
    missed prefix reuse reusable prefix share >= 20% and hit rate < half of it          prefix cache, KV-aware routing
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Row:
    name: str
    symptom: str            # what a user sees
    pressure: str           # which phase / resource is hurting
    inspect: str            # the first thing to inspect or change
    test: str               # the test, thresholds stated
    value: str              # the measured value(s) the test read
    fired: bool | None      # None: this observation cannot tell (what is missing is in ``value``)
    severity: float         # >= 1 when fired: how far past the threshold

    def to_dict(self) -> dict:
        return asdict(self)


QUEUE_SHARE, QUEUE_TTFT_X = 0.5, 2.0
DECODE_X = 2.5
PREEMPT_SHARE, KV_OCC = 0.01, 0.95
INTERFERENCE_X = 3.0
REUSE_SHARE, HIT_FRACTION = 0.2, 0.5


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.1f} ms"


def prefill_queueing(ev: dict) -> Row:
    q = ev["queueing"]
    share, p90, base = q["queue_share"], q["ttft"]["p90"], q["unloaded_ttft_p90_s"]
    rho = q["ttft_vs_prompt_rho"]
    rho_s = "-" if rho is None else f"{rho:+.2f}"
    est = " (estimated: TTFT minus the prompt's own prefill)" if q["queue_estimated"] else ""
    if share is None or p90 is None:
        return Row("prefill queueing", "high TTFT", "prefill", _INSPECT["prefill queueing"], _TEST_Q,
                   "no served requests", None, 0.0)
    x = p90 / base if base > 0 else float("inf")
    fired = share >= QUEUE_SHARE and x >= QUEUE_TTFT_X
    sev = x / QUEUE_TTFT_X if fired else 0.0
    return Row("prefill queueing", "high TTFT that grows with load and prompt length", "prefill",
               _INSPECT["prefill queueing"], _TEST_Q,
               f"queueing {share:.0%} of TTFT{est}; TTFT p90 {_ms(p90)} = {x:.1f}x unloaded {_ms(base)}; "
               f"rank correlation TTFT~prompt {rho_s}", fired, sev)


def decode_scheduling(ev: dict) -> Row:
    d = ev["decode"]
    x = d["tpot_p90_over_unloaded"]
    itl = d["itl"] or {}
    batch = d["mean_decode_batch"]
    b_s = "" if batch is None else f"; mean decode batch {batch:.0f}"
    if x is None:
        return Row("decode scheduling", "slow or uneven streaming", "decode", _INSPECT["decode scheduling"],
                   _TEST_D, "no request with 2+ tokens", None, 0.0)
    missed = [r for r in ev["binding"]["slos"] if r["slo"].split(":")[0] in ("tpot", "itl") and r["met"] is False]
    sev = max([x / DECODE_X] + [r["ratio"] for r in missed])
    slo_s = "".join(f"; {r['slo']} missed ({r['ratio']:.1f}x)" for r in missed)
    return Row("decode scheduling", "slow or uneven streaming (TPOT/ITL tails)", "decode",
               _INSPECT["decode scheduling"], _TEST_D,
               f"TPOT p90 {_ms(d['tpot']['p90'])} = {x:.1f}x one unloaded step {_ms(d['unloaded_step_s'])}; "
               f"ITL p50 {_ms(itl.get('p50'))}, p99 {_ms(itl.get('p99'))}{b_s}{slo_s}", sev >= 1.0,
               sev if sev >= 1.0 else 0.0)


def kv_capacity(ev: dict) -> Row:
    k = ev["kv"]
    if k["preempted_share"] is None and k["occupancy_p90"] is None:
        return Row("KV capacity", "preemptions, recomputation, OOM", "KV memory", _INSPECT["KV capacity"],
                   _TEST_KV, "not measured (no KV occupancy or preemption counts in this input)", None, 0.0)
    ps, occ = k["preempted_share"] or 0.0, k["occupancy_p90"] or 0.0
    mem_rejects = k["rejected"] if k["rejected"] else 0
    fired = ps >= PREEMPT_SHARE or occ >= KV_OCC or mem_rejects > 0
    sev = max(ps / PREEMPT_SHARE, occ / KV_OCC, 1.0 if mem_rejects else 0.0) if fired else 0.0
    busy = "-" if k["busy_share"] is None else f"{k['busy_share']:.0%}"
    return Row("KV capacity", "preemptions, recomputation, rejected requests", "KV memory",
               _INSPECT["KV capacity"], _TEST_KV,
               f"{ps:.1%} of requests preempted ({k['preemptions']} preemptions); KV occupancy p90 {occ:.0%}, "
               f"max {k['occupancy_max'] or 0:.0%}; {mem_rejects} rejected; GPUs busy {busy}", fired, sev)


def phase_interference(ev: dict) -> Row:
    lp = ev["long_prompts"]
    ri, rt = lp["itl_ratio"], lp["ttft_ratio"]
    if ri is None and rt is None:
        why = ("no long prompts (none >= 2x the median)" if lp["long_share"] in (0.0, 1.0)
               else "not measured (needs token timestamps)")
        return Row("phase interference", "streams stutter while long prompts run", "prefill vs decode",
                   _INSPECT["phase interference"], _TEST_I, why, None if "measured" in why else False, 0.0)
    x = max(ri or 0.0, rt or 0.0)
    fired = x >= INTERFERENCE_X
    return Row("phase interference", "short requests stutter (ITL) or wait (TTFT) while long prompts run",
               "prefill vs decode", _INSPECT["phase interference"], _TEST_I,
               f"prompts >= {lp['long_threshold_tokens']} tokens ({lp['long_share']:.0%}): ITL p99 "
               f"{_ms(lp['itl_inside'])} during their prefill vs {_ms(lp['itl_outside'])} otherwise "
               f"({(ri or 0):.1f}x); short TTFT p90 {_ms(lp['ttft_short_inside'])} vs "
               f"{_ms(lp['ttft_short_outside'])} ({(rt or 0):.1f}x)", fired, x / INTERFERENCE_X if fired else 0.0)


def missed_prefix_reuse(ev: dict) -> Row:
    r = ev["reuse"]
    share, hit = r["reusable_share"], r["hit_rate"]
    if share is None:
        return Row("missed prefix reuse", "repeated prompts recomputed", "prefill (wasted)",
                   _INSPECT["missed prefix reuse"], _TEST_R, "no prefix information in the trace (no block ids)",
                   False, 0.0)
    if hit is None and r["prefix_cache"] is False:
        hit = 0.0                                     # simulated with the cache off: nothing is reused
    if hit is None:
        return Row("missed prefix reuse", "repeated prompts recomputed", "prefill (wasted)",
                   _INSPECT["missed prefix reuse"], _TEST_R,
                   f"reusable share {share:.0%}; hit rate not measured", None, 0.0)
    fired = share >= REUSE_SHARE and hit < HIT_FRACTION * share
    sev = (share / REUSE_SHARE) * (1 - hit / share) * 2 if fired else 0.0
    off = " (prefix cache off)" if r["prefix_cache"] is False else ""
    return Row("missed prefix reuse", "the same prompt prefixes are computed again and again", "prefill (wasted)",
               _INSPECT["missed prefix reuse"], _TEST_R,
               f"reusable prefix share {share:.0%} of prompt blocks; hit rate {hit:.0%}{off}", fired, max(sev, 1.0) if fired else 0.0)


_TEST_Q = (f"queueing >= {QUEUE_SHARE:.0%} of TTFT and TTFT p90 >= {QUEUE_TTFT_X:g}x the unloaded prefill "
           f"of the p90 prompt")
_TEST_D = (f"TPOT p90 >= {DECODE_X:g}x one unloaded decode step (one sequence, mean context), "
           f"or a TPOT/ITL SLO missed")
_TEST_KV = (f">= {PREEMPT_SHARE:.0%} of requests preempted, or KV occupancy p90 (time-weighted) >= {KV_OCC:.0%}, "
            f"or any request rejected")
_TEST_I = (f"short requests' ITL p99 (or TTFT p90) while a long prompt prefills >= {INTERFERENCE_X:g}x "
           f"the same without one (long: >= p90 and >= 2x the median prompt)")
_TEST_R = f"reusable prefix share >= {REUSE_SHARE:.0%} and hit rate < {HIT_FRACTION:g}x that share"

_INSPECT = {
    "prefill queueing": "prefill capacity: more prefill GPUs (or a larger prefill pool), prompt batching "
                        "and the token budget; check the TTFT SLO against the prompt lengths",
    "decode scheduling": "the decode batch: max-num-seqs, decode pool size, TP for decode; "
                         "how often prefills interleave with decode iterations",
    "KV capacity": "KV blocks per GPU: more GPUs or TP (more memory per replica), fewer running "
                   "sequences (max-num-seqs), shorter max output",
    "phase interference": "chunked prefill (a smaller token budget) or disaggregation (separate prefill "
                          "and decode pools)",
    "missed prefix reuse": "turn on prefix caching; route requests of a session to the worker that holds "
                           "their prefix (KV-aware routing)",
}

# causes before their consequences: every pressure ends up as queueing, so it is listed last
RULES = (kv_capacity, missed_prefix_reuse, phase_interference, decode_scheduling, prefill_queueing)
SEVERITY_CAP = 10.0


def diagnose(ev: dict) -> dict:
    """Every row, the fired ones ranked by severity (how far past the threshold, capped at 10x so
    that saturated rows tie; ties keep the table's order, causes first), and what to inspect."""
    rows = [rule(ev) for rule in RULES]
    for r in rows:
        r.severity = min(r.severity, SEVERITY_CAP)
    fired = sorted((r for r in rows if r.fired), key=lambda r: -r.severity)
    if fired:
        verdict = f"{fired[0].pressure} is hurting most ({fired[0].name}): inspect {fired[0].inspect}"
    else:
        verdict = "nothing is wrong: no row of the table fires for this traffic on this deployment"
    return {"rows": [r.to_dict() for r in rows], "ranked": [r.name for r in fired],
            "first_to_inspect": fired[0].inspect if fired else None, "verdict": verdict}
