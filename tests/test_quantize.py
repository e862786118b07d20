"""Static int8 quantization of an exported graph (``smart_nets.export.quantize_onnx``) and its calibration windows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from smart_nets.export import OnnxRuntimeModule, calibration_windows, export_onnx, quantize_onnx
from smart_nets.networks.nets import SMARTUNETR, SMARTSwin
from tests.helpers import TINY

ROI = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny SMARTUNETR (weights moved off their initialisation), its float32 graph, and an image to cut from."""
    torch.manual_seed(0)
    net = SMARTUNETR(SMARTSwin(in_channels=1, **TINY), out_channels=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(net, str(path), (1, 1, ROI, ROI, ROI))
    image = torch.rand(1, 80, 72, 68)
    return net, path, image


def test_calibration_windows_tile_each_image_along_its_diagonal():
    image = torch.arange(2 * 10 * 12 * 8, dtype=torch.float32).reshape(2, 10, 12, 8)
    windows = calibration_windows([image, {"image": image.numpy()}], (4, 6, 8), per_image=3)
    assert len(windows) == 6 and all(w.shape == (1, 2, 4, 6, 8) and w.dtype == np.float32 for w in windows)
    np.testing.assert_array_equal(windows[0][0], image[:, :4, :6, :8].numpy())  # first corner
    np.testing.assert_array_equal(windows[2][0], image[:, 6:, 6:, :].numpy())  # last corner
    np.testing.assert_array_equal(windows[1][0], image[:, 3:7, 3:9, :].numpy())  # halfway
    assert all((a == b).all() for a, b in zip(windows[:3], windows[3:]))  # dict items give the same windows


def test_calibration_windows_pad_an_image_smaller_than_the_roi_as_the_inferer_does():
    image = torch.ones(1, 10, 12, 5)
    (window,) = calibration_windows([image], (8, 8, 8), per_image=1)
    assert window.shape == (1, 1, 8, 8, 8)
    np.testing.assert_array_equal(window[0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 0, 0])  # 3 zeros split 1 before, 2 after


def test_calibration_windows_refuse_missing_or_malformed_images():
    with pytest.raises(ValueError, match="no calibration images"):
        calibration_windows([], (8, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(channels, \*spatial\)"):
        calibration_windows([torch.zeros(10, 12, 8)], (8, 8, 8))
    with pytest.raises(ValueError, match="per_image must be at least 1"):
        calibration_windows([torch.zeros(1, 10, 12, 8)], (8, 8, 8), per_image=0)


def _fed_by_dequantize(graph, op_type: str, index: int) -> list[bool]:
    """For each ``op_type`` node of ``graph``, in order: is its input ``index`` an int8 tensor (a DequantizeLinear's
    output)?"""
    producers = {o: n for n in graph.node for o in n.output}
    return [
        n.input[index] in producers and producers[n.input[index]].op_type == "DequantizeLinear"
        for n in graph.node
        if n.op_type == op_type
    ]


@pytest.mark.parametrize("op_types", [None, ("Conv",)])
def test_int8_graph_quantizes_what_it_is_asked_keeps_logits_float_and_stays_close(exported, tmp_path, op_types):
    net, path, image = exported
    out = tmp_path / "model_int8.onnx"
    info = quantize_onnx(path, out, calibration_windows([image], (ROI,) * 3, per_image=4), op_types)
    graph = onnx.load(str(out)).graph
    convs = _fed_by_dequantize(graph, "Conv", index=1)
    assert all(convs[:-1]) and not convs[-1]  # every convolution but the output one has int8 weights
    last_conv = [n.name for n in graph.node if n.op_type == "Conv"][-1]
    assert info["excluded"] == [last_conv] and info["calibration_windows"] == 4 and info["quantized_nodes"] > 0
    matmuls = _fed_by_dequantize(graph, "MatMul", index=0)
    assert matmuls and (any(matmuls) if op_types is None else not any(matmuls))  # attention: int8 only when asked
    x = torch.rand(3, 1, ROI, ROI, ROI)
    with torch.no_grad():
        expected = net(x)
    got = OnnxRuntimeModule(out, providers=["CPUExecutionProvider"])(x)
    assert got.shape == expected.shape
    error = float((got - expected).abs().mean() / expected.abs().mean())
    assert 0 < error < 0.1, error  # quantized (not bit-equal), yet within a few percent of float32


def test_quantize_onnx_names_what_is_wrong(exported, tmp_path):
    _, path, _ = exported
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx", [np.zeros((1, 1, ROI, ROI, ROI), np.float32)])
    with pytest.raises(ValueError, match="no calibration windows"):
        quantize_onnx(path, tmp_path / "out.onnx", [])
    with pytest.raises(ValueError, match=r"shape \(1, 1, 32, 32, 32\) does not fit"):
        quantize_onnx(path, tmp_path / "out.onnx", [np.zeros((1, 1, 32, 32, 32), np.float32)])
    assert not (tmp_path / "out.onnx").exists()
