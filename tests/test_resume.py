"""kill -9 in the middle of training, then `--resume true`: the run continues from the last checkpoint (losing at
most one checkpoint interval) and its schedules continue, for pretraining, segmentation and outcome prediction; the
best model (`model.pt`) of a finetuning run survives the resume."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from smart_nets.handlers import AtomicCheckpoint, read_score
from tests.helpers import completed_epochs, configs, copy_bundle, monai_bundle, run_bundle, run_bundle_failure


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


@pytest.mark.parametrize("bundle", ["smart_seg", "smart_response"])
def test_resuming_keeps_the_best_model_and_validates_the_restored_network(bundle, data, tmp_path):
    """The validation at the start of a resumed run scores the restored network, not the network as first built,
    and replaces model.pt only when it beats the score model.pt was saved for."""
    root = copy_bundle(bundle, tmp_path / bundle)
    models = tmp_path / "models"
    common = dict(dataset_dir=data, ckpt_dir=models, output_dir=tmp_path / "eval", pretrained_path="", seed=0)
    common.update(batch_size=2, timeout=600)  # smart_response: 3 iterations an epoch, as smart_seg
    if bundle == "smart_response":
        common.update(label_key="recurrence")  # both classes among the 2 validation phantoms: an AUC, not NaN
    # 2 epochs validated after each (not at the start): model.pt is a trained network
    run_bundle(root, ["train.json", "demo.json"], **common, max_epochs=2, val_interval=1, **{NO_START: False})
    before = torch.load(models / "model.pt", weights_only=True)
    last = torch.load(models / "checkpoint.pt", weights_only=True)["network"]
    score = read_score(models / "model.pt")
    assert score and score["epoch"] in (1, 2), score

    log = run_bundle(root, ["train.json", "demo.json"], **common, max_epochs=3, val_interval=100, resume="true")
    assert "resuming: " in log and "holds the best" in log, log[-3000:]
    after = torch.load(models / "model.pt", weights_only=True)
    # the best model as it was, or the restored (epoch 2) network if it scored better; before the fix, the at-start
    # validation scored the untrained network and wrote it here
    same = all(torch.equal(after[k], before[k]) for k in before)
    restored = all(torch.equal(after[k], last[k]) for k in last)
    assert same or restored, "model.pt after resuming is neither the best model nor the restored network"
    assert read_score(models / "model.pt")["value"] >= score["value"]
    assert torch.load(models / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 9


def test_resuming_a_finished_run_stops_and_keeps_its_files(data, tmp_path):
    root = copy_bundle("smart_response", tmp_path / "smart_response")
    models = tmp_path / "models"
    common = dict(dataset_dir=data, ckpt_dir=models, output_dir=tmp_path / "eval", pretrained_path="", batch_size=2)
    run_bundle(root, ["train.json", "demo.json"], **common, max_epochs=1, val_interval=1, timeout=600)
    files = {name: (models / name).read_bytes() for name in ("model.pt", "checkpoint.pt")}
    proc = run_bundle_failure(root, ["train.json", "demo.json"], **common, max_epochs=1, resume="true", timeout=600)
    assert "has completed all 1 epochs of max_epochs 1: nothing is left to resume" in proc.stdout + proc.stderr
    assert files == {name: (models / name).read_bytes() for name in files}


def test_a_best_model_file_records_its_score_and_a_resumed_run_replaces_it_only_with_a_better_one(tmp_path):
    path = tmp_path / "model.pt"
    net = torch.nn.Linear(2, 2)

    def validate(tracker: AtomicCheckpoint, value: float) -> None:
        engine = Engine(lambda e, b: None)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.state.metrics.update(val_auc=value))
        tracker.attach(engine)
        engine.run([0], max_epochs=1)

    def tracker(resume: bool) -> AtomicCheckpoint:
        return AtomicCheckpoint({"model": net}, str(path), unwrap_single=True, key_metric="val_auc", resume=resume)

    validate(tracker(False), 0.8)
    assert read_score(path) == {"metric": "val_auc", "value": 0.8, "epoch": 1}
    torch.nn.Linear(2, 2).load_state_dict(torch.load(path, weights_only=True))  # still a plain state dict
    saved = path.read_bytes()
    validate(tracker(True), 0.7)  # a resumed run: worse than the file's score, the file stays
    assert path.read_bytes() == saved
    validate(tracker(True), 0.9)
    assert read_score(path)["value"] == 0.9
    validate(tracker(False), 0.5)  # a new run starts afresh
    assert read_score(path)["value"] == 0.5
    path.write_bytes(path.read_bytes()[:100])  # an unreadable best-model file is replaced, not a reason to stop
    validate(tracker(True), 0.1)
    assert read_score(path)["value"] == 0.1


NO_START = "train#handlers#0#exec_at_start"  # the ValidationHandler's validation at the start
