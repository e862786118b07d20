"""Does SMART pretraining learn? What the teacher's targets carry, and what the exported encoder knows.

Pretrains the demo encoder through ``bundles/smart_pretrain`` (``train.json`` + ``demo.json``, in this process) on
phantoms with three objectives for the same iterations, and for each run reports:

- the collapse monitor's statistics (``smart_nets.handlers.CollapseMonitor``) in its first and last windows: the
  information in the teacher's targets (H(mean p) - mean H(p), nats), prototypes in use, logit spread, loss vs ln K;
- the spread across volumes of the teacher's [CLS] and pooled logits on four whole phantoms, and the information in
  its patch and pooled targets there (temperature 0.04), against the untrained network's;
- a leave-one-case-out 1-NN and linear probe of organ identity (``smart_nets.cluster.knn_probe``/``linear_probe``)
  on organ embeddings (stage features averaged inside each organ mask, ``configs/cluster.json``) of held-out
  phantoms, for the encoder the bundle exports (the EMA teacher), for the student, and for random initialisation.

Variants: ``smart`` (full method), ``simmim`` (``w_cls = w_patch = 0``: masked reconstruction only) and
``dino_ibot`` (``w_rec = 0``: self-distillation only). The teacher momentum is fitted to the run's length
(``SMARTSchedule.momentum_for``: the teacher keeps at most 2% of its random start).

    python -m benchmarks.pretraining_health                       # 640 iterations per variant, ~25 min on 2 cores
    python -m benchmarks.pretraining_health --quick --results /tmp/ph.json   # every cell in about a minute (CI)

Writes ``benchmarks/results/pretraining_health.json`` (settings, machine, every number) and ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from benchmarks import label_efficiency as le  # the bundle-in-process helpers and phantom sets of the study
from benchmarks.common import RESULTS, write_json, write_text

PRETRAIN = le.PRETRAIN
RANDOM_INIT = le.RANDOM_INIT
_DINO = le.DINO_ONLY  # the objectives as published, without the bundle's KoLeo term
VARIANTS = {
    "smart": {},
    "simmim": le.SIMMIM_ONLY,
    "dino_ibot": {"loss_def#w_rec": 0.0},
    # what the toy (distillation_sanity.py) found: DINO alone on clean, unmasked views learns, a BatchNorm head
    # helps, the teacher's noise costs most of the gain
    "dino": _DINO,
    "dino_bn": {**_DINO, "network_def#head_use_bn": True},
    "smart_clean": {"teacher_mask_ratio": 0.0},
    "smart_bn_clean": {"teacher_mask_ratio": 0.0, "network_def#head_use_bn": True},
}
# milder crops: the untrained encoder finds a view's twin among 24 phantoms' views 33% of the time with these and at
# chance (4%) with the bundle's (sub-volume 1.0-2.2, views 0.5-1.5 x ROI); on the toy the distillation learnt only
# where the two views of a volume were recognisably the same at the start
VIEWS = "train#preprocessing#transforms#7"  # RandTwoViewsd in train.json
_MILD = {f"{VIEWS}#sub_volume_scale": [1.0, 1.2], f"{VIEWS}#view_scale": [0.9, 1.1]}
VARIANTS.update(
    {f"{name}_mild": {**VARIANTS[name], **_MILD} for name in ("smart", "simmim", "dino_bn", "smart_bn_clean")}
)
# DINOv2's KoLeo term (weight 0.1) on the student's [CLS] and pooled features, against the flat targets
# (on by default since smart_pretrain 0.9: smart_koleo is then smart, and smart_nokoleo the 0.8 defaults)
VARIANTS.update({f"{name}_koleo": {**VARIANTS[name], "loss_def#w_koleo": 0.1} for name in ("smart", "dino_bn")})
VARIANTS["smart_nokoleo"] = {"loss_def#w_koleo": 0.0}
# SimMIM with its own masking rather than SMART's (which `simmim` inherits: 30% of the tokens of half the views, by
# the teacher's attention): random tokens, 60% of every view, as the SimMIM paper. The fair baseline
VARIANTS["simmim_60"] = {
    **le.SIMMIM_ONLY,
    "train#trainer#masking": "random",
    "train#trainer#mask_ratio": 0.6,
    "train#trainer#mask_probability": 1.0,
}
# KoLeo on the head's normalised bottleneck instead of the encoder's features (distillation_sanity.py's *_koleo_head)
VARIANTS["smart_koleo_head"] = {"loss_def#koleo_features": "head"}
DEFAULT_VARIANTS = ["smart", "simmim", "dino_ibot"]
# the baselines every encoder is paired against besides random init: SimMIM only with SMART's masking, and with its own
SIMMIM_REFS = ("simmim_teacher", "simmim_60_teacher")
FULL = dict(
    seed=0, pool=16, heldout=8, iterations=640, batch=2, windows=16, labels=[], max_teacher_share=0.02, n_bootstrap=2000
)
QUICK = dict(FULL, pool=6, heldout=2, iterations=4, windows=2, n_bootstrap=50)


def pretrain(variant: str, s: dict, lists: dict, out: Path, overrides: dict | None = None) -> dict:
    """One pretraining run; returns the monitor's windows, the final losses and the two encoders' files.
    ``overrides``: the variant's bundle overrides, ``VARIANTS[variant]`` unless given (another study's variants)."""
    import torch

    from smart_nets.engines import SMARTSchedule
    from smart_nets.io import read_checkpoint

    per_epoch = s["pool"] // s["batch"]
    epochs = max(1, s["iterations"] // per_epoch)
    total = epochs * per_epoch
    # a run stopped part-way (a session's end) continues from its last checkpoint, written every tenth of the run
    checkpoint = out / "models" / "checkpoint.pt"
    resumed_from = int(read_checkpoint(checkpoint)["trainer"]["iteration"]) if checkpoint.is_file() else 0
    if resumed_from:
        logging.getLogger(__name__).info("%s: resuming %s at iteration %d", variant, checkpoint, resumed_from)
    wf = le._workflow(
        PRETRAIN,
        ["train.json", "demo.json"],
        datalist=str(lists["pretrain"]),
        output_dir=str(out),
        ckpt_dir=str(out / "models"),
        seed=s["seed"],
        max_epochs=epochs,
        save_interval=max(1, epochs // 10),
        resume=bool(resumed_from),
        log_every=max(1, total // s["windows"]),
        batch_size=s["batch"],
        **{"schedule#momentum": SMARTSchedule().momentum_for(total, s["max_teacher_share"])},
        **{"train#progress_bar#disable": True, "train#dataset#progress": False},
        **(VARIANTS[variant] if overrides is None else overrides),
        **s["overrides"],
    )
    start = time.perf_counter()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    history = wf.parser.get_parsed_content("train#collapse_monitor").history
    last = trainer.state.output[0] if trainer.state.output else {}  # none when resumed at its end
    result = {k: float(last.get(k, math.nan)) for k in ("loss", "loss_cls", "loss_patch", "loss_rec", "loss_koleo")}
    result.update(
        iterations=trainer.state.iteration,
        resumed_from=resumed_from,  # the monitor's windows then start there
        seconds=time.perf_counter() - start,
        momentum=float(trainer.schedule.momentum),
        teacher_init_share=trainer.schedule.teacher_init_share(total),
        monitor_first=history[0] if history else {},
        monitor_last=history[-1] if history else {},
        teacher=str(out / "models" / "model.pt"),
    )
    wf.finalize()
    # the student's encoder, as the bundle would export it with save_dict {"model": "$@network.encoder"}
    network = read_checkpoint(out / "models" / "checkpoint.pt")["network"]
    student = {k: v for k, v in network.items() if k.startswith("encoder.")}
    torch.save(student, out / "models" / "student.pt")
    result["student"] = str(out / "models" / "student.pt")
    result["checkpoint"] = str(out / "models" / "checkpoint.pt")
    return result


def probe(encoders: dict[str, str | None], s: dict, lists: dict, out: Path) -> dict:
    """Organ embeddings of the held-out phantoms from each encoder (``cluster.json``), then the two probes, each paired
    against random init and SimMIM's teacher (where probed) with ``s["n_bootstrap"]`` case resamples (none if 0 or
    absent)."""
    import numpy as np

    from smart_nets.cluster import knn_probe, linear_probe

    def load(path: str | None) -> str:
        if path is None:
            return "@random_encoder"
        return f"smart_nets.cluster.load_frozen_encoder(copy.deepcopy(@encoder), {path!r})"

    spec = ", ".join(f"{name!r}: {load(path)}" for name, path in encoders.items())
    wf = le._workflow(
        PRETRAIN,
        ["train.json", "demo.json", "cluster.json"],
        datalist=str(lists["pretrain"]),
        output_dir=str(out),
        seed=s["seed"],
        encoders=f"${{{spec}}}",
        **{"clustering#tsne": False},
        **s["overrides"],
    )
    wf.run()
    wf.finalize()
    data = np.load(out / "clusters" / "cluster_embeddings.npz")
    metrics = json.loads((out / "clusters" / "cluster_metrics.json").read_text())["encoders"]
    result, hits = {}, {}
    first = next(iter(encoders))
    for name in encoders:
        x, labels, cases = data[f"{name}_embeddings"], data[f"{name}_labels"], data[f"{name}_cases"]
        if not (np.array_equal(labels, data[f"{first}_labels"]) and np.array_equal(cases, data[f"{first}_cases"])):
            raise RuntimeError(f"the organ embeddings of {name} and {first} are not of the same organs: cannot pair")
        hits[name] = {"knn_1": knn_probe(x, labels, cases, per_embedding=True)}
        hits[name]["linear"] = linear_probe(x, labels, cases, per_embedding=True)
        result[name] = {
            "knn_1": float(hits[name]["knn_1"].mean()),
            "linear": float(hits[name]["linear"].mean()),
            "silhouette": float(metrics[name]["silhouette"]),
            "n_embeddings": int(len(x)),
            # per organ embedding (1 = right), for pairing across runs and seeds (--summarize)
            "hits": {k: [int(h) for h in hits[name][k]] for k in ("knn_1", "linear")},
            "cases": [str(c) for c in cases],
        }
    cases = data[f"{first}_cases"]
    # paired CIs when the settings ask for them (label_efficiency_v2 probes with its own, which do not)
    add_paired_cis(result, hits, cases, s)
    return result


def add_paired_cis(probes: dict, hits: dict, cases, s: dict) -> None:
    """Each probe's ``vs_random_init``, ``vs_simmim_teacher`` and ``vs_simmim_60_teacher`` (where that encoder was
    probed): the paired differences of ``paired_bootstrap``, ``hits`` each encoder's per-embedding hits; none when
    the settings ask for no bootstrap (``label_efficiency_v2`` probes with its own)."""
    references = [r for r in (RANDOM_INIT, *SIMMIM_REFS) if r in hits] if s.get("n_bootstrap") else []
    for name in probes:
        for ref in references:
            if name != ref:
                probes[name][f"vs_{ref}"] = {
                    kind: paired_bootstrap(hits[name][kind], hits[ref][kind], cases, s["n_bootstrap"], s["seed"])
                    for kind in ("knn_1", "linear")
                }


def paired_bootstrap(a, b, cases, n: int, seed: int) -> dict:
    """The difference in accuracy ``mean(a) - mean(b)`` of two probes on the same embeddings, with a 95% percentile
    CI from resampling whole cases (an image's organs are not independent) ``n`` times."""
    import numpy as np

    a, b, cases = np.asarray(a, float), np.asarray(b, float), np.asarray(cases)
    ids = np.unique(cases)
    rows = [np.flatnonzero(cases == c) for c in ids]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        pick = np.concatenate([rows[i] for i in rng.integers(0, len(ids), len(ids))])
        diffs.append(a[pick].mean() - b[pick].mean())
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(a.mean() - b.mean()), "ci95": [float(lo), float(hi)], "n_cases": int(len(ids))}


def seed_bootstrap(pairs: list[tuple], cases, n: int, seed: int = 0) -> dict:
    """The mean over seeds of ``mean(a) - mean(b)``, ``pairs`` one ``(a, b)`` of per-embedding hits per seed, all on the
    same held-out embeddings (``cases``): a 95% percentile CI from resampling whole cases, the same cases for every
    seed. It says how much the held-out set moves the seed-averaged difference; the per-seed range says how much the
    pretraining seed does."""
    import numpy as np

    cases = np.asarray(cases)
    ids = np.unique(cases)
    rows = [np.flatnonzero(cases == c) for c in ids]
    diff = np.mean([np.asarray(a, float) - np.asarray(b, float) for a, b in pairs], axis=0)  # per embedding
    rng = np.random.default_rng(seed)
    boots = [diff[np.concatenate([rows[i] for i in rng.integers(0, len(ids), len(ids))])].mean() for _ in range(n)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"difference": float(diff.mean()), "ci95": [float(lo), float(hi)], "n_cases": int(len(ids))}


def summarize(files: list[Path], md: Path) -> dict:
    """One table over several results of the same settings but the seed: per exported teacher, the seeds' probes, the
    mean difference from random init, from SimMIM only's teacher and (``*_mild``) from the same objective with the
    bundle's crops, each with a CI over held-out cases (``seed_bootstrap``) and the per-seed range; and the
    information left in the targets at the end."""
    if md.with_suffix(".json") in files:
        raise SystemExit(f"--summarize would overwrite {md.with_suffix('.json')}: give another --results")
    results = [json.loads(f.read_text()) for f in files]
    settings = [{k: v for k, v in r["settings"].items() if k != "seed"} for r in results]
    if any(s != settings[0] for s in settings):
        raise SystemExit(f"--summarize: {', '.join(map(str, files))} differ in more than the seed: {settings}")
    if any("probes" not in r for r in results):
        raise SystemExit(f"--summarize: {[str(f) for f, r in zip(files, results) if 'probes' not in r]} have no probes")
    seeds = [r["settings"]["seed"] for r in results]
    n_boot = settings[0].get("n_bootstrap") or 2000
    names = [RANDOM_INIT] + [f"{v}_teacher" for v in VARIANTS if any(f"{v}_teacher" in r["probes"] for r in results)]
    summary: dict = {"files": [str(f) for f in files], "seeds": seeds, "encoders": {}}

    def compare(name: str, ref: str, kind: str) -> dict | None:
        have = [r["probes"] for r in results if name in r["probes"] and ref in r["probes"]]
        if not have or name == ref or "hits" not in have[0][name]:
            return None
        d = seed_bootstrap(
            [(p[name]["hits"][kind], p[ref]["hits"][kind]) for p in have], have[0][name]["cases"], n_boot
        )
        d["per_seed"] = [p[name][kind] - p[ref][kind] for p in have]
        return d

    for name in names:
        variant = name.removesuffix("_teacher")
        row: dict = {
            k: [r["probes"][name][k] if name in r["probes"] else None for r in results] for k in ("knn_1", "linear")
        }
        refs = [RANDOM_INIT, *SIMMIM_REFS] + (
            [variant.removesuffix("_mild") + "_teacher"] if variant.endswith("_mild") else []
        )
        for ref in refs:
            for kind in ("knn_1", "linear"):
                if (c := compare(name, ref, kind)) is not None:
                    row[f"{kind}_vs_{ref}"] = c
        last = [r["pretrain"][variant]["monitor_last"] for r in results if variant in r.get("pretrain", {})]
        for token in ("cls", "pooled", "patch"):
            vals = [m[f"collapse/{token}_information"] for m in last if f"collapse/{token}_information" in m]
            row[f"{token}_information_last"] = vals
        summary["encoders"][name] = row

    def fmt(c: dict | None) -> str:
        if not c:
            return "-"
        per = ", ".join(f"{x:+.3f}" for x in c["per_seed"])
        return f"{c['difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] ({per})"

    s = results[0]["settings"]
    lines = [
        "# Pretraining health over seeds",
        "",
        f"{s['iterations']} iterations at batch {s['batch']} on {s['pool']} phantoms, probes on {s['heldout']} "
        f"held-out phantoms ({results[0]['probes'][RANDOM_INIT]['n_embeddings']} organ embeddings); pretraining seeds "
        f"{', '.join(map(str, seeds))} ({', '.join(f'[{f.name}]({f.name})' for f in files)}). Differences: the mean "
        f"over the seeds that ran both, with a 95% CI from resampling held-out cases ({n_boot} resamples) and each "
        "seed's own difference in brackets. `_mild`: views cut with sub-volume 1.0-1.2 and views 0.9-1.1 x the ROI "
        "instead of the bundle's 1.0-2.2 and 0.5-1.5.",
        "",
        "| exported teacher | 1-NN per seed | linear per seed | 1-NN - random init | linear - random init |"
        " 1-NN - SimMIM only | linear - SimMIM only | 1-NN / linear - SimMIM, own masking (`simmim_60`) |"
        " 1-NN / linear - the same with the bundle's crops | targets at the end, [CLS] / pooled / patch (nats, mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["encoders"].items():
        per = {k: " / ".join("-" if v is None else f"{v:.3f}" for v in row[k]) for k in ("knn_1", "linear")}
        base = name.removesuffix("_teacher").removesuffix("_mild") + "_teacher"
        crops = (
            f"{fmt(row.get(f'knn_1_vs_{base}'))} / {fmt(row.get(f'linear_vs_{base}'))}"
            if name.endswith("_mild_teacher")
            else "-"
        )
        info = " / ".join(
            f"{sum(v) / len(v):.2f}" if (v := row[f"{t}_information_last"]) else "-" for t in ("cls", "pooled", "patch")
        )
        own = " / ".join(fmt(row.get(f"{kind}_vs_simmim_60_teacher")) for kind in ("knn_1", "linear"))
        lines.append(
            f"| `{name}` | {per['knn_1']} | {per['linear']} | {fmt(row.get('knn_1_vs_random_init'))} | "
            f"{fmt(row.get('linear_vs_random_init'))} | {fmt(row.get('knn_1_vs_simmim_teacher'))} | "
            f"{fmt(row.get('linear_vs_simmim_teacher'))} | {own} | {crops} | {info} |"
        )
    write_text(md, "\n".join(lines) + "\n")
    write_json(md.with_suffix(".json"), summary)
    logging.getLogger(__name__).info("wrote %s", md)
    return summary


def merge(files: list[Path], out: Path) -> dict:
    """One results file from several of the same settings and seed that pretrained other variants (in parallel):
    their runs, spreads and probes together, the paired CIs against random init and SimMIM only's teacher recomputed
    from the per-embedding hits, and the goals. Random init's probe must agree across the files (same seed, same
    held-out phantoms): it is the pairing's common reference.

    Raises:
        SystemExit: files of other settings, without probes, with a variant twice, or whose random init differs.
    """
    if out in files:
        raise SystemExit(f"--merge would overwrite {out}, one of its inputs: give another --results")
    results = [json.loads(f.read_text()) for f in files]
    if any(r["settings"] != results[0]["settings"] for r in results):
        raise SystemExit(f"--merge: {', '.join(map(str, files))} differ in their settings")
    if any("probes" not in r for r in results):
        raise SystemExit(f"--merge: {[str(f) for f, r in zip(files, results) if 'probes' not in r]} have no probes")
    merged = {k: results[0][k] for k in ("command", "settings", "machine", "out_dim") if k in results[0]}
    merged.update(merged_from=[str(f) for f in files], pretrain={}, spread={}, probes={})
    reference = results[0]["probes"][RANDOM_INIT]["hits"]
    for f, r in zip(files, results):
        if r["probes"][RANDOM_INIT]["hits"] != reference:
            raise SystemExit(
                f"--merge: random init's probe in {f} differs from {files[0]}'s: not the same held-out set"
            )
        for key in ("pretrain", "spread", "probes"):
            for name, value in r[key].items():
                if name in merged[key] and name != RANDOM_INIT:
                    raise SystemExit(f"--merge: {name} is in more than one of {', '.join(map(str, files))}")
                merged[key][name] = value
    hits = {name: p["hits"] for name, p in merged["probes"].items()}
    add_paired_cis(merged["probes"], hits, merged["probes"][RANDOM_INIT]["cases"], results[0]["settings"])
    merged["goals"] = check_goals(merged)
    merged["wall_minutes"] = max(r.get("wall_minutes", 0.0) for r in results)  # they ran side by side
    write_json(out, merged)
    write_text(out.with_suffix(".md"), markdown(merged, out.name))
    logging.getLogger(__name__).info("wrote %s and %s", out, out.with_suffix(".md"))
    return merged


def curve(files: list[Path], png: Path) -> dict:
    """Organ probe against pretraining length: for each exported teacher, its 1-NN and linear probe minus random
    init's (same seed, same held-out phantoms) in every results file, one dot per seed and the mean over seeds
    joined across lengths; only objectives run at two lengths or more are drawn, and where two files hold the same
    objective, length and seed, the later one counts. A file given as ``FILE:OLD=NEW[,OLD=NEW]`` has its variant
    ``OLD`` drawn as ``NEW``: the same objective under another name in older results (``smart`` since
    smart_pretrain 0.9 is the earlier ``smart_koleo``). Writes ``png`` and returns the
    points (``{encoder: {iterations: [per seed]}}`` per probe).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smart_nets.io import atomic_path

    points: dict = {"knn_1": {}, "linear": {}}
    for spec in files:
        f, _, renames = str(spec).partition(":")
        rename = dict(pair.split("=", 1) for pair in renames.split(",") if pair)
        f = Path(f)
        r = json.loads(f.read_text())
        if "probes" not in r:
            raise SystemExit(f"--curve: {f} has no probes")
        unknown = [old for old in rename if f"{old}_teacher" not in r["probes"]]
        if unknown:
            raise SystemExit(f"--curve: {f} has no variant {unknown} to rename")
        it, seed = r["settings"]["iterations"], r["settings"]["seed"]
        for name, probe_ in r["probes"].items():
            if not name.endswith("_teacher"):
                continue
            variant = name.removesuffix("_teacher")
            for kind in points:  # one point per objective, length and seed: a later file's replaces an earlier's
                gain = probe_[kind] - r["probes"][RANDOM_INIT][kind]
                points[kind].setdefault(rename.get(variant, variant), {}).setdefault(it, {})[seed] = gain
    for kind in points:  # seeds to lists; objectives run at one length only dropped
        points[kind] = {
            v: {it: list(by_seed.values()) for it, by_seed in d.items()} for v, d in points[kind].items() if len(d) > 1
        }
    if not points["knn_1"]:
        raise SystemExit(f"--curve: no objective in {', '.join(map(str, files))} was run at two lengths")
    lengths_all = sorted({it for by_length in points["knn_1"].values() for it in by_length})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, (kind, label) in zip(axes, (("knn_1", "organ 1-NN"), ("linear", "organ linear probe"))):
        for i, (variant, by_length) in enumerate(sorted(points[kind].items())):
            colour = f"C{i}"
            lengths = sorted(by_length)
            for it in lengths:
                ax.scatter([it] * len(by_length[it]), by_length[it], color=colour, s=14, alpha=0.6)
            means = [sum(by_length[it]) / len(by_length[it]) for it in lengths]
            ax.plot(lengths, means, "-o", color=colour, label=variant)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths_all, [str(it) for it in lengths_all])
        ax.set_xlabel("pretraining iterations (batch 2)")
        ax.set_ylabel(f"{label} - random init")
        ax.set_title(f"{label}: exported teacher (dots: seeds; line: mean)", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return points


def check_goals(result: dict) -> list[dict]:
    """The issue's expectations, each with the numbers it was judged on."""
    runs, probes, spread = result["pretrain"], result["probes"], result["spread"]
    goals = []
    smart = runs.get("smart")
    if "smart" in spread:
        trained, untrained = spread["smart"]["patch_information"], spread[RANDOM_INIT]["patch_information"]
        goals.append(
            dict(
                goal="information in the exported SMART teacher's patch targets above the untrained network's "
                "(same phantoms, temperature 0.04)",
                value=f"{trained:.3f} vs {untrained:.3f} nats",
                met=trained > untrained,
            )
        )
    if smart and smart["monitor_last"]:
        last = smart["monitor_last"]
        goals.append(
            dict(
                goal="at least 100 patch prototypes in use (last window)",
                value=f"{last['collapse/patch_prototypes']:.0f}",
                met=last["collapse/patch_prototypes"] >= 100,
            )
        )
    if "smart" in spread:
        pooled, untrained = (
            spread["smart"]["pooled_std_across_volumes"],
            spread[RANDOM_INIT]["pooled_std_across_volumes"],
        )
        goals.append(
            dict(
                goal="pooled-token spread across volumes above the untrained network's",
                value=f"{pooled:.4f} vs {untrained:.4f}",
                met=pooled > untrained,
            )
        )
    if "smart_teacher" in probes:
        sm, rnd = probes["smart_teacher"], probes[RANDOM_INIT]
        goals.append(
            dict(
                goal="exported SMART encoder's organ probe clearly above random init (1-NN and linear, +0.05)",
                value=f"1-NN {sm['knn_1']:.3f} vs {rnd['knn_1']:.3f}; linear {sm['linear']:.3f} vs {rnd['linear']:.3f}",
                met=sm["knn_1"] >= rnd["knn_1"] + 0.05 and sm["linear"] >= rnd["linear"] + 0.05,
            )
        )
    for ref, label in zip(SIMMIM_REFS, ("SimMIM-only's", "SimMIM-only's with its own masking")):
        if "smart_teacher" not in probes or ref not in probes:
            continue
        sm, sim = probes["smart_teacher"], probes[ref]
        goals.append(
            dict(
                goal=f"exported SMART encoder's probe at least {label}",
                value=f"1-NN {sm['knn_1']:.3f} vs {sim['knn_1']:.3f}; linear {sm['linear']:.3f} vs {sim['linear']:.3f}",
                met=sm["knn_1"] >= sim["knn_1"] and sm["linear"] >= sim["linear"],
            )
        )
    return goals


def markdown(result: dict, json_name: str) -> str:
    s, runs = result["settings"], result["pretrain"]
    k = math.log(result["out_dim"])
    lines = [
        "# Pretraining health: does SMART pretraining learn?",
        "",
        f"Command: `{result['command']}`; wall time {result['wall_minutes']:.1f} min; "
        f"{result['machine'].get('gpu') or result['machine']['cpu']}, "
        f"{result['machine']['torch_threads']} threads, torch {result['machine']['torch']}. Every number: "
        f"[{json_name}]({json_name}).",
        "",
        f"Demo encoder (`train.json` + `demo.json`), {s['iterations']} iterations at batch {s['batch']} on "
        f"{s['pool']} phantoms (seed 0), probes on {s['heldout']} held-out phantoms (seed 1), pretraining seed "
        f"{s['seed']}. ln K = {k:.2f}.",
        "",
        "## The teacher's targets (collapse monitor, first -> last window)",
        "",
        "| variant | base momentum (teacher keeps) | patch information, nats | patch prototypes | pooled information |"
        " [CLS] information | pooled logit std | final loss cls / patch / rec | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, r in runs.items():
        a, b = r["monitor_first"], r["monitor_last"]

        def pair(key: str, fmt: str = ".3f", a=a, b=b) -> str:
            return f"{a[key]:{fmt}} -> {b[key]:{fmt}}" if key in a and key in b else "-"

        lines.append(
            f"| `{v}` | {r['momentum']:.4f} ({100 * r['teacher_init_share']:.1f}%) | "
            f"{pair('collapse/patch_information')} | {pair('collapse/patch_prototypes', '.0f')} | "
            f"{pair('collapse/pooled_information')} | {pair('collapse/cls_information')} | "
            f"{pair('collapse/pooled_logit_std', '.4f')} | "
            f"{r['loss_cls']:.2f} / {r['loss_patch']:.2f} / {r['loss_rec']:.3f} | {r['seconds'] / 60:.1f} |"
        )
    lines += [
        "",
        "Information = H(mean target) - mean H(target) over a window: 0 when every target is the same or uniform.",
        "",
        "## The exported teacher on four whole phantoms, against the untrained network",
        "",
        "Logit spreads, and the information in the targets at teacher temperature 0.04 with each set centred by its "
        "own mean (fixed inputs and temperature, unlike the training windows above, whose patch temperature rises "
        "to 0.07 for the last 20% of the run).",
        "",
        "| network | [CLS] std across volumes | pooled std across volumes | patch std across tokens |"
        " patch information, nats | pooled information, nats |",
        "|---|---|---|---|---|---|",
    ]
    for v, d in result["spread"].items():
        lines.append(
            f"| `{v}` | {d['cls_std_across_volumes']:.4f} | {d['pooled_std_across_volumes']:.4f} | "
            f"{d['patch_std_across_tokens']:.4f} | {d['patch_information']:.3f} | {d['pooled_information']:.3f} |"
        )
    lines += [
        "",
        "## Organ identity from frozen features (held-out phantoms, leave-one-case-out)",
        "",
        "| encoder | 1-NN accuracy | linear probe accuracy | 1-NN / linear - random init [95% CI] |"
        " 1-NN / linear - SimMIM teacher [95% CI] | 1-NN / linear - SimMIM, own masking [95% CI] | silhouette |"
        " embeddings |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def versus(p: dict, ref: str) -> str:
        if f"vs_{ref}" not in p:
            return "-"
        d = p[f"vs_{ref}"]
        return " / ".join(
            f"{d[k]['difference']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" for k in ("knn_1", "linear")
        )

    for name, p in result["probes"].items():
        lines.append(
            f"| `{name}` | {p['knn_1']:.3f} | {p['linear']:.3f} | {versus(p, RANDOM_INIT)} | "
            f"{versus(p, 'simmim_teacher')} | {versus(p, 'simmim_60_teacher')} | {p['silhouette']:.3f} | "
            f"{p['n_embeddings']} |"
        )
    lines += [
        "",
        "`<variant>_teacher` is what the bundle exports (`models/model.pt`); `_student` the student. CIs: paired "
        f"percentile bootstrap over held-out cases ({s['n_bootstrap']} resamples; an image's organs move together).",
        "",
    ]
    lines += ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['value']} | {'yes' if g['met'] else '**no**'} |" for g in result["goals"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: every cell, about a minute")
    parser.add_argument("--iterations", type=int, help="pretraining iterations per variant")
    parser.add_argument("--seed", type=int, help="pretraining seed")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--heldout", type=int, help="held-out phantoms for the probes")
    parser.add_argument("--pool", type=int, help="phantoms pretraining sees (16; a new --work for another number)")
    parser.add_argument("--batch", type=int, help="volumes per pretraining step (two views each)")
    parser.add_argument("--work", default="/tmp/pretraining_health", help="phantoms and runs")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="ID=JSON",
        help="pretraining overrides for every variant, e.g. schedule#base_lr=1e-4 encoder_def#layer_scale_init=0.1",
    )
    parser.add_argument("--results", default=str(RESULTS / "pretraining_health.json"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the variants already pretrained in --results (same settings; their runs still under --work), "
        "pretrain the others, then probe them all",
    )
    parser.add_argument(
        "--summarize",
        nargs="+",
        metavar="JSON",
        help="no pretraining: one table over these results (one per seed) to --results's .md",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no pretraining: one results file (--results) from these, of the same settings and seed but other "
        "variants (runs made in parallel, benchmarks.pretraining_parallel), with the paired CIs across them",
    )
    parser.add_argument(
        "--curve",
        nargs="+",
        metavar="JSON",
        help="no pretraining: probe gain over random init against iterations, over these results, to --results's .png; "
        "FILE:OLD=NEW draws that file's variant OLD as NEW",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge([Path(f) for f in args.merge], Path(args.results))
    if args.curve:
        return curve([Path(f) for f in args.curve], Path(args.results).with_suffix(".png"))
    if args.summarize:
        return summarize([Path(f) for f in args.summarize], Path(args.results).with_suffix(".md"))
    s = dict(QUICK if args.quick else FULL)
    s.update(
        {
            k: v
            for k, v in (
                ("iterations", args.iterations),
                ("seed", args.seed),
                ("heldout", args.heldout),
                ("pool", args.pool),
                ("batch", args.batch),
            )
            if v is not None
        }
    )
    s["overrides"] = le.parse_sets(parser, args.set)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    work = Path(args.work)
    lists = le.make_data(work, s)
    out = Path(args.results)
    result = le.resumable_result(out, s, args.resume, "pretraining_health", argv)
    result["out_dim"] = json.loads((PRETRAIN / "configs" / "demo.json").read_text())["out_dim"]
    result.setdefault("pretrain", {})
    result.setdefault("spread", {})
    for variant, run in result["pretrain"].items():
        missing = [run[k] for k in ("teacher", "student", "checkpoint") if not Path(run[k]).is_file()]
        if missing:
            raise SystemExit(f"--resume: the {variant} run in {out} lacks {missing}: remove it from the JSON to rerun")
    if RANDOM_INIT not in result["spread"]:
        result["spread"][RANDOM_INIT] = le.diagnose(RANDOM_INIT, s["seed"], s, lists, None, overrides=s["overrides"])
    runs = work / "runs" / f"seed{s['seed']}_it{s['iterations']}"
    for variant in args.variants:
        if variant in result["pretrain"]:
            logging.getLogger(__name__).info("%s: kept from %s", variant, out)
            continue
        run = pretrain(variant, s, lists, runs / variant)
        result["pretrain"][variant] = run
        overrides = {**VARIANTS[variant], **s["overrides"]}
        result["spread"][variant] = le.diagnose(variant, s["seed"], s, lists, run["checkpoint"], overrides=overrides)
        write_json(out, result)  # after every run: --resume starts from here
    encoders: dict[str, str | None] = {RANDOM_INIT: None}
    for variant, run in result["pretrain"].items():
        encoders[f"{variant}_teacher"], encoders[f"{variant}_student"] = run["teacher"], run["student"]
    result["probes"] = probe(encoders, s, lists, work / "probes")
    result["goals"] = check_goals(result)
    result["wall_minutes"] = result.get("wall_minutes", 0.0) + (time.perf_counter() - start) / 60
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result, out.name))
    logging.getLogger(__name__).info("wrote %s and %s", out, out.with_suffix(".md"))
    return result


if __name__ == "__main__":
    main()
