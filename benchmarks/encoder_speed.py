"""SMARTSwin's Swin trunk against MONAI's SwinTransformer, side by side in one process on the CPU.

Both networks get the same feature size, depths, heads, window and patch size and return the same five
layer-normalized, channels-first hidden states; SMARTSwin's class-attention branch is left out (it reads the stage-3
tokens and costs little). Runs alternate between the two networks so that outside load hits both alike, and the
median of each is reported with the ratio ours / MONAI (goal: <= 0.8).

    python benchmarks/encoder_speed.py                       # feature size 24, depths 2,2,2,2, 96^3
    python benchmarks/encoder_speed.py --feature_size 48 --depths 2,2,8,2 --heads 4,4,8,16 --repeats 3
    python benchmarks/encoder_speed.py --device cuda --amp --feature_size 48 --depths 2,2,8,2 --heads 4,4,8,16 --batch 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from monai.networks.nets.swin_unetr import SwinTransformer

from smart_nets.networks.nets import SMARTSwin


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(","))


def _time(fn, backward: bool, device: torch.device, amp: bool) -> float:
    """Seconds for one forward (no autograd) or one forward+backward, with CUDA synchronised around it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        if backward:
            sum(h.float().mean() for h in fn()).backward()
        else:
            with torch.no_grad():
                fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature_size", type=int, default=24)
    parser.add_argument("--depths", type=_ints, default=(2, 2, 2, 2))
    parser.add_argument("--heads", type=_ints, default=(3, 6, 12, 24))
    parser.add_argument("--size", type=int, default=96, help="cubic input size in voxels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--drop_path_rate", type=float, default=0.0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    common = dict(depths=args.depths, num_heads=args.heads, drop_path_rate=args.drop_path_rate)
    ours = SMARTSwin(in_channels=1, feature_size=args.feature_size, window_size=4, patch_size=2, **common)
    monai = SwinTransformer(
        in_chans=1, embed_dim=args.feature_size, window_size=(4, 4, 4), patch_size=(2, 2, 2), **common
    )
    ours, monai = ours.to(device), monai.to(device)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, device=device)
    runs = {
        "ours": lambda: ours.hidden_states(ours.forward_features(x)),
        "monai": lambda: monai(x, normalize=True),
    }
    results = {}
    for mode, backward in (("forward", False), ("forward+backward", True)):
        times: dict[str, list[float]] = {name: [] for name in runs}
        for name, fn in runs.items():  # warm-up
            _time(fn, backward, device, args.amp)
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(_time(fn, backward, device, args.amp))
        med = {name: statistics.median(t) for name, t in times.items()}
        results[mode] = {"ours_s": med["ours"], "monai_s": med["monai"], "ratio": med["ours"] / med["monai"]}
        print(f"{mode:>17}: ours {med['ours']:.3f} s  MONAI {med['monai']:.3f} s  ratio {results[mode]['ratio']:.2f}")
    config = vars(args) | {"torch": torch.__version__, "machine": platform.machine()}
    if device.type == "cuda":
        config["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps({"config": config, "results": results}, default=str))


if __name__ == "__main__":
    main()
