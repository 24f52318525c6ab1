"""Type and lower the GPU versions of the kernels to LLVM IR on a CPU (no GPU, no NVVM needed).
The simulator runs the kernels as Python, so it never sees GPU-only code (the 16-byte-load
intrinsic, libdevice calls, warp shuffles, explicit signatures): this catches errors there
before a GPU run does."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os
    os.environ['NUMBA_ENABLE_CUDASIM'] = '0'
    from pdlab.kernels import _numba as nb
    nb.kernel = lambda fn=None, *, sig=None, **kw: (lambda f: (f, sig))   # collect, do not compile
    from numba.cuda.compiler import compile_cuda
    from numba.cuda.core.sigutils import normalize_signature
    from pdlab.kernels import cache_ops, decode_attention as da, prefill_attention as pa, prefill_mma as pm
    jobs = [da.decode_kernel('bf16', 128, 4, 16), da.decode_kernel('f16', 64, 8, 32, False),
            da.decode_kernel('bf16', 128, 4, 16, True, 2, 'bf16'), da.decode_kernel('f16', 64, 2, 12, True, 4, 'f16'),
            pa.prefill_kernel('bf16', 128, 4, 16), pa.prefill_kernel('f16', 64, 1, 32),
            pa.prefill_kernel('bf16', 128, 8, 16, (256, 64, 64, 32, 32), 128),
            pm.prefill_mma_kernel('bf16', 128, 4, 16), pm.prefill_mma_kernel('f16', 64, 1, 32, (4, 2, 32)),
            pm.prefill_mma_kernel('bf16', 64, 8, 12, (8, 1, 32)),
            cache_ops._write_kv_kernel()]
    for f, sig in jobs:
        args, ret = normalize_signature(sig)
        ir = compile_cuda(f, ret, args, fastmath=True, cc=(9, 0)).library.get_llvm_str()
        assert ' double ' not in ir and 'fadd double' not in ir, f.__name__ + ': fp64 in IR'
    print('lowered', len(jobs))
""")


def test_gpu_kernels_lower_on_cpu():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       env={**__import__("os").environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert r.returncode == 0 and "lowered 11" in r.stdout, r.stderr[-3000:]
