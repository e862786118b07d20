"""``python -m smart_nets.report``: the demo's result lines from small synthetic files, and errors naming the file."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from smart_nets.report import ReportError, clusters, export_agreement, main, response_eval, seg_eval

ENCODER = {"inter_class_distance": 10.391, "separation_ratio": 3.284, "silhouette": -0.0951, "kmeans_ari": 0.1734}
RESPONSE = {
    "endpoint": "response",
    "auc": 0.5556,
    "ci_low": 0.2,
    "ci_high": 0.9167,
    "n": 12,
    "n_positive": 6,
    "accuracy": 0.5,
    "sensitivity": 1.0,
    "specificity": 0.0,
}


def _cluster_metrics(folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    report = {"n_images": 4, "encoders": {"pretrained": dict(ENCODER, n_embeddings=44)}}
    report["encoders"]["random_init"] = dict(ENCODER, inter_class_distance=9.9, silhouette=0.25, n_embeddings=44)
    (folder / "cluster_metrics.json").write_text(json.dumps(report))
    return str(folder / "cluster_metrics.json")


def _seg_evaluation(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "val_mean_dice_raw.csv").write_text(
        "filename,class0,mean\n/data/imagesTr/phantom_012.nii.gz,0.5912,0.5912\n/data/imagesTr/phantom_013.nii.gz,0,0\n"
    )
    (folder / "metrics.csv").write_text("val_mean_dice,0.2956\nval_hausdorff95,19.84\n")
    return folder


def _masks(folder, *arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(arrays):
        nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), folder / f"case_{i}_seg.nii.gz")
    return folder


def _predictions(folder, probs, cases=None):
    folder.mkdir(parents=True, exist_ok=True)
    cases = cases or [f"phantom_{i:03d}" for i in range(len(probs))]
    rows = [f"{c},{1 - p:.8f},{p:.8f},{int(p > 0.5)}" for c, p in zip(cases, probs)]
    (folder / "predictions.csv").write_text("case,prob_0,prob_1,predicted_class\n" + "\n".join(rows) + "\n")
    return folder


def test_clusters_prints_one_line_per_encoder_and_the_scatter_plot(tmp_path):
    lines = clusters(_cluster_metrics(tmp_path / "clusters"))
    assert lines == [
        "pretrained  centroid distance  10.39 (x3.28 the spread), silhouette -0.095, k-means ARI 0.173 "
        "(44 organ embeddings, 4 images)",
        "random_init centroid distance   9.90 (x3.28 the spread), silhouette +0.250, k-means ARI 0.173 "
        "(44 organ embeddings, 4 images)",
        f"scatter plot {tmp_path / 'clusters' / 'cluster_scatter.png'}",
    ]


def test_seg_eval_prints_each_case_then_the_means(tmp_path):
    assert seg_eval(_seg_evaluation(tmp_path / "evaluation")) == [
        "phantom_012.nii.gz           tumour Dice 0.591",
        "phantom_013.nii.gz           tumour Dice 0.000",
        "mean tumour Dice 0.296, HD95 19.8 mm",
    ]


def test_response_eval_prints_the_auc_with_its_ci(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(RESPONSE))
    assert response_eval(tmp_path / "metrics.json") == [
        "response: AUC 0.556 (95% CI 0.200-0.917; n=12, 6 positive), accuracy 0.50, sensitivity 1.00, "
        f"specificity 0.00; ROC curve {tmp_path / 'roc.png'}"
    ]


def test_export_agreement_reports_the_worst_case(tmp_path):
    a = np.zeros((4, 5, 5), np.uint8)
    b = a.copy()
    b[0, 0, :2] = 1  # 2 of 100 voxels differ in the second case
    torch_masks, onnx_masks = _masks(tmp_path / "torch", a, a), _masks(tmp_path / "onnx", a, b)
    torch_csv = _predictions(tmp_path / "pt", [0.25, 0.75])
    onnx_csv = _predictions(tmp_path / "ox", [0.25, 0.75 + 3e-7])
    lines = export_agreement(seg=(torch_masks, onnx_masks), response=(torch_csv, onnx_csv))
    assert lines == [
        f"segmentation: onnxruntime masks agree with PyTorch's on 98.000% of voxels or more (2 cases, {onnx_masks})",
        "response: onnxruntime probabilities within 3.0e-07 of PyTorch's (2 cases)",
    ]
    assert export_agreement(response=(torch_csv, torch_csv)) == [
        "response: onnxruntime probabilities within 0.0e+00 of PyTorch's (2 cases)"
    ]


def test_missing_and_malformed_files_are_named(tmp_path):
    missing = tmp_path / "nowhere" / "cluster_metrics.json"
    with pytest.raises(ReportError, match=re.escape(str(missing)) + " does not exist"):
        clusters(missing)
    (tmp_path / "bad.json").write_text("{'not': json")
    with pytest.raises(ReportError, match=re.escape(str(tmp_path / "bad.json")) + " is not Task IV cluster metrics"):
        clusters(tmp_path / "bad.json")
    (tmp_path / "metrics.json").write_text(json.dumps(dict(RESPONSE, auc=None)))
    with pytest.raises(ReportError, match="metrics.json is not outcome metrics"):
        response_eval(tmp_path / "metrics.json")
    (tmp_path / "metrics.json").write_text(json.dumps({k: v for k, v in RESPONSE.items() if k != "ci_low"}))
    with pytest.raises(ReportError, match="metrics.json is not outcome metrics .*no 'ci_low'"):
        response_eval(tmp_path / "metrics.json")

    evaluation = _seg_evaluation(tmp_path / "evaluation")
    (evaluation / "metrics.csv").write_text("val_mean_dice,0.3\n")
    with pytest.raises(
        ReportError, match=re.escape(str(evaluation / "metrics.csv")) + " is not a metrics table .*val_hausdorff95"
    ):
        seg_eval(evaluation)
    (evaluation / "metrics.csv").unlink()
    with pytest.raises(ReportError, match=re.escape(str(evaluation / "metrics.csv")) + " does not exist"):
        seg_eval(evaluation)

    a = np.zeros((4, 5, 5), np.uint8)
    torch_masks, onnx_masks = _masks(tmp_path / "torch", a), _masks(tmp_path / "onnx", a, a)
    with pytest.raises(ReportError, match=re.escape(str(torch_masks / "case_1_seg.nii.gz")) + " does not exist"):
        export_agreement(seg=(torch_masks, onnx_masks))
    with pytest.raises(ReportError, match=re.escape(str(tmp_path / "empty")) + " holds no"):
        export_agreement(seg=(torch_masks, _masks(tmp_path / "empty")))
    torch_csv = _predictions(tmp_path / "pt", [0.25, 0.75])
    with pytest.raises(ReportError, match="do not list the same cases"):
        export_agreement(response=(torch_csv, _predictions(tmp_path / "ox", [0.25, 0.75], ["x", "y"])))
    with pytest.raises(ReportError, match="give --seg"):
        export_agreement()


def test_the_command_line_prints_the_lines_or_names_the_file_and_exits_1(tmp_path, capsys):
    assert main(["seg-eval", str(_seg_evaluation(tmp_path / "evaluation"))]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "mean tumour Dice 0.296, HD95 19.8 mm"
    assert main(["response-eval", str(tmp_path / "missing.json")]) == 1
    assert (
        f"smart_nets.report response-eval: error: {tmp_path / 'missing.json'} does not exist" in capsys.readouterr().err
    )
    proc = subprocess.run(
        [sys.executable, "-m", "smart_nets.report", "clusters", _cluster_metrics(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("pretrained  centroid distance  10.39"), proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "smart_nets.report", "clusters", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "none.json does not exist" in proc.stderr
