"""Shared fixtures: tiny SMARTSwin configs (DEVELOPERS.md: embed 12-24, depths 1-2 per stage)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from smart_nets.networks.nets import SMARTSwin

TINY = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6), drop_path_rate=0.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_swin() -> SMARTSwin:
    """A ~0.6M-parameter SMARTSwin in eval mode."""
    return SMARTSwin(**TINY).eval()


REPO = Path(__file__).resolve().parents[1]
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


def demo_network(bundle: str) -> torch.nn.Module:
    """The ``network_def`` of a bundle with its ``configs/demo.json`` sizes (``train.json``'s for smart_pretrain,
    ``inference.json``'s otherwise), freshly initialised, in eval mode."""
    configs = REPO / "bundles" / bundle / "configs"
    base = "train.json" if bundle == "smart_pretrain" else "inference.json"
    parser = ConfigParser()
    parser.read_config([str(configs / base), str(configs / "demo.json")])
    return parser.get_parsed_content("network_def").eval()


def export_demo_onnx(bundle_dir: Path, filepath: str = "models/model.onnx", ckpt_file: str = "models/model.pt") -> str:
    """``python -m monai.bundle onnx_export`` in ``bundle_dir`` with its ``configs/onnx_export.json`` and the demo's
    64^3 network, as the bundle READMEs spell it."""
    return run_bundle(
        ["onnx_export", "--args_file", "configs/onnx_export.json", "--filepath", filepath]
        + ["--ckpt_file", ckpt_file, "--meta_file", "configs/metadata.json"]
        + ["--config_file", "['configs/inference.json','configs/demo.json']", "--input_shape", "[1, 1, 64, 64, 64]"],
        cwd=bundle_dir,
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
