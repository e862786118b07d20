"""Does SMART help? Label-efficiency and ablation study on CT phantoms, one command, CPU.

For every pretraining variant and seed: pretrain the tiny SMART encoder through ``bundles/smart_pretrain`` for the
same number of iterations, cluster the organs of a held-out phantom set from its frozen features (Task IV,
``configs/cluster.json``), then finetune ``bundles/smart_seg`` from it with 4 and with 8 labelled volumes (the same
iterations for every cell) and score tumour Dice and HD95 on the held-out set. Variants (issue 10):

- ``smart``: the full method (attention-guided masking, noisy teacher at ratio 0.3, [CLS] and pooled tokens,
  reconstruction);
- ``random_masking``: random token masking instead of attention-guided;
- ``teacher_noise_0``: the teacher sees clean views (``teacher_mask_ratio`` 0, the authors' released code);
- ``no_class_attention``: random masking and only the pooled token in the DINO loss (no [CLS] guidance at all);
- ``no_reconstruction``: ``w_rec`` 0;
- ``random_init``: no pretraining (the encoder keeps its seeded random initialisation).

Everything runs in this process through ``monai.bundle.ConfigWorkflow`` on the bundles' own ``train.json`` +
``demo.json`` (the tiny encoder: feature size 12, depths 1,1,1,1, pretraining ROI 64^3) with overrides, so the study
measures what users run. Segmentation finetunes at batch 1 (one 64^3 crop per step, tumour-centred half of the time),
which is what fits 36 finetunes in about an hour on 2 cores next to 15 pretraining runs. The Dice is the final
model's (validation runs once, after the last epoch), not a best-of-checkpoints pick.

Outputs: ``benchmarks/results/label_efficiency.json`` (settings, machine, wall time, every run's numbers and the
aggregated cells) and ``label_efficiency.md`` beside it (mean +- sd per cell and paired differences against random
initialisation). Results are written after every run, so ``--resume`` continues an interrupted study.

    python -m benchmarks.label_efficiency                  # the study: 3 seeds, about an hour on 2 CPU cores
    python -m benchmarks.label_efficiency --quick --results /tmp/le.json   # every cell, minutes (CI test)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS, child_env, command_line, module_command, write_json, write_text

PRETRAIN, SEG = REPO / "bundles" / "smart_pretrain", REPO / "bundles" / "smart_seg"
RANDOM_INIT = "random_init"
# DINO alone and SimMIM only as published, for the studies that compare against them: without the KoLeo term the
# bundle adds by default since smart_pretrain 0.9 (the studies' *_koleo variants add it back); every other variant
# inherits the bundle's defaults
DINO_ONLY = {
    "loss_def#w_rec": 0.0,
    "loss_def#w_patch": 0.0,
    "train#trainer#mask_ratio": 0.0,
    "teacher_mask_ratio": 0.0,
    "loss_def#w_koleo": 0.0,
}
SIMMIM_ONLY = {"loss_def#w_cls": 0.0, "loss_def#w_patch": 0.0, "loss_def#w_koleo": 0.0}
# bundle overrides of each pretraining variant (smart_pretrain configs/train.json ids)
VARIANTS: dict[str, dict | None] = {
    "smart": {},
    "random_masking": {"train#trainer#masking": "random"},
    "teacher_noise_0": {"teacher_mask_ratio": 0.0},
    "no_class_attention": {"train#trainer#masking": "random", "loss_def#global_tokens": ["pooled"]},
    "no_reconstruction": {"loss_def#w_rec": 0.0},
    RANDOM_INIT: None,
}
FULL = dict(
    seeds=[0, 1, 2],
    labels=[4, 8],
    pool=16,
    heldout=8,
    pretrain_iterations=160,
    finetune_iterations=96,
    pretrain_batch=2,
    finetune_batch=1,
)
# one label count: the loops over label counts are the same code for two (label_efficiency_v2.py's --quick runs two
# through finetune); the second cost the CI test 26 of its 91 s
QUICK = dict(FULL, seeds=[0], labels=[4], pool=8, heldout=2, pretrain_iterations=4, finetune_iterations=2)
CLUSTER_METRICS = ("silhouette", "kmeans_ari", "separation_ratio", "inter_class_distance")


def _machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def make_data(work: Path, s: dict) -> dict[str, Path]:
    """Phantoms with fixed seeds: a pool (seed 0) that pretraining sees whole and whose first 4 or 8 cases are the
    labelled finetuning sets, and a held-out set (seed 1) for Dice and Task IV. Returns the datalists."""
    from smart_nets.data import generate_phantoms, load_datalist

    pool_dir, held_dir = work / "phantoms_pool", work / "phantoms_heldout"
    lists: dict[str, Path] = {}
    for folder, num, seed in ((pool_dir, s["pool"], 0), (held_dir, s["heldout"], 1)):
        if not (folder / "dataset.json").is_file():
            generate_phantoms(str(folder), num=num, seed=seed)
    keys = ["image", "label", "organs"]
    pool = [i for k in ("training", "validation") for i in load_datalist(str(pool_dir / "dataset.json"), k, None, keys)]
    held = [i for k in ("training", "validation") for i in load_datalist(str(held_dir / "dataset.json"), k, None, keys)]
    for folder, items, num in ((pool_dir, pool, s["pool"]), (held_dir, held, s["heldout"])):
        if len(items) != num:
            raise SystemExit(
                f"{folder} holds {len(items)} phantoms where the settings ask for {num}: use another --work"
            )
    meta = json.loads((pool_dir / "dataset.json").read_text())
    head = {k: meta[k] for k in ("name", "labels", "organ_labels") if k in meta}
    lists["pretrain"] = work / "pretrain.json"
    write_json(lists["pretrain"], dict(head, training=pool, validation=held))
    for n in s["labels"]:
        if n > len(pool):
            raise ValueError(f"{n} labelled volumes asked for but the pool has {len(pool)} phantoms")
        lists[f"labels_{n}"] = work / f"labels_{n}.json"
        write_json(lists[f"labels_{n}"], dict(head, training=pool[:n], validation=held))
    return lists


def resumable_result(out: Path, settings: dict, resume: bool, name: str, argv: list[str] | None) -> dict:
    """The results dict a study writes to ``out``: what ``out`` already holds when ``resume`` (its runs are kept),
    else empty; with this run's command (``python -m benchmarks.<name> argv``), settings and machine. A file of
    other settings stops the study.

    Raises:
        SystemExit: ``--resume`` onto results of other settings, naming both.
    """
    result: dict = json.loads(out.read_text()) if resume and out.is_file() else {}
    if result and result.get("settings") != settings:
        raise SystemExit(f"--resume: {out} was run with other settings: {result.get('settings')}, not {settings}")
    result.update(
        command=command_line(name, argv),
        settings=settings,
        machine=_machine(),
    )
    return result


def parse_sets(parser: argparse.ArgumentParser, items: list[str]) -> dict:
    """``--set ID=JSON`` items as a dict of bundle overrides; a malformed item stops through ``parser.error``."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes ID=JSON, got {item!r}")
        overrides[key] = json.loads(value)
    return overrides


def _workflow(bundle: Path, configs: list[str], **overrides):
    """A bundle workflow in this process (``monai.bundle run`` without a new interpreter), initialised. The overrides
    are copied first: the config parser edits nested values (a dict given for one id, then ``id#key``) in place, which
    would carry one run's override into the caller's constants and so into the next run."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=[str(bundle / "configs" / c) for c in configs],
        logging_file=False,
        workflow_type=None,
        bundle_root=str(bundle),
        **copy.deepcopy(overrides),
    )
    wf.initialize()
    return wf


def pretrain(variant: str, seed: int, s: dict, lists: dict, out: Path) -> dict:
    epochs = max(1, s["pretrain_iterations"] // (s["pool"] // s["pretrain_batch"]))
    wf = _workflow(
        PRETRAIN,
        ["train.json", "demo.json"],
        datalist=str(lists["pretrain"]),
        output_dir=str(out),
        ckpt_dir=str(out / "models"),
        seed=seed,
        max_epochs=epochs,
        save_interval=epochs,
        log_every=10**9,
        batch_size=s["pretrain_batch"],
        **{"train#progress_bar#disable": True, "train#dataset#progress": False},
        **VARIANTS[variant],
    )
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    last = trainer.state.output[0]
    result = {k: float(last[k]) for k in ("loss", "loss_cls", "loss_patch", "loss_rec", "masked_fraction")}
    result.update(iterations=trainer.state.iteration, encoder=str(out / "models" / "model.pt"))
    # what the variant's overrides actually built (the --quick test checks these against VARIANTS)
    from smart_nets.losses.smart_loss import GLOBAL_TOKENS

    loss = wf.parser.get_parsed_content("loss")
    noise = [t for t in wf.parser.get_parsed_content("train#preprocessing").transforms if hasattr(t, "ratio")]
    result["effective"] = {
        "masking": trainer.masking,
        "teacher_mask_ratio": noise[0].ratio,
        "w_rec": loss.w_rec,
        "global_tokens": [GLOBAL_TOKENS[i] for i in loss.global_index],
    }
    wf.finalize()
    return result


def cluster(variant: str, seed: int, s: dict, lists: dict, encoder: str | None, out: Path) -> dict:
    which = "@random_encoder" if encoder is None else "@pretrained_encoder"
    wf = _workflow(
        PRETRAIN,
        ["train.json", "demo.json", "cluster.json"],
        datalist=str(lists[f"labels_{s['labels'][0]}"]),
        output_dir=str(out),
        seed=seed,
        cluster_weights=encoder or "",
        encoders=f"${{'{variant}': {which}}}",
        **{"clustering#tsne": False},
    )
    wf.run()
    metrics = json.loads((out / "clusters" / "cluster_metrics.json").read_text())["encoders"][variant]
    wf.finalize()
    return {k: float(metrics[k]) for k in CLUSTER_METRICS} | {"n_embeddings": int(metrics["n_embeddings"])}


def finetune(
    n: int,
    seed: int,
    s: dict,
    lists: dict,
    encoder: str | None,
    out: Path,
    per_case: bool = False,
    overrides: dict | None = None,
) -> dict:
    """Finetune ``smart_seg`` on the first ``n`` pool phantoms from ``encoder`` (``None``: random init) and score the
    final model on the held-out set. ``per_case``: also each held-out case's Dice and HD95, in the datalist's order
    (``dice_per_case``, ``hd95_per_case``), for a bootstrap over cases. ``overrides``: more bundle overrides."""
    # whole epochs over the n volumes; --quick caps the epoch below one pass instead
    epoch_length = min(math.ceil(n / s["finetune_batch"]), s["finetune_iterations"])
    epochs = max(1, s["finetune_iterations"] // epoch_length)
    wf = _workflow(
        SEG,
        ["train.json", "demo.json"],
        datalist=str(lists[f"labels_{n}"]),
        output_dir=str(out),
        ckpt_dir=str(out / "models"),
        pretrained_path=encoder or "",
        seed=seed,
        batch_size=s["finetune_batch"],
        num_samples=1,
        max_epochs=epochs,
        val_interval=epochs,
        save_interval=epochs,
        **{"train#progress_bar#disable": True, "train#handlers#0#exec_at_start": False},
        **{"train#trainer#epoch_length": epoch_length},
        **{"train#dataset#progress": False, "validate#dataset#progress": False},
        **(overrides or {}),
    )
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    state = wf.parser.get_parsed_content("validate#evaluator").state
    result = {
        "dice": float(state.metrics["val_mean_dice"]),
        "hd95": float(state.metrics["val_hausdorff95"]),
        "iterations": trainer.state.iteration,
        "final_train_loss": float(trainer.state.output[0]["loss"]),
    }
    if per_case:  # MONAI's metric handlers keep one row per validation image (save_details)
        for key, name in (("dice_per_case", "val_mean_dice"), ("hd95_per_case", "val_hausdorff95")):
            result[key] = [float(v) for v in state.metric_details[name].mean(dim=1).tolist()]
    wf.finalize()
    return result


def diagnose(
    variant: str,
    seed: int,
    s: dict,
    lists: dict,
    checkpoint: str | None,
    which: str = "teacher",
    overrides: dict | None = None,
) -> dict:
    """How much the pretraining network's outputs tell volumes apart: on the first 4 pool phantoms (whole 64^3
    volumes, no augmentation), the std across volumes of the teacher's global-token logits, against their std
    across the K prototypes, and the std across tokens of its patch logits. A network that maps every volume to the
    same output (DINO's collapse, or a network that has not learnt yet) has a spread across volumes near 0.
    ``random_init``: the seeded, untrained network. ``which``: the checkpoint's ``teacher`` or ``network`` (student).
    ``overrides``: bundle overrides the pretraining ran with.
    The [CLS] and pooled tokens' spreads are also given one by one (``cls_``/``pooled_std_across_volumes``), and
    the information in the patch and pooled targets at teacher temperature 0.04, each centred by its own mean
    (``smart_nets.handlers.target_information``)."""
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, ResizeWithPadOrCropd
    from monai.utils import set_determinism

    from smart_nets.handlers import target_information
    from smart_nets.io import read_checkpoint

    parser = ConfigParser()
    parser.read_config([str(PRETRAIN / "configs" / c) for c in ("train.json", "demo.json")])
    parser.update(overrides or {})  # the pretraining's own overrides (e.g. another out_dim), so its weights fit
    set_determinism(seed=seed)
    net = parser.get_parsed_content("network_def")
    if checkpoint is not None:
        net.load_state_dict(read_checkpoint(checkpoint)[which])
    # the bundle's own inference preprocessing (load, checks, RAS, spacing, HU window) at the demo's sizes
    inference = ConfigParser()
    inference.read_config(str(PRETRAIN / "configs" / "inference.json"))
    inference.update({k: parser[k] for k in ("pixdim", "hu_window")})
    load = Compose([inference.get_parsed_content("preprocessing"), ResizeWithPadOrCropd("image", parser["roi_size"])])
    items = json.loads(lists["pretrain"].read_text())["training"][:4]
    x = torch.stack([torch.as_tensor(load({"image": i["image"]})["image"]) for i in items])
    with torch.no_grad():
        out = net.eval()(x, None, reconstruct=False)
    return {
        "global_std_across_volumes": float(out["global"].std(0).mean()),
        "cls_std_across_volumes": float(out["global"][:, 0].std(0).mean()),
        "pooled_std_across_volumes": float(out["global"][:, 1].std(0).mean()),
        "global_std_across_prototypes": float(out["global"].std(-1).mean()),
        "patch_std_across_tokens": float(out["patch"].std(1).mean()),
        "patch_information": target_information(out["patch"].flatten(0, 1), 0.04)["information"],
        "pooled_information": target_information(out["global"][:, 1], 0.04)["information"],
    }


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "sd": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def summarise(runs: dict, s: dict, variants: list[str]) -> dict:
    """Per variant: mean +- sd over seeds of Dice/HD95 per label count and the Task IV metrics, plus the paired
    (same seed) Dice difference against random initialisation."""
    cells: dict = {}
    for variant in variants:
        cell: dict = {}
        for n in s["labels"]:
            fin = [runs.get(f"finetune/{variant}/n{n}/seed{seed}") for seed in s["seeds"]]
            cell[f"dice_{n}"] = _stats([r["dice"] for r in fin if r])
            cell[f"hd95_{n}"] = _stats([r["hd95"] for r in fin if r])
            rand = [runs.get(f"finetune/{RANDOM_INIT}/n{n}/seed{seed}") for seed in s["seeds"]]
            cell[f"dice_{n}_minus_random"] = _stats([a["dice"] - b["dice"] for a, b in zip(fin, rand) if a and b])
        clu = [runs.get(f"cluster/{variant}/seed{seed}") for seed in s["seeds"]]
        for k in CLUSTER_METRICS:
            cell[k] = _stats([r[k] for r in clu if r])
        pre = [runs.get(f"pretrain/{variant}/seed{seed}") for seed in s["seeds"]]
        cell["final_loss_patch"] = _stats([r["loss_patch"] for r in pre if r])
        diag = [runs.get(f"diagnose/{variant}/seed{seed}") for seed in s["seeds"]]
        cell["global_std_across_volumes"] = _stats([r["global_std_across_volumes"] for r in diag if r])
        cells[variant] = cell
    return cells


def _pm(stat: dict, digits: int = 3, signed: bool = False) -> str:
    if not stat["n"]:
        return "-"
    sign = "+" if signed else ""
    return f"{stat['mean']:{sign}.{digits}f} ± {stat['sd']:.{digits}f}"


def markdown(result: dict, json_name: str = "label_efficiency.json") -> str:
    s, cells = result["settings"], result["cells"]
    labels = s["labels"]
    head = ["encoder"] + [f"Dice, {n} labels" for n in labels] + [f"ΔDice vs random, {n}" for n in labels]
    head += ["HD95 mm, " + str(labels[-1]), "silhouette", "k-means ARI", "centroid dist / spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, c in cells.items():
        row = [f"`{variant}`"] + [_pm(c[f"dice_{n}"]) for n in labels]
        row += [_pm(c[f"dice_{n}_minus_random"], signed=True) if variant != RANDOM_INIT else "0" for n in labels]
        row += [_pm(c[f"hd95_{labels[-1]}"], 1), _pm(c["silhouette"]), _pm(c["kmeans_ari"])]
        row += [_pm(c["separation_ratio"], 2)]
        lines.append("| " + " | ".join(row) + " |")
    diag = [
        "| encoder | teacher logits: std across volumes | final iBOT patch loss (ln K = "
        f"{math.log(json.loads((PRETRAIN / 'configs' / 'demo.json').read_text())['out_dim']):.2f}) |",
        "|---|---|---|",
    ]
    diag += [
        f"| `{v}` | {_pm(c['global_std_across_volumes'], 4)} | {_pm(c['final_loss_patch'], 2)} |"
        for v, c in cells.items()
    ]
    m = result["machine"]
    return "\n".join(
        [
            "# Label efficiency and ablations of SMART pretraining on CT phantoms",
            "",
            f"Generated by `{result['command']}` on {result['finished']}: {m['cpu']}, {m['cores']} cores, "
            f"torch {m['torch']} ({m['torch_threads']} threads); wall time {result['wall_time_s'] / 60:.1f} min"
            + (" (`--quick`: a smoke run, not a result)" if result["quick"] else "")
            + ".",
            "",
            f"Mean ± sd over seeds {s['seeds']} (a seed fixes pretraining, finetuning and the random "
            f"initialisation). Pretraining: {s['pretrain_iterations']} iterations at batch {s['pretrain_batch']} on "
            f"{s['pool']} unlabelled phantoms (ROI 64^3, feature size 12, depths 1,1,1,1). Finetuning "
            f"(`smart_seg`): {s['finetune_iterations']} iterations at batch {s['finetune_batch']} (64^3 crops) "
            f"from the first {' or '.join(map(str, labels))} pool phantoms with their tumour labels; Dice and HD95 of "
            "the final model on "
            f"{s['heldout']} held-out "
            "phantoms (another generator seed). Task IV: organ embeddings (stage 3, mean inside each organ mask) "
            "of the held-out phantoms from the frozen encoder; silhouette, k-means adjusted Rand index, and "
            "centroid distance over within-class spread. ΔDice: the same seed's difference to `random_init`.",
            "",
            *lines,
            "",
            "Diagnostics (`--diagnose`): how far each pretraining got. The std across 4 pool volumes of the "
            "teacher's global-token logits (the untrained `random_init` network's for comparison; near 0: every "
            "volume gives the same output), and the patch loss at the last step (at ln K the patch prototypes "
            "carry no information).",
            "",
            *diag,
            "",
            f"Every run's numbers: `{json_name}` beside this file.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 4 labels, 2-4 iterations, 10 phantoms: every cell, a minute"
    )
    parser.add_argument("--work_dir", default=str(REPO / "outputs" / "label_efficiency"), help="phantoms and runs")
    parser.add_argument("--results", default=str(RESULTS / "label_efficiency.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --results")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="a subset")
    parser.add_argument("--labels", type=int, nargs="+", default=None, help="override the labelled set sizes")
    parser.add_argument("--pretrain_iterations", type=int, default=None, help="override (e.g. a longer schedule)")
    parser.add_argument("--finetune_iterations", type=int, default=None, help="override")
    parser.add_argument("--diagnose", action="store_true", help="also measure each pretrained network's output spread")
    args = parser.parse_args(argv)

    s = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "labels", "pretrain_iterations", "finetune_iterations"):
        if getattr(args, key):
            s[key] = getattr(args, key)
    work, results_path = Path(args.work_dir), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "settings.json"  # the runs/ folder holds encoders of these settings only
    if stamp.is_file() and json.loads(stamp.read_text()) != s:
        raise ValueError(f"{work} holds runs made with other settings ({stamp}); give another --work_dir")
    write_json(stamp, s)
    logging.disable(logging.INFO)  # the bundles' per-iteration logs; one line per run is printed instead

    previous = json.loads(results_path.read_text()) if args.resume and results_path.is_file() else {}
    if previous and previous.get("settings") != s:
        raise ValueError(f"--resume: {results_path} was made with other settings {previous.get('settings')}")
    runs: dict = previous.get("runs", {})
    result = {
        "study": "label_efficiency (issue 10)",
        "command": command_line("label_efficiency", argv or []),
        "quick": args.quick,
        "settings": s,
        "variants": {k: VARIANTS[k] for k in args.variants},
        "machine": _machine(),
        "started": previous.get("started", datetime.datetime.now().isoformat(timespec="seconds")),
        "runs": runs,
    }
    elapsed = previous.get("wall_time_s", 0.0)
    start = time.perf_counter()

    def save() -> None:
        result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        result["wall_time_s"] = elapsed + time.perf_counter() - start
        result["cells"] = summarise(runs, s, args.variants)
        write_json(results_path, result)
        write_text(results_path.with_suffix(".md"), markdown(result, results_path.name))

    lists = make_data(work, s)
    jobs = []
    for seed in s["seeds"]:
        for variant in args.variants:
            jobs.append(("pretrain", variant, seed, None))
            jobs.append(("cluster", variant, seed, None))
            jobs += [("finetune", variant, seed, n) for n in s["labels"]]
            jobs += [("diagnose", variant, seed, None)] if args.diagnose else []
    from tqdm import tqdm

    bar = tqdm(jobs, desc="label efficiency", unit="run", disable=None)
    for kind, variant, seed, n in bar:
        key = f"{kind}/{variant}/" + (f"n{n}/" if n else "") + f"seed{seed}"
        if key in runs or (kind == "pretrain" and VARIANTS[variant] is None):
            continue
        bar.set_postfix_str(key)
        out = work / "runs" / key.replace("/", "_")
        encoder = None
        if VARIANTS[variant] is not None and kind != "pretrain":
            encoder = runs[f"pretrain/{variant}/seed{seed}"]["encoder"]
            encoder = str(Path(encoder).with_name("checkpoint.pt")) if kind == "diagnose" else encoder
            if not Path(encoder).is_file():
                raise FileNotFoundError(f"{key}: the pretrained encoder {encoder} is gone; rerun without --resume")
        if kind == "pretrain":
            record_run(runs, key, lambda: pretrain(variant, seed, s, lists, out))
        elif kind == "cluster":
            record_run(runs, key, lambda: cluster(variant, seed, s, lists, encoder, out))
        elif kind == "diagnose":
            record_run(runs, key, lambda: diagnose(variant, seed, s, lists, encoder))
        else:
            record_run(runs, key, lambda: finetune(n, seed, s, lists, encoder, out))
        save()
    save()
    logging.disable(logging.NOTSET)
    print(markdown(result, results_path.name))
    return result


def record_run(runs: dict, key: str, run) -> dict:
    """``run()``'s result kept as ``runs[key]`` with the seconds it took, and one line printed with its numbers."""
    from tqdm import tqdm

    start = time.perf_counter()
    runs[key] = run()
    runs[key]["seconds"] = round(time.perf_counter() - start, 1)
    shown = {k: round(v, 3) for k, v in runs[key].items() if isinstance(v, float)}
    tqdm.write(f"{key}: {shown}")
    return runs[key]


def reexec_with_fast_malloc() -> None:
    """As scripts/demo.sh: keep freed memory in the heap (CPU training is ~1.6x faster). glibc reads this at start-up
    only, hence the re-exec of the running study (``python -m benchmarks.<name>``, the same arguments);
    ``FAST_MALLOC=0`` turns it off."""
    if sys.platform == "linux" and "GLIBC_TUNABLES" not in os.environ and os.environ.get("FAST_MALLOC", "1") != "0":
        env = child_env() | {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"}
        name = sys.modules["__main__"].__spec__.name.removeprefix("benchmarks.")
        os.execve(sys.executable, module_command(name, *sys.argv[1:]), env)


if __name__ == "__main__":
    reexec_with_fast_malloc()
    main(sys.argv[1:])
