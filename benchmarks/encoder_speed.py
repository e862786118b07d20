"""SMARTSwin's Swin trunk against MONAI's SwinTransformer, side by side in one process on the CPU.

Both networks get the same feature size, depths, heads, window and patch size and return the same five
layer-normalized, channels-first hidden states; SMARTSwin's class-attention branch is left out (it reads the stage-3
tokens and costs little). Runs alternate between the networks so that outside load hits all alike, and the median of
each is reported with the ratio ours / MONAI (goal: <= 0.8).

On the CPU, forward+backward also runs SMARTSwin with ``LeanWindowAttention`` in place of PyTorch's
``scaled_dot_product_attention``: a hand-written autograd attention that smart_nets used for CPU training until it
no longer beat SDPA (PyTorch 2.13) and was removed. It stays here so that the comparison can be rerun on another
machine or PyTorch; the line ``custom CPU attention`` gives its time and its ratio to SDPA.

Two further measurements of SMARTSwin alone replace the comparison with MONAI:

- ``--gather``: forward+backward with the window blocks' token permutation as ``_GatherTokens`` (a gather whose
  backward is the inverse gather) against plain ``index_select`` (whose backward autograd writes as an
  ``index_add`` into zeros), alternating, with the largest difference of their gradients (0: both exact).
- ``--compile``: ``torch.compile`` of the encoder's forward+backward: the first (compiling) step's time, dynamo's
  frames, graphs, graph breaks and recompilations (and whether it hit ``recompile_limit`` and fell back to eager),
  then the median step time against eager. ``--backend eager`` checks dynamo alone in seconds.

    python -m benchmarks.encoder_speed                       # feature size 24, depths 2,2,2,2, 96^3
    python -m benchmarks.encoder_speed --feature_size 48 --depths 2,2,8,2 --heads 4,4,8,16 --repeats 3
    python -m benchmarks.encoder_speed --device cuda --amp --feature_size 48 --depths 2,2,8,2 --heads 4,4,8,16 --batch 4
    python -m benchmarks.encoder_speed --gather --feature_size 12 --depths 1,1,1,1 --heads 1,2,3,6 --size 64
    python -m benchmarks.encoder_speed --compile --feature_size 48 --depths 2,2,8,2 --heads 4,4,8,16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from contextlib import contextmanager
from unittest import mock

import torch
from monai.networks.nets.swin_unetr import SwinTransformer

from benchmarks.common import ints
from smart_nets.networks.blocks import window_attention
from smart_nets.networks.nets import SMARTSwin


class LeanWindowAttention(torch.autograd.Function):
    """``softmax(q k^T * scale + mask) v`` with a learnable additive mask, allocating the ``(B', heads, n, n)`` scores
    once in forward (mask added and softmax taken in place) and once in backward, where FlashAttention's identity
    ``rowsum(dP * P) = rowsum(dO * O)`` saves another full-size temporary. Written for CPU training, where SDPA runs
    its math kernel when the mask needs a gradient; the reference this benchmark compares SDPA against."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):  # noqa: D102 (see the class docstring)
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        scores.add_(mask)
        torch.ops.aten._softmax.out(scores, -1, False, out=scores)
        out = torch.matmul(scores, v)
        ctx.save_for_backward(q, k, v, scores, out)
        ctx.scale, ctx.mask_shape = scale, mask.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        q, k, v, probs, out = ctx.saved_tensors
        grad_v = torch.matmul(probs.transpose(-2, -1), grad_out)
        grad_scores = torch.matmul(grad_out, v.transpose(-2, -1))
        grad_scores.sub_((grad_out * out).sum(-1, keepdim=True)).mul_(probs)  # softmax backward, in place
        grad_mask = grad_scores.sum_to_size(ctx.mask_shape) if ctx.needs_input_grad[3] else None
        grad_q = torch.matmul(grad_scores, k).mul_(ctx.scale)
        grad_k = torch.matmul(grad_scores.transpose(-2, -1), q).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, grad_mask, None


def _lean_sdpa(q, k, v, attn_mask, dropout_p=0.0, scale=None):
    """``scaled_dot_product_attention``'s signature, as SMARTSwin calls it (a mask, no dropout), on the lean kernel."""
    if dropout_p:
        raise ValueError("LeanWindowAttention has no attention dropout")
    return LeanWindowAttention.apply(q, k, v, attn_mask, scale)


def _with_lean_attention(fn):
    """``fn`` with SMARTSwin's attention on :class:`LeanWindowAttention` (MONAI's does not call SDPA)."""

    def run():
        with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _lean_sdpa):
            return fn()

    return run


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


def _index_select_gather(x, order, inverse):
    """``_GatherTokens.apply``'s signature on plain ``index_select`` (autograd's backward: ``index_add``)."""
    return x.index_select(1, order)


def _with_plain_gather(fn):
    """``fn`` with the window blocks' token permutation on plain ``index_select`` instead of ``_GatherTokens``."""

    def run():
        with mock.patch.object(window_attention._GatherTokens, "apply", _index_select_gather):
            return fn()

    return run


def _gradients(fn, net) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    sum(h.float().mean() for h in fn()).backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def gather_study(net, x, args, device) -> dict:
    """Forward+backward of ``net`` with ``_GatherTokens`` against plain ``index_select``, alternating."""
    runs = {"custom_gather": lambda: net.hidden_states(net.forward_features(x))}
    runs["index_select"] = _with_plain_gather(runs["custom_gather"])
    grads = {name: _gradients(fn, net) for name, fn in runs.items()}  # also the warm-up
    diff = max((a - b).abs().max().item() for a, b in zip(grads["custom_gather"], grads["index_select"]))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(_time(fn, True, device, args.amp))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["custom_gather"] / med["index_select"]
    print(
        f"forward+backward: custom gather {med['custom_gather']:.4f} s  index_select {med['index_select']:.4f} s  "
        f"ratio custom / index_select {ratio:.3f}  largest gradient difference {diff:.3g}"
    )
    return {"forward+backward": med | {"custom_over_index_select": ratio, "max_grad_difference": diff}}


@contextmanager
def _dynamo_log():
    """Dynamo's recompilation messages and warnings (e.g. hitting ``recompile_limit``), collected as text."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    torch._logging.set_logs(recompiles=True)
    loggers = [logging.getLogger(name) for name in ("torch", "torch._dynamo")]
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    for lg in loggers:  # collected here instead of printed by torch's handlers
        lg.handlers, lg.propagate = [Collect(level=logging.DEBUG)], False
    try:
        yield lines
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        torch._logging.set_logs()


def compile_study(net, x, args, device) -> dict:
    """``torch.compile`` of ``net``'s forward+backward: first-step time, dynamo's counters, step times vs eager."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = lambda: net.hidden_states(net.forward_features(x))  # noqa: E731
    compiled_forward = torch.compile(net.forward_features, backend=args.backend)
    compiled = lambda: net.hidden_states(compiled_forward(x))  # noqa: E731
    with _dynamo_log() as log:
        first = _time(compiled, True, device, args.amp)
        second = _time(compiled, True, device, args.amp)  # a recompilation on the second call shows here
    recompiles = [line for line in log if "Recompiling" in line]
    gave_up = [line for line in log if "recompile_limit" in line or "cache_size_limit" in line]
    stats = {
        "backend": args.backend,
        "first_step_s": first,
        "second_step_s": second,
        "frames_total": counters["frames"]["total"],
        "frames_ok": counters["frames"]["ok"],
        "unique_graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "graph_break_reasons": dict(counters["graph_break"]),
        "recompiles": len(recompiles),
        "hit_recompile_limit": bool(gave_up),
    }
    _time(eager, True, device, args.amp)  # warm-up
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        times["eager"].append(_time(eager, True, device, args.amp))
        times["compiled"].append(_time(compiled, True, device, args.amp))
    med = {name: statistics.median(t) for name, t in times.items()}
    stats |= {
        "eager_s": med["eager"],
        "compiled_s": med["compiled"],
        "compiled_over_eager": med["compiled"] / med["eager"],
    }
    print(
        f"torch.compile ({args.backend}): first step {first:.1f} s, second {second:.2f} s; "
        f"frames {stats['frames_ok']}/{stats['frames_total']}, graphs {stats['unique_graphs']}, "
        f"graph breaks {stats['graph_breaks']}, recompiles {stats['recompiles']}"
        + (" (hit recompile_limit: fell back to eager)" if gave_up else "")
    )
    for line in recompiles[:5]:
        print("  ", line.splitlines()[0] if line else line)
    print(
        f"forward+backward: eager {med['eager']:.4f} s  compiled {med['compiled']:.4f} s  "
        f"ratio compiled / eager {stats['compiled_over_eager']:.3f}"
    )
    return {"compile": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature_size", type=int, default=24)
    parser.add_argument("--depths", type=ints, default=(2, 2, 2, 2))
    parser.add_argument("--heads", type=ints, default=(3, 6, 12, 24))
    parser.add_argument("--size", type=int, default=96, help="cubic input size in voxels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--drop_path_rate", type=float, default=0.0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    study = parser.add_mutually_exclusive_group()
    study.add_argument("--gather", action="store_true", help="custom token gather vs index_select (ours only)")
    study.add_argument("--compile", action="store_true", help="torch.compile of ours: compile time, recompiles")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend for --compile")
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
    config = vars(args) | {"torch": torch.__version__, "machine": platform.machine()}
    if device.type == "cuda":
        config["gpu"] = torch.cuda.get_device_name(device)
    if args.gather or args.compile:
        results = (gather_study if args.gather else compile_study)(ours, x, args, device)
        print(json.dumps({"config": config, "results": results}, default=str))
        return
    runs = {
        "ours": lambda: ours.hidden_states(ours.forward_features(x)),
        "monai": lambda: monai(x, normalize=True),
    }
    results = {}
    for mode, backward in (("forward", False), ("forward+backward", True)):
        timed = dict(runs)
        if backward and device.type == "cpu":  # the lean kernel was only ever used for CPU training
            timed["ours_custom_attention"] = _with_lean_attention(runs["ours"])
        times: dict[str, list[float]] = {name: [] for name in timed}
        for name, fn in timed.items():  # warm-up
            _time(fn, backward, device, args.amp)
        for _ in range(args.repeats):
            for name, fn in timed.items():
                times[name].append(_time(fn, backward, device, args.amp))
        med = {name: statistics.median(t) for name, t in times.items()}
        results[mode] = {"ours_s": med["ours"], "monai_s": med["monai"], "ratio": med["ours"] / med["monai"]}
        print(f"{mode:>17}: ours {med['ours']:.3f} s  MONAI {med['monai']:.3f} s  ratio {results[mode]['ratio']:.2f}")
        if "ours_custom_attention" in med:
            custom = med["ours_custom_attention"]
            results[mode] |= {"ours_custom_attention_s": custom, "custom_over_sdpa": custom / med["ours"]}
            print(
                f"{'':>17}  custom CPU attention {custom:.3f} s  SDPA {med['ours']:.3f} s  "
                f"ratio custom / SDPA {custom / med['ours']:.2f}"
            )
    print(json.dumps({"config": config, "results": results}, default=str))


if __name__ == "__main__":
    main()
