"""Run each hot attention kernel once, for a profiler (Nsight Compute) to look at.

    ncu --clock-control none -k regex:'decode_kernel|prefill_kernel' \\
        --section SpeedOfLight --section WarpStateStats ... python bench/kernel_profile.py
    ncu --clock-control none -k regex:prefill_mma ... python bench/kernel_profile.py --only mma

Shapes are bench/kernels.py's: decode 16 x 4096, 64 x 1024, 1 x 32768, a 4096-token causal
prefill (32 query heads, 8 KV heads, head dim 128, bf16 KV, block 16) on the fp32 kernel
("prefill"), and on the tensor-core kernel the same prompt and a 512-token chunk after 3584
cached tokens ("mma"). Kernels are compiled and
warmed once outside the profiled launches (``--launch-skip`` counts the warm-up launches).
With ``--sass DIR`` it also writes each kernel's machine code and its register/spill report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import BS, D, DTYPE, H, HKV, paged_cache  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sass", help="folder for SASS dumps and register reports")
    ap.add_argument("--only", choices=["decode", "prefill", "mma"], help="one kernel family")
    args = ap.parse_args(argv)
    from pdlab.kernels import get_backend
    from pdlab.kernels import decode_attention as da
    from pdlab.kernels import prefill_attention as pa

    nbk = get_backend("numba")
    scale = D ** -0.5
    runs = []
    if args.only in (None, "decode"):
        for batch, context in [(16, 4096), (64, 1024), (1, 32768)]:
            kc, vc, bt, sl = paged_cache(batch, context)
            q = torch.randn(batch, H, D, device="cuda", dtype=DTYPE)
            runs.append(lambda q=q, kc=kc, vc=vc, bt=bt, sl=sl: nbk.decode_attention(
                q, kc, vc, bt, sl, scale, check=False))
    if args.only in (None, "prefill"):
        kc, vc, bt, sl = paged_cache(1, 4096)
        q = torch.randn(4096, H, D, device="cuda", dtype=DTYPE)
        cu = torch.tensor([0, 4096], dtype=torch.int32, device="cuda")
        runs.append(lambda q=q, kc=kc, vc=vc, bt=bt, sl=sl, cu=cu: nbk.prefill_attention(
            q, kc, vc, bt, cu, sl, scale, max_q_len=4096, check=False, kernel="fp32"))
    if args.only in (None, "mma"):
        for tokens in (4096, 512):
            kc, vc, bt, sl = paged_cache(1, 4096)
            q = torch.randn(tokens, H, D, device="cuda", dtype=DTYPE)
            cu = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
            runs.append(lambda q=q, kc=kc, vc=vc, bt=bt, sl=sl, cu=cu, n=tokens: nbk.prefill_attention(
                q, kc, vc, bt, cu, sl, scale, max_q_len=n, check=False, kernel="mma"))
    for run in runs:      # warm-up: compile and load every kernel (these launches are skipped)
        run()
    torch.cuda.synchronize()
    for run in runs:      # the profiled launches
        run()
    torch.cuda.synchronize()
    if args.sass:
        out = Path(args.sass)
        out.mkdir(parents=True, exist_ok=True)
        kerns = {"decode": da._get_kernel("bf16", D, H // HKV, BS, "bf16"),
                 "prefill": pa.prefill_kernel("bf16", D, H // HKV, BS),
                 "prefill_mma": pa.prefill_mma_kernel("bf16", D, H // HKV, BS)}
        for name, k in kerns.items():
            try:
                sass = k.inspect_sass()
                (out / f"{name}.sass").write_text("\n".join(sass.values()) if isinstance(sass, dict) else sass)
            except Exception as e:  # nvdisasm missing: keep the register report
                print(f"sass {name}: {e!r}")
            print(f"{name}: regs {k.get_regs_per_thread()}, local bytes {k.get_local_mem_per_thread()}, "
                  f"shared bytes {k.get_shared_mem_per_block()}")


if __name__ == "__main__":
    main()
