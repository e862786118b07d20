"""``python -m smart_nets.export check MODEL.onnx [--ops_file OPERATORS.json]``: is an exported graph ready for
TensorRT? Prints the report and exits 1 when it finds a problem. ``--ops_file`` defaults to the TensorRT 10 operator
list shipped with the package (``TENSORRT_OPS_FILE``); ``--ops_file ''`` checks no operator list."""

from __future__ import annotations

import sys
from pathlib import Path

from smart_nets.export.checks import check_onnx_graph, load_operator_list

TENSORRT_OPS_FILE = str(Path(__file__).with_name("onnx_tensorrt_10_operators.json"))


def check(
    path: str, ops_file: str | None = TENSORRT_OPS_FILE, opsets: tuple = (17, 18), dynamic_batch: bool = True
) -> None:
    """Check ``path`` (see ``smart_nets.export.check_onnx_graph``); ``ops_file``: an operator-list JSON."""
    ops = load_operator_list(ops_file) if ops_file else None
    report = check_onnx_graph(path, ops, opsets=tuple(int(o) for o in opsets), dynamic_batch=dynamic_batch)
    print(report.summary())
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":
    import fire

    fire.Fire({"check": check})
