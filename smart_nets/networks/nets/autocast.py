"""Run a network under ``torch.autocast`` on any device, returning float32: bf16 inference on CPUs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["Autocast", "native_bf16_cpu"]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def native_bf16_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in its flags); None where it cannot tell
    (no ``/proc/cpuinfo``: not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Autocast(nn.Module):
    """``network`` under ``torch.autocast(device_type, dtype)``, its output cast back to float32.

    MONAI's evaluators autocast CUDA only (``amp=True`` opens ``torch.autocast("cuda")``), so on a CPU they run
    float32 whatever ``amp`` says; this wrapper puts the autocast inside the network call instead, which works on any
    device, and hands float32 back so that the sliding-window blending and the post-processing stay float32. It
    shares ``network`` (no copy): load the weights into ``network`` as usual, and wrap it only where the evaluator
    calls it (``configs/inference_bf16.json`` sets ``evaluator#network``).

    Args:
        network: the module to run.
        device_type: ``"cpu"`` or ``"cuda"``: the device the network runs on.
        dtype: ``"bfloat16"`` (default) or ``"float16"``, or the torch dtype.
    """

    def __init__(self, network: nn.Module, device_type: str = "cpu", dtype: str | torch.dtype = "bfloat16") -> None:
        super().__init__()
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"autocast dtype {dtype!r}: expected one of {sorted(_DTYPES)}")
            dtype = _DTYPES[dtype]
        if str(device_type) not in ("cpu", "cuda"):
            raise ValueError(f"autocast device_type {device_type!r}: expected 'cpu' or 'cuda'")
        self.network = network
        self.device_type = str(device_type)
        self.dtype = dtype
        if self.device_type == "cpu" and dtype == torch.bfloat16 and native_bf16_cpu() is False:
            logger.warning(
                "this CPU has neither AVX512-BF16 nor AMX: bf16 is emulated here and likely slower than float32; "
                "use configs/inference_onnx.json (float32 or the int8 graph) instead"
            )

    def forward(self, x: torch.Tensor):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.network(x)
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() if torch.is_tensor(o) and o.is_floating_point() else o for o in out)
        return out.float()
