"""One SMART pretraining step against one step of the SwinUNETR self-supervised pretraining of Tang et al. 2022.

Tang et al. ("Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis", CVPR 2022): MONAI's
SwinTransformer encoder with a rotation head (4 classes), a contrastive head (512-d, NT-Xent) and an inpainting
decoder (5 upsampling conv blocks), on 2 sub-volumes x 2 augmented views (rotations + cutout) per volume. Its heads
are rebuilt here from the paper (the research repository is not a dependency); the encoder gets the same feature
size, depths, heads and window as SMART's, so the ratio measures the methods, not the backbones.

SMART step: teacher forward on 2 noised views (no grad), attention-guided masks, student forward and backward on 2
masked views, AdamW, EMA (``smart_nets.engines.SMARTTrainer`` itself).

Each method runs in its own subprocess (so peak memory is its own), alternating SMART, Tang, SMART, Tang so that
outside load hits both; seconds per step are medians over steps after warm-up.

``--modes`` runs each method in several settings, side by side: ``fp32`` or ``bf16`` (autocast), each optionally
``+tf32``, ``+fused`` (fused AdamW), ``+compile`` (``torch.compile`` of student, teacher and Tang's network) and
``+cudagraphs`` (``torch.compile(mode="reduce-overhead")``). ``--flops`` counts the floating-point operations of one
step with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; forward and backward) and
gives TFLOP/s and, on a GPU of ``PEAK_TFLOPS`` (or with ``--peak_tflops``), the model FLOP utilisation against the
dense peak of the mode's number format (bf16, tf32 or fp32). ``--profile N`` keeps each run's top N operators by
self time (GPU time on CUDA) in the JSON: where a mode loses its time.

    python -m benchmarks.pretrain_step                  # 64^3 and 96^3, feature size 24, CPU
    # issue 27, CPU precision at the demo and the paper scale (SMART only)
    python -m benchmarks.pretrain_step --methods smart --sizes 64 --feature_size 12 --depths 1,1,1,1 \
        --heads 1,2,3,6 --out_dim 1024 --head_hidden 256 --head_bottleneck 64 --batch 2 \
        --modes fp32,fp32+malloc,bf16,bf16+malloc --warmup 2 --steps 5 --rounds 3 \
        --out benchmarks/results/pretrain_cpu_precision_demo
    python -m benchmarks.pretrain_step --methods smart --sizes 96 --feature_size 48 --depths 2,2,8,2 \
        --heads 4,4,8,16 --modes fp32,fp32+malloc,bf16,bf16+malloc --warmup 1 --steps 3 --rounds 2 \
        --out benchmarks/results/pretrain_cpu_precision_paper
    python -m benchmarks.pretrain_step --sizes 96 --feature_size 48 --depths 2,2,2,2 --device cuda --amp
    # issue 19, paper scale on a GPU: every mode, FLOPs, MFU, profiles (not yet run: no GPU lent since)
    python -m benchmarks.pretrain_step --sizes 96 --feature_size 48 --depths 2,2,8,2 --heads 4,4,8,16 \
        --device cuda --modes fp32,fp32+tf32,bf16,bf16+fused,bf16+fused+compile,bf16+fused+cudagraphs \
        --flops --profile 25 --warmup 3 --steps 10 --rounds 1 --out benchmarks/results/pretrain_step_gpu
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import child_env, command_line, ints, module_command, write_json, write_text


class TangSSLHead(nn.Module):
    """SwinUNETR pretraining network of Tang et al.: Swin encoder + rotation, contrastive and inpainting heads."""

    def __init__(self, feature_size: int, depths, heads, window: int = 4) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.encoder = SwinTransformer(
            in_chans=1,
            embed_dim=feature_size,
            window_size=(window,) * 3,
            patch_size=(2, 2, 2),
            depths=depths,
            num_heads=heads,
        )
        dim = 16 * feature_size
        self.rotation_head = nn.Linear(dim, 4)
        self.contrastive_head = nn.Linear(dim, 512)
        blocks, c = [], dim
        for _ in range(5):  # 1/32 -> 1
            blocks += [
                nn.Conv3d(c, c // 2, 3, padding=1),
                nn.InstanceNorm3d(c // 2),
                nn.LeakyReLU(),
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
            ]
            c //= 2
        self.decoder = nn.Sequential(*blocks, nn.Conv3d(c, 1, 1))

    def forward(self, x):
        feats = self.encoder(x.contiguous())[4]
        tokens = feats.flatten(2).transpose(1, 2)
        return self.rotation_head(tokens[:, 0]), self.contrastive_head(tokens[:, 1]), self.decoder(feats)


def _tang_step(model, optimizer, volume: torch.Tensor, roi: int, amp: bool) -> float:
    """Two sub-volumes x two views: rotate and cut out, then rotation + contrastive + L1 inpainting losses."""
    subs = torch.stack([volume[:, :roi, :roi, :roi], volume[:, -roi:, -roi:, -roi:]])  # (2, 1, roi^3)
    views, rots, clean = [], [], []
    for _ in range(2):
        rot = torch.randint(0, 4, (subs.shape[0],))
        rotated = torch.stack([torch.rot90(s, int(k), dims=(2, 3)) for s, k in zip(subs, rot)])
        cut = rotated.clone()
        cut[:, :, : roi // 4, : roi // 4, : roi // 4] = torch.rand_like(cut[:, :, : roi // 4, : roi // 4, : roi // 4])
        views.append(cut), rots.append(rot), clean.append(rotated)
    x, rot, target = torch.cat(views), torch.cat(rots).to(volume.device), torch.cat(clean)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(volume.device.type, dtype=torch.bfloat16, enabled=amp):
        r, c, rec = model(x)
        z = F.normalize(c.float(), dim=1)
        sim = z @ z.T / 0.5
        n = z.shape[0] // 2
        labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        loss = F.cross_entropy(r.float(), rot) + F.cross_entropy(sim, labels) + F.l1_loss(rec.float(), target)
    loss.backward()
    optimizer.step()
    return float(loss)


# dense tensor-core peaks in TFLOP/s (NVIDIA data sheets, SXM parts) by GPU name and number format, for MFU
PEAK_TFLOPS = {
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def parse_mode(mode: str) -> dict:
    """``fp32`` or ``bf16`` (autocast), then any of ``+tf32`` (TF32 matmuls and convolutions), ``+fused`` (fused
    AdamW), ``+compile`` (``torch.compile`` of the networks), ``+cudagraphs`` (``torch.compile`` with
    ``mode="reduce-overhead"``: CUDA graphs where the shapes are static), ``+malloc`` (glibc keeps freed memory,
    ``smart_nets.runtime.keep_freed_memory``: CPU)."""
    dtype, *extras = mode.split("+")
    known = {"tf32", "fused", "compile", "cudagraphs", "malloc"}
    if dtype not in ("fp32", "bf16") or not set(extras) <= known:
        raise ValueError(f"mode {mode!r}: expected fp32 or bf16 followed by any of +{', +'.join(sorted(known))}")
    return {
        "amp": dtype == "bf16",
        "tf32": "tf32" in extras,
        "fused": "fused" in extras,
        "compile": "compile" in extras or "cudagraphs" in extras,
        "compile_mode": "reduce-overhead" if "cudagraphs" in extras else None,
        "number_format": "bf16" if dtype == "bf16" else ("tf32" if "tf32" in extras else "fp32"),
        "malloc": "malloc" in extras,
    }


def _worker(args) -> dict:
    device = torch.device(args.device)
    mode = parse_mode(args.mode)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = mode["tf32"]
    torch.backends.cudnn.allow_tf32 = mode["tf32"]
    if mode["malloc"]:
        from smart_nets.runtime import keep_freed_memory

        keep_freed_memory()
    torch.manual_seed(0)
    roi = args.size
    volume = torch.rand(1, roi + roi // 2, roi + roi // 2, roi + roi // 2, device=device)
    if args.method == "tang":
        model = TangSSLHead(args.feature_size, args.depths, args.heads).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=mode["fused"] or None)
        step = lambda: _tang_step(model, optimizer, volume, roi, mode["amp"])  # noqa: E731
        compiled = [model]
    else:
        from smart_nets.engines import SMARTSchedule, SMARTTrainer, make_teacher, param_groups
        from smart_nets.losses import SMARTLoss
        from smart_nets.networks.nets import SMARTPretrainNet, SMARTSwin
        from smart_nets.transforms import RandTokenMaskd, RandTwoViewsd

        encoder = SMARTSwin(feature_size=args.feature_size, depths=args.depths, num_heads=args.heads)
        net = SMARTPretrainNet(
            encoder, out_dim=args.out_dim, head_hidden_dim=args.head_hidden, head_bottleneck_dim=args.head_bottleneck
        ).to(device)
        teacher = make_teacher(net)
        views = RandTokenMaskd(["view1", "view2"], 0.3)(RandTwoViewsd("image", (roi,) * 3)({"image": volume.cpu()}))
        batch = {k: torch.stack([v] * args.batch) for k, v in views.items()}
        trainer = SMARTTrainer(
            device,
            1,
            [batch],
            net,
            teacher,
            torch.optim.AdamW(param_groups(net), fused=mode["fused"] or None),
            SMARTLoss(args.out_dim).to(device),
            SMARTSchedule(),
            epoch_length=10**6,  # the schedules' length; a step's cost does not depend on where in them it is
            precision="bf16" if mode["amp"] else "fp32",
        )
        step = lambda: float(trainer.step(batch)["loss"])  # noqa: E731
        compiled = [net, teacher]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flops = None
    if args.flops:  # counted on the eager networks (compilation does not change the arithmetic)
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    if mode["compile"]:
        for module in compiled:
            module.compile(mode=mode["compile_mode"])  # in place: parameter names (EMA, checkpoints) unchanged
    times, compile_s = [], None
    for i in range(args.warmup + args.steps):
        sync()
        if device.type == "cuda" and i == args.warmup:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = step()
        sync()
        if i == 0:
            compile_s = time.perf_counter() - start  # the first step: compilation, autotuning, allocator warm-up
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, whole process
    out = {
        "method": args.method,
        "size": roi,
        "mode": args.mode,
        "seconds": statistics.median(times),
        "first_step_seconds": compile_s,
        "peak_gib": peak,
        "loss": loss,
        "flops_per_step": flops,
    }
    if args.profile:
        out["profile"] = _profile(step, device, args.profile)
    return out


def _profile(step, device: torch.device, rows: int) -> str:
    """The ``rows`` operators taking the most self time (GPU time on CUDA) over two steps, as torch.profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def peak_tflops(device: str, number_format: str, override: float | None) -> float | None:
    """The dense peak of ``device`` in ``number_format`` (``--peak_tflops`` wins), or None where unknown (CPUs)."""
    if override:
        return override
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peaks[number_format] for key, peaks in PEAK_TFLOPS.items() if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=ints, default=(64, 96))
    parser.add_argument("--feature_size", type=int, default=24)
    parser.add_argument("--depths", type=ints, default=(2, 2, 2, 2))
    parser.add_argument("--heads", type=ints, default=(3, 6, 12, 24))
    parser.add_argument("--out_dim", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=1, help="volumes per SMART step (two views each)")
    parser.add_argument("--head_hidden", type=int, default=2048, help="projection MLP width (the demo: 256)")
    parser.add_argument("--head_bottleneck", type=int, default=256, help="projection bottleneck (the demo: 64)")
    parser.add_argument("--methods", default="smart,tang", help="smart, tang or both (comma-separated)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (the same as --modes bf16)")
    parser.add_argument("--modes", default=None, help="comma-separated modes (see parse_mode); default fp32 or bf16")
    parser.add_argument("--flops", action="store_true", help="count FLOPs per step (FlopCounterMode) and give MFU")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's peak, for MFU (default: table)")
    parser.add_argument("--profile", type=int, default=0, help="keep the top N operators of each run's profile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating subprocess runs per method")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    parser.add_argument("--method", choices=("smart", "tang"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(_worker(args)))
        return
    modes = [m.strip() for m in (args.modes or ("bf16" if args.amp else "fp32")).split(",") if m.strip()]
    for mode in modes:
        parse_mode(mode)  # fail before any run on a misspelt mode
    shared = ["--feature_size", str(args.feature_size), "--depths", ",".join(map(str, args.depths))]
    shared += ["--heads", ",".join(map(str, args.heads)), "--out_dim", str(args.out_dim), "--device", args.device]
    shared += ["--threads", str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    shared += ["--batch", str(args.batch), "--head_hidden", str(args.head_hidden)]
    shared += ["--head_bottleneck", str(args.head_bottleneck)]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or not set(methods) <= {"smart", "tang"}:
        raise SystemExit(f"--methods {args.methods!r}: expected smart, tang or both")
    shared += ["--profile", str(args.profile)] + (["--flops"] if args.flops else [])
    results: dict[str, dict[str, dict]] = {}
    for size in args.sizes:
        # rounds outermost: every mode and method runs once per round, so outside load hits them all alike
        runs = {mode: {method: [] for method in methods} for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                for method in methods:
                    cmd = module_command("pretrain_step", *shared, "--method", method, "--size", size, "--mode", mode)
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
                    if proc.returncode != 0:
                        raise RuntimeError(f"{method} {size}^3 {mode} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
                    runs[mode][method].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results[str(size)] = {}
        for mode in modes:
            row = summarise(runs[mode], args.device, parse_mode(mode), args.peak_tflops)
            if "smart" in methods:  # speed-up of SMART over the first mode, the median of the per-round ratios
                pairs = zip(runs[modes[0]]["smart"], runs[mode]["smart"])
                row["smart_speedup"] = statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)
            results[str(size)][mode] = row
            print(f"{size}^3 {mode}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if _is_number(v)), flush=True)
    report = {"config": {k: v for k, v in vars(args).items() if k not in ("method", "size", "mode")}}
    report |= {"torch": torch.__version__, "results": results}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    print(json.dumps(report, default=str))
    if args.out:
        write_report(report, args.out)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarise(runs: dict[str, list[dict]], device: str, mode: dict, peak_override: float | None) -> dict:
    """Medians over rounds: seconds per step of each method, their ratio, peak memory, FLOPs, TFLOP/s and MFU."""
    row: dict = {}
    for method, rs in runs.items():
        row[f"{method}_s"] = statistics.median(r["seconds"] for r in rs)
        row[f"{method}_first_step_s"] = max(r["first_step_seconds"] for r in rs)
        row[f"{method}_peak_gib"] = max(r["peak_gib"] for r in rs)
        flops = rs[0]["flops_per_step"]
        if flops:
            row[f"{method}_tflop_per_step"] = flops / 1e12
            row[f"{method}_tflops"] = flops / 1e12 / row[f"{method}_s"]
            peak = peak_tflops(device, mode["number_format"], peak_override)
            if peak:
                row[f"{method}_mfu"] = row[f"{method}_tflops"] / peak
        if rs[0].get("profile"):
            row[f"{method}_profile"] = rs[0]["profile"]
    if "smart_s" in row and "tang_s" in row:
        row["ratio"] = row["smart_s"] / row["tang_s"]
    return row


def write_report(report: dict, out: str) -> None:
    """``<out>.json`` (everything, profiles included) and ``<out>.md`` (one table row per size and mode)."""
    from pathlib import Path

    config = report["config"]
    lines = [
        "# One SMART pretraining step against one Swin UNETR (Tang et al.) self-supervised step",
        "",
        f"Command: `{command_line('pretrain_step')}`",
        f"Device {report.get('gpu', config['device'])}, torch {report['torch']}; feature size {config['feature_size']},"
        f" depths {config['depths']}, heads {config['heads']}, SMART head {config['out_dim']} prototypes; medians of "
        f"{config['steps']} steps after {config['warmup']} warm-up, {config['rounds']} alternating rounds; "
        f"{config.get('batch', 1)} volume(s) per step. Speed-up: SMART's first mode's time over this mode's, the "
        "median of the per-round ratios.",
        "",
        "| size | mode | SMART s/step | speed-up | Tang s/step | ratio (goal <= 1.0) | SMART GiB | Tang GiB "
        "| SMART TFLOP/step | SMART TFLOP/s | SMART MFU | Tang MFU | first step s (SMART/Tang) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    for size, modes in report["results"].items():
        for mode, r in modes.items():
            cells = [f"{size}^3", mode, cell(r, "smart_s", ".3f"), cell(r, "smart_speedup", ".2f")]
            cells += [cell(r, "tang_s", ".3f"), cell(r, "ratio", ".2f")]
            cells += [cell(r, "smart_peak_gib", ".2f"), cell(r, "tang_peak_gib", ".2f")]
            cells += [cell(r, "smart_tflop_per_step", ".3g"), cell(r, "smart_tflops", ".3g")]
            cells += [cell(r, "smart_mfu", ".1%"), cell(r, "tang_mfu", ".1%")]
            cells += [f"{cell(r, 'smart_first_step_s', '.1f')} / {cell(r, 'tang_first_step_s', '.1f')}"]
            lines.append("| " + " | ".join(cells) + " |")
    write_json(Path(f"{out}.json"), report, indent=2, default=str)
    write_text(Path(f"{out}.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
