"""Serve an exported ONNX graph through the ``nn.Module`` interface MONAI's inferers and evaluators call."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from monai.utils import optional_import
from torch import nn

from smart_nets.io import atomic_path

logger = logging.getLogger(__name__)

# ``torch.onnx.export`` arguments for every export in this project, and the ``converter_kwargs`` of each bundle's
# ``configs/onnx_export.json``: the TorchScript-based exporter (``dynamo=False``; the dynamo exporter of torch 2.9+
# specialises the batch dimension of these networks), opset 18 (parsed by TensorRT 10, run by onnxruntime), and a
# symbolic batch axis on the input and the output, so sliding windows of any ``sw_batch_size`` reuse one graph.
ONNX_EXPORT_KWARGS: dict = {
    "dynamo": False,
    "opset_version": 18,
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": [0], "pred": [0]},
}


def export_onnx(net: nn.Module, path: str, input_shape: Sequence[int], verify: bool = True) -> None:
    """Export ``net`` to ``path`` the way ``python -m monai.bundle onnx_export`` does with a bundle's
    ``configs/onnx_export.json`` (MONAI's ``convert_to_onnx``, traced, ``ONNX_EXPORT_KWARGS``), written to a
    temporary file and renamed, and (``verify``) checked against eager PyTorch with onnxruntime (atol 1e-4).
    """
    from monai.networks.utils import convert_to_onnx

    with atomic_path(path) as tmp:
        convert_to_onnx(
            net.eval(),
            [torch.rand(*input_shape)],
            filename=str(tmp),
            verify=verify,
            use_ort=True,
            atol=1e-4,
            rtol=1e-4,
            device=torch.device("cpu"),
            **ONNX_EXPORT_KWARGS,
        )


def _shape_text(dims: Sequence[int | None]) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in dims) + ")"


class OnnxRuntimeModule(nn.Module):
    """An exported ONNX model run by onnxruntime, called like the PyTorch network it replaces.

    MONAI exports and verifies ONNX graphs (``convert_to_onnx``) but has no module that serves one, so without this a
    bundle's evaluator, ``SlidingWindowInferer`` and post-processing could not run on the exported graph; the
    ``configs/inference_onnx.json`` overrides put this in place of ``network``.

    Args:
        path: the ``.onnx`` file (from ``python -m monai.bundle onnx_export``).
        providers: onnxruntime execution providers in order of preference; default CUDA where onnxruntime has it,
            then CPU. Providers this onnxruntime lacks are dropped with a warning.
        num_threads: intra-op threads for the CPU provider; default onnxruntime's own (one per physical core).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message gives the export command).
        ValueError: ``path`` is not a loadable ONNX model, or (on call) the input's shape is not the graph's.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, path: str, providers: Sequence[str] | None = None, num_threads: int | None = None) -> None:
        super().__init__()
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"ONNX model {path} does not exist: export it first with `python -m monai.bundle onnx_export "
                "network_def --args_file configs/onnx_export.json ...` (see the bundle's README)."
            )
        ort, has_ort = optional_import("onnxruntime")
        if not has_ort:
            raise ImportError(f"running {path} needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)")
        available = ort.get_available_providers()
        wanted = list(providers) if providers else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if providers and missing:
            logger.warning(f"onnxruntime has no {missing} here (available: {available}); using the rest")
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=chosen)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ValueError(f"{path} is not a loadable ONNX model: {e}") from e
        self.path = path
        (graph_input,) = self.session.get_inputs()
        self.input_name = graph_input.name
        self.input_shape = [d if isinstance(d, int) else None for d in graph_input.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._warned_fixed_batch = False
        logger.info(f"onnxruntime {ort.__version__} serves {path} on {self.session.get_providers()[0]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the graph on ``x`` (moved to the host as float32); outputs come back on ``x``'s device."""
        shape = tuple(x.shape)
        if self.input_shape[:1] == [1] and len(shape) == len(self.input_shape) and shape[0] > 1:
            # a graph with a fixed batch of 1 (exported without configs/onnx_export.json, e.g. by torch's dynamo
            # exporter): run the windows one at a time rather than fail
            if not self._warned_fixed_batch:
                logger.warning(
                    f"{self.path} has a fixed batch of 1: running {shape[0]} windows one at a time; export with "
                    "--args_file configs/onnx_export.json for a dynamic batch axis (and the graph TensorRT takes)"
                )
                self._warned_fixed_batch = True
            parts = [self.forward(x[i : i + 1]) for i in range(shape[0])]
            if isinstance(parts[0], tuple):
                return tuple(torch.cat(p) for p in zip(*parts))
            return torch.cat(parts)
        if len(shape) != len(self.input_shape) or any(
            e is not None and e != s for e, s in zip(self.input_shape, shape)
        ):
            raise ValueError(
                f"{self.path} takes input of shape {_shape_text(self.input_shape)}, got {shape}: export again with "
                "--input_shape matching this config's roi_size, or set roi_size to the exported size."
            )
        array = torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(self.output_names, {self.input_name: array})
        tensors = tuple(torch.from_numpy(o).to(x.device) for o in outputs)
        return tensors[0] if len(tensors) == 1 else tensors
