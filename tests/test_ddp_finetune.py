"""Multi-GPU finetuning: smart_seg and smart_response under `torchrun` (gloo, CPU, one process) train past the
second iteration (DistributedDataParallel without find_unused_parameters), resume, and write a model.pt that the
bundle's own loader reads."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
from ignite.engine import Engine

from smart_nets.handlers import CheckedCheckpointLoader
from smart_nets.networks.nets import SMARTUNETR, SMARTClassifier, smart_swin
from tests.helpers import configs, demo_network, run_command


@pytest.mark.parametrize(
    "build",
    [
        lambda: SMARTUNETR(smart_swin("demo"), out_channels=2),
        lambda: SMARTClassifier(smart_swin("demo")),
        lambda: SMARTClassifier(smart_swin("demo"), freeze_encoder=True),
    ],
    ids=["SMARTUNETR", "SMARTClassifier", "SMARTClassifier-linear-probe"],
)
def test_every_parameter_that_wants_a_gradient_gets_one(build):
    """DDP waits for a gradient for every parameter with requires_grad; one that never gets one stops training."""
    net = build()
    net(torch.rand(1, 1, 64, 64, 64)).float().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("bundle", ["smart_seg", "smart_response"])
def test_torchrun_trains_resumes_and_writes_a_loadable_model(bundle, tmp_path, bundle_workspace):
    root = bundle_workspace(bundle, root=tmp_path, phantoms=4, val_fraction=0.25, seed=0)
    override = tmp_path / "ddp.json"
    override.write_text(json.dumps({"backend": "gloo", "batch_size": 1, "pretrained_path": "", "val_interval": 1}))
    models = tmp_path / "models"

    def torchrun(*extra: str) -> str:
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
        args += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
        args += ["-m", "monai.bundle", "run"]
        args += ["--config_file", configs(root / bundle, "train.json", "multi_gpu_train.json", "demo.json", override)]
        args += ["--bundle_root", str(root / bundle), "--dataset_dir", str(root / "data"), "--ckpt_dir", str(models)]
        return run_command(args + list(extra), tmp_path, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))

    torchrun("--max_epochs", "1")  # 3 training phantoms, batch 1: 3 iterations
    assert torch.load(models / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 3
    log = torchrun("--max_epochs", "2", "--resume", "true")
    assert "Restored all variables from" in log and "Engine run resuming from iteration 3, epoch 1" in log, log[-3000:]
    assert torch.load(models / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 6
    # model.pt holds the network, not its DDP wrapper ("module." names), as inference and evaluate load it
    CheckedCheckpointLoader(load_path=str(models / "model.pt"), load_dict={"model": demo_network(bundle)})(
        Engine(lambda engine, batch: None)
    )
