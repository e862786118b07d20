"""Encoder presets defined once, and model files that say which encoder they hold."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser

from smart_nets import provenance
from smart_nets.handlers import CheckedCheckpointLoader
from smart_nets.networks.nets import ENCODER_PRESETS, SMARTUNETR, SMARTSwin, smart_swin
from smart_nets.networks.pretrained import load_pretrained_encoder
from tests.helpers import REPO, TINY

BUNDLES = ("smart_pretrain", "smart_seg", "smart_response")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_preset_builds_the_encoder_its_fields_describe_and_fields_override_it():
    torch.manual_seed(0)
    named = smart_swin("demo")
    torch.manual_seed(0)
    assert _same_weights(named, SMARTSwin(**ENCODER_PRESETS["demo"]))  # same weights at the same seed
    assert smart_swin("demo", feature_size=24).arch["feature_size"] == 24
    assert smart_swin().arch["depths"] == [2, 2, 8, 2]  # "paper" by default
    with pytest.raises(ValueError, match="unknown SMARTSwin preset 'tiny'.*'demo', 'paper'"):
        smart_swin("tiny")


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_every_config_names_the_paper_preset_and_demo_json_the_demo_one(bundle, config):
    """The architecture is written once, in code: the configs name a preset and no sizes."""
    configs = REPO / "bundles" / bundle / "configs"
    encoder = json.loads((configs / config).read_text())["encoder_def"]
    assert encoder["preset"] == "paper" and not {"feature_size", "depths", "num_heads"} & set(encoder)
    for overrides, preset in (([], "paper"), (["demo.json"], "demo")):
        parser = ConfigParser()
        parser.read_config([str(configs / config)] + [str(configs / f) for f in overrides])
        built = parser.get_parsed_content("encoder_def")
        assert provenance.describe_arch(built.arch) == f"SMARTSwin preset {preset!r}", (bundle, config, overrides)


def _demo_weights_with_record(path) -> dict:
    encoder = smart_swin("demo")
    record = {"bundle": "SMART CT pretraining", "num_cases": 4, "synthetic": True, "encoder": dict(encoder.arch)}
    torch.save(provenance.attach(encoder.state_dict(), record), path)
    return record


def test_loading_weights_into_another_encoder_names_the_file_and_both_encoders(tmp_path):
    _demo_weights_with_record(tmp_path / "model.pt")
    load_pretrained_encoder(smart_swin("demo"), tmp_path / "model.pt")  # the same encoder loads
    wider = smart_swin("demo", feature_size=24)
    with pytest.raises(
        ValueError, match=r"model.pt holds the weights of a SMARTSwin preset 'demo'.*feature_size 12 vs 24"
    ):
        load_pretrained_encoder(wider, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"SMARTSwin preset 'demo', but this config builds a SMARTSwin preset 'paper'"):
        SMARTUNETR(smart_swin("paper"), out_channels=2, pretrained=str(tmp_path / "model.pt"))
    # inference: the checkpoint loader compares before loading, for the encoder itself or a network around it
    for network in (wider, SMARTUNETR(wider, out_channels=2)):
        loader = CheckedCheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": network})
        with pytest.raises(ValueError, match="feature_size 12 vs 24"):
            loader(Engine(lambda e, b: None))
    # a file without a record still loads by its tensors' names and shapes, as before
    torch.save(SMARTSwin(**TINY).state_dict(), tmp_path / "plain.pt")
    assert load_pretrained_encoder(smart_swin("demo"), tmp_path / "plain.pt")["matched"]


def test_the_record_keeps_the_encoder_and_a_resumable_checkpoint_keeps_it_too(tmp_path):
    record = _demo_weights_with_record(tmp_path / "model.pt")
    assert provenance.from_file(tmp_path / "model.pt")["encoder"] == record["encoder"]
    net = torch.nn.Linear(2, 2)
    torch.save({"network": provenance.attach(net.state_dict(), record), "optimizer": {}}, tmp_path / "ck.pt")
    assert provenance.from_file(tmp_path / "ck.pt") == record


def _targets(node):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_no_config_target_is_also_the_name_of_a_module(bundle):
    """A ``_target_`` whose dotted path is also a module (``smart_nets.networks.nets.smart_swin`` was the function
    re-exported by the package and the module ``smart_swin.py``) is located as that module by Python 3.12's
    ``pydoc.locate``, which MONAI uses: every bundle failed to build its network there, and not on 3.11."""
    import importlib.util

    configs = sorted((REPO / "bundles" / bundle / "configs").glob("*.json"))
    targets = {t for c in configs for t in _targets(json.loads(c.read_text())) if "." in t}
    assert targets, f"no dotted _target_ in {bundle}'s configs"
    for target in sorted(targets):
        try:
            spec = importlib.util.find_spec(target)
        except ModuleNotFoundError:  # a parent is not a package: the name is an attribute
            spec = None
        assert spec is None, f"{bundle}: _target_ {target!r} is also a module ({spec.origin}): name the object's module"
