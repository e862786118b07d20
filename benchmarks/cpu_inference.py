"""Whole-CT segmentation on a CPU: every way the seg bundle can run SMARTUNETR against MONAI's SwinUNETR at the same
feature size in its own fastest setting, side by side in one run.

One sliding-window inference (MONAI ``SlidingWindowInferer``, ROI 96^3, overlap 0.5, Gaussian blending, batches of 4
windows) over a 192x192x128 phantom CT (windowed to [-1000, 400] HU and scaled to [0, 1], as the bundle does) per
path, each path in its own process (so that its memory is its own), after a warm-up window batch (one-time costs such
as building an onnxruntime session, quantizing or compiling are reported apart as the first round's setup):

- SwinUNETR (MONAI, feature size 48, its default depths and heads, ``use_flash_attention=True``): eager fp32 and
  onnxruntime fp32. The faster of the two is the baseline.
- SMARTUNETR (feature size 48, depths 2,2,8,2, heads 4,4,8,16, the bundle's network): eager fp32 (the reference
  every agreement is measured against; ``inference.json``), eager bf16 (``inference_bf16.json``:
  ``smart_nets.networks.nets.Autocast``; fast only on CPUs with AVX512-BF16 or AMX), onnxruntime fp32
  (``inference_onnx.json``), onnxruntime int8 of every operator but the output convolution (``quantize.json``:
  ``smart_nets.export.quantize_onnx``, static QDQ, calibrated on windows of a *different* phantom) and of the
  convolutions only (``--int8_op_types "['Conv']"``), and optionally ``torch.compile`` (``--compile``).

Every PyTorch path runs with ``smart_nets.runtime.keep_freed_memory()`` (glibc keeps freed activations for reuse; what
``inference_bf16.json`` does, and the fastest setting of MONAI's network too); ``--plain_malloc`` leaves glibc's
defaults. The paths run in ``--rounds`` rounds (each path once per round, in turn), because this 2-core machine's
speed drifts by 25% over minutes: each row gives the median seconds, the median of the per-round ratios to the same
round's baseline (goal <= 0.5x) and each round's ratio, the process's peak resident memory (``VmHWM``:
Python, libraries, weights and the run), the share of voxels whose argmax agrees with eager fp32 (goal >= 99.9%), and
with ``--checkpoint`` (a trained seg ``model.pt`` of this architecture) the tumour Dice against the phantom's mask.
Without a checkpoint the weights are random, whose logits sit near the decision boundary almost everywhere: the
harshest case for agreement, and Dice means nothing.

    python -m benchmarks.cpu_inference --out benchmarks/results/cpu_inference       # ~15 min on 2 cores
    python -m benchmarks.cpu_inference --feature_size 12 --depths 1,1,1,1 --heads 1,2,3,6 --volume 96,96,64 --roi 64
    # a trained model: agreement and Dice where logits mean something (~30 min with 3 rounds; results/
    # cpu_inference_trained_c48.md)
    python -m benchmarks.cpu_inference --spacing 2.5 --checkpoint path/to/smart_seg/models/model.pt

The trained model of ``benchmarks/results/cpu_inference_trained_c48.md`` is the seg bundle's own network (C 48, depths
2,2,8,2) trained from scratch with its ``train.json`` on 16 phantoms at 2.5 mm (12 training, 4 validation; 40 epochs
of 6 iterations at ROI 64, ~25 min on 2 cores; best validation Dice 0.48, kept as ``models/model.pt``)::

    python -m smart_nets.data.phantoms data --num 16 --seed 0 --shape 128,128,128 --spacing 2.5,2.5,2.5 \
        --tumour_radius 12,30
    cd bundles/smart_seg && python -m monai.bundle run --config_file configs/train.json --bundle_root . \
        --dataset_dir ../../data --pretrained_path "" --amp False --roi_size "[64,64,64]" --pixdim "[2.5,2.5,2.5]" \
        --batch_size 2 --num_samples 1 --num_workers 0 --max_epochs 40 --val_interval 10 --learning_rate 0.0005 \
        --warmup_epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import child_env, command_line, ints, module_command, rss_mib, write_json, write_text
from benchmarks.phantom_baselines import dice


def phantom(seed: int, shape: tuple[int, ...], spacing: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(1, 1, X, Y, Z)`` phantom CT scaled as the bundle's preprocessing does, and its ``(X, Y, Z)`` tumour mask;
    ``spacing`` mm voxels (None: a 320 mm field of view)."""
    from smart_nets.data import make_phantom

    case = make_phantom(seed=seed, shape=shape, spacing=[spacing or 320.0 / s for s in shape])
    image = np.clip((case.image.astype(np.float32) + 1000.0) / 1400.0, 0.0, 1.0)
    return torch.from_numpy(image)[None, None], torch.from_numpy(case.tumour.astype(bool))


def onnx_session(path: str, threads: int):
    """An onnxruntime CPU module for ``path`` with ``threads`` intra-op threads."""
    from smart_nets.export import OnnxRuntimeModule

    return OnnxRuntimeModule(path, providers=["CPUExecutionProvider"], num_threads=threads)


SWIN_EAGER = "SwinUNETR eager fp32 (flash attention)"
SWIN_ONNX = "SwinUNETR onnxruntime fp32"
REFERENCE = "SMARTUNETR eager fp32"
BF16 = "SMARTUNETR eager bf16 (inference_bf16.json)"
ONNX = "SMARTUNETR onnxruntime fp32 (inference_onnx.json)"
INT8 = "SMARTUNETR onnxruntime int8 (quantize.json)"
INT8_CONV = "SMARTUNETR onnxruntime int8 of the convolutions only"
PATHS = (SWIN_EAGER, SWIN_ONNX, REFERENCE, BF16, ONNX, INT8, INT8_CONV)
COMPILED = "SMARTUNETR torch.compile fp32"
PATHS_AND_COMPILED = PATHS + (COMPILED,)


def _smart(args) -> torch.nn.Module:
    """The SMARTUNETR (trained with ``--checkpoint``, else seeded random), in eval mode."""
    from smart_nets.io import read_checkpoint
    from smart_nets.networks.nets import SMARTUNETR, SMARTSwin

    torch.manual_seed(0)
    arch = dict(feature_size=args.feature_size, depths=args.depths, num_heads=args.heads)
    smart = SMARTUNETR(SMARTSwin(in_channels=1, window_size=4, **arch), out_channels=2).eval()
    if args.checkpoint:
        smart.load_state_dict(read_checkpoint(args.checkpoint))  # strict: every tensor must match
    return smart


def _swin(args) -> torch.nn.Module:
    """MONAI's SwinUNETR at the same feature size, stock depths and heads, flash attention, seeded, in eval mode."""
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=args.feature_size, use_flash_attention=True).eval()


def build(name: str, args, work: Path) -> torch.nn.Module:
    """The predictor of path ``name``: the network the bundle config of that path would run (only that network is
    built, so that the process's peak memory is the path's own)."""
    from smart_nets.export import calibration_windows, export_onnx, quantize_onnx
    from smart_nets.networks.nets import Autocast

    threads = torch.get_num_threads()
    shape = (1, 1, *(args.roi,) * 3)

    def exported(make: Callable[[], torch.nn.Module], stem: str) -> str:
        path = work / f"{stem}.onnx"
        if not path.exists():  # the graphs are shared by the paths (and processes) that serve them
            export_onnx(make(), str(path), shape)
        return str(path)

    def int8(op_types: tuple[str, ...] | None) -> torch.nn.Module:  # as quantize.json does (output conv float32)
        path = work / f"smart_int8_{'_'.join(op_types or ('all',))}.onnx"
        if not path.exists():  # quantized in the first round, reused by the later ones
            calibration = calibration_windows([phantom(1, args.volume, args.spacing)[0][0]], (args.roi,) * 3, 8)
            quantize_onnx(exported(lambda: _smart(args), "smart"), path, calibration, op_types)
        return onnx_session(str(path), threads)

    builders: dict[str, Callable[[], torch.nn.Module]] = {
        SWIN_EAGER: lambda: _swin(args),
        SWIN_ONNX: lambda: onnx_session(exported(lambda: _swin(args), "swin"), threads),
        REFERENCE: lambda: _smart(args),
        BF16: lambda: Autocast(_smart(args), "cpu", "bfloat16"),
        ONNX: lambda: onnx_session(exported(lambda: _smart(args), "smart"), threads),
        INT8: lambda: int8(None),
        INT8_CONV: lambda: int8(("Conv",)),
        COMPILED: lambda: torch.compile(_smart(args)),
    }
    return builders[name]()


def run_path(name: str, args, work: Path) -> dict:
    """In this (fresh) process: build the predictor, warm it up on one window batch, time one sliding window over
    the phantom, and save the probabilities for the parent to compare."""
    from monai.inferers import SlidingWindowInferer

    from smart_nets.runtime import keep_freed_memory

    if not name.startswith(("SwinUNETR onnx", "SMARTUNETR onnx")) and not args.plain_malloc:
        keep_freed_memory()
    volume, _ = phantom(0, args.volume, args.spacing)
    start = time.perf_counter()
    net = build(name, args, work)
    with torch.no_grad():
        net(torch.rand(args.sw_batch, 1, *(args.roi,) * 3))  # warm-up: sessions, compilation, oneDNN primitives
    setup = time.perf_counter() - start
    inferer = SlidingWindowInferer((args.roi,) * 3, sw_batch_size=args.sw_batch, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        start = time.perf_counter()
        probs = torch.softmax(inferer(volume, net), 1)
        seconds = time.perf_counter() - start
    np.save(work / f"probs_{PATHS_AND_COMPILED.index(name)}.npy", probs[0].numpy())
    return {"seconds": seconds, "setup_seconds": setup, "peak_gib": rss_mib("VmHWM:") / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature_size", type=int, default=48)
    parser.add_argument("--depths", type=ints, default=(2, 2, 8, 2))
    parser.add_argument("--heads", type=ints, default=(4, 4, 8, 16))
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--volume", type=ints, default=(192, 192, 128))
    parser.add_argument("--spacing", type=float, default=None, help="voxel size in mm (default: 320 mm / volume)")
    parser.add_argument("--sw_batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every path (medians count)")
    parser.add_argument("--checkpoint", default=None, help="a trained seg model.pt of this architecture")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compilation)")
    parser.add_argument("--plain_malloc", action="store_true", help="glibc's default allocator settings throughout")
    parser.add_argument("--skip", default="", help="comma-separated path names to leave out")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    if args.path:
        print(json.dumps(run_path(args.path, args, Path(args.work))))
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    names = [n for n in PATHS + ((COMPILED,) if args.compile else ()) if n not in skip]
    if REFERENCE not in names:
        raise SystemExit(f"--skip cannot leave out {REFERENCE!r}: every agreement is measured against it")
    print(f"cpu x{threads}, torch {torch.__version__}, {vars(args)}", flush=True)
    rows: dict[str, dict] = {n: {"runs_seconds": [], "setup_seconds": [], "peak_gib": []} for n in names}
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for name in names:
                print(f"  round {round_ + 1}/{args.rounds}: {name} ...", flush=True)
                cmd = module_command("cpu_inference", *sys.argv[1:], "--path", name, "--work", work)  # --out: unused
                proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                for key in ("seconds", "setup_seconds", "peak_gib"):
                    rows[name]["runs_seconds" if key == "seconds" else key].append(run[key])
                print(
                    f"    {run['seconds']:.1f} s (setup {run['setup_seconds']:.1f} s), peak {run['peak_gib']:.2f} GiB"
                )
        for name in names:  # every round gives the same probabilities: the last one's are kept
            probs = np.load(Path(work) / f"probs_{PATHS_AND_COMPILED.index(name)}.npy")
            rows[name]["probs"] = torch.from_numpy(probs)[None]
    _, tumour = phantom(0, args.volume, args.spacing)
    report(rows, tumour, args, threads)


def report(rows: dict, tumour: torch.Tensor, args, threads: int) -> None:
    """Medians over rounds, ratios to the baseline round by round, agreement with eager fp32, Dice (with a
    checkpoint); printed, and written to --out."""
    median = statistics.median
    baseline = min((median(r["runs_seconds"]), n) for n, r in rows.items() if n.startswith("SwinUNETR"))
    base_runs = rows[baseline[1]]["runs_seconds"]
    reference = rows[REFERENCE]["probs"]
    ref_labels = reference.argmax(1)[0]
    table = {}
    for name, row in rows.items():
        labels = row["probs"].argmax(1)[0]
        ratios = [s / b for s, b in zip(row["runs_seconds"], base_runs)]  # paired: the same round's baseline
        out = {"seconds": median(row["runs_seconds"]), "runs_seconds": row["runs_seconds"]}
        out |= {"setup_seconds": row["setup_seconds"][0], "peak_gib": max(row["peak_gib"])}
        out |= {"ratio_to_baseline": median(ratios), "ratios_to_baseline": ratios}
        if name.startswith("SMARTUNETR"):
            out["agreement_with_eager_fp32"] = float((labels == ref_labels).float().mean())
            out["max_probability_difference"] = float((row["probs"] - reference).abs().max())
            if args.checkpoint:
                out["tumour_dice"] = dice(labels.bool().numpy(), tumour.numpy())
        table[name] = out
    lines = [
        "# Whole-CT segmentation on CPU: SMARTUNETR paths against MONAI's SwinUNETR (issue 19)",
        "",
        f"Command: `{command_line('cpu_inference')}`",
        f"CPU x{threads} threads, torch {torch.__version__}; sliding window over {'x'.join(map(str, args.volume))}, "
        f"ROI {args.roi}^3, overlap 0.5, Gaussian, sw_batch {args.sw_batch}; {args.rounds} rounds over the paths, "
        f"medians; feature size {args.feature_size}; "
        f"weights: {args.checkpoint or 'random (agreement: harshest case; no Dice)'}. Baseline: {baseline[1]}. "
        f"One process per path; PyTorch paths "
        + ("with glibc's default malloc." if args.plain_malloc else "with `smart_nets.runtime.keep_freed_memory()`."),
        "",
        "| path | seconds | x baseline (goal <= 0.5) | per round | setup s | process peak GiB "
        + "| argmax agrees with eager fp32 | max prob diff |"
        + (" Dice |" if args.checkpoint else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if args.checkpoint else ""),
    ]
    for name, r in table.items():
        agree = f"{100 * r['agreement_with_eager_fp32']:.4f}%" if "agreement_with_eager_fp32" in r else "-"
        diff = f"{r['max_probability_difference']:.2e}" if "max_probability_difference" in r else "-"
        cells = [name, f"{r['seconds']:.1f}", f"{r['ratio_to_baseline']:.2f}"]
        cells += [", ".join(f"{x:.2f}" for x in r["ratios_to_baseline"]), f"{r['setup_seconds']:.1f}"]
        cells += [f"{r['peak_gib']:.2f}", agree, diff] + (
            [f"{r['tumour_dice']:.3f}" if "tumour_dice" in r else "-"] if args.checkpoint else []
        )
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        config = {k: v for k, v in vars(args).items() if k not in ("out", "path", "work")}
        write_json(Path(f"{args.out}.json"), {"config": config, "paths": table}, indent=2)
        write_text(Path(f"{args.out}.md"), text)


if __name__ == "__main__":
    main()
