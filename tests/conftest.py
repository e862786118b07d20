"""Shared fixtures: tiny SMARTSwin configs (DEVELOPERS.md: embed 12-24, depths 1-2 per stage)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smart_nets.networks.nets import SMARTSwin

TINY = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6), drop_path_rate=0.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_swin() -> SMARTSwin:
    """A ~0.6M-parameter SMARTSwin in eval mode."""
    return SMARTSwin(**TINY).eval()


SCHEMA = Path(__file__).parent / "fixtures" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"


def run_bundle(args: list[str], cwd: Path) -> str:
    """``python -m monai.bundle <args>`` in ``cwd``; returns its output, or fails showing the end of it."""
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def verify_bundle(bundle: Path, tmp_path: Path) -> None:
    """The model zoo's checks: ``verify_metadata`` against the schema fixture, ``verify_net_in_out`` on
    ``configs/inference.json``."""
    schema = tmp_path / SCHEMA.name
    shutil.copy(SCHEMA, schema)
    run_bundle(
        [
            "verify_metadata",
            "--meta_file",
            "configs/metadata.json",
            "--filepath",
            str(schema),
            "--hash_val",
            SCHEMA_MD5,
        ],
        cwd=bundle,
    )
    run_bundle(
        ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json"]
        + ["--config_file", "configs/inference.json", "--device", "cpu"],
        cwd=bundle,
    )


def completed_epochs(checkpoint: Path) -> int:
    """Epochs a training checkpoint has completed (ignite keeps the iteration and the epoch length); 0 before the
    first one is written."""
    try:
        trainer = torch.load(checkpoint, weights_only=True)["trainer"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


def error_chain(error: BaseException | None) -> list[str]:
    """The messages of ``error`` and its causes: MONAI's ``Compose`` wraps a transform's error in its own."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return messages
