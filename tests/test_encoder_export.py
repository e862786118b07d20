"""SMARTSwin traces with ``torch.jit.trace`` and exports to ONNX; both match eager PyTorch within 1e-4."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="install the [export] extra: pip install -e .[export]")


def _leaves(out) -> list[torch.Tensor]:
    return torch.utils._pytree.tree_leaves(out)


def test_trace_matches_eager(tiny_swin):
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants, as intended
        traced = torch.jit.trace(tiny_swin, x)
        eager, out = tiny_swin(x), traced(x)
    assert len(_leaves(out)) == len(_leaves(eager)) == 10
    for a, b in zip(_leaves(eager), _leaves(out)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def test_onnx_export_matches_eager_with_dynamic_batch(tiny_swin, tmp_path):
    path = tmp_path / "smart_swin.onnx"
    x1, x3 = torch.randn(1, 1, 64, 64, 64), torch.randn(3, 1, 64, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tiny_swin,
            (x1,),
            str(path),
            dynamo=False,
            opset_version=18,
            input_names=["image"],
            dynamic_axes={"image": {0: "batch"}},
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for x in (x1, x3):
            outs = session.run(None, {"image": x.numpy()})
            eager = _leaves(tiny_swin(x))
            assert len(outs) == len(eager)
            for a, b in zip(eager, outs):
                assert b.shape == tuple(a.shape)
                np.testing.assert_allclose(b, a.numpy(), atol=1e-4, rtol=0)
