"""rope_write_kv (one kernel: rotate q and k, store k and v at their slots) against the torch
rotation of pdlab.engine.model and a plain scatter, fp16 and bf16, with a padding slot."""

import pytest
import torch

from pdlab.engine.model import rope, rope_cos_sin
from pdlab.kernels import get_backend


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rope_write_matches_torch(dtype):
    H, HKV, D, T, nb, bs = 4, 1, 64, 3, 4, 8
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(5)
    wide = torch.randn(T, (H + 2 * HKV) * D + 64, generator=g).to(dtype).to(dev)
    qkv = wide[:, 32:32 + (H + 2 * HKV) * D]                    # a row-strided view, as a slice is
    pos = torch.tensor([0, 17, 1000], device=dev)
    slots = torch.tensor([5, -1, 30], device=dev)
    cos, sin = rope_cos_sin(pos, D, 500000.0)
    kc = torch.zeros(nb, bs, HKV, D, dtype=dtype, device=dev)
    vc = torch.zeros_like(kc)
    q = get_backend("numba").rope_write_kv(qkv, cos, sin, kc, vc, slots, H)
    qk = rope(qkv[:, :(H + HKV) * D].view(T, H + HKV, D), cos, sin)
    tol = dict(atol=1e-2, rtol=1e-2) if dtype == torch.bfloat16 else dict(atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(q.float(), qk[:, :H].float(), **tol)
    v = qkv[:, (H + HKV) * D:].view(T, HKV, D)
    flat_k, flat_v = kc.view(-1, HKV, D), vc.view(-1, HKV, D)
    for t, s in enumerate(slots.tolist()):
        if s >= 0:
            torch.testing.assert_close(flat_k[s].float(), qk[t, H:].float(), **tol)
            assert torch.equal(flat_v[s], v[t])
    written = (flat_k != 0).any(-1).any(-1).nonzero().flatten().tolist()
    assert written == [5, 30]                                     # the padding row stored nothing


def test_rope_write_refuses_mixed_dtypes():
    kc = torch.zeros(2, 8, 1, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="rope_write_kv: qkv dtype torch.float32 must be the cache's"):
        get_backend("numba").rope_write_kv(torch.zeros(2, 6 * 64), torch.zeros(2, 1, 64), torch.zeros(2, 1, 64),
                                           kc, kc.clone(), torch.zeros(2, dtype=torch.int64), 4)
