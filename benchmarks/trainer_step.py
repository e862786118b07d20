"""Seconds per ``SMARTTrainer`` step at paper scale, for this tree's ``smart_nets`` or older commits' (a bisect).

``gpu_check`` times the same step once; this script times it for several copies of ``smart_nets`` side by side, each
in a fresh process, so that a change in speed between two commits can be found on the machine that shows it (the
trainer's paper-scale GPU step took 0.107 s on 2026-11-26 and 0.201 s on 2026-12-04). Make each older copy with
``git archive <commit> smart_nets | tar -x -C <dir>/<commit>`` and name the folders with ``--trees``; ``.`` is this
tree. The network is built with whichever constructor that copy has (the preset ``smart_swin("paper")``, else
``SMARTSwin`` passed in, else the first ``SMARTPretrainNet(feature_size=...)``), all the paper's layout: C 48,
depths 2-2-8-2, heads 4-4-8-16, window 4, 8192 prototypes, two views of batch 2 at 96^3 by default.

    python -m benchmarks.trainer_step --device cuda --trees .gpu/2ae129e . --profile --out /tmp/step

``--profile`` writes each copy's ``torch.profiler`` tables (steps 6-8, by self device time and by self CPU time)
beside ``--out``. Results: ``<out>.json`` and a table in ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, command_line, write_json, write_text

PROFILED = (6, 8)  # first and last profiled iteration (1-based)


def _network(nets, paper: dict):
    """The paper-scale SMARTPretrainNet with whichever constructor this copy of smart_nets has."""
    if callable(getattr(nets, "smart_swin", None)):
        return nets.SMARTPretrainNet(nets.smart_swin("paper"))
    try:
        return nets.SMARTPretrainNet(nets.SMARTSwin(**paper))
    except TypeError:  # before the encoder was passed in (2026-11-29)
        return nets.SMARTPretrainNet(**paper)


def build(device, size: int, steps: int, bf16: bool):
    """A ``SMARTTrainer`` of ``steps`` iterations on the paper-scale network, two views of batch 2 at ``size``^3 cut
    from one random volume, with the 8192-prototype loss; returns ``(trainer, teacher)``. Also ``gpu_check``'s."""
    import torch

    from smart_nets.engines import SMARTSchedule, SMARTTrainer
    from smart_nets.losses import SMARTLoss
    from smart_nets.networks import nets
    from smart_nets.transforms import RandTokenMaskd, RandTwoViewsd

    try:
        from smart_nets.engines import make_teacher, param_groups
    except ImportError:  # older copies
        from smart_nets.engines.ema import make_teacher, param_groups

    torch.manual_seed(0)
    net = _network(nets, dict(feature_size=48, depths=(2, 2, 8, 2), num_heads=(4, 4, 8, 16))).to(device)
    teacher = make_teacher(net)
    volume = torch.rand(1, 2 * size, 2 * size, 2 * size)
    views, noise = RandTwoViewsd("image", (size,) * 3), RandTokenMaskd(["view1", "view2"], 0.3)
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
        amp=bf16,
        amp_kwargs={"dtype": torch.bfloat16},
    )
    return trainer, teacher


def one_tree(device_name: str, size: int, steps: int, bf16: bool, profile: str | None) -> dict:
    """Time ``steps`` trainer steps of the imported smart_nets (the caller put its copy first on ``sys.path``)."""
    import torch
    from ignite.engine import Events

    import smart_nets

    device = torch.device(device_name)
    trainer, _ = build(device, size, steps, bf16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    state: dict = {}

    @trainer.on(Events.ITERATION_STARTED)
    def _start(engine):
        sync()
        if profile and engine.state.iteration == PROFILED[0]:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            state["prof"] = torch.profiler.profile(activities=activities)
            state["prof"].start()
        state["t0"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _stop(engine):
        sync()
        times.append(time.perf_counter() - state["t0"])
        if profile and engine.state.iteration == PROFILED[1]:
            prof = state.pop("prof")
            prof.stop()
            tables = []
            sorts = ["self_cpu_time_total"] + (["self_cuda_time_total"] if device.type == "cuda" else [])
            for key in sorts:
                tables.append(f"## steps {PROFILED[0]}-{PROFILED[1]}, sorted by {key}\n")
                tables.append(prof.key_averages().table(sort_by=key, row_limit=40) + "\n")
            Path(profile).write_text("".join(tables))

    trainer.run()
    profiled = set(range(PROFILED[0] - 1, PROFILED[1])) if profile else set()
    # the first two steps allocate and tune; profiled steps run slower (all of them when the run is that short)
    clean = [t for i, t in enumerate(times) if i >= 2 and i not in profiled] or times[2:]
    return {
        "smart_nets": str(Path(smart_nets.__file__).parent),
        "device": device_name,
        "bf16": bf16,
        "roi": size,
        "seconds_per_step": sorted(clean)[len(clean) // 2],
        "times": [round(t, 4) for t in times],
        "parameters": sum(p.numel() for p in trainer.network.parameters()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=["."], help="folders holding a copy of smart_nets ('.': this)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (the trainer's amp)")
    parser.add_argument("--profile", action="store_true", help="write each copy's operator tables beside --out")
    parser.add_argument("--out", default="/tmp/trainer_step", help="results: <out>.json and <out>.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: time this copy in this process
    args = parser.parse_args(argv)
    if args.steps < 4:
        parser.error(f"--steps must be at least 4 (two to warm up), got {args.steps}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        sys.path.insert(0, str(Path(args.one).resolve()))
        profile = f"{out}_{Path(args.one).resolve().name}_profile.txt" if args.profile else None
        print(json.dumps(one_tree(args.device, args.size, args.steps, args.bf16, profile)), flush=True)
        return {}
    missing = [t for t in args.trees if not (Path(t) / "smart_nets" / "__init__.py").is_file()]
    if missing:
        parser.error(f"no smart_nets package in: {', '.join(missing)}")
    rows = []
    for tree in args.trees:
        cmd = [sys.executable, "-m", "benchmarks.trainer_step", "--one", tree, "--out", str(out)]
        cmd += ["--device", args.device, "--size", str(args.size), "--steps", str(args.steps)]
        cmd += ["--bf16"] * args.bf16 + ["--profile"] * args.profile
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        row = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-2000:]}
        row["tree"] = tree
        rows.append(row)
        print(tree, row.get("seconds_per_step", row.get("error")), flush=True)
    result = {"command": command_line("trainer_step", argv), "rows": rows}
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), _table(result))
    return result


def _table(result: dict) -> str:
    lines = ["# SMARTTrainer step per copy of smart_nets", "", f"`{result['command']}`", ""]
    lines += ["| tree | s/step | parameters | steps (s) |", "| --- | --- | --- | --- |"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['tree']} | failed: {r['error'].splitlines()[-1] if r['error'] else '?'} | - | - |")
        else:
            lines.append(f"| {r['tree']} | {r['seconds_per_step']:.4f} | {r['parameters']:,} | {r['times']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
