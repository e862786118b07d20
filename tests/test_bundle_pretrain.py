"""The smart_pretrain bundle through MONAI's real entry points: metadata, network I/O, demo run, resume, torchrun."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from smart_nets.networks.nets import smart_swin
from tests.helpers import REPO, configs, run_bundle, run_together, verify_bundle

BUNDLE = REPO / "bundles" / "smart_pretrain"


@pytest.fixture(scope="module")
def bundle(bundle_workspace) -> Path:
    """A copy of the bundle (outputs land there, not in the repository) and 5 small phantoms."""
    return bundle_workspace("smart_pretrain", phantoms=5, val_fraction=0.2)


def test_metadata_and_network_io_verify(tmp_path):
    verify_bundle(BUNDLE, tmp_path)


def test_demo_run_writes_checkpoint_and_encoder_then_resumes(bundle):
    common = dict(bundle=bundle / "smart_pretrain", configs=["train.json", "demo.json"], dataset_dir=bundle / "data")
    run_bundle(**common, max_epochs=2, timeout=600)
    models = bundle / "smart_pretrain" / "models"
    checkpoint = torch.load(models / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == {"trainer", "network", "teacher", "loss", "optimizer"}
    assert checkpoint["trainer"]["iteration"] == 4  # 4 training phantoms, batch 2, 2 epochs
    encoder = smart_swin("demo")
    state = torch.load(models / "model.pt", weights_only=True)
    encoder.load_state_dict(state)  # strict: every tensor matches
    teacher_encoder = {k[len("encoder.") :]: v for k, v in checkpoint["teacher"].items() if k.startswith("encoder.")}
    assert all(torch.equal(state[k], teacher_encoder[k]) for k in state)

    log = run_bundle(**common, max_epochs=3, resume="true", timeout=600)
    assert "Restored all variables from" in log
    assert torch.load(models / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 6


def test_torchrun_two_nodes_gloo_keep_identical_students_one_collapse_log_and_share_a_disk_cache(bundle, tmp_path):
    override = tmp_path / "test_ddp.json"
    save = "$torch.save(smart_nets.engines.unwrap(@network).state_dict(), @bundle_root + f'/rank{dist.get_rank()}.pt')"
    override.write_text(
        "{"
        '"backend": "gloo", "batch_size": 1, "max_epochs": 1, "log_every": 1, "cache": "disk",'
        f'"finalize": ["{save}", "$dist.destroy_process_group()"]'
        "}"
    )
    env_root = bundle / "smart_pretrain"
    config_files = configs(env_root, "train.json", "multi_gpu_train.json", "demo.json", override)
    # two "nodes" of one process each over loopback: the multi-node launch of the docs (global rank 1 has
    # LOCAL_RANK 0, so rank-0-only work must follow the global rank)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    launch += ["--master_addr", "127.0.0.1", "--master_port", "29517"]
    args = ["-m", "monai.bundle", "run", "--config_file", config_files, "--bundle_root", str(env_root)]
    args += ["--dataset_dir", str(bundle / "data")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the collapse monitor all-reduces its window on both ranks (a rank without it would hang) and logs on rank 0 only
    log = run_together(
        [launch + ["--node_rank", str(node)] + args for node in (0, 1)], cwd=bundle, timeout=600, env=env
    )
    assert log.count("collapse monitor, iteration 1:") == 1 and log.count("collapse monitor, iteration 2:") == 1, log
    # both ranks preprocessed their half of the 4 training phantoms into the one shared disk cache
    assert len(list((env_root / "cache").glob("*.pt"))) == 4
    rank0 = torch.load(env_root / "rank0.pt", weights_only=True)
    rank1 = torch.load(env_root / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    initial = smart_swin("demo").state_dict()
    assert not torch.equal(
        rank0["encoder.patch_embed.weight"].shape and rank0["encoder.patch_embed.weight"], initial["patch_embed.weight"]
    )


def test_mlflow_tracking_logs_the_loss_to_a_local_store(bundle):
    mlflow = pytest.importorskip("mlflow", reason="install the [tracking] extra (mlflow-skinny, sqlalchemy, alembic)")
    root = bundle / "smart_pretrain"
    run_bundle(
        root,
        ["train.json", "demo.json"],
        dataset_dir=bundle / "data",
        max_epochs=1,
        tracking="mlflow",
        output_dir=root / "tracked",
        timeout=600,
    )
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{root / 'tracked' / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("monai_experiment").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == 2 and all(h.value > 0 for h in history)  # 2 iterations
