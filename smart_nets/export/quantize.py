"""Static int8 quantization of an exported ONNX graph for CPU inference, calibrated on the user's own images.

onnxruntime's ``quantize_static`` does the quantization (QDQ format: per-channel int8 weights, uint8 activations,
min-max ranges); what this module adds is what a bundle needs around it: calibration windows cut from images through
the bundle's own preprocessing, the output convolution (the logits) kept in float32, the choice of operators (every
one onnxruntime quantizes by default; ``("Conv",)`` for the full-resolution convolutions of the decoder alone, where a
SMARTUNETR spends most of its CPU time, with less calibration memory), an atomic write, and errors that name
the file or value at fault.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import optional_import

from smart_nets.io import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["calibration_windows", "quantize_onnx"]


def calibration_windows(
    images: Iterable, roi_size: Sequence[int], per_image: int = 2, key: str = "image"
) -> list[np.ndarray]:
    """``per_image`` windows of ``roi_size`` from each image, spread along its diagonal (no randomness: the same
    images give the same calibration). An image smaller than ``roi_size`` along an axis is padded with zeros on both
    sides first, as ``SlidingWindowInferer`` pads it at inference.

    Args:
        images: preprocessed images, ``(C, X, Y, Z)`` arrays or tensors, or dicts holding one under ``key`` (a MONAI
            ``Dataset`` with the bundle's inference preprocessing).
        roi_size: the window the exported graph takes (the bundle's ``roi_size``).
        per_image: windows per image.
        key: the image's key in dict items.

    Returns:
        ``(1, C, *roi_size)`` float32 arrays: the graph's input, one window per call.

    Raises:
        ValueError: ``per_image`` < 1, an image that is not ``(C, *spatial)``, or no images at all.
    """
    if per_image < 1:
        raise ValueError(f"per_image must be at least 1, got {per_image}")
    roi = [int(r) for r in roi_size]
    windows = []
    for index, item in enumerate(images):
        image = item[key] if isinstance(item, dict) else item
        array = torch.as_tensor(image).detach().cpu().float().numpy()
        if array.ndim != 1 + len(roi):
            raise ValueError(f"calibration image {index} has shape {array.shape}: expected (channels, *spatial)")
        short = [max(r - s, 0) for s, r in zip(array.shape[1:], roi)]
        if any(short):  # padded as MONAI's sliding window pads an image smaller than its ROI: zeros, both sides
            array = np.pad(array, [(0, 0)] + [(d // 2, d - d // 2) for d in short])
        starts = [np.linspace(0, s - r, per_image).round().astype(int) for s, r in zip(array.shape[1:], roi)]
        for corner in zip(*starts):
            crop = tuple(slice(c, c + r) for c, r in zip(corner, roi))
            windows.append(np.ascontiguousarray(array[(slice(None), *crop)])[None])
    if not windows:
        raise ValueError("no calibration images: give a few training CTs (e.g. --dataset_dir with images)")
    return windows


def quantize_onnx(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    calibration: Iterable[np.ndarray],
    op_types: Sequence[str] | None = None,
    exclude_output_conv: bool = True,
) -> dict:
    """Write an int8 (QDQ) copy of the float32 ONNX graph ``model_path`` to ``output_path``.

    Args:
        model_path: the float32 graph (``python -m monai.bundle onnx_export ...``).
        output_path: where the int8 graph goes (written to a temporary file, then renamed).
        calibration: the graph's inputs to take activation ranges from (:func:`calibration_windows`); a few dozen
            windows of real CTs.
        op_types: the operator types to quantize; None (default): every operator onnxruntime can (fastest; the
            calibration of a C 48 SMARTUNETR at 96^3 took a 19 GiB process); ``("Conv",)``: the convolutions alone
            (attention and norms stay float32; 11 GiB, a little slower).
        exclude_output_conv: keep the last convolution (the logits) in float32.

    Returns:
        ``{"quantized_nodes": n, "excluded": [names], "calibration_windows": m}``.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        ValueError: no calibration input, or an input whose shape the graph does not take.
        ImportError: onnx or onnxruntime is missing.
    """
    onnx, has_onnx = optional_import("onnx")
    quantization, has_ort = optional_import("onnxruntime.quantization")
    if not (has_onnx and has_ort):
        raise ImportError("int8 quantization needs onnx and onnxruntime: pip install 'smart-nets[export]'")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model {model_path} does not exist: export it first (see the bundle's README)")
    inputs = [np.asarray(c, dtype=np.float32) for c in calibration]
    if not inputs:
        raise ValueError("no calibration windows: quantization needs a few windows of real CTs")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    (graph_input,) = graph.input
    expected = [d.dim_value or None for d in graph_input.type.tensor_type.shape.dim]
    for c in inputs:
        if len(c.shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, c.shape)):
            raise ValueError(f"calibration window of shape {c.shape} does not fit {model_path} input {expected}")
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    excluded = convs[-1:] if exclude_output_conv else []

    class _Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{graph_input.name: c} for c in inputs])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp, atomic_path(output_path) as out:
        prepared = str(Path(tmp) / "prepared.onnx")  # shape inference and graph clean-up, as onnxruntime advises
        quantization.shape_inference.quant_pre_process(str(model_path), prepared, skip_symbolic_shape=True)
        quantization.quantize_static(
            prepared,
            str(out),
            _Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=list(op_types) if op_types else None,
            nodes_to_exclude=excluded,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        quantized = sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(out)).graph.node)
    logger.info(
        f"wrote {output_path}: int8 {'/'.join(op_types) if op_types else 'all operators'} "
        f"({quantized} dequantize nodes; float32 kept: {excluded or 'none'}), {len(inputs)} calibration windows"
    )
    return {"quantized_nodes": quantized, "excluded": excluded, "calibration_windows": len(inputs)}
