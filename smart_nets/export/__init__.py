"""Fast inference: exported ONNX graphs served by onnxruntime, their static int8 quantization for CPUs, TensorRT
compilation with a clear CPU fallback, and the checks an ONNX graph must pass before TensorRT's parser sees it.

The export itself is MONAI's: ``python -m monai.bundle onnx_export`` with a bundle's ``configs/onnx_export.json``
(``ONNX_EXPORT_KWARGS`` here, the same arguments from Python).
"""

from smart_nets.export.checks import OnnxGraphReport, check_onnx_graph, load_operator_list
from smart_nets.export.onnx_runtime import ONNX_EXPORT_KWARGS, OnnxRuntimeModule, export_onnx
from smart_nets.export.quantize import calibration_windows, quantize_onnx
from smart_nets.export.tensorrt import tensorrt_status, trt_compile

__all__ = [
    "ONNX_EXPORT_KWARGS",
    "OnnxGraphReport",
    "OnnxRuntimeModule",
    "calibration_windows",
    "check_onnx_graph",
    "export_onnx",
    "load_operator_list",
    "quantize_onnx",
    "tensorrt_status",
    "trt_compile",
]
