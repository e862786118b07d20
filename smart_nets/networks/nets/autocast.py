"""Run a network under ``torch.autocast`` on any device, returning float32: bf16 inference on CPUs."""

from __future__ import annotations

import logging

import torch
from torch import nn

from smart_nets.runtime import autocast_dtype, native_bf16_cpu

logger = logging.getLogger(__name__)

__all__ = ["Autocast", "native_bf16_cpu", "with_precision"]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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


def with_precision(network: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu") -> nn.Module:
    """``network`` itself for ``"fp32"``, or wrapped in :class:`Autocast` for ``"bf16"``: how the finetuning bundles
    train and validate in bf16 on a CPU or a GPU (``precision`` in their configs), since MONAI's ``amp`` autocasts
    CUDA only. On a CPU without native bf16 it warns and returns ``network`` (float32).

    Args:
        network: the module to run; its weights stay float32 and are shared, not copied.
        precision: ``"fp32"`` or ``"bf16"``.
        device: where ``network`` runs.

    Raises:
        ValueError: on another ``precision``.
    """
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    return network if dtype is None else Autocast(network, device.type, dtype)
