"""Broken datalists through every bundle's training entry point (`monai.bundle run`, the function the command line
calls): each stops before training, naming the datalist and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import bundle_failure, copy_bundle, demo_network

CASES = {
    "not JSON": ("{'training': [", "Expecting property name enclosed in double quotes"),
    "empty": (json.dumps({"training": [], "validation": []}), "has an empty 'training' list"),
    "item without an image": (json.dumps({"training": [{"label": "x.nii.gz"}]}), "has no 'image'"),
    "missing image file": (
        json.dumps({"training": [{"image": "nowhere.nii.gz", "label": "nowhere_label.nii.gz"}]}),
        "references missing files",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_seg", "smart_response"])
def test_a_broken_datalist_stops_training_naming_the_file_and_the_problem(bundle, case, tmp_path):
    content, problem = CASES[case]
    (tmp_path / "data").mkdir()
    datalist = tmp_path / "data" / "dataset.json"
    datalist.write_text(content)
    root = tmp_path / bundle
    copy_bundle(bundle, root)
    message = bundle_failure(
        root,
        ["train.json", "demo.json"],
        dataset_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
    )
    assert str(datalist) in message and problem in message, message[-2000:]
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def _save_model(bundle: str, ckpt_dir: Path) -> None:
    """The weights evaluate.json/cluster.json load (smart_pretrain: the encoder's, as training writes them)."""
    network = demo_network(bundle)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.save((network.encoder if bundle == "smart_pretrain" else network).state_dict(), ckpt_dir / "model.pt")


NO_DATASET_JSON = {
    ("smart_seg", "evaluate"): ["train.json", "demo.json", "evaluate.json"],
    ("smart_response", "evaluate"): ["train.json", "demo.json", "evaluate.json"],
    ("smart_pretrain", "cluster"): ["train.json", "demo.json", "cluster.json"],
}


@pytest.mark.parametrize("bundle,entry", list(NO_DATASET_JSON))
def test_evaluation_of_a_folder_without_a_datalist_names_it_and_how_to_fix_it(bundle, entry, tmp_path):
    (tmp_path / "data").mkdir()
    root = tmp_path / bundle
    copy_bundle(bundle, root)
    _save_model(bundle, root / "models")  # so that the datalist is the only thing missing
    message = bundle_failure(root, NO_DATASET_JSON[bundle, entry], dataset_dir=str(tmp_path / "data"))
    assert str(tmp_path / "data" / "dataset.json") in message and "does not exist" in message, message[-2000:]
    assert "--dataset_dir" in message, message[-2000:]


@pytest.mark.parametrize("bundle,entry", list(NO_DATASET_JSON))
def test_evaluation_of_an_empty_list_stops_naming_the_list(bundle, entry, tmp_path):
    (tmp_path / "data").mkdir()
    datalist = tmp_path / "data" / "dataset.json"
    datalist.write_text(json.dumps({"training": [], "validation": []}))
    root = tmp_path / bundle
    copy_bundle(bundle, root)
    _save_model(bundle, root / "models")
    message = bundle_failure(root, NO_DATASET_JSON[bundle, entry], dataset_dir=str(tmp_path / "data"))
    assert str(datalist) in message and "has an empty" in message, message[-2000:]


INFERENCE = [
    ("smart_pretrain", ["inference.json"]),
    ("smart_seg", ["inference.json"]),
    ("smart_seg", ["inference.json", "inference_onnx.json"]),
    ("smart_response", ["inference.json"]),
    ("smart_response", ["inference.json", "inference_onnx.json"]),
]


@pytest.mark.parametrize("bundle,configs", INFERENCE)
def test_inference_over_a_folder_without_images_stops_naming_it_and_where_images_are(bundle, configs, tmp_path):
    """The phantom root (images in ``imagesTr/``) as ``dataset_dir``: a run that wrote nothing used to exit 0."""
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "imagesTr" / "case_000.nii.gz").write_bytes(b"")  # found by name; never read
    (data / "dataset.json").write_text("{}")
    root = tmp_path / bundle
    copy_bundle(bundle, root)
    message = bundle_failure(root, configs + ["demo.json"], dataset_dir=str(data), output_dir=str(tmp_path / "out"))
    assert f"no images in dataset_dir {data}" in message and "imagesTr/ (1 files)" in message, message[-2000:]
    assert f"--dataset_dir {data / 'imagesTr'}" in message, message[-2000:]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("bundle,configs", INFERENCE)
def test_inference_over_an_empty_datalist_stops_saying_so(bundle, configs, tmp_path):
    root = tmp_path / bundle
    copy_bundle(bundle, root)
    message = bundle_failure(root, configs + ["demo.json"], datalist=[], output_dir=str(tmp_path / "out"))
    assert "no images to run on: the datalist is empty" in message, message[-2000:]
