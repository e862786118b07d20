"""``python -m smart_nets.export check MODEL.onnx [--ops_file tests/fixtures/onnx_tensorrt_10_operators.json]``:
is an exported graph ready for TensorRT? Prints the report and exits 1 when it finds a problem."""

from __future__ import annotations

import sys

from smart_nets.export.checks import check_onnx_graph, load_operator_list


def check(path: str, ops_file: str | None = None, opsets: tuple = (17, 18), dynamic_batch: bool = True) -> None:
    """Check ``path`` (see ``smart_nets.export.check_onnx_graph``); ``ops_file``: an operator-list JSON."""
    ops = load_operator_list(ops_file) if ops_file else None
    report = check_onnx_graph(path, ops, opsets=tuple(int(o) for o in opsets), dynamic_batch=dynamic_batch)
    print(report.summary())
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":
    import fire

    fire.Fire({"check": check})
