"""Print what the bundles wrote, one result a line, as ``scripts/demo.sh`` shows it.

``python -m smart_nets.report <what> PATH ...``:

- ``clusters METRICS_JSON``: Task IV, the ``cluster_metrics.json`` of smart_pretrain's ``configs/cluster.json``
  (per encoder: centroid distance, separation, silhouette, k-means ARI);
- ``seg-eval EVAL_DIR``: smart_seg's ``configs/evaluate.json`` output folder (per-case and mean tumour Dice, HD95
  from ``val_mean_dice_raw.csv`` and ``metrics.csv``);
- ``response-eval METRICS_JSON``: smart_response's ``configs/evaluate.json`` ``metrics.json`` (AUC with its
  bootstrap CI, accuracy, sensitivity, specificity);
- ``export-agreement [--seg TORCH_DIR ONNX_DIR] [--response TORCH_DIR ONNX_DIR]``: how closely the exported models'
  predictions match PyTorch's (segmentation masks ``*_seg.nii.gz``: the smallest share of equal voxels;
  outcome prediction ``predictions.csv``: the largest difference of ``prob_1``).

A missing or unreadable file stops it with a message naming the file (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


class ReportError(Exception):
    """A file a report needs is missing or is not what it should be."""


def _existing(path: str | Path, what: str, folder: bool = False) -> Path:
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path} does not exist (expected {what})")
    if folder and not path.is_dir():
        raise ReportError(f"{path} is not a folder (expected {what})")
    if not folder and not path.is_file():
        raise ReportError(f"{path} is not a file (expected {what})")
    return path


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn a parse or lookup error while reading ``path`` into a ``ReportError`` naming it."""
    try:
        yield
    except ReportError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        detail = f"no {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
        raise ReportError(f"{path} is not {what} ({detail})") from error


def _json(path: str | Path, what: str) -> tuple[Path, dict]:
    path = _existing(path, what)
    with _reading(path, what):
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object is expected, got {type(data).__name__}")
    return path, data


def clusters(metrics_file: str | Path) -> list[str]:
    """Task IV: one line per encoder of ``cluster_metrics.json``, then where the scatter plot is."""
    what = "Task IV cluster metrics (cluster_metrics.json of configs/cluster.json)"
    path, report = _json(metrics_file, what)
    lines = []
    with _reading(path, what):
        for name, m in report["encoders"].items():
            lines.append(
                f"{name:<11} centroid distance {m['inter_class_distance']:6.2f} (x{m['separation_ratio']:.2f} the "
                f"spread), silhouette {m['silhouette']:+.3f}, k-means ARI {m['kmeans_ari']:.3f} "
                f"({m['n_embeddings']} organ embeddings, {report['n_images']} images)"
            )
    lines.append(f"scatter plot {path.parent / 'cluster_scatter.png'}")
    return lines


def seg_eval(eval_dir: str | Path) -> list[str]:
    """smart_seg evaluation: each validation case's tumour Dice, then the mean Dice and HD95."""
    folder = _existing(eval_dir, "the output folder of smart_seg's configs/evaluate.json", folder=True)
    raw = _existing(folder / "val_mean_dice_raw.csv", "per-case Dice written by smart_seg's configs/evaluate.json")
    summary = _existing(folder / "metrics.csv", "mean metrics written by smart_seg's configs/evaluate.json")
    lines = []
    with _reading(raw, "a per-case Dice table (filename, ..., mean)"):
        rows = list(csv.reader(raw.read_text().splitlines()))
        if not rows:
            raise ValueError("empty file")
        for row in rows[1:]:
            lines.append(f"{row[0].split('/')[-1]:<28} tumour Dice {float(row[-1]):.3f}")
    with _reading(summary, "a metrics table (name,value lines with val_mean_dice and val_hausdorff95)"):
        metrics = dict(line.split(",") for line in summary.read_text().split())
        lines.append(
            f"mean tumour Dice {float(metrics['val_mean_dice']):.3f}, HD95 {float(metrics['val_hausdorff95']):.1f} mm"
        )
    return lines


def response_eval(metrics_file: str | Path) -> list[str]:
    """smart_response evaluation: the endpoint's AUC with its bootstrap 95% CI and the thresholded metrics."""
    what = "outcome metrics (metrics.json of smart_response's configs/evaluate.json)"
    path, r = _json(metrics_file, what)
    with _reading(path, what):
        line = (
            f"{r['endpoint']}: AUC {r['auc']:.3f} (95% CI {r['ci_low']:.3f}-{r['ci_high']:.3f}; n={r['n']}, "
            f"{r['n_positive']} positive), accuracy {r['accuracy']:.2f}, sensitivity {r['sensitivity']:.2f}, "
            f"specificity {r['specificity']:.2f}; ROC curve {path.parent / 'roc.png'}"
        )
    return [line]


def seg_agreement(torch_dir: str | Path, onnx_dir: str | Path) -> str:
    """The smallest share of voxels on which each exported model's mask equals PyTorch's, over the masks of
    ``onnx_dir``."""
    import nibabel as nib
    import numpy as np

    what = "a folder of segmentation masks (*_seg.nii.gz)"
    torch_dir, onnx_dir = _existing(torch_dir, what, folder=True), _existing(onnx_dir, what, folder=True)
    exported = sorted(onnx_dir.glob("*_seg.nii.gz"))
    if not exported:
        raise ReportError(f"{onnx_dir} holds no *_seg.nii.gz masks (expected the exported model's predictions)")
    agree = []
    for onnx_mask in exported:
        torch_mask = _existing(torch_dir / onnx_mask.name, f"PyTorch's mask of the case {onnx_mask} segments")
        masks = []
        for path in (onnx_mask, torch_mask):
            with _reading(path, "a NIfTI mask"):
                masks.append(np.asanyarray(nib.load(path).dataobj))
        if masks[0].shape != masks[1].shape:
            raise ReportError(f"{onnx_mask} has shape {masks[0].shape} but {torch_mask} has {masks[1].shape}")
        agree.append((masks[0] == masks[1]).mean())
    return (
        f"segmentation: onnxruntime masks agree with PyTorch's on {100 * min(agree):.3f}% of voxels or more "
        f"({len(agree)} cases, {onnx_dir})"
    )


def response_agreement(torch_dir: str | Path, onnx_dir: str | Path) -> str:
    """The largest difference between the exported model's ``prob_1`` and PyTorch's, case by case."""
    what = "predictions.csv of smart_response's configs/inference.json"
    tables = []
    for folder in (torch_dir, onnx_dir):
        path = _existing(Path(folder) / "predictions.csv", what)
        with _reading(path, f"a predictions table with a prob_1 column ({what})"):
            rows = list(csv.DictReader(path.read_text().splitlines()))
            if not rows:
                raise ValueError("no predictions")
            tables.append((path, [row.get("case") for row in rows], [float(row["prob_1"]) for row in rows]))
    (torch_csv, torch_cases, torch_probs), (onnx_csv, onnx_cases, onnx_probs) = tables
    if torch_cases != onnx_cases:
        raise ReportError(f"{onnx_csv} and {torch_csv} do not list the same cases in the same order")
    diff = max(abs(a - b) for a, b in zip(torch_probs, onnx_probs))
    return f"response: onnxruntime probabilities within {diff:.1e} of PyTorch's ({len(onnx_probs)} cases)"


def export_agreement(
    seg: Sequence[str | Path] | None = None, response: Sequence[str | Path] | None = None
) -> list[str]:
    """``seg``, ``response``: (PyTorch's prediction folder, the exported model's), either may be left out."""
    if not seg and not response:
        raise ReportError("give --seg TORCH_DIR ONNX_DIR, --response TORCH_DIR ONNX_DIR or both")
    lines = [seg_agreement(*seg)] if seg else []
    return lines + ([response_agreement(*response)] if response else [])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smart_nets.report", description="Print what the bundles wrote, one result a line."
    )
    commands = parser.add_subparsers(dest="what", required=True, metavar="<what>")
    sub = commands.add_parser("clusters", help="Task IV cluster metrics (smart_pretrain configs/cluster.json)")
    sub.add_argument("metrics_file", help="cluster_metrics.json")
    sub = commands.add_parser("seg-eval", help="smart_seg evaluation: per-case and mean Dice")
    sub.add_argument("eval_dir", help="the output folder of configs/evaluate.json")
    sub = commands.add_parser("response-eval", help="smart_response evaluation: AUC with its bootstrap CI")
    sub.add_argument("metrics_file", help="metrics.json of configs/evaluate.json")
    sub = commands.add_parser("export-agreement", help="exported models' predictions against PyTorch's")
    sub.add_argument("--seg", nargs=2, metavar=("TORCH_DIR", "ONNX_DIR"), help="folders of *_seg.nii.gz masks")
    sub.add_argument("--response", nargs=2, metavar=("TORCH_DIR", "ONNX_DIR"), help="folders of predictions.csv")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.what == "clusters":
            lines = clusters(args.metrics_file)
        elif args.what == "seg-eval":
            lines = seg_eval(args.eval_dir)
        elif args.what == "response-eval":
            lines = response_eval(args.metrics_file)
        else:
            lines = export_agreement(args.seg, args.response)
    except ReportError as error:
        print(f"smart_nets.report {args.what}: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
