"""How the Numba decode kernel's time grows with the context: a fixed cost plus a streaming rate.

    python bench/decode_scaling.py --out bench/results/decode-scaling-h200-2026-11-29.json

For each batch size, the kernel (calls captured in a CUDA graph and replayed, as bench/kernels.py
times it) is timed over a range of contexts and a line time = fixed + bytes / rate is fitted:
``fixed_us`` is what a launch costs whatever the context (block start-up, the split merge, the
gap between graph nodes), ``stream_tbps`` the rate at which K/V bytes then go by. The same fit for torch SDPA on
dense K/V and for a torch device-to-device copy (bytes read + written) says how much of the
fixed cost any kernel of that size pays. Also times the 1 x 32768 shape at several split
counts (fewer splits: fewer partials to merge, but fewer blocks to read).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import D, DTYPE, H, HKV, copy_tbps, graph_ms, paged_cache, timed  # noqa: E402


def time_decode(batch, context, num_splits=None, **variant):
    from pdlab.kernels import decode_attention as da

    k_cache, v_cache, bt, sl = paged_cache(batch, context)
    q = torch.randn(batch, H, D, device="cuda", dtype=DTYPE)
    num_splits = num_splits or da.auto_splits(q, k_cache, bt, **variant)
    us = graph_ms(lambda: da.decode_attention(q, k_cache, v_cache, bt, sl, D ** -0.5, num_splits=num_splits,
                                              check=False, **variant)) * 1e3
    splits = da.split_plan(context, num_splits, D, H // HKV, **variant)[0]
    kv_bytes = 2 * batch * context * HKV * D * k_cache.element_size()
    del k_cache, v_cache
    torch.cuda.empty_cache()
    return dict(batch=batch, context=context, num_splits=splits, us=us, tbps=kv_bytes / (us * 1e-6) / 1e12,
                kv_bytes=kv_bytes)


def time_sdpa(batch, context):
    import torch.nn.functional as F

    q = torch.randn(batch, H, 1, D, device="cuda", dtype=DTYPE)
    k = torch.randn(batch, HKV, context, D, device="cuda", dtype=DTYPE)
    v = torch.randn_like(k)
    us = graph_ms(lambda: F.scaled_dot_product_attention(q, k, v, scale=D ** -0.5, enable_gqa=True)) * 1e3
    kv_bytes = 2 * k.numel() * k.element_size()
    return dict(batch=batch, context=context, us=us, tbps=kv_bytes / (us * 1e-6) / 1e12, kv_bytes=kv_bytes)


def time_copy(nbytes):
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    # eager, as before: captured in a graph, the 1 GiB copy ran at 2.7 TB/s instead of 4.2
    us = timed(lambda: b.copy_(a), iters=50) * 1e3
    return dict(kv_bytes=nbytes, us=us, tbps=nbytes / (us * 1e-6) / 1e12)   # read + written


def fit(rows):
    x = np.array([r["kv_bytes"] for r in rows], dtype=float)
    y = np.array([r["us"] for r in rows], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    return dict(fixed_us=float(intercept), stream_tbps=float(1 / (slope * 1e-6) / 1e12))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/decode-scaling.json")
    ap.add_argument("--variant", default="{}", help="decode_attention variant options, as JSON")
    args = ap.parse_args(argv)
    variant = json.loads(args.variant)
    res = dict(gpu=torch.cuda.get_device_name(0), date=time.strftime("%Y-%m-%d"), variant=variant,
               copy_tbps=copy_tbps(), batches={}, splits_1x32768=[])
    for batch, contexts in [(1, [8192, 16384, 32768, 65536, 131072]), (16, [1024, 2048, 4096, 8192]),
                            (64, [256, 512, 1024, 2048])]:
        rows = [time_decode(batch, c, **variant) for c in contexts]
        sdpa = [time_sdpa(batch, c) for c in contexts]
        res["batches"][str(batch)] = dict(rows=rows, **fit(rows), sdpa=dict(rows=sdpa, **fit(sdpa)))
        print(batch, res["batches"][str(batch)], flush=True)
    copies = [time_copy(n << 20) for n in (64, 128, 256, 512, 1024)]
    res["copy"] = dict(rows=copies, **fit(copies))
    for splits in (8, 16, 24, 32, 33):
        res["splits_1x32768"].append(time_decode(1, 32768, num_splits=splits, **variant))
    print(res["splits_1x32768"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
