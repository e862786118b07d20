"""Outcome prediction (Tasks I and II) on phantoms against its ceiling and the field's first baseline.

The phantoms' endpoints are thresholds of a known, noise-free score of the tumour's properties plus Gaussian noise
(``smart_nets.data.phantoms.latent_scores``), so on these data there is a ceiling and a standard peer. For each
endpoint (response, recurrence), every arm scores the same held-out test phantoms:

- ``ceiling``: the latent score itself. ``P(endpoint | tumour)`` rises with it, so no model of the image ranks the
  cases better: its AUC is the ceiling.
- ``volume``: the tumour's volume alone (log mL from the mask), logistic regression: the one-number baseline.
- ``radiomics``: what oncology researchers reach for first: PyRadiomics' default feature classes (first order, shape,
  GLCM, GLRLM, GLSZM, GLDM, NGTDM; bin width 25 HU) inside the tumour mask on the image's own grid, standardised,
  L2-regularised logistic regression with C chosen by 5-fold cross-validated AUC.
- ``frozen_smart`` / ``frozen_random``: the ``smart_response`` bundle's own preprocessing with ``input_region
  tumour`` (the tumour's box with a margin, resampled, resized to the ROI), the frozen encoder's ``[CLS; pooled]``
  features (the classifier head's input), the same logistic regression; SMART-pretrained weights against the same
  encoder at random init.
- ``finetuned_smart`` / ``finetuned_random``: ``smart_response``'s ``train.json`` + ``demo.json`` with ``input_region
  tumour``, the checkpoint of best validation AUC (the bundle's own rule) scored on the test phantoms by
  ``evaluate.json``.

``--input_region tumour_centred`` gives the four network arms the bundle's other tumour input instead: a box of the
ROI's size at the bundle's spacing centred on the tumour, not resized, so the tumour keeps its size in mm (the
endpoints lean on it; ``tumour`` leaves only the tumour's share of its box).

The regressions fit on the training and validation phantoms together; the finetuning trains on the training
phantoms and selects on the validation ones. Every arm is paired against radiomics, against the ceiling, and the
SMART arms against their random-init twins: AUC differences with a 95% percentile bootstrap over test cases
(``smart_nets.metrics.bootstrap_auc_difference``). One ROC figure per endpoint.

How many phantoms: to resolve an AUC difference of 0.05 the paired interval's half-width must be under 0.05, i.e. its
standard error under ~0.025. One AUC near 0.75 on ``n`` test cases split evenly has a standard error of about
``0.34 / sqrt(n)`` (Hanley and McNeil); two correlated scores (r ~ 0.5) differ with about the same standard error,
so ``n >= ~190`` test cases, more with the endpoints' uneven prevalence. The default holds out 320 test phantoms and
trains on 240 (+ 80 for model selection): 640 in all. The results report the interval widths achieved.

Usage (from the repository root; ``pip install -e ".[radiomics]"`` for PyRadiomics)::

    python -m benchmarks.outcome_study --pretrained outputs/pretrain/models/model.pt   # 640 phantoms, ~1.5 h
    python -m benchmarks.outcome_study --quick --pretrained ...                          # every arm, a few minutes

``--pretrained``: any SMART weights file of the demo encoder (the pretraining bundle's ``models/model.pt``, e.g. from
``bash scripts/demo.sh`` or ``benchmarks/pretraining_health.py``). ``--resume`` keeps what ``--work`` already holds
(phantoms, features, finetuned arms) for the same settings.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

from benchmarks import label_efficiency as le
from benchmarks.common import REPO, RESULTS, write_json, write_text

RESPONSE = REPO / "bundles" / "smart_response"
ENDPOINTS = ("response", "recurrence")
ARMS = ("ceiling", "volume", "radiomics", "frozen_smart", "frozen_random", "finetuned_smart", "finetuned_random")
FULL = dict(
    num=640,
    train=240,
    val=80,
    phantom_seed=11,
    grid=[128, 128, 128],  # 2.5 mm: the bundle's resampling is then a no-op (4x faster to load than drawn grids)
    spacing=[2.5, 2.5, 2.5],
    seed=0,
    epochs=20,
    batch=4,
    learning_rate=3e-4,
    pixdim=[2.5, 2.5, 2.5],
    roi=[64, 64, 64],
    crop_margin=16,
    input_region="tumour",
    bin_width=25,
    n_bootstrap=2000,
)
QUICK = dict(FULL, num=16, train=6, val=4, epochs=1, n_bootstrap=50)

logger = logging.getLogger("outcome_study")


def make_data(work: Path, s: dict) -> dict:
    """The phantoms (generated once per ``--work``) and their split: the first ``train`` cases train, the next ``val``
    select, the rest test. Writes the two datalists the bundle reads (absolute paths). Returns the splits' items, each
    with its latent scores, and the datalists' paths.

    Raises:
        SystemExit: when a split lacks one class of an endpoint (AUC undefined), naming it.
    """
    from smart_nets.data import generate_phantoms, load_datalist

    folder = work / "phantoms"
    dataset = folder / "dataset.json"
    generator = json.loads(dataset.read_text()).get("generator", {}) if dataset.is_file() else {}
    drawn = (generator.get("seed"), generator.get("shape"), generator.get("spacing"), len(generator.get("cases", {})))
    if drawn != (s["phantom_seed"], s["grid"], s["spacing"], s["num"]):
        generate_phantoms(str(folder), num=s["num"], seed=s["phantom_seed"], shape=s["grid"], spacing=s["spacing"])
    meta = json.loads(dataset.read_text())
    items = [i for k in ("training", "validation") for i in load_datalist(str(dataset), k, None, ["image", "label"])]
    for item in items:
        item["latent"] = meta["generator"]["cases"][item["case_id"]]["latent"]
    cut = (s["train"], s["train"] + s["val"])
    splits = {"train": items[: cut[0]], "val": items[cut[0] : cut[1]], "test": items[cut[1] :]}
    for name, part in splits.items():
        for endpoint in ENDPOINTS:
            positives = sum(i[endpoint] for i in part)
            if positives in (0, len(part)):
                raise SystemExit(
                    f"the {name} split ({len(part)} phantoms) has {positives} positive {endpoint} cases: both classes "
                    "are needed; use more phantoms"
                )
    strip = [{k: v for k, v in i.items() if k != "latent"} for i in items]
    lists = {"finetune": work / "lists" / "finetune.json", "test": work / "lists" / "test.json"}
    head = {k: meta[k] for k in ("name", "labels", "synthetic") if k in meta}
    write_json(lists["finetune"], dict(head, training=strip[: cut[0]], validation=strip[cut[0] : cut[1]]))
    write_json(lists["test"], dict(head, training=strip[: cut[0]], validation=strip[cut[1] :]))
    return {"splits": splits, "lists": lists}


def _cached(cache: Path, items: list[dict], key: dict):
    """The arrays of ``cache`` (``.npz``) when it holds these cases under the same ``key`` (settings), else None."""
    import numpy as np

    if not cache.is_file():
        return None
    data = dict(np.load(cache, allow_pickle=False))
    same = list(data.pop("cases")) == [i["case_id"] for i in items] and str(data.pop("key")) == json.dumps(key)
    return data if same else None


def _save_cache(cache: Path, items: list[dict], key: dict, **arrays) -> None:
    """``arrays`` with the cases and ``key`` in ``cache``, through a temporary file and a rename."""
    import numpy as np

    tmp = cache.with_suffix(".tmp.npz")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        np.savez(f, cases=np.asarray([i["case_id"] for i in items]), key=np.asarray(json.dumps(key)), **arrays)
    tmp.replace(cache)


def radiomics_features(items: list[dict], s: dict, cache: Path) -> tuple:
    """PyRadiomics' default feature classes of each case's tumour on its own grid: ``(names, (N, F) array)``, cached
    in ``cache`` by case and bin width."""
    import numpy as np

    key = {"bin_width": s["bin_width"]}
    data = _cached(cache, items, key)
    if data is not None:
        return list(data["names"]), data["x"]
    try:
        import SimpleITK as sitk
        from radiomics import featureextractor
    except ImportError as e:  # the extra is optional for the package, not for this study
        raise SystemExit(f"the radiomics arm needs PyRadiomics: pip install -e '.[radiomics]' ({e})") from e
    from tqdm import tqdm

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(binWidth=s["bin_width"])
    extractor.enableAllFeatures()  # the default image type (original) only
    rows, names = [], None
    for item in tqdm(items, desc="radiomics", unit="case"):
        out = extractor.execute(sitk.ReadImage(item["image"]), sitk.ReadImage(item["label"]), label=1)
        feats = {k: float(v) for k, v in out.items() if not k.startswith("diagnostics")}
        names = names or sorted(feats)
        rows.append([feats[n] for n in names])
    x = np.asarray(rows, dtype=float)
    _save_cache(cache, items, key, x=x, names=np.asarray(names))
    return names, x


def _bundle_overrides(s: dict, endpoint: str) -> dict:
    """What every run of ``smart_response`` in this study changes in ``train.json`` + ``demo.json``."""
    return {
        "input_region": s["input_region"],
        "label_key": endpoint,
        "pixdim": s["pixdim"],
        "roi_size": s["roi"],
        "crop_margin": s["crop_margin"],
        "seed": s["seed"],
    }


def encoder_features(items: list[dict], s: dict, pretrained: str, cache: Path) -> dict:
    """``{"frozen_smart": (N, F), "frozen_random": (N, F)}``: each frozen encoder's ``[CLS; pooled]`` features of the
    bundle's validation preprocessing of each case (tumour region), cached in ``cache`` by case, preprocessing and
    weights file."""
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from tqdm import tqdm

    from smart_nets.cluster import load_frozen_encoder

    stat = Path(pretrained).stat()
    key = {**_bundle_overrides(s, "response"), "pretrained": str(Path(pretrained).resolve()), "mtime": stat.st_mtime}
    data = _cached(cache, items, key)
    if data is not None:
        return data
    parser = ConfigParser()
    parser.read_config([str(RESPONSE / "configs" / c) for c in ("train.json", "demo.json")])
    parser.update({"bundle_root": str(RESPONSE), **_bundle_overrides(s, "response")})
    transform = parser.get_parsed_content("validate#preprocessing")
    torch.manual_seed(s["seed"])  # lazy=False: a new instance each (the parser would hand back the same one)
    random_init = parser.get_parsed_content("encoder_def", lazy=False).eval().requires_grad_(False)
    smart = load_frozen_encoder(parser.get_parsed_content("encoder_def", lazy=False), pretrained)
    feats: dict[str, list] = {"frozen_smart": [], "frozen_random": []}
    with torch.no_grad():
        for item in tqdm(items, desc="encoder features", unit="case"):
            x = torch.as_tensor(transform(dict(item))["image"])[None].float()
            for name, enc in (("frozen_smart", smart), ("frozen_random", random_init)):
                out = enc.forward_class_attention(enc.forward_features(x))
                feats[name].append(torch.cat((out.cls_token, out.pooled), dim=1)[0].numpy())
    arrays = {k: np.stack(v) for k, v in feats.items()}
    _save_cache(cache, items, key, **arrays)
    return arrays


def logistic(x_fit, y_fit, x_test, seed: int) -> tuple[list[float], float]:
    """Standardised L2 logistic regression, C from 13 values in [1e-4, 1e2] by 5-fold cross-validated AUC on the
    fitting cases (constant and non-finite features dropped first). Returns the test probabilities and the C chosen."""
    import numpy as np
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_fit, x_test = np.asarray(x_fit, float), np.asarray(x_test, float)
    keep = np.isfinite(x_fit).all(0) & np.isfinite(x_test).all(0)
    folds = StratifiedKFold(n_splits=min(5, int(min(np.bincount(y_fit)))), shuffle=True, random_state=seed)
    model = make_pipeline(
        VarianceThreshold(0.0),
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-4, 2, 13),
            l1_ratios=(0.0,),  # L2
            cv=folds,
            scoring="roc_auc",
            max_iter=5000,
            use_legacy_attributes=False,
        ),
    )
    model.fit(x_fit[:, keep], y_fit)
    return model.predict_proba(x_test[:, keep])[:, 1].tolist(), float(model[-1].C_)


def finetune(arm: str, endpoint: str, s: dict, lists: dict, pretrained: str, out: Path, resume: bool) -> dict:
    """One ``smart_response`` finetuning (SMART weights or random init) and its scores of the test phantoms by
    ``evaluate.json``; with ``resume``, the scores of an earlier run of the same settings (``out/test``) are kept."""
    import shutil

    predictions = out / "test" / "predictions.csv"
    done = out / "settings.json"
    if not (resume and predictions.is_file() and done.is_file() and json.loads(done.read_text()) == s):
        shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    overrides = dict(
        _bundle_overrides(s, endpoint),
        output_dir=str(out),
        ckpt_dir=str(out / "models"),
        max_epochs=s["epochs"],
        val_interval=1,
        batch_size=s["batch"],
        learning_rate=s["learning_rate"],
        **{"train#progress_bar#disable": True},
    )
    pretrained_path = pretrained if arm == "finetuned_smart" else ""
    if not predictions.is_file():
        wf = le._workflow(
            RESPONSE,
            ["train.json", "demo.json"],
            datalist=str(lists["finetune"]),
            pretrained_path=pretrained_path,
            **overrides,
        )
        wf.run()
        wf.finalize()
        wf = le._workflow(
            RESPONSE,
            ["train.json", "demo.json", "evaluate.json"],
            datalist=str(lists["test"]),
            **dict(overrides, output_dir=str(out / "test")),
        )
        wf.run()
        wf.finalize()
        write_json(done, s)
    with open(predictions) as f:
        rows = {r["case"]: float(r["prob_1"]) for r in csv.DictReader(f)}
    return {"scores": rows, "seconds": time.perf_counter() - start, "pretrained": pretrained_path or None}


def compare(y: list[int], scores: dict[str, list[float]], n: int) -> dict:
    """Each arm's AUC (bootstrap CI) and threshold metrics at 0.5 (the probability arms), its paired difference from
    radiomics and from the ceiling, and each SMART arm's from its random-init twin."""
    from smart_nets.metrics import bootstrap_auc, bootstrap_auc_difference, threshold_metrics

    out = {}
    for arm, score in scores.items():
        row = {"auc": bootstrap_auc(y, score, n_bootstrap=n)}
        if arm != "ceiling":
            row["at_0.5"] = threshold_metrics(y, score, 0.5)
        pairs = {"radiomics": "radiomics", "ceiling": "ceiling"}
        if arm.endswith("_smart"):
            pairs["random_init"] = arm.replace("_smart", "_random")
        for key, ref in pairs.items():
            if ref in scores and ref != arm:
                row[f"vs_{key}"] = bootstrap_auc_difference(y, score, scores[ref], n_bootstrap=n)
        out[arm] = row
    return out


def roc_figure(path: Path, labels: dict[str, list[int]], scores: dict[str, dict[str, list[float]]]) -> None:
    """One ROC panel per endpoint, a curve per arm with its AUC, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from smart_nets.io import atomic_path

    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 5), squeeze=False)
    for ax, (endpoint, y) in zip(axes[0], labels.items()):
        for arm, score in scores[endpoint].items():
            fpr, tpr, _ = roc_curve(y, score)
            style = dict(color="k", linestyle="--") if arm == "ceiling" else {}
            ax.plot(fpr, tpr, label=f"{arm} ({roc_auc_score(y, score):.3f})", **style)
        ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8)
        ax.set(title=f"{endpoint} (n = {len(y)} test phantoms)", xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _ci(d: dict, low: str = "ci_low", high: str = "ci_high", value: str = "auc", signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(d[value])} [{fmt.format(d[low])}, {fmt.format(d[high])}]"


def markdown(result: dict, json_name: str) -> str:
    s = result["settings"]
    n_test = s["num"] - s["train"] - s["val"]
    lines = [
        "# Outcome prediction on phantoms: SMART against radiomics and the ceiling",
        "",
        f"Command: `{result['command']}` ({result['machine']['cores']} cores, {result['wall_minutes']:.0f} min in "
        f"all). Raw numbers: `{json_name}`. {s['num']} phantoms (seed {s['phantom_seed']}, {s['grid'][0]}^3 voxels "
        f"of {s['spacing'][0]} mm): {s['train']} train, {s['val']} select (the finetuned arms' best validation AUC), "
        f"{n_test} test. Encoder: the demo preset; SMART weights `{result['pretrained']}`. Finetuning: "
        f"`smart_response` train.json + demo.json with input_region {s['input_region']}, {s['epochs']} epochs at batch "
        f"{s['batch']}, lr {s['learning_rate']}, {s['pixdim'][0]} mm, ROI {s['roi'][0]}^3. AUCs with 95% bootstrap "
        f"CIs over test cases ({s['n_bootstrap']} "
        "resamples); differences paired on the same resamples.",
        "",
    ]
    for endpoint in ENDPOINTS:
        if endpoint not in result["compare"]:
            continue
        rows = result["compare"][endpoint]
        prevalence = result["prevalence"][endpoint]
        lines += [
            f"## {endpoint} (test prevalence {prevalence:.2f})",
            "",
            "| arm | AUC [95% CI] | vs radiomics | vs ceiling | vs random init | sens / spec at 0.5 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for arm, row in rows.items():
            cells = [f"`{arm}`", _ci(row["auc"])]
            for key in ("vs_radiomics", "vs_ceiling", "vs_random_init"):
                cells.append(_ci(row[key], value="difference", signed=True) if key in row else "")
            at = row.get("at_0.5")
            cells.append(f"{at['sensitivity']:.2f} / {at['specificity']:.2f}" if at else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![ROC curves]({Path(json_name).stem}_roc.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True, help="SMART weights of the demo encoder (a model.pt)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: every arm in a few minutes")
    parser.add_argument("--num", type=int, help="phantoms in all (train + val + test)")
    parser.add_argument("--epochs", type=int, help="finetuning epochs")
    parser.add_argument("--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument(
        "--input_region",
        choices=("tumour", "tumour_centred"),
        help="the network arms' input (smart_response's input_region): the tumour's box resized to the ROI "
        "(default) or a fixed box at the bundle's spacing centred on the tumour (its size kept)",
    )
    parser.add_argument("--work", type=Path, default=Path("outputs/outcome_study"), help="phantoms, features, runs")
    parser.add_argument("--results", type=Path, default=RESULTS / "outcome_study.json")
    parser.add_argument("--resume", action="store_true", help="keep the finetuned arms --work holds for these settings")
    args = parser.parse_args(argv)
    import numpy as np

    from smart_nets.metrics import roc_auc

    if not Path(args.pretrained).is_file():
        parser.error(f"--pretrained {args.pretrained}: no such file")
    s = dict(QUICK if args.quick else FULL)
    for key in ("num", "epochs", "input_region"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if s["num"] <= s["train"] + s["val"]:
        parser.error(f"--num {s['num']} leaves no test phantoms after {s['train']} train and {s['val']} select")
    start = time.perf_counter()
    result = le.resumable_result(args.results, s, args.resume, "outcome_study", argv)
    result["pretrained"] = str(args.pretrained)
    work = args.work
    data = make_data(work, s)
    splits = data["splits"]
    fit, test = splits["train"] + splits["val"], splits["test"]
    everything = fit + test
    arms = [a for a in ARMS if a in args.arms]
    features: dict = {}
    if "radiomics" in arms or "volume" in arms:
        names, x = radiomics_features(everything, s, work / "radiomics.npz")
        features["radiomics"] = x
        features["volume"] = np.log(x[:, [names.index("original_shape_VoxelVolume")]])
    if any(a.startswith("frozen_") for a in arms):
        features.update(
            encoder_features(everything, s, str(args.pretrained), work / f"encoder_features_{s['input_region']}.npz")
        )
    runs = result.setdefault("runs", {})
    result.setdefault("compare", {})
    result["prevalence"] = {}
    scores_all: dict = {}
    for endpoint in args.endpoints:
        y_fit = [int(i[endpoint]) for i in fit]
        y = [int(i[endpoint]) for i in test]
        result["prevalence"][endpoint] = sum(y) / len(y)
        scores: dict[str, list[float]] = {}
        for arm in arms:
            key = f"{endpoint}/{arm}"
            if arm == "ceiling":
                scores[arm] = [i["latent"][endpoint] for i in test]
            elif arm in features:
                probs, c = logistic(features[arm][: len(fit)], y_fit, features[arm][len(fit) :], s["seed"])
                scores[arm] = probs
                runs[key] = {"C": c, "n_features": int(features[arm].shape[1])}
            else:
                run = finetune(
                    arm,
                    endpoint,
                    s,
                    data["lists"],
                    args.pretrained,
                    work / "runs" / s["input_region"] / endpoint / arm,
                    args.resume,
                )
                missing = [i["case_id"] for i in test if Path(i["image"]).name not in run["scores"]]
                if missing:
                    raise SystemExit(f"{key}: no test predictions for {missing[:5]}")
                scores[arm] = [run["scores"][Path(i["image"]).name] for i in test]
                runs[key] = {k: v for k, v in run.items() if k != "scores"}
            logger.info("%s: AUC %.3f", key, roc_auc(y, scores[arm]))
        result["compare"][endpoint] = compare(y, scores, s["n_bootstrap"])
        scores_all[endpoint] = scores
        result.setdefault("scores", {})[endpoint] = {"cases": [i["case_id"] for i in test], "label": y, **scores}
    result["wall_minutes"] = (time.perf_counter() - start) / 60.0
    write_json(args.results, result)
    write_text(args.results.with_suffix(".md"), markdown(result, args.results.name))
    labels = {e: result["scores"][e]["label"] for e in scores_all}
    roc_figure(args.results.with_name(args.results.stem + "_roc.png"), labels, scores_all)
    logger.info("wrote %s, its .md and _roc.png", args.results)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main()
