"""Atomic writes: fsync before the rename, nothing half-written under a final name, even under kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

import smart_nets.data.writers as writers
from smart_nets.data.writers import atomic_path


def test_atomic_path_fsyncs_the_file_and_its_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = writers.os.fsync
    monkeypatch.setattr(writers.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
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
