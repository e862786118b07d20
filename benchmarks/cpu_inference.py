"""Whole-CT segmentation on a CPU: every way the seg bundle can run SMARTUNETR against MONAI's SwinUNETR at the same
feature size in its own fastest setting, side by side in one process.

One sliding-window inference (MONAI ``SlidingWindowInferer``, ROI 96^3, overlap 0.5, Gaussian blending) over a
192x192x128 phantom CT (windowed to [-1000, 400] HU and scaled to [0, 1], as the bundle does) per path, after a
warm-up window batch (one-time costs such as building an onnxruntime session or compiling are reported apart):

- SwinUNETR (MONAI, feature size 48, its default depths and heads, ``use_flash_attention=True``): eager fp32 and
  onnxruntime fp32. The faster of the two is the baseline.
- SMARTUNETR (feature size 48, depths 2,2,8,2, heads 4,4,8,16, the bundle's network): eager fp32 (the reference
  every agreement is measured against), eager fp32 channels-last, eager bf16 autocast (oneDNN; fast only on CPUs
  with AVX512-BF16 or AMX), onnxruntime fp32 (``inference_onnx.json``), onnxruntime int8 (static QDQ, calibrated on
  windows of a *different* phantom), and optionally ``torch.compile`` (``--compile``).

Each row: seconds, ratio to the baseline (goal <= 0.5x), peak resident memory above the start (``VmHWM``), the share of
voxels whose argmax agrees with eager fp32 (goal >= 99.9%), and with ``--checkpoint`` (a trained seg ``model.pt`` of
this architecture) the tumour Dice against the phantom's mask. Without a checkpoint the weights are random, whose
logits sit near the decision boundary almost everywhere: the harshest case for agreement, and Dice means nothing.

    python benchmarks/cpu_inference.py --out benchmarks/results/cpu_inference       # ~15 min on 2 cores
    python benchmarks/cpu_inference.py --feature_size 12 --depths 1,1,1,1 --heads 1,2,3,6 --volume 96,96,64 --roi 64
    # a trained demo-size seg model (its 5 mm voxels, 27 windows): agreement and Dice where logits mean something
    python benchmarks/cpu_inference.py --feature_size 12 --depths 1,1,1,1 --heads 1,2,3,6 --roi 64 \
        --volume 128,128,96 --spacing 5 --checkpoint path/to/smart_seg/models/model.pt
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference_speed import PeakMemory, _ints  # noqa: E402
from phantom_baselines import dice  # noqa: E402


def phantom(seed: int, shape: tuple[int, ...], spacing: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(1, 1, X, Y, Z)`` phantom CT scaled as the bundle's preprocessing does, and its ``(X, Y, Z)`` tumour mask;
    ``spacing`` mm voxels (None: a 320 mm field of view)."""
    from smart_nets.data import make_phantom

    case = make_phantom(seed=seed, shape=shape, spacing=[spacing or 320.0 / s for s in shape])
    image = np.clip((case.image.astype(np.float32) + 1000.0) / 1400.0, 0.0, 1.0)
    return torch.from_numpy(image)[None, None], torch.from_numpy(case.tumour.astype(bool))


def windows(volume: torch.Tensor, roi: int, n: int) -> list[np.ndarray]:
    """``n`` ``(1, 1, roi, roi, roi)`` windows spread over ``volume`` (calibration data)."""
    starts = [np.linspace(0, s - roi, n).astype(int) for s in volume.shape[2:]]
    return [volume[..., x : x + roi, y : y + roi, z : z + roi].numpy().copy() for x, y, z in zip(*starts)]


def onnx_session(path: str, threads: int):
    """An onnxruntime CPU module for ``path`` with ``threads`` intra-op threads."""
    from smart_nets.export import OnnxRuntimeModule

    return OnnxRuntimeModule(path, providers=["CPUExecutionProvider"], num_threads=threads)


def quantize_int8(fp32_path: str, out_path: str, calibration: list[np.ndarray]) -> None:
    """Static QDQ int8 (per-channel weights, uint8 activations, min-max calibration) of ``fp32_path``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": c} for c in calibration])

        def get_next(self):
            return next(self.items, None)

    pre = out_path + ".pre.onnx"
    quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
    quantize_static(
        pre,
        out_path,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


class Bf16(torch.nn.Module):
    """``net`` under CPU bf16 autocast, returning float32 (what the inferer blends)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(x).float()


class ChannelsLast(torch.nn.Module):
    """``net`` (converted to channels-last 3D) fed channels-last input."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last_3d)).contiguous()


def run_path(name: str, build: Callable[[], torch.nn.Module], volume, args) -> dict:
    """Build the predictor, warm it up on one window batch, then time one whole-volume sliding window."""
    from monai.inferers import SlidingWindowInferer

    print(f"  {name} ...", flush=True)
    start = time.perf_counter()
    net = build()
    with torch.no_grad():
        net(torch.rand(args.sw_batch, 1, *(args.roi,) * 3))  # warm-up: sessions, compilation, oneDNN primitives
    setup = time.perf_counter() - start
    inferer = SlidingWindowInferer((args.roi,) * 3, sw_batch_size=args.sw_batch, overlap=0.5, mode="gaussian")
    with torch.no_grad(), PeakMemory(torch.device("cpu")) as peak:
        start = time.perf_counter()
        probs = torch.softmax(inferer(volume, net), 1)
        seconds = time.perf_counter() - start
    print(f"    {seconds:.1f} s (setup {setup:.1f} s), peak {peak.gib:.2f} GiB", flush=True)
    return {"seconds": seconds, "setup_seconds": setup, "peak_gib": peak.gib, "probs": probs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature_size", type=int, default=48)
    parser.add_argument("--depths", type=_ints, default=(2, 2, 8, 2))
    parser.add_argument("--heads", type=_ints, default=(4, 4, 8, 16))
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--volume", type=_ints, default=(192, 192, 128))
    parser.add_argument("--spacing", type=float, default=None, help="voxel size in mm (default: 320 mm / volume)")
    parser.add_argument("--sw_batch", type=int, default=4)
    parser.add_argument("--checkpoint", default=None, help="a trained seg model.pt of this architecture")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compilation)")
    parser.add_argument("--skip", default="", help="comma-separated path names to leave out")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    args = parser.parse_args()

    from monai.networks.nets import SwinUNETR

    from smart_nets.export import export_onnx
    from smart_nets.io import read_checkpoint
    from smart_nets.networks.nets import SMARTUNETR, SMARTSwin

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    volume, tumour = phantom(0, args.volume, args.spacing)
    calibration = windows(phantom(1, args.volume, args.spacing)[0], args.roi, 8)
    arch = dict(feature_size=args.feature_size, depths=args.depths, num_heads=args.heads)
    smart = SMARTUNETR(SMARTSwin(in_channels=1, window_size=4, **arch), out_channels=2).eval()
    if args.checkpoint:
        smart.load_state_dict(read_checkpoint(args.checkpoint))  # strict: every tensor must match
    swin = SwinUNETR(in_channels=1, out_channels=2, feature_size=args.feature_size, use_flash_attention=True).eval()
    tmp = tempfile.TemporaryDirectory()
    shape = (1, 1, *(args.roi,) * 3)

    def exported(net: torch.nn.Module, name: str) -> str:
        path = str(Path(tmp.name) / f"{name}.onnx")
        if not Path(path).exists():
            export_onnx(net, path, shape)
        return path

    def int8() -> torch.nn.Module:
        path = str(Path(tmp.name) / "smart_int8.onnx")
        quantize_int8(exported(smart, "smart"), path, calibration)
        return onnx_session(path, threads)

    def compiled() -> torch.nn.Module:
        return torch.compile(smart)

    paths: dict[str, Callable[[], torch.nn.Module]] = {
        "SwinUNETR eager fp32 (flash attention)": lambda: swin,
        "SwinUNETR onnxruntime fp32": lambda: onnx_session(exported(swin, "swin"), threads),
        "SMARTUNETR eager fp32": lambda: smart,
        "SMARTUNETR eager fp32 channels-last": lambda: ChannelsLast(copy.deepcopy(smart)).eval(),
        "SMARTUNETR eager bf16": lambda: Bf16(smart),
        "SMARTUNETR onnxruntime fp32": lambda: onnx_session(exported(smart, "smart"), threads),
        "SMARTUNETR onnxruntime int8 (QDQ)": int8,
    }
    if args.compile:
        paths["SMARTUNETR torch.compile fp32"] = compiled
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"cpu x{threads}, torch {torch.__version__}, {vars(args)}", flush=True)
    rows = {name: run_path(name, build, volume, args) for name, build in paths.items() if name not in skip}
    report(rows, tumour, args, threads)


def report(rows: dict, tumour: torch.Tensor, args, threads: int) -> None:
    """Ratios to the baseline, agreement with eager fp32, Dice (with a checkpoint); printed, and written to --out."""
    baseline = min((r["seconds"], n) for n, r in rows.items() if n.startswith("SwinUNETR"))
    reference = rows["SMARTUNETR eager fp32"]["probs"]
    ref_labels = reference.argmax(1)[0]
    table = {}
    for name, row in rows.items():
        labels = row["probs"].argmax(1)[0]
        out = {k: v for k, v in row.items() if k != "probs"}
        out["ratio_to_baseline"] = row["seconds"] / baseline[0]
        if name.startswith("SMARTUNETR"):
            out["agreement_with_eager_fp32"] = float((labels == ref_labels).float().mean())
            out["max_probability_difference"] = float((row["probs"] - reference).abs().max())
            if args.checkpoint:
                out["tumour_dice"] = dice(labels.bool().numpy(), tumour.numpy())
        table[name] = out
    lines = [
        "# Whole-CT segmentation on CPU: SMARTUNETR paths against MONAI's SwinUNETR (issue 19)",
        "",
        f"Command: `python benchmarks/cpu_inference.py {' '.join(sys.argv[1:])}`",
        f"CPU x{threads} threads, torch {torch.__version__}; sliding window over {'x'.join(map(str, args.volume))}, "
        f"ROI {args.roi}^3, overlap 0.5, Gaussian, sw_batch {args.sw_batch}; feature size {args.feature_size}; "
        f"weights: {args.checkpoint or 'random (agreement: harshest case; no Dice)'}. Baseline: {baseline[1]}.",
        "",
        "| path | seconds | x baseline (goal <= 0.5) | setup s | peak GiB | argmax agrees with eager fp32 "
        + "| max prob diff |"
        + (" Dice |" if args.checkpoint else ""),
        "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if args.checkpoint else ""),
    ]
    for name, r in table.items():
        agree = f"{100 * r['agreement_with_eager_fp32']:.4f}%" if "agreement_with_eager_fp32" in r else "-"
        diff = f"{r['max_probability_difference']:.2e}" if "max_probability_difference" in r else "-"
        cells = [name, f"{r['seconds']:.1f}", f"{r['ratio_to_baseline']:.2f}", f"{r['setup_seconds']:.1f}"]
        cells += [f"{r['peak_gib']:.2f}", agree, diff] + (
            [f"{r.get('tumour_dice', float('nan')):.3f}"] if args.checkpoint else []
        )
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "out"}
        Path(f"{args.out}.json").write_text(json.dumps({"config": config, "paths": table}, indent=2))
        Path(f"{args.out}.md").write_text(text)


if __name__ == "__main__":
    main()
