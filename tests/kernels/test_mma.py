"""The tensor-core intrinsics against numpy: one warp computes S = Q K^T (ldmatrix.x4, two
m16n8k16 products per k-step), turns S into the A operand of the next product in registers
(pack2: the C layout of two n-tiles is the A layout), and O = P V with V read transposed
(ldmatrix.x4.trans), as the prefill kernel does. On a CPU this checks the simulator's emulation
against ``fragments.py``; on a GPU (the same test) it checks ``fragments.py`` against the
hardware."""

import numpy as np
import pytest
import torch

from pdlab.kernels import _memory as mem
from pdlab.kernels import _mma, fragments
from pdlab.kernels import _numba as nb
from pdlab.kernels._numba import SIM, cuda, float32, int32   # module globals: the simulator swaps `cuda`

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _kernel(kind):
    AL = nb.ALIGN                                       # 16: ldmatrix rows are 16-byte aligned
    ld, ldt = _mma.ldmatrix_x4(), _mma.ldmatrix_x4_trans()
    mma, pack2 = _mma.mma_m16n8k16(kind), _mma.pack2(kind)
    copy16, commit, wait = mem.cp_async16(), mem.cp_async_commit(), mem.cp_async_wait(0)
    rmax, rsum = _mma.quad_max(), _mma.quad_sum()
    sig = None if SIM else "void(int16[::1], int16[::1], int16[::1], float32[::1], float32[::1], float32[::1])"

    @nb.kernel(sig=sig)
    def k(q, kk, v, s_out, o_out, stats):
        # q, kk, v [16 x 16] row-major 16-bit bits; s_out, o_out [16 x 16] fp32; stats [16 x 2]
        lane = cuda.threadIdx.x
        sm = cuda.shared.array(384, int32, alignment=AL)   # Q | K | V, 16 rows of 8 words each
        row, chunk = lane >> 1, lane & 1                # each lane copies one 16-byte chunk
        copy16(sm, row * 8 + chunk * 4, q, row * 16 + chunk * 8)
        copy16(sm, 128 + row * 8 + chunk * 4, kk, row * 16 + chunk * 8)
        copy16(sm, 256 + row * 8 + chunk * 4, v, row * 16 + chunk * 8)
        commit()
        wait()
        cuda.syncthreads()
        g, t = lane >> 2, lane & 3
        a0, a1, a2, a3 = ld(sm, ((lane & 7) + ((lane >> 3) & 1) * 8) * 8 + (lane >> 4) * 4)
        b0, b1, b2, b3 = ld(sm, 128 + ((lane & 7) + (lane >> 4) * 8) * 8 + ((lane >> 3) & 1) * 4)
        z = float32(0)
        s = cuda.local.array((2, 4), float32)
        s[0, 0], s[0, 1], s[0, 2], s[0, 3] = mma(a0, a1, a2, a3, b0, b1, z, z, z, z)   # keys 0..7
        s[1, 0], s[1, 1], s[1, 2], s[1, 3] = mma(a0, a1, a2, a3, b2, b3, z, z, z, z)   # keys 8..15
        for n in range(2):
            s_out[g * 16 + n * 8 + 2 * t] = s[n, 0]
            s_out[g * 16 + n * 8 + 2 * t + 1] = s[n, 1]
            s_out[(g + 8) * 16 + n * 8 + 2 * t] = s[n, 2]
            s_out[(g + 8) * 16 + n * 8 + 2 * t + 1] = s[n, 3]
        # row statistics over the quad that holds a row
        for h in range(2):                              # rows g (c0, c1) and g + 8 (c2, c3)
            mx = rmax(max(max(s[0, 2 * h], s[0, 2 * h + 1]), max(s[1, 2 * h], s[1, 2 * h + 1])))
            tot = rsum(s[0, 2 * h] + s[0, 2 * h + 1] + s[1, 2 * h] + s[1, 2 * h + 1])
            if t == 0:
                stats[(g + 8 * h) * 2] = mx
                stats[(g + 8 * h) * 2 + 1] = tot
        # P = S (as 16-bit) is the A operand: C of n-tiles 0, 1 = a0/a1, a2/a3
        p0, p1 = pack2(s[0, 0], s[0, 1]), pack2(s[0, 2], s[0, 3])
        p2, p3 = pack2(s[1, 0], s[1, 1]), pack2(s[1, 2], s[1, 3])
        v0, v1, v2, v3 = ldt(sm, 256 + ((lane & 7) + ((lane >> 3) & 1) * 8) * 8 + (lane >> 4) * 4)
        o = cuda.local.array((2, 4), float32)
        o[0, 0], o[0, 1], o[0, 2], o[0, 3] = mma(p0, p1, p2, p3, v0, v1, z, z, z, z)   # dims 0..7
        o[1, 0], o[1, 1], o[1, 2], o[1, 3] = mma(p0, p1, p2, p3, v2, v3, z, z, z, z)   # dims 8..15
        for n in range(2):
            o_out[g * 16 + n * 8 + 2 * t] = o[n, 0]
            o_out[g * 16 + n * 8 + 2 * t + 1] = o[n, 1]
            o_out[(g + 8) * 16 + n * 8 + 2 * t] = o[n, 2]
            o_out[(g + 8) * 16 + n * 8 + 2 * t + 1] = o[n, 3]

    return k


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_qk_then_pv_on_fragments(dtype):
    kind = "bf16" if dtype == torch.bfloat16 else "f16"
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(16, 16, generator=g).to(dtype) for _ in range(3))
    s_out = torch.zeros(256, device=DEV)
    o_out = torch.zeros(256, device=DEV)
    stats = torch.zeros(32, device=DEV)
    bits = [x.to(DEV).view(torch.int16).reshape(-1).contiguous() for x in (q, k, v)]
    _kernel(kind)[1, 32, nb.stream()](*(nb.as_numba(b) for b in bits), nb.as_numba(s_out), nb.as_numba(o_out),
                                      nb.as_numba(stats))
    s_exp = q.double() @ k.double().T                               # [16 queries, 16 keys]
    torch.testing.assert_close(s_out.cpu().view(16, 16).double(), s_exp, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(stats.cpu().view(16, 2)[:, 0].double(), s_exp.max(1).values, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(stats.cpu().view(16, 2)[:, 1].double(), s_exp.sum(1), atol=1e-3, rtol=1e-5)
    p = s_out.cpu().view(16, 16).to(dtype).double()                 # S rounded to 16 bits, as pack2 does
    torch.testing.assert_close(o_out.cpu().view(16, 16).double(), p @ v.double(), atol=1e-3, rtol=1e-5)


def test_fragment_tables_cover_each_element_once():
    for which, shape, per_lane in (("A", (16, 16), 8), ("B", (16, 8), 4), ("C", (16, 8), 4)):
        own = fragments.owners(which)
        assert own.shape == shape and (own >= 0).all()
        assert np.bincount(own.ravel(), minlength=32).tolist() == [per_lane] * 32
    # a row of C lives on the 4 lanes of one quad; two C tiles side by side have A's layout
    c = fragments.owners("C")
    assert all(set(c[r]) == set(range(4 * (r % 8), 4 * (r % 8) + 4)) for r in range(16))
    a = fragments.owners("A")
    assert (a[:, :8] == c).all() and (a[:, 8:] == c).all()


def test_mma_reference_is_a_matmul():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((16, 16)).astype(np.float16)
    B = rng.standard_normal((16, 8)).astype(np.float16)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    bits = lambda M: M.view(np.uint16).astype(np.int64)                      # noqa: E731
    a_regs = [[bits(A)[lo] | (bits(A)[hi] << 16) for lo, hi in fragments.a_coords(l)] for l in range(32)]
    b_regs = [[bits(B)[lo] | (bits(B)[hi] << 16) for lo, hi in fragments.b_coords(l)] for l in range(32)]
    c_regs = [[C[rc] for rc in fragments.c_coords(l)] for l in range(32)]
    d = fragments.mma_reference(a_regs, b_regs, c_regs, _mma.UNPACK["f16"])
    D = A.astype(np.float64) @ B.astype(np.float64) + C
    for l in range(32):
        np.testing.assert_allclose(d[l], [D[rc] for rc in fragments.c_coords(l)], rtol=1e-6, atol=1e-6)
