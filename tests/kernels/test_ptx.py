"""Compile the kernels to PTX for an H200 (sm_90) without a GPU and inspect the code: no fp64
instructions (a stray Python float makes the whole kernel fp64), 16-byte loads in decode, warp
shuffles for the row sums. Needs NVVM (numba-cuda's cu12/cu13 extra); skipped without it."""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, os
    os.environ['NUMBA_ENABLE_CUDASIM'] = '0'
    from pdlab.kernels import _numba as nb
    nb.kernel = lambda fn=None, *, sig=None, **kw: (lambda f: (f, sig))   # collect, do not compile
    from numba import cuda
    from pdlab.kernels import decode_attention as da, prefill_attention as pa
    out = {}
    try:
        for kind in ('f16', 'bf16'):
            f, sig = da.decode_kernel(kind, 128, 4, 16, True, 2, kind)
            out['decode_' + kind], _ = cuda.compile_ptx(f, sig, cc=(9, 0), fastmath=True)
            f, sig = pa.prefill_kernel(kind, 128, 4, 16)
            out['prefill_' + kind], _ = cuda.compile_ptx(f, sig, cc=(9, 0), fastmath=True)
    except Exception as e:
        out = {'skip': f'{type(e).__name__}: {e}'[:300]}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def ptx():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       env={**__import__("os").environ, "NUMBA_ENABLE_CUDASIM": "0"})
    if r.returncode != 0:
        pytest.skip(f"PTX compile unavailable: {r.stderr[-300:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(f"PTX compile unavailable here (no NVVM?): {out['skip']}")
    return out


def test_no_fp64(ptx):
    for name, text in ptx.items():
        body = "\n".join(l for l in text.splitlines() if not l.strip().startswith("//"))
        assert ".f64" not in body, f"{name}: fp64 instruction found"


def test_decode_uses_wide_loads_and_shuffles(ptx):
    for kind in ("f16", "bf16"):
        assert "ld.global.v4.u32" in ptx["decode_" + kind] or "ld.v4.u32" in ptx["decode_" + kind]
        assert "shfl.sync.bfly" in ptx["decode_" + kind]
