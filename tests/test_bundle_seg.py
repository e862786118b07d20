"""The smart_seg bundle through `python -m monai.bundle`: metadata, network I/O, training, evaluation, inference."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest

from smart_nets import provenance
from smart_nets.data import make_phantom
from smart_nets.data.dicom import write_dicom_series
from smart_nets.metrics import tumour_measurements
from tests.helpers import REPO, export_demo_onnx, run_bundle, run_bundle_failure, verify_bundle, write_lps_image

BUNDLE = REPO / "bundles" / "smart_seg"


@pytest.fixture(scope="module")
def trained(bundle_workspace) -> Path:
    """Train the demo configuration briefly on 6 small phantoms (one run shared by the tests below)."""
    root = bundle_workspace(  # large solid tumours (lung all round), so a short CPU run learns them
        "smart_seg",
        phantoms=6,
        val_fraction=0.34,
        tumour_radius=(16, 24),
        tumour_types=("solid",),
    )
    # the phantoms' own grid (PHANTOM_GRID, 5 x 5 x 10 mm) instead of the demo's 5 mm isotropic one: half the voxels,
    # so training and every test's inference below take about half the time (Dice 0.0015 -> 0.22 at 60 epochs here,
    # against 0.43 on the demo's grid); in the copy's demo.json, so that every config below uses the same grid
    demo = root / "smart_seg" / "configs" / "demo.json"
    demo.write_text(json.dumps({**json.loads(demo.read_text()), "roi_size": [64, 64, 32], "pixdim": [5.0, 5.0, 10.0]}))
    overrides = {"dataset_dir": str(root / "data"), "pretrained_path": "", "max_epochs": 60, "val_interval": 20}
    # 120 iterations: under the HU window [-1000, 400] Dice was 0.03-0.25 at 60 iterations, 0.20-0.25 at 90
    overrides |= {"learning_rate": 0.001, "num_samples": 1}
    (root / "test.json").write_text(json.dumps(overrides))
    log = run_bundle(root / "smart_seg", ["train.json", "demo.json", root / "test.json"])
    (root / "train.log").write_text(log)
    return root


def test_metadata_and_network_io_verify(tmp_path):
    verify_bundle(BUNDLE, tmp_path)


def test_training_improves_validation_dice_and_saves_the_best_model(trained):
    log = (trained / "train.log").read_text()
    dice = [float(v) for v in re.findall(r"Metrics -- .*val_mean_dice: ([0-9.]+)", log)]
    assert len(dice) == 4  # at the start, then every 20 of 60 epochs
    assert max(dice[1:]) > dice[0] + 0.05, dice
    # the weights say what they were trained on: this bundle, the phantoms' training list, synthetic
    record = provenance.from_file(trained / "smart_seg" / "models" / "model.pt")
    training = json.loads((trained / "data" / "dataset.json").read_text())["training"]
    assert record["bundle"] == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["name"]
    assert (record["num_cases"], record["synthetic"]) == (len(training), True) and "pretrained" not in record


def test_evaluate_reports_dice(trained):
    root = trained / "smart_seg"
    configs = ["train.json", "demo.json", "evaluate.json"]
    run_bundle(root, configs, dataset_dir=trained / "data", output_dir=trained / "evaluation")
    metrics = dict(line.split(",") for line in (trained / "evaluation" / "metrics.csv").read_text().split())
    assert 0.0 <= float(metrics["val_mean_dice"]) <= 1.0 and "val_hausdorff95" in metrics
    per_case = (trained / "evaluation" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert per_case[0] == "filename,class0,mean" and len(per_case) == 3  # two validation phantoms


def test_inference_writes_masks_in_the_input_space_from_nifti_dicom_nrrd_and_metaimage(trained):
    root = trained / "smart_seg"
    phantom = make_phantom(99, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))
    inputs = trained / "new_ct"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), inputs / "case.nii.gz")
    write_dicom_series(phantom.image, phantom.affine, str(inputs / "series"))
    for name in ("slicer.nrrd", "itk.mha"):  # LPS files, as 3D Slicer and ITK write them
        write_lps_image(phantom.image, phantom.affine, inputs / name)
    demo = {
        k: v
        for k, v in json.loads((root / "configs" / "demo.json").read_text()).items()
        if "#" in k or k in ("roi_size", "pixdim", "amp")
    }
    demo["datalist"] = [str(inputs / n) for n in ("case.nii.gz", "series", "slicer.nrrd", "itk.mha")]
    demo["save_attention"] = True
    demo["save_probabilities"] = True
    (trained / "infer.json").write_text(json.dumps(demo))
    run_bundle(root, ["inference.json", trained / "infer.json"], output_dir=trained / "pred")
    masks = sorted((trained / "pred").glob("*_seg.nii.gz"))
    assert [m.name for m in masks] == ["case_seg.nii.gz", "itk_seg.nii.gz", "series_seg.nii.gz", "slicer_seg.nii.gz"]
    reference = nib.load(inputs / "case.nii.gz")
    rows = list(csv.DictReader((trained / "pred" / "measurements.csv").open()))
    assert [Path(r["image"]).name for r in rows] == ["case.nii.gz", "series", "slicer.nrrd", "itk.mha"], rows
    for mask, row in zip(masks, sorted(rows, key=lambda r: Path(r["image"]).name)):
        out = nib.load(mask)
        assert out.shape == reference.shape, mask
        np.testing.assert_allclose(out.affine, reference.affine, atol=1e-4)
        label = np.asanyarray(out.dataobj)
        assert set(np.unique(label)) <= {0, 1}
        prob = nib.load(str(mask).replace("_seg.nii.gz", "_prob.nii.gz"))  # foreground probability, input space
        p = np.asanyarray(prob.dataobj)
        assert prob.shape == reference.shape and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
        assert ((p > 0.5) == (label == 1)).mean() >= 0.999  # the mask is the argmax of the same probabilities
        expected = tumour_measurements(label == 1, out.affine)
        assert row["model_trained_on"].startswith(provenance.SYNTHETIC_WARNING), row
        assert int(row["tumour_voxels"]) == expected["tumour_voxels"] > 0, row
        for column in ("tumour_volume_mm3", "longest_axial_diameter_mm", "connected_components"):
            assert float(row[column]) == pytest.approx(expected[column], rel=1e-4), (column, row)
    nifti = np.asanyarray(nib.load(masks[0]).dataobj)
    for same in (masks[1], masks[3]):  # the same voxels as the NIfTI input, on the same grid
        np.testing.assert_array_equal(np.asanyarray(nib.load(same).dataobj), nifti)
    heatmaps = sorted((trained / "pred").glob("*_attn.nii.gz"))
    assert len(heatmaps) == 4 and all(nib.load(h).shape == reference.shape for h in heatmaps), heatmaps
    assert not list((trained / "pred").glob(".tmp-*"))


def test_onnx_and_tensorrt_configs_reproduce_the_pytorch_masks(trained):
    """Export the trained model with `onnx_export`, then run the same sliding-window pipeline (8 windows in batches of
    4 and fewer: the dynamic batch axis) on PyTorch, onnxruntime, the TensorRT config (which, without CUDA and
    TensorRT, falls back to PyTorch with a warning, or stops when `trt_required` is set) and the CPU fast paths (bf16
    autocast; the int8 graph quantize.json writes)."""
    root = trained / "smart_seg"
    phantom = make_phantom(7, shape=(96, 96, 48), spacing=(5.0, 5.0, 10.0))
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), trained / "large.nii.gz")
    configs = ["inference.json", "demo.json"]
    common = {"datalist": f"['{trained}/large.nii.gz']"}
    export_demo_onnx(root, roi_size=json.loads((root / "configs" / "demo.json").read_text())["roi_size"])
    masks, logs, trt = {}, {}, "inference_trt.json"
    runs = (("torch", []), ("onnx", ["inference_onnx.json"]), ("trt", [trt]), ("bf16", ["inference_bf16.json"]))
    for name, extra in runs:
        out = trained / f"pred_{name}"
        logs[name] = run_bundle(root, configs + extra, **common, output_dir=out)
        masks[name] = np.asanyarray(nib.load(out / "large_seg.nii.gz").dataobj)
    assert masks["torch"].shape == phantom.image.shape and 0 < masks["torch"].mean() < 0.5
    assert (masks["onnx"] == masks["torch"]).mean() >= 0.999
    assert "serves" in logs["onnx"] and "model.onnx" in logs["onnx"]
    assert (masks["bf16"] == masks["torch"]).mean() >= 0.99 and "keeps freed memory" in logs["bf16"]
    np.testing.assert_array_equal(masks["trt"], masks["torch"])
    assert "TensorRT is unavailable" in logs["trt"] and "running the PyTorch network instead" in logs["trt"]

    # the CPU fast path: quantize the exported graph on the training phantoms, then serve the int8 graph
    int8 = root / "models" / "model_int8.onnx"
    calibration = str([str(p) for p in sorted((trained / "data" / "imagesTr").glob("*.nii.gz"))[:2]])
    run_bundle(root, ["inference.json", "demo.json", "quantize.json"], datalist=calibration)
    graph = onnx.load(str(int8)).graph
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) > 10  # the convolutions' inputs and weights
    out = trained / "pred_int8"
    log = run_bundle(root, configs + ["inference_onnx.json"], **common, output_dir=out, onnx_path=str(int8))
    assert "model_int8.onnx" in log
    assert (np.asanyarray(nib.load(out / "large_seg.nii.gz").dataobj) == masks["torch"]).mean() >= 0.99

    stop = run_bundle_failure(root, configs + [trt], **common, output_dir=trained / "pred_stop", trt_required="True")
    assert "TensorRT is unavailable" in stop.stderr and "trt_required" in stop.stderr
    assert not (trained / "pred_stop" / "large_seg.nii.gz").exists()
