"""The smart_response bundle through `python -m monai.bundle`: verify, train, evaluate, inference, endpoint errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from smart_nets import provenance
from smart_nets.transforms import EndpointLabeld, class_weights
from tests.helpers import REPO, export_demo_onnx, run_bundle, run_bundle_failure, verify_bundle

BUNDLE = REPO / "bundles" / "smart_response"


def test_endpoint_switch_reads_the_right_label_and_names_a_case_without_it():
    item = {"case_id": "phantom_007", "response": 1, "recurrence": 0}
    assert int(EndpointLabeld("response")(item)["label"]) == 1
    assert int(EndpointLabeld("recurrence")(item)["label"]) == 0
    with pytest.raises(ValueError, match="case phantom_007 has no 'survival' label"):
        EndpointLabeld("survival")(item)
    weights = class_weights([{"response": 1}, {"response": 1}, {"response": 1}, {"response": 0}], "response")
    torch.testing.assert_close(weights, torch.tensor([2.0, 2.0 / 3.0]))


def test_metadata_and_network_io_verify(tmp_path):
    verify_bundle(BUNDLE, tmp_path)


def test_train_evaluate_and_infer_with_the_demo_override(tmp_path, bundle_workspace):
    root = bundle_workspace("smart_response", root=tmp_path, phantoms=12, val_fraction=0.5, seed=3)
    data = root / "data"
    meta = json.loads((data / "dataset.json").read_text())
    labels = [item["recurrence"] for item in meta["validation"]]
    assert 0 < sum(labels) < len(labels), "choose a seed whose validation set has both classes"
    bundle = root / "smart_response"
    common = dict(dataset_dir=data, pretrained_path="", label_key="recurrence", input_region="tumour")
    run_bundle(bundle, ["train.json", "demo.json"], **common, max_epochs=2)
    assert (root / "smart_response" / "models" / "model.pt").is_file()

    run_bundle(bundle, ["train.json", "demo.json", "evaluate.json"], **common, output_dir=root / "evaluation")
    report = json.loads((root / "evaluation" / "metrics.json").read_text())
    assert report["endpoint"] == "recurrence" and report["n"] == 6 and report["n_positive"] == sum(labels)
    assert 0.0 <= report["ci_low"] <= report["auc"] <= report["ci_high"] <= 1.0
    assert (root / "evaluation" / "roc.png").stat().st_size > 1000

    images = [
        str(Path(item["image"]) if Path(item["image"]).is_absolute() else data / item["image"])
        for item in meta["validation"]
    ]
    override = root / "infer.json"
    override.write_text(json.dumps({"datalist": images}))
    run_bundle(bundle, ["inference.json", "demo.json", override], output_dir=root / "pred")
    rows = list(csv.DictReader(open(root / "pred" / "predictions.csv")))
    assert len(rows) == len(images)
    for row in rows:
        p0, p1 = float(row["prob_0"]), float(row["prob_1"])
        assert 0.0 <= p0 <= 1.0 and 0.0 <= p1 <= 1.0 and p0 + p1 == pytest.approx(1.0, abs=1e-5)
        assert int(row["predicted_class"]) == int(p1 > p0)
        assert row["model_trained_on"].startswith(provenance.SYNTHETIC_WARNING), row  # trained on phantoms

    # the same predictions from the exported graph on onnxruntime, and from the TensorRT config's CPU fallback
    export_demo_onnx(root / "smart_response")
    for name in ("onnx", "trt"):
        configs = ["inference.json", "demo.json", override, f"inference_{name}.json"]
        run_bundle(bundle, configs, output_dir=root / f"pred_{name}")
        exported = list(csv.DictReader(open(root / f"pred_{name}" / "predictions.csv")))
        assert [r["case"] for r in exported] == [r["case"] for r in rows]
        for ours, theirs in zip(exported, rows):
            assert float(ours["prob_1"]) == pytest.approx(float(theirs["prob_1"]), abs=1e-4), name
            assert ours["model_trained_on"] == theirs["model_trained_on"]  # the record of the weights exported


def test_a_datalist_entry_without_the_endpoint_names_the_case(tmp_path, bundle_workspace):
    root = bundle_workspace("smart_response", root=tmp_path, phantoms=4)
    data = root / "data"
    meta = json.loads((data / "dataset.json").read_text())
    del meta["training"][1]["response"]
    (data / "dataset.json").write_text(json.dumps(meta))
    bundle = root / "smart_response"
    proc = run_bundle_failure(bundle, ["train.json", "demo.json"], dataset_dir=data, pretrained_path="")
    assert "case phantom_001 has no 'response' label" in proc.stdout + proc.stderr


def _tumour_case(folder: Path, name: str, radius_mm: float) -> dict:
    """A 160 mm cube at 2 mm of -800 HU with a ball of ``radius_mm`` at 200 HU, off centre, and its mask."""
    import nibabel as nib
    import numpy as np

    grid = np.stack(np.meshgrid(*[np.arange(80) * 2.0] * 3, indexing="ij"))
    ball = (((grid - np.array([60.0, 90.0, 80.0])[:, None, None, None]) ** 2).sum(0) <= radius_mm**2).astype(np.uint8)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    item = {"image": str(folder / f"{name}.nii.gz"), "label": str(folder / f"{name}_mask.nii.gz"), "response": 1}
    nib.save(nib.Nifti1Image(np.where(ball, 200.0, -800.0).astype(np.float32), affine), item["image"])
    nib.save(nib.Nifti1Image(ball, affine), item["label"])
    return item


def _tumour_voxels(region: str, item: dict) -> tuple[tuple, int]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in ("train.json", "demo.json")])
    overrides = {"input_region": region, "roi_size": [32, 32, 32], "pixdim": [2, 2, 2], "crop_margin": 2}
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    image = parser.get_parsed_content("validate#preprocessing")(dict(item))["image"]
    return tuple(image.shape), int((image > 0.5).sum())  # 200 HU -> 0.86, -800 HU -> 0.14 in the [-1000, 400] window


def test_tumour_centred_keeps_the_tumours_size_where_tumour_rescales_it(tmp_path):
    import nibabel as nib

    small, large = _tumour_case(tmp_path, "small", 6.0), _tumour_case(tmp_path, "large", 12.0)
    (shape, n_small), (_, n_large) = (_tumour_voxels("tumour_centred", i) for i in (small, large))
    assert shape == (1, 32, 32, 32)
    truth = [int(nib.load(i["label"]).get_fdata().sum()) for i in (small, large)]
    assert (n_small, n_large) == tuple(truth)  # a fixed box at the training spacing, no resampling: the same voxels
    # the box plus a fixed margin, resized to the ROI: each case by its own factor, so sizes come out compressed
    (_, s), (_, big) = (_tumour_voxels("tumour", i) for i in (small, large))
    assert s > 5 * truth[0] and big / s < 0.5 * truth[1] / truth[0]
    with pytest.raises(RuntimeError) as error:  # MONAI's ConfigExpression wraps what the expression raised
        _tumour_voxels("tumor", small)
    assert "input_region = 'tumor': not one of 'whole', 'tumour', 'tumour_centred'" in str(error.value.__cause__)
