"""TensorRT compilation of a bundle's network through MONAI's ``trt_compile``, with a clear answer where TensorRT
cannot run (no CUDA, no ``tensorrt`` or ``polygraphy`` package)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from monai.utils import optional_import
from torch import nn

from smart_nets.export.onnx_runtime import ONNX_EXPORT_KWARGS

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def tensorrt_status() -> tuple[bool, str]:
    """``(True, version)`` where MONAI's ``trt_compile`` can build engines here, else ``(False, why not)``."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    trt, has_trt = optional_import("tensorrt")
    if not has_trt:
        return False, "the tensorrt package is not importable (pip install tensorrt)"
    _, has_polygraphy = optional_import("polygraphy")
    if not has_polygraphy:
        return False, "the polygraphy package is not importable (pip install polygraphy)"
    return True, f"TensorRT {trt.__version__}"


def trt_compile(
    model: nn.Module,
    base_path: str,
    precision: str = "fp16",
    dynamic_batchsize: Sequence[int] = (1, 4, 8),
    required: bool = False,
    checkpoint: str | None = None,
) -> nn.Module:
    """Make ``model`` run as a TensorRT engine, built on its first call and cached at ``<base_path>.plan``.

    MONAI's ``trt_compile`` does the work (ONNX export with the project's ``ONNX_EXPORT_KWARGS``, engine build with
    a dynamic batch profile, reuse of the plan on later runs). It only logs that it "has no effect" where TensorRT is
    missing; this wrapper says why, and lets a config choose between falling back and stopping.

    Args:
        model: the network, on its device, weights loaded now or later (e.g. by ``CheckpointLoader``) but before
            its first call.
        base_path: where the plan goes, without ``.plan``; its folder must exist.
        precision: ``fp32``, ``tf32``, ``fp16`` or ``bf16`` (checked even where TensorRT is unavailable).
        dynamic_batchsize: ``(min, opt, max)`` batch of the engine's profile; sliding-window inference calls it with
            ``sw_batch_size`` windows and fewer for the last ones.
        required: where TensorRT cannot run, raise instead of returning ``model`` unchanged with a warning.
        checkpoint: a weights file; a plan older than it is rebuilt.

    Raises:
        ValueError: an unknown ``precision`` or a malformed ``dynamic_batchsize``.
        RuntimeError: ``required`` and TensorRT cannot run here.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"TensorRT precision {precision!r} is not one of {PRECISIONS}")
    batch = [int(b) for b in dynamic_batchsize]
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise ValueError(f"dynamic_batchsize must be (min, opt, max) with 1 <= min <= opt <= max, got {batch}")
    ok, why = tensorrt_status()
    if not ok:
        message = f"TensorRT is unavailable ({why})"
        if required:
            raise RuntimeError(
                f"{message}, and trt_required is set: run configs/inference.json (PyTorch) or "
                "configs/inference_onnx.json (onnxruntime) instead, or use a CUDA machine with TensorRT installed."
            )
        logger.warning(f"{message}: running the PyTorch network instead (set trt_required to stop instead).")
        return model
    from monai.networks import trt_compile as monai_trt_compile

    export_args = {k: v for k, v in ONNX_EXPORT_KWARGS.items() if k in ("dynamo", "opset_version")}
    args = {"method": "onnx", "precision": precision, "dynamic_batchsize": batch, "export_args": export_args}
    if checkpoint and os.path.exists(checkpoint):
        args["timestamp"] = int(os.path.getmtime(checkpoint))
    logger.info(f"{why}: compiling to {base_path}.plan ({precision}, batch {batch}) on the first call")
    return monai_trt_compile(model, base_path, args=args, logger=logger)
