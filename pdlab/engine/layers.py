"""Building blocks of the engine's decoder (``pdlab.engine.model``): RMSNorm, the rotary
position embedding (RoPE) in its launch-light form, and the weight fusion that turns the three
q/k/v projections (and gate/up) into one GEMM each.

Shapes: T = tokens, D = head dim, C = hidden size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):                                    # x [..., C]
        # one fused kernel on a GPU (torch's rms_norm accumulates in fp32: bf16 squares lose
        # too much precision); the unfused form takes 8 launches, 16 layers x 2 norms per step
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_cos_sin(positions, head_dim: int, theta: float):
    """Rotation factors of every position, computed once per forward pass and shared by all
    layers (recomputing them per layer costs a dozen small kernel launches each time).
    positions [T] -> (cos, sin), each [T, 1, D] fp32: cos repeated over both halves, sin
    negated on the first half, so that ``rope`` is one multiply-add with a rolled copy."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.float()[:, None] * inv_freq[None, :]     # [T, D/2]
    cos, sin = ang.cos(), ang.sin()
    return torch.cat([cos, cos], -1)[:, None, :], torch.cat([-sin, sin], -1)[:, None, :]


def rope(x, cos, sin):
    """Rotate pairs (i, i + D/2) of every head by angle position * theta^(-2i/D) (Llama's
    rotate-half layout): x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, in fp32. Rolling x by D/2
    puts x2 beside x1 and x1 beside x2, so with ``rope_cos_sin``'s signed sin it is
    x cos + roll(x) sin: four kernels for any number of heads (the split-and-concatenate form
    takes ten). x [T, heads, D] (any strides), cos/sin [T, 1, D] -> [T, heads, D] in x's dtype."""
    out = torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)
    return out.to(x.dtype)


def _fused(*linears: nn.Linear) -> torch.Tensor:
    """One weight matrix [sum of outputs, C] holding ``linears``' weights, which become views."""
    w = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    row = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = w[row:row + n]
        row += n
    return w


def _live(fused, first: nn.Linear) -> bool:
    """True while ``first``'s weight is still the view at the start of ``fused`` (``.to()``
    replaces parameters, leaving a fused copy stale: then the separate weights are used)."""
    return fused is not None and first.weight.data_ptr() == fused.data_ptr() and first.weight.dtype == fused.dtype
