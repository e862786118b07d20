"""Inference speed of the segmentation network: SMARTUNETR against MONAI's SwinUNETR, eager PyTorch against
onnxruntime (and TensorRT on a GPU that has it), and a whole-volume sliding-window inference.

All in one process, one network at a time, medians over repeats after warm-up:

(a) forward latency and peak memory at batch 1 of SMARTUNETR against SwinUNETR with the same feature size and ROI,
    twice: "matched" (SwinUNETR given SMARTUNETR's depths, heads and window, so the ratio measures implementations)
    and "stock" (SwinUNETR's defaults: depths 2,2,2,2, heads 3,6,12,24, window 7, what most users run);
(b) SMARTUNETR eager against the same weights exported to ONNX (``smart_nets.export.export_onnx``, as
    ``monai.bundle onnx_export`` with ``configs/onnx_export.json`` does) on onnxruntime, at batch 1 and at the
    sliding window batch; on CUDA also TensorRT fp16 and fp32 (``smart_nets.export.trt_compile``) when installed;
(c) ``SlidingWindowInferer`` (Gaussian blending, overlap 0.5) over a 192x192x128 volume, end to end, per runtime,
    with the fraction of voxels whose argmax agrees with eager PyTorch.

Peak memory: on CPU the process's resident high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
before each measurement) above the resident size at the start; on CUDA ``torch.cuda.max_memory_allocated``.
onnxruntime gets as many CPU threads as PyTorch. Goals (issue 6): SMARTUNETR <= 0.75x SwinUNETR's forward time;
onnxruntime >= 1.5x faster than eager; TensorRT fp16 >= 4x eager fp32 on a GPU.

    python -m benchmarks.inference_speed                               # CPU, paper scale (feature size 48, 96^3)
    python -m benchmarks.inference_speed --feature_size 12 --depths 1,1,1,1 --heads 1,2,3,6 --roi 64  # quick
    python -m benchmarks.inference_speed --device cuda --out results.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ints, rss_mib, write_json


class PeakMemory:
    """Peak memory of a block in GiB: CUDA allocator peak, or the CPU resident high-water mark above the start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            self.base = rss_mib("VmRSS:")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.gib = (torch.cuda.max_memory_allocated() - self.base) / 2**30
        else:
            self.gib = (rss_mib("VmHWM:") - self.base) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device: torch.device, repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls, and the peak memory (GiB) of them."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        _sync(device)
        times = []
        with PeakMemory(device) as peak:
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - start)
    return statistics.median(times), peak.gib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--feature_size", type=int, default=48)
    parser.add_argument("--depths", type=ints, default=(2, 2, 8, 2))
    parser.add_argument("--heads", type=ints, default=(4, 4, 8, 16))
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--volume", type=ints, default=(192, 192, 128))
    parser.add_argument("--sw_batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip_sliding", action="store_true", help="skip (c), the whole-volume inference")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import SwinUNETR

    from smart_nets.export import OnnxRuntimeModule, export_onnx, tensorrt_status, trt_compile
    from smart_nets.networks.nets import SMARTUNETR, SMARTSwin

    device = torch.device(args.device)
    torch.manual_seed(0)
    arch = dict(feature_size=args.feature_size, depths=args.depths, num_heads=args.heads)
    smart = SMARTUNETR(SMARTSwin(in_channels=1, window_size=args.window, **arch), out_channels=2).eval()
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    print(f"{results['device']}, torch {torch.__version__}, {vars(args)}", flush=True)
    x1 = torch.rand(1, 1, *(args.roi,) * 3, device=device)
    run = lambda net, x: (lambda: net(x))  # noqa: E731

    # (a) SMARTUNETR against SwinUNETR, batch 1
    rows = {}
    swin_kwargs = {
        "matched": dict(window_size=args.window, downsample="mergingv2", patch_norm=True, **arch),
        "stock": dict(feature_size=args.feature_size),
    }
    rows["SMARTUNETR"] = measure(run(smart.to(device), x1), device, args.repeats, args.warmup)
    for name, kwargs in swin_kwargs.items():
        swin = SwinUNETR(in_channels=1, out_channels=2, **kwargs).eval().to(device)
        rows[f"SwinUNETR {name}"] = measure(run(swin, x1), device, args.repeats, args.warmup)
        del swin
    results["forward_batch1"] = {k: {"seconds": t, "peak_gib": m} for k, (t, m) in rows.items()}
    print(f"(a) forward, batch 1, {args.roi}^3, feature size {args.feature_size}")
    for name, (t, m) in rows.items():
        print(f"    {name:<20} {t * 1000:9.1f} ms  peak {m:6.2f} GiB")
    for name in swin_kwargs:
        ratio = rows["SMARTUNETR"][0] / rows[f"SwinUNETR {name}"][0]
        results[f"ratio_smart_vs_swinunetr_{name}"] = ratio
        print(f"    SMARTUNETR / SwinUNETR {name}: {ratio:.2f}x time (goal <= 0.75x)", flush=True)

    # (b) eager against exported runtimes, batch 1 and the sliding-window batch
    tmp = tempfile.TemporaryDirectory()
    onnx_path = str(Path(tmp.name) / "model.onnx")
    export_onnx(smart.cpu(), onnx_path, (1, 1, *(args.roi,) * 3))
    smart = smart.to(device)
    runtimes = {"eager fp32": smart}
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    served = OnnxRuntimeModule(onnx_path, providers=providers, num_threads=torch.get_num_threads())
    if device.type == "cuda" and served.session.get_providers()[0] != "CUDAExecutionProvider":
        print("    onnxruntime has no CUDA provider here (pip install onnxruntime-gpu): skipped on this device")
    else:
        runtimes["onnxruntime"] = served
    trt_ok, trt_why = tensorrt_status()
    if device.type == "cuda" and trt_ok:
        for precision in ("fp16", "fp32"):
            plan = str(Path(tmp.name) / f"model_{precision}")
            net = trt_compile(copy.deepcopy(smart), plan, precision=precision, dynamic_batchsize=(1, args.sw_batch, 8))
            runtimes[f"TensorRT {precision}"] = net
    else:
        print(f"    TensorRT skipped: {trt_why}")
    xb = torch.rand(args.sw_batch, 1, *(args.roi,) * 3, device=device)
    table = {}
    for name, net in runtimes.items():
        table[name] = {
            "batch1_seconds": measure(run(net, x1), device, args.repeats, args.warmup)[0],
            f"batch{args.sw_batch}_seconds": measure(run(net, xb), device, args.repeats, args.warmup)[0],
        }
    results["runtimes"] = table
    print("(b) SMARTUNETR forward by runtime (speed-up over eager fp32)")
    base = table["eager fp32"]
    for name, row in table.items():
        cells = [f"batch {k[5:-8]}: {v * 1000:8.1f} ms ({base[k] / v:4.2f}x)" for k, v in row.items()]
        print(f"    {name:<14} " + "   ".join(cells), flush=True)

    # (c) whole-volume sliding-window inference
    if not args.skip_sliding:
        inferer = SlidingWindowInferer((args.roi,) * 3, sw_batch_size=args.sw_batch, overlap=0.5, mode="gaussian")
        volume = torch.rand(1, 1, *args.volume, device=device)
        sliding, reference = {}, None
        for name, net in runtimes.items():
            with torch.no_grad():
                start = time.perf_counter()
                with PeakMemory(device) as peak:
                    out = inferer(volume, net)
                    _sync(device)
                seconds = time.perf_counter() - start
            labels = out.argmax(1)
            reference = labels if reference is None else reference
            agree = float((labels == reference).float().mean())
            sliding[name] = {"seconds": seconds, "peak_gib": peak.gib, "argmax_agreement_with_eager": agree}
        results["sliding_window"] = sliding
        print(f"(c) sliding window over {'x'.join(map(str, args.volume))} (sw_batch {args.sw_batch}, overlap 0.5)")
        for name, row in sliding.items():
            print(
                f"    {name:<14} {row['seconds']:8.2f} s ({sliding['eager fp32']['seconds'] / row['seconds']:4.2f}x)"
                f"  peak {row['peak_gib']:5.2f} GiB"
                f"  argmax agrees with eager on {100 * row['argmax_agreement_with_eager']:.3f}%"
            )
    if args.out:
        write_json(Path(args.out), results, indent=2)


if __name__ == "__main__":
    main()
