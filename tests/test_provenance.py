"""smart_nets.provenance: what a weights file was trained on travels inside it and reaches every output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from smart_nets import provenance
from smart_nets.handlers import AtomicCheckpoint, CheckedCheckpointLoader

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "smart_seg"


def _datalist(tmp_path, n: int = 3, **extra) -> str:
    path = tmp_path / "dataset.json"
    items = [{"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"} for i in range(n)]
    path.write_text(json.dumps({"name": "some CTs", "training": items, "validation": items[:1], **extra}))
    return str(path)


def test_the_record_names_the_bundle_the_data_and_whether_it_was_synthetic(tmp_path):
    record = provenance.training_record(_datalist(tmp_path, synthetic=True), BUNDLE)
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert (record["bundle"], record["bundle_version"]) == (meta["name"], meta["version"])
    assert (record["num_cases"], record["synthetic"], record["data_name"]) == (3, True, "some CTs")
    unmarked = provenance.training_record(_datalist(tmp_path), BUNDLE)
    assert unmarked["synthetic"] is False and "not marked synthetic" in provenance.describe(unmarked)
    # the items the run really trains on (MONAI Label's) are counted, even without a datalist file
    given = provenance.training_record(tmp_path / "none.json", BUNDLE, items=[{}] * 5, synthetic=True)
    assert given["num_cases"] == 5 and given["synthetic"] is True
    with pytest.raises(FileNotFoundError, match="none.json"):
        provenance.training_record(tmp_path / "none.json", BUNDLE)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        provenance.training_record(tmp_path / "bad.json", BUNDLE)


def test_the_record_survives_weights_only_loading_and_the_file_stays_a_plain_state_dict(tmp_path):
    net = torch.nn.Linear(3, 2)
    record = {"bundle": "b", "bundle_version": "1", "num_cases": 4, "synthetic": True, "data_name": "phantoms"}
    torch.save(provenance.attach(net.state_dict(), record), tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.nn.Linear(3, 2).load_state_dict(loaded)  # strict: no extra key in the weights
    assert provenance.read(loaded) == record == provenance.from_file(tmp_path / "model.pt")
    assert provenance.read({"model": loaded}) == record  # a {"model": ...} checkpoint
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    assert provenance.from_file(tmp_path / "plain.pt") is None
    assert provenance.describe(None).startswith("unknown")
    assert provenance.from_file(tmp_path / "missing.pt", missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        provenance.from_file(tmp_path / "missing.pt")
    # a plain dict (not from state_dict()) gets the metadata too
    assert provenance.read(provenance.attach({"w": torch.zeros(1)}, record)) == record


def test_synthetic_ancestry_is_said_first_and_in_every_form():
    real = {"bundle": "smart_seg", "bundle_version": "1", "num_cases": 9, "synthetic": False, "data_name": "NSCLC"}
    pretrained_on_phantoms = {"bundle": "smart_pretrain", "synthetic": True, "num_cases": 16}
    child = dict(real, pretrained=pretrained_on_phantoms)
    assert not provenance.is_synthetic(real) and provenance.is_synthetic(child)
    text = provenance.describe(child)
    assert text.startswith(provenance.SYNTHETIC_WARNING) and "9 cases of NSCLC" in text and "smart_pretrain" in text
    assert not provenance.describe(real).startswith(provenance.SYNTHETIC_WARNING)
    long = "SMART smart_seg tumour segmentation of the lungs and mediastinum"
    shortened = provenance.series_description(long + " and more", child)  # DICOM's LO: 64 characters at most
    assert len(shortened) == 64 and shortened.endswith(" [SYNTHETIC-TRAINED]")
    assert (
        provenance.series_description("SMART smart_seg tumour", child) == "SMART smart_seg tumour [SYNTHETIC-TRAINED]"
    )
    assert provenance.series_description("SMART smart_seg tumour", real) == "SMART smart_seg tumour"


def test_the_checkpoint_handler_saves_the_record_and_the_loader_warns_of_synthetic_weights(tmp_path, caplog):
    net = torch.nn.Linear(3, 2)
    record = {"bundle": "b", "num_cases": 2, "synthetic": True}
    engine = Engine(lambda e, b: None)
    AtomicCheckpoint({"model": net}, str(tmp_path / "model.pt"), unwrap_single=True, provenance=record)(engine)
    AtomicCheckpoint(
        {"network": net, "opt": torch.optim.SGD(net.parameters(), 0.1)}, str(tmp_path / "ck.pt"), provenance=record
    )(engine)
    assert provenance.from_file(tmp_path / "model.pt") == record
    assert provenance.read(torch.load(tmp_path / "ck.pt", weights_only=True)["network"]) == record
    loader = CheckedCheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": torch.nn.Linear(3, 2)})
    with caplog.at_level(logging.INFO, logger="smart_nets.provenance"):
        loader(engine)
    assert loader.provenance == record
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "SYNTHETIC" in r.getMessage()]
    assert warned and "model.pt" in warned[0].getMessage()


def test_a_file_weights_only_loading_refuses_is_named(tmp_path):
    """Inference configs read the record while they are parsed: a file that is not plain weights stops there with
    the file's name and the reason, as the checkpoint loader would."""
    torch.save({"w": torch.zeros(1), "obj": _NotWeights()}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="model.pt was refused"):
        provenance.from_file(tmp_path / "model.pt")


class _NotWeights:
    """Any Python object besides tensors: ``weights_only`` loading refuses it."""
