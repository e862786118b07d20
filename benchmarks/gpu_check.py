"""GPU-only checks: CUDA attention path parity with MONAI, a SMART training step in fp32 and bf16 AMP, and timings.

On a machine without CUDA it says so and exits 0. With CUDA it:

1. checks that SMARTSwin's trunk equals MONAI's SwinTransformer with the same weights on the GPU (fused SDPA with the
   relative-position bias, forward and the bias gradient), in fp32;
2. runs SMART pretraining steps (``SMARTTrainer``) at paper scale in fp32 and with bf16 autocast, checking that the
   loss is finite and the teacher moved, and printing seconds per step and peak memory;
3. runs ``benchmarks/encoder_speed.py`` and ``benchmarks/pretrain_step.py`` on the GPU.

    python benchmarks/gpu_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parity(device: torch.device) -> dict:
    from smart_nets.networks.nets import SMARTSwin
    from tests.conftest import TINY
    from tests.test_smart_swin import _monai_twin

    torch.manual_seed(0)
    net = SMARTSwin(**(TINY | {"depths": (2, 2, 2, 2)})).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref = _monai_twin(net).eval()
    net, ref = net.to(device), ref.to(device)
    x = torch.randn(2, 1, 96, 96, 96, device=device)
    ours = net.hidden_states(net.forward_features(x))
    theirs = ref(x, normalize=True)
    fwd = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    sum(o.float().square().mean() for o in ours).backward()
    sum(o.float().square().mean() for o in theirs).backward()
    g_ours = net.stages[0].blocks[1].attn.relative_position_bias_table.grad
    g_ref = ref.layers1[0].blocks[1].attn.relative_position_bias_table.grad
    grad = float((g_ours - g_ref).abs().max() / g_ref.abs().max())
    return {"max_abs_forward_diff": fwd, "rel_bias_grad_diff": grad, "ok": fwd < 1e-3 and grad < 1e-3}


def smart_steps(device: torch.device, amp: bool, size: int, steps: int = 6) -> dict:
    from ignite.engine import Events

    from smart_nets.engines import SMARTSchedule, SMARTTrainer, make_teacher, param_groups
    from smart_nets.losses import SMARTLoss
    from smart_nets.networks.nets import SMARTPretrainNet
    from smart_nets.transforms import RandTokenMaskd, RandTwoViewsd

    torch.manual_seed(0)
    net = SMARTPretrainNet(feature_size=48, depths=(2, 2, 8, 2), num_heads=(4, 4, 8, 16)).to(device)
    teacher = make_teacher(net)
    volume = torch.rand(1, 2 * size, 2 * size, 2 * size)
    views = RandTwoViewsd("image", (size,) * 3)
    noise = RandTokenMaskd(["view1", "view2"], 0.3)
    batches = []
    for _ in range(2):
        items = [noise(views({"image": volume})) for _ in range(2)]  # batch 2 per view: 4 volumes per forward
        batches.append({k: torch.stack([i[k] for i in items]) for k in items[0]})
    trainer = SMARTTrainer(
        device,
        1,
        batches * (steps // 2),
        net,
        teacher,
        torch.optim.AdamW(param_groups(net)),
        SMARTLoss(8192).to(device),
        SMARTSchedule(warmup_fraction=0.0),
        amp=amp,
        amp_kwargs={"dtype": torch.bfloat16},
    )
    before = teacher.encoder.patch_embed.weight.detach().clone()
    times, losses = [], []

    @trainer.on(Events.ITERATION_STARTED)
    def _start(engine):
        torch.cuda.synchronize()
        engine.state.t0 = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _stop(engine):
        torch.cuda.synchronize()
        times.append(time.perf_counter() - engine.state.t0)
        losses.append(float(engine.state.output[0]["loss"]))

    torch.cuda.reset_peak_memory_stats()
    trainer.run()
    moved = float((teacher.encoder.patch_embed.weight - before).abs().max())
    return {
        "amp_bf16": amp,
        "roi": size,
        "batch_per_view": 2,
        "seconds_per_step": sorted(times[1:])[len(times[1:]) // 2],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": losses,
        "finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
        "teacher_moved": moved > 0,
    }


def _script(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=HERE.parent)
    return (proc.stdout + proc.stderr)[-3000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="parity and AMP step only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU checks skipped (nothing to do on a CPU-only machine)")
        return
    device = torch.device("cuda:0")
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    results["parity"] = parity(device)
    print("parity", results["parity"], flush=True)
    for amp in (False, True):
        key = f"smart_step_{'bf16' if amp else 'fp32'}"
        results[key] = smart_steps(device, amp, 96)
        print(key, results[key], flush=True)
    if not args.quick:
        results["encoder_speed_bf16"] = _script(
            ["benchmarks/encoder_speed.py", "--device", "cuda", "--amp", "--feature_size", "48", "--depths", "2,2,8,2"]
            + ["--heads", "4,4,8,16", "--batch", "4", "--repeats", "10"]
        )
        results["encoder_speed_fp32"] = _script(
            ["benchmarks/encoder_speed.py", "--device", "cuda", "--feature_size", "48", "--depths", "2,2,8,2"]
            + ["--heads", "4,4,8,16", "--batch", "4", "--repeats", "10"]
        )
        results["pretrain_step_bf16"] = _script(
            ["benchmarks/pretrain_step.py", "--device", "cuda", "--amp", "--sizes", "96", "--feature_size", "48"]
            + ["--depths", "2,2,2,2", "--steps", "5", "--warmup", "2"]
        )
        for key in ("encoder_speed_bf16", "encoder_speed_fp32", "pretrain_step_bf16"):
            print(key, results[key], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
