"""The same seed gives the same training losses, iteration for iteration, for every bundle on the CPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import configs, copy_bundle, monai_bundle


@pytest.fixture(scope="module")
def data(bundle_workspace) -> Path:
    # seed 4: both response classes in each list, which smart_response's class weights need
    return bundle_workspace(phantoms=4, val_fraction=0.5, seed=4) / "data"


def _losses(bundle: str, data: Path, tmp: Path, seed: int, tag: str) -> list[str]:
    root = tmp / f"{bundle}_{tag}"
    copy_bundle(bundle, root)
    args = ["run", "--config_file", configs(root, "train.json", "demo.json")]
    args += ["--bundle_root", str(root), "--dataset_dir", str(data)]
    args += ["--max_epochs", "3", "--val_interval", "3", "--seed", str(seed), "--output_dir", str(root / "eval")]
    args += ["--log_every", "1"] if bundle == "smart_pretrain" else ["--pretrained_path", ""]
    log = monai_bundle(args, cwd=tmp)
    lines = [re.sub(r"^.*?Epoch", "Epoch", line) for line in log.splitlines() if re.search(r"Iter: .*loss", line)]
    return [re.sub(r" lr: .*", "", line) for line in lines]


@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_seg", "smart_response"])
def test_same_seed_same_losses(bundle, data, tmp_path):
    first = _losses(bundle, data, tmp_path, 0, "a")
    assert len(first) == 3, first  # one iteration per epoch on two training phantoms
    assert _losses(bundle, data, tmp_path, 0, "b") == first
    if bundle == "smart_pretrain":  # and the seed matters: masks, views and initialisation all follow it
        assert _losses(bundle, data, tmp_path, 1, "c") != first
