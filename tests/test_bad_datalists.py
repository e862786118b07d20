"""Broken datalists through every bundle's training entry point (`monai.bundle run`, the function the command line
calls): each stops before training, naming the datalist and what is wrong."""

from __future__ import annotations

import json

import pytest

from tests.helpers import bundle_failure, copy_bundle

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
