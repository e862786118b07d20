"""kill -9 in the middle of training, then `--resume true`: the run continues from the last checkpoint (losing at
most one checkpoint interval) and its schedules continue, for pretraining, segmentation and outcome prediction."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import completed_epochs, configs, copy_bundle, monai_bundle


@pytest.fixture(scope="module")
def data(bundle_workspace) -> Path:
    return bundle_workspace(phantoms=8, val_fraction=0.25, seed=0) / "data"


@pytest.mark.parametrize("bundle", ["smart_pretrain", "smart_seg", "smart_response"])
def test_kill_9_mid_epoch_then_resume_continues_from_the_last_checkpoint(bundle, data, tmp_path):
    root = tmp_path / bundle
    copy_bundle(bundle, root)
    models = tmp_path / "models"
    args = ["run", "--config_file", configs(root, "train.json", "demo.json")]
    args += ["--bundle_root", str(root), "--dataset_dir", str(data), "--output_dir", str(tmp_path / "eval")]
    args += ["--ckpt_dir", str(models), "--max_epochs", "6", "--save_interval", "1", "--seed", "0"]
    args += ["--log_every", "1"] if bundle == "smart_pretrain" else ["--pretrained_path", "", "--val_interval", "100"]
    args += ["--batch_size", "2"] if bundle == "smart_response" else []  # 3 iterations an epoch, as the others
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while completed_epochs(models / "checkpoint.pt") < 2:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 4 minutes"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    saved = completed_epochs(models / "checkpoint.pt")
    assert 2 <= saved < 6, saved

    log = monai_bundle(args + ["--resume", "true"], cwd=tmp_path)
    assert f"Restored all variables from {models / 'checkpoint.pt'}" in log, log[-3000:]
    epochs = [int(e) for e in re.findall(r"Epoch: (\d+)/6, Iter", log)]
    assert epochs and epochs[0] == saved + 1 and epochs[-1] == 6, epochs  # nothing redone, nothing skipped
    final = torch.load(models / "checkpoint.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 18  # 6 epochs of 3 iterations (6 training phantoms, batch 2)
    if bundle == "smart_pretrain":  # the schedules follow the global iteration: a fresh start logs lr 0.0000
        rates = [float(v) for v in re.findall(r"Epoch: \d+/6, Iter: .*? lr: ([0-9.e-]+)", log)]
        assert rates and rates[0] > 0, rates  # (warm-up from 0), a resumed one the warmed-up rate
    else:  # the per-iteration warm-up/cosine schedule and AdamW's moments continue (fresh ones: 18 - 3 * saved)
        assert final["lr_scheduler"]["last_epoch"] == 18, final["lr_scheduler"]
        assert max(int(s["step"]) for s in final["optimizer"]["state"].values()) == 18
