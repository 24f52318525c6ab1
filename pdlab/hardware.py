"""Hardware presets from vendor datasheets: GPUs and the links that join them. Data only
(no timing logic), so the serving configuration, the cost model and the figures share it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PdlabError


@dataclass(frozen=True)
class GpuSpec:
    name: str
    tflops: float          # dense bf16/fp16 tensor-core TFLOP/s
    tflops_fp32: float     # plain fp32 (CUDA cores: what Numba kernels can use)
    hbm_tbps: float        # memory bandwidth, TB/s
    mem_gb: float          # memory per GPU
    link_gbps: float       # GPU-GPU bandwidth per direction, GB/s (tensor parallelism)
    notes: str = ""


# Vendor datasheets, dense (no sparsity). Link: NVLink total / 2 per direction, or PCIe x16.
GPUS: dict[str, GpuSpec] = {g.name: g for g in [
    GpuSpec("h200", 989, 67, 4.8, 141, 450, "H200 SXM, NVLink 4"),
    GpuSpec("h100", 989, 67, 3.35, 80, 450, "H100 SXM, NVLink 4"),
    GpuSpec("a100-80gb", 312, 19.5, 2.04, 80, 300, "A100 80GB SXM, NVLink 3"),
    GpuSpec("l4", 121, 30.3, 0.30, 24, 25, "L4, PCIe 4 x16"),
    GpuSpec("t4", 65, 8.1, 0.32, 16, 12, "T4, PCIe 3 x16"),
    # A laptop-class CPU: rough, order-of-magnitude numbers; calibrate before trusting them.
    GpuSpec("cpu", 0.4, 0.4, 0.04, 16, 10, "generic 4-8 core laptop CPU (rough; run pdlab calibrate)"),
]}

#: KV-transfer links, per direction, effective GB/s and one-way latency in seconds.
LINKS_GBPS: dict[str, float] = {
    "nvlink": 450.0, "pcie4": 25.0, "pcie5": 50.0, "ib-ndr": 50.0, "eth-100g": 12.5, "eth-25g": 3.1,
}
LINK_LATENCY_S: dict[str, float] = {
    "nvlink": 5e-6, "pcie4": 10e-6, "pcie5": 10e-6, "ib-ndr": 20e-6, "eth-100g": 50e-6, "eth-25g": 50e-6,
}
CUSTOM_LINK_LATENCY_S = 10e-6   # a link given as a bare bandwidth


def lookup(table: dict, name: str, what: str):
    try:
        return table[name.lower()]
    except KeyError:
        raise PdlabError(f"unknown {what} '{name}' (choose from: {', '.join(table)})") from None


def gpu(name: str) -> GpuSpec:
    return lookup(GPUS, name, "GPU")


def parse_link(link: str | float) -> tuple[float, float]:
    """(GB/s, latency s) of a link given as a preset name or a bandwidth in GB/s."""
    text = str(link).strip()
    try:
        bw = float(text)
    except ValueError:
        name = text.lower()
        if name not in LINKS_GBPS:
            raise PdlabError(f"unknown link '{link}' (a preset: {', '.join(LINKS_GBPS)}; or GB/s)") from None
        return LINKS_GBPS[name], LINK_LATENCY_S[name]
    if not bw > 0 or bw == float("inf"):
        raise PdlabError(f"link bandwidth must be a positive number of GB/s, got {link}")
    return bw, CUSTOM_LINK_LATENCY_S


def gpu_preset_for(device_name: str) -> str | None:
    """The preset of a CUDA device name ("NVIDIA H100 80GB HBM3" -> "h100"), None if unknown."""
    name = device_name.lower()
    for key, preset in (("h200", "h200"), ("h100", "h100"), ("a100", "a100-80gb"), ("l4", "l4"), ("t4", "t4")):
        if key in name:
            return preset
    return None
