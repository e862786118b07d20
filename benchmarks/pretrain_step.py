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

    python benchmarks/pretrain_step.py                  # 64^3 and 96^3, feature size 24, CPU
    python benchmarks/pretrain_step.py --sizes 96 --feature_size 48 --depths 2,2,2,2 --device cuda --amp
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(","))


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


def _worker(args) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    roi = args.size
    volume = torch.rand(1, roi + roi // 2, roi + roi // 2, roi + roi // 2, device=device)
    if args.method == "tang":
        model = TangSSLHead(args.feature_size, args.depths, args.heads).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step = lambda: _tang_step(model, optimizer, volume, roi, args.amp)  # noqa: E731
    else:
        from smart_nets.engines import SMARTSchedule, SMARTTrainer, make_teacher, param_groups
        from smart_nets.losses import SMARTLoss
        from smart_nets.networks.nets import SMARTPretrainNet, SMARTSwin
        from smart_nets.transforms import RandTokenMaskd, RandTwoViewsd

        encoder = SMARTSwin(feature_size=args.feature_size, depths=args.depths, num_heads=args.heads)
        net = SMARTPretrainNet(encoder, out_dim=args.out_dim).to(device)
        views = RandTokenMaskd(["view1", "view2"], 0.3)(RandTwoViewsd("image", (roi,) * 3)({"image": volume.cpu()}))
        batch = {k: v[None] for k, v in views.items()}
        trainer = SMARTTrainer(
            device,
            1,
            [batch],
            net,
            make_teacher(net),
            torch.optim.AdamW(param_groups(net)),
            SMARTLoss(args.out_dim).to(device),
            SMARTSchedule(),
            epoch_length=10**6,  # the schedules' length; a step's cost does not depend on where in them it is
            amp=args.amp,
            amp_kwargs={"dtype": torch.bfloat16},
        )
        step = lambda: float(trainer.step(batch)["loss"])  # noqa: E731
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            if i == args.warmup:
                torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, whole process
    return {"method": args.method, "size": roi, "seconds": statistics.median(times), "peak_gib": peak, "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_ints, default=(64, 96))
    parser.add_argument("--feature_size", type=int, default=24)
    parser.add_argument("--depths", type=_ints, default=(2, 2, 2, 2))
    parser.add_argument("--heads", type=_ints, default=(3, 6, 12, 24))
    parser.add_argument("--out_dim", type=int, default=8192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating subprocess runs per method")
    parser.add_argument("--method", choices=("smart", "tang"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(_worker(args)))
        return
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--sizes")]
    if "--sizes" in sys.argv:
        i = sys.argv.index("--sizes")
        passthrough = sys.argv[1:i] + sys.argv[i + 2 :]
    report = {}
    for size in args.sizes:
        runs: dict[str, list[dict]] = {"smart": [], "tang": []}
        for _ in range(args.rounds):
            for method in runs:
                cmd = [sys.executable, __file__, *passthrough, "--method", method, "--size", str(size)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                runs[method].append(json.loads(out))
        med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
        mem = {m: max(r["peak_gib"] for r in rs) for m, rs in runs.items()}
        report[size] = {
            "smart_s": med["smart"],
            "tang_s": med["tang"],
            "ratio": med["smart"] / med["tang"],
            "smart_peak_gib": mem["smart"],
            "tang_peak_gib": mem["tang"],
        }
        print(
            f"{size}^3: SMART {med['smart']:.2f} s/step ({mem['smart']:.2f} GiB)  Tang {med['tang']:.2f} s/step "
            f"({mem['tang']:.2f} GiB)  ratio {med['smart'] / med['tang']:.2f}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "config": {k: v for k, v in vars(args).items() if k not in ("method", "size")},
                "torch": torch.__version__,
                "results": report,
            }
        )
    )


if __name__ == "__main__":
    main()
