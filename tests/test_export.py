"""ONNX export through `python -m monai.bundle onnx_export`, onnxruntime serving, the TensorRT-readiness checks of an
ONNX graph, and the TensorRT path on a machine without TensorRT."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from smart_nets.export import (
    ONNX_EXPORT_KWARGS,
    OnnxRuntimeModule,
    check_onnx_graph,
    load_operator_list,
    tensorrt_status,
    trt_compile,
)
from smart_nets.export.__main__ import TENSORRT_OPS_FILE
from tests.helpers import REPO, demo_network, export_demo_onnx, monai_bundle

TRT_OPS = Path(TENSORRT_OPS_FILE)  # shipped in the package: the default of `check --ops_file`
BUNDLES = ("smart_seg", "smart_response")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_onnx_export_matches_eager_at_batch_1_and_3_and_is_ready_for_tensorrt(bundle, tmp_path):
    net = demo_network(bundle)
    with torch.no_grad():  # move off the initialisation so that a weight the export missed would show
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    export_demo_onnx(REPO / "bundles" / bundle, str(tmp_path / "model.onnx"), str(tmp_path / "model.pt"))
    served = OnnxRuntimeModule(tmp_path / "model.onnx")
    for batch in (1, 3):
        x = torch.rand(batch, 1, 64, 64, 64)
        with torch.no_grad():
            expected = net(x)
        got = served(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    report = check_onnx_graph(tmp_path / "model.onnx", load_operator_list(TRT_OPS))
    assert report.ok, report.summary()
    assert report.opset == 18 and all(isinstance(a, str) for a in report.batch_axes.values()), report.summary()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_onnx_export_as_the_zoo_readmes_write_it_without_the_args_file_serves_too(bundle, tmp_path):
    """``onnx_export --net_id network_def`` without ``--args_file``: torch's dynamo exporter (onnxscript, in the
    export extra) gives a graph with a fixed batch of 1, which ``OnnxRuntimeModule`` runs window by window."""
    net = demo_network(bundle)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    monai_bundle(
        ["onnx_export", "--net_id", "network_def", "--filepath", str(tmp_path / "model.onnx")]
        + ["--ckpt_file", str(tmp_path / "model.pt"), "--meta_file", "configs/metadata.json"]
        + ["--config_file", "['configs/inference.json','configs/demo.json']", "--input_shape", "[1, 1, 64, 64, 64]"],
        cwd=REPO / "bundles" / bundle,
    )
    served = OnnxRuntimeModule(tmp_path / "model.onnx")
    assert served.input_shape[0] == 1
    x = torch.rand(3, 1, 64, 64, 64)
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(served(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_export_arguments_are_the_packages(bundle):
    args = json.loads((REPO / "bundles" / bundle / "configs" / "onnx_export.json").read_text())
    assert args["use_trace"] is True and args["net_id"] == "network_def"
    assert {k: args["converter_kwargs"][k] for k in ONNX_EXPORT_KWARGS} == ONNX_EXPORT_KWARGS


def _graph(path: Path, op: str = "Relu", domain: str = "", opset: int = 18, batch: int | str = "N") -> Path:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("pred", TensorProto.FLOAT, [batch, 4])
    node = helper.make_node(op, ["image"], ["pred"], domain=domain, name="n0")
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=imports), path)
    return path


def test_graph_check_names_each_problem_tensorrt_would_hit(tmp_path):
    ops = load_operator_list(TRT_OPS)
    assert {"Conv", "MatMul", "Softmax", "LayerNormalization", "Erf"} <= ops and "Unique" not in ops
    assert check_onnx_graph(_graph(tmp_path / "ok.onnx"), ops).ok
    cases = {
        "opset 13 is not one of [17, 18]": _graph(tmp_path / "old.onnx", opset=13),
        "pred's batch axis is fixed (2), not dynamic": _graph(tmp_path / "fixed.onnx", batch=2),
        "operator HardSwish (1 nodes) is not in the supported list": _graph(tmp_path / "op.onnx", op="HardSwish"),
        "outside the ONNX domain": _graph(tmp_path / "custom.onnx", op="Plugin", domain="com.example"),
    }
    for problem, path in cases.items():
        report = check_onnx_graph(path, ops - {"HardSwish"})
        assert not report.ok and any(problem in p for p in report.problems), (problem, report.problems)
    broken = onnx.load(tmp_path / "ok.onnx")
    broken.graph.node[0].input[0] = "undefined"
    onnx.save(broken, tmp_path / "broken.onnx")
    assert any("onnx.checker rejects" in p for p in check_onnx_graph(tmp_path / "broken.onnx").problems)
    (tmp_path / "text.onnx").write_text("not a protobuf")
    with pytest.raises(ValueError, match="text.onnx is not an ONNX model"):
        check_onnx_graph(tmp_path / "text.onnx")

    cli = [sys.executable, "-m", "smart_nets.export", "check", "--ops_file", str(TRT_OPS)]
    good = subprocess.run(cli[:4] + [str(tmp_path / "ok.onnx")] + cli[4:], capture_output=True, text=True, cwd=REPO)
    bad = subprocess.run(cli[:4] + [str(tmp_path / "old.onnx")] + cli[4:], capture_output=True, text=True, cwd=REPO)
    assert good.returncode == 0 and "ready for TensorRT" in good.stdout, good.stdout + good.stderr
    assert bad.returncode == 1 and "PROBLEM: opset 13" in bad.stdout, bad.stdout + bad.stderr
    unique = str(_graph(tmp_path / "unique.onnx", op="Unique"))  # without --ops_file: the packaged list
    default = subprocess.run(cli[:4] + [unique], capture_output=True, text=True, cwd=tmp_path)
    assert default.returncode == 1 and "operator Unique (1 nodes) is not in the supported list" in default.stdout


def test_onnx_runtime_module_names_the_file_and_the_expected_shape(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist.*onnx_export"):
        OnnxRuntimeModule(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a protobuf")
    with pytest.raises(ValueError, match="text.onnx is not a loadable ONNX model"):
        OnnxRuntimeModule(tmp_path / "text.onnx")
    served = OnnxRuntimeModule(_graph(tmp_path / "relu.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 4)
    torch.testing.assert_close(served(x), torch.relu(x))
    with pytest.raises(ValueError, match=r"relu.onnx takes input of shape \(batch, 4\), got \(3, 5\)"):
        served(torch.randn(3, 5))


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT is usable here: benchmarks/gpu_check.py builds engines")
def test_trt_compile_without_tensorrt_falls_back_with_a_warning_or_stops(tmp_path, caplog):
    net = torch.nn.Linear(4, 2)
    with caplog.at_level(logging.WARNING, logger="smart_nets.export.tensorrt"):
        assert trt_compile(net, str(tmp_path / "model_trt")) is net
    why = tensorrt_status()[1]
    assert f"TensorRT is unavailable ({why}): running the PyTorch network instead" in caplog.text
    with pytest.raises(RuntimeError, match="TensorRT is unavailable.*trt_required"):
        trt_compile(net, str(tmp_path / "model_trt"), required=True)
    with pytest.raises(ValueError, match="precision 'int4'"):
        trt_compile(net, str(tmp_path / "model_trt"), precision="int4")
    with pytest.raises(ValueError, match=r"dynamic_batchsize .* got \[4, 1, 8\]"):
        trt_compile(net, str(tmp_path / "model_trt"), dynamic_batchsize=(4, 1, 8))
    assert not list(tmp_path.iterdir())  # nothing built, nothing half-written
