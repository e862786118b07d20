"""Atomic writes: fsync before the rename, nothing half-written under a final name, even under kill -9."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time

import pytest
import torch

import smart_nets.io as smart_io
from smart_nets.io import atomic_path


def test_atomic_path_fsyncs_the_file_and_its_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = smart_io.os.fsync
    monkeypatch.setattr(smart_io.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("new")
        assert not (tmp_path / "out.txt").exists()
    assert (tmp_path / "out.txt").read_text() == "new" and len(synced) == 2


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    (tmp_path / "out.txt").write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert (tmp_path / "out.txt").read_text() == "previous" and sorted(tmp_path.iterdir()) == [tmp_path / "out.txt"]


WRITER = """
import sys, torch
from smart_nets.handlers.checkpoint import atomic_torch_save
i = 0
while True:  # checkpoints of ~64 MB, one after another, until killed
    atomic_torch_save({"step": i, "weights": torch.full((16, 1024, 1024), float(i))}, sys.argv[1])
    i += 1
    print(i, flush=True)
"""


def test_kill_9_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    path = tmp_path / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):  # two complete checkpoints, then kill during a later write
            assert proc.stdout.readline(), "the writer died on its own"
        time.sleep(0.15)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    state = torch.load(path, weights_only=True)
    assert state["step"] >= 1 and bool((state["weights"] == state["step"]).all())
    assert all(p.name == "checkpoint.pt" or p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def _final_masks(folder) -> list:
    """Masks under their final names (pathlib's ``*`` also matches the writer's hidden ``.tmp-*`` files)."""
    return sorted(p for p in folder.glob("*_seg.nii.gz") if not p.name.startswith("."))


def test_kill_9_during_segmentation_inference_leaves_only_complete_masks(tmp_path, bundle_workspace):
    """The real entry point (``python -m monai.bundle run``) over 16 volumes, killed once the first masks exist:
    every file under a final ``*_seg.nii.gz`` name is a complete mask of its input's shape."""
    import shutil

    import nibabel as nib

    from tests.helpers import demo_network

    bundle = bundle_workspace("smart_seg", root=tmp_path, phantoms=2) / "smart_seg"
    source = tmp_path / "data" / "imagesTr" / "phantom_000.nii.gz"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(16):
        shutil.copy(source, inputs / f"case_{i:02d}.nii.gz")
    torch.save(demo_network("smart_seg").state_dict(), bundle / "models" / "model.pt")
    out = tmp_path / "masks"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
    command += ["['configs/inference.json','configs/demo.json']", "--dataset_dir", str(inputs)]
    command += ["--output_dir", str(out)]
    proc = subprocess.Popen(command, cwd=bundle, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and len(_final_masks(out)) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "inference ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    masks = _final_masks(out)
    assert 2 <= len(masks) < 16, f"killed after {len(masks)} of 16 masks: not mid-run"
    for mask in masks:
        assert nib.load(mask).get_fdata().shape == (64, 64, 32), mask
    kept = ("_seg.nii.gz", "measurements.csv")
    assert all(p.name.endswith(kept) or p.name.startswith(".tmp-") for p in out.iterdir())
    if (out / "measurements.csv").exists():  # rewritten atomically after each case: whole rows of finished cases
        rows = list(csv.reader((out / "measurements.csv").open()))
        assert all(len(r) == len(rows[0]) == 6 for r in rows) and len(masks) - 1 <= len(rows) - 1 <= len(masks), rows
        assert rows[0][-1] == "model_trained_on" and all(r[-1].startswith("unknown") for r in rows[1:])  # no record
