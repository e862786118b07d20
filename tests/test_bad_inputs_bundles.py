"""The bad-input corpus through every bundle's train, evaluate and inference entry points (``monai.bundle run``, the
function the command line calls, in-process): each case stops naming the file and what is wrong, and what the
bundle wrote earlier (models, predictions) is intact. ``test_bad_inputs.py`` runs the same corpus through the
segmentation inference, with the command-line check and the inputs that deserve to work."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from smart_nets.data import load_datalist
from tests.helpers import BAD_IMAGE_CASES, bad_image_corpus, bundle_failure, demo_network

EARLIER = b"written by an earlier run"


@pytest.fixture(scope="module")
def env(bundle_workspace):
    root = bundle_workspace("smart_pretrain", "smart_seg", "smart_response", phantoms=2)
    dataset = root / "data" / "dataset.json"
    keys = ["image", "label", "organs"]
    items = load_datalist(str(dataset), "training", None, keys) + load_datalist(str(dataset), "validation", None, keys)
    label = nib.load(items[0]["label"])
    mask = np.asanyarray(label.dataobj)
    labels = root / "labels"
    labels.mkdir()
    beyond = mask.copy()
    beyond[0, 0, :2] = 3
    nib.save(nib.Nifti1Image(beyond, label.affine), labels / "beyond.nii.gz")
    nib.save(nib.Nifti1Image(mask[:, :, :20], label.affine), labels / "short.nii.gz")
    return {
        "root": root,
        "items": items,
        "meta": json.loads(dataset.read_text()),
        "corpus": bad_image_corpus(root / "corpus", Path(items[0]["image"])),
        "labels": {
            "label beyond the classes": (labels / "beyond.nii.gz", "label values [3] outside the classes 0..1"),
            "label shape differs from its image": (labels / "short.nii.gz", "but label"),
        },
    }


def _datalist(env, tmp_path, **replace) -> Path:
    """A datalist whose first training and only validation item is the phantom with ``replace`` applied."""
    bad = dict(env["items"][0], **{k: str(v) for k, v in replace.items()})
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(dict(env["meta"], training=[bad, env["items"][1]], validation=[bad])))
    return path


def _dirs(tmp_path) -> dict[str, str]:
    """Model and output folders that already hold a file of an earlier run."""
    out = {}
    for name, file in (("ckpt_dir", "model.pt"), ("output_dir", "earlier_output.csv")):
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_bytes(EARLIER)
        out[name] = str(tmp_path / name)
    return out


def _run(env, bundle: str, configs: list[str], **overrides) -> str:
    """Run the bundle; returns the whole error chain of the failure (fails the test when it succeeds)."""
    overrides.setdefault("pretrained_path", "")  # demo.json points at the demo's pretraining output
    return bundle_failure(env["root"] / bundle, configs, **overrides)


def _save_demo_model(bundle: str, ckpt_dir: Path) -> None:
    """The weights inference.json loads: the network's (smart_pretrain: the encoder's, as training writes them)."""
    network = demo_network(bundle)
    state = network.encoder.state_dict() if bundle == "smart_pretrain" else network.state_dict()
    torch.save(state, ckpt_dir / "model.pt")


def _inference(bundle: str) -> tuple[list[str], dict]:
    """Inference configs with the demo's sizes (every demo.json overrides ``encoder_def`` and top-level keys only,
    so it fits every config of its bundle)."""
    return ["inference.json", "demo.json"], {}


def _assert_earlier_outputs_intact(dirs: dict[str, str]) -> None:
    for folder in dirs.values():
        for path in Path(folder).iterdir():
            assert path.name in ("model.pt", "earlier_output.csv"), f"{path} written by a failed run"
            assert path.read_bytes() == EARLIER, f"{path} changed by a failed run"


TRAIN = {
    "smart_pretrain": ["train.json", "demo.json"],
    "smart_seg": ["train.json", "demo.json"],
    "smart_response": ["train.json", "demo.json"],
}


@pytest.mark.parametrize("case", BAD_IMAGE_CASES)
@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_response", "smart_seg"])
def test_training_stops_on_a_bad_image_naming_it(env, tmp_path, bundle, case):
    path, problem = env["corpus"][case]
    dirs = _dirs(tmp_path)
    message = _run(env, bundle, TRAIN[bundle], datalist=str(_datalist(env, tmp_path, image=path)), max_epochs=1, **dirs)
    assert str(path) in message and problem in message, message[-2000:]
    _assert_earlier_outputs_intact(dirs)


@pytest.mark.parametrize("case", BAD_IMAGE_CASES)
@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_response"])
def test_inference_stops_on_a_bad_image_naming_it(env, tmp_path, bundle, case):
    path, problem = env["corpus"][case]
    dirs = _dirs(tmp_path)
    _save_demo_model(bundle, Path(dirs["ckpt_dir"]))
    configs, sizes = _inference(bundle)
    message = _run(env, bundle, configs, datalist=[str(path)], **sizes, **dirs)
    assert str(path) in message and problem in message, message[-2000:]
    assert sorted(p.name for p in Path(dirs["output_dir"]).iterdir()) == ["earlier_output.csv"]


@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_seg", "smart_response"])
def test_inference_of_a_missing_file_names_it(env, tmp_path, bundle):
    dirs = _dirs(tmp_path)
    _save_demo_model(bundle, Path(dirs["ckpt_dir"]))
    missing = tmp_path / "moved_away.nii.gz"
    configs, sizes = _inference(bundle)
    message = _run(env, bundle, configs, datalist=[str(missing)], **sizes, **dirs)
    assert str(missing) in message and "cannot read image" in message and "No such file" in message, message[-2000:]
    assert sorted(p.name for p in Path(dirs["output_dir"]).iterdir()) == ["earlier_output.csv"]


LABELLED = {
    ("smart_seg", "train"): ["train.json", "demo.json"],
    ("smart_seg", "evaluate"): ["train.json", "demo.json", "evaluate.json"],
    ("smart_response", "train"): ["train.json", "demo.json"],
    ("smart_response", "evaluate"): ["train.json", "demo.json", "evaluate.json"],
}


@pytest.mark.parametrize("case", ["label beyond the classes", "label shape differs from its image"])
@pytest.mark.parametrize("bundle,entry", list(LABELLED))
def test_a_bad_label_stops_training_and_evaluation_naming_it(env, tmp_path, bundle, entry, case):
    path, problem = env["labels"][case]
    dirs = _dirs(tmp_path)
    if entry == "evaluate":  # a model to evaluate, which must survive
        torch.save(demo_network(bundle).state_dict(), Path(dirs["ckpt_dir"]) / "model.pt")
    extra = {"input_region": "tumour"} if bundle == "smart_response" else {}
    datalist = str(_datalist(env, tmp_path, label=path))
    message = _run(env, bundle, LABELLED[bundle, entry], datalist=datalist, max_epochs=1, **extra, **dirs)
    assert str(path) in message and problem in message, message[-2000:]
    if entry == "train":
        _assert_earlier_outputs_intact(dirs)
    assert (Path(dirs["output_dir"]) / "earlier_output.csv").read_bytes() == EARLIER


CHECKPOINT_ENTRIES = [
    ("smart_seg", "inference"),
    ("smart_seg", "evaluate"),
    ("smart_response", "inference"),
    ("smart_response", "evaluate"),
    ("smart_pretrain", "inference"),
]
OTHER_ARCHITECTURE = {"smart_seg": "smart_response", "smart_response": "smart_seg", "smart_pretrain": "smart_seg"}


@pytest.mark.parametrize("case", ["checkpoint of another architecture", "truncated checkpoint"])
@pytest.mark.parametrize("bundle,entry", CHECKPOINT_ENTRIES)
def test_a_bad_checkpoint_stops_naming_it(env, tmp_path, bundle, entry, case):
    dirs = _dirs(tmp_path)
    model = Path(dirs["ckpt_dir"]) / "model.pt"
    torch.save(demo_network(OTHER_ARCHITECTURE[bundle]).state_dict(), model)
    problem = "does not fit model"
    if case == "truncated checkpoint":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        problem = "is not a readable PyTorch checkpoint: truncated"
    before = model.read_bytes()
    if entry == "evaluate":
        configs, sizes, datalist = LABELLED[bundle, entry], {}, str(_datalist(env, tmp_path))
    else:
        (configs, sizes), datalist = _inference(bundle), [env["items"][0]["image"]]
    message = _run(env, bundle, configs, datalist=datalist, **sizes, **dirs)
    assert str(model) in message and problem in message, message[-2000:]
    assert model.read_bytes() == before
    assert sorted(p.name for p in Path(dirs["output_dir"]).iterdir()) == ["earlier_output.csv"]


@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_seg", "smart_response"])
def test_resuming_from_a_truncated_checkpoint_stops_naming_it(env, tmp_path, bundle):
    dirs = _dirs(tmp_path)
    checkpoint = Path(dirs["ckpt_dir"]) / "checkpoint.pt"
    checkpoint.write_bytes(b"PK\x03\x04 the first bytes of a zip, cut off")
    message = _run(
        env,
        bundle,
        TRAIN[bundle],
        datalist=str(_datalist(env, tmp_path)),
        max_epochs=1,
        resume=True,
        **({"label_key": "recurrence"} if bundle == "smart_response" else {}),  # both classes in the 2 phantoms
        **dirs,
    )
    assert str(checkpoint) in message and "is not a readable PyTorch checkpoint" in message, message[-2000:]
    assert checkpoint.read_bytes().startswith(b"PK\x03\x04 the first")
