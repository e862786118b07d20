"""What a CPU can check of an ONNX graph before TensorRT's parser sees it."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["OnnxGraphReport", "check_onnx_graph", "load_operator_list"]

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class OnnxGraphReport:
    """The result of :func:`check_onnx_graph`: what the graph uses, and every problem found (empty when ready)."""

    path: str
    opset: int | None
    op_types: Counter = field(default_factory=Counter)
    batch_axes: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.path}: opset {self.opset}, {sum(self.op_types.values())} nodes of {len(self.op_types)} types"
        head += f" ({', '.join(sorted(self.op_types))}); batch axes {self.batch_axes}"
        if self.ok:
            return head + "\nready for TensorRT's ONNX parser (as far as a CPU can tell)"
        return head + "\n" + "\n".join(f"PROBLEM: {p}" for p in self.problems)


def load_operator_list(path: str | os.PathLike) -> set[str]:
    """The ``supported`` operator names of an operator-list JSON such as the packaged
    ``smart_nets/export/onnx_tensorrt_10_operators.json`` (transcribed from onnx-tensorrt's ``docs/operators.md``,
    source inside)."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("supported"), list):
        raise ValueError(f"{path} is not an operator list: expected a JSON object with a 'supported' list of names")
    return set(data["supported"])


def _nodes(graph) -> Iterable:
    """Every node of ``graph``, including those in ``If``/``Loop``/``Scan`` subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _nodes(sub)


def check_onnx_graph(
    path: str | os.PathLike,
    supported_ops: Iterable[str] | None = None,
    opsets: Sequence[int] = (17, 18),
    dynamic_batch: bool = True,
) -> OnnxGraphReport:
    """Check an ONNX file the way TensorRT will consume it, without TensorRT.

    - ``onnx.checker`` with full shape inference passes;
    - the default-domain opset is one of ``opsets`` (TensorRT 10 parses 9-20; the project exports 18);
    - no node is outside the default domain (custom ops need TensorRT plugins), and, given ``supported_ops``
      (:func:`load_operator_list`), no node's type is missing from it;
    - with ``dynamic_batch``, axis 0 of every graph input and output is symbolic, so one engine serves batch 1 to N.

    Returns:
        an :class:`OnnxGraphReport`; ``report.ok`` is False with ``report.problems`` naming each failure.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not an ONNX model at all.
    """
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{path} is not an ONNX model: {e}") from e
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    report = OnnxGraphReport(path=path, opset=opset)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, onnx.shape_inference.InferenceError
        report.problems.append(f"onnx.checker rejects the graph: {e}")
    if opset not in opsets:
        report.problems.append(f"opset {opset} is not one of {list(opsets)}")
    supported = set(supported_ops) if supported_ops is not None else None
    for node in _nodes(model.graph):
        report.op_types[node.op_type] += 1
        if node.domain not in DEFAULT_DOMAINS:
            report.problems.append(f"node {node.name!r} is {node.domain}::{node.op_type}, outside the ONNX domain")
    if supported is not None:
        for op in sorted(set(report.op_types) - supported):
            report.problems.append(f"operator {op} ({report.op_types[op]} nodes) is not in the supported list")
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        axis0 = (dims[0].dim_param or dims[0].dim_value) if dims else None
        report.batch_axes[value.name] = axis0
        if dynamic_batch and not (dims and dims[0].dim_param):
            report.problems.append(f"{value.name}'s batch axis is fixed ({axis0}), not dynamic")
    return report
