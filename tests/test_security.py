"""Untrusted checkpoints: every load in the project is `weights_only`, and a checkpoint carrying pickled code is
refused without running it, through the package and through a bundle's entry point."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch

from smart_nets.networks.nets import SMARTSwin
from smart_nets.networks.pretrained import load_pretrained_encoder
from tests.helpers import REPO, TINY, run_bundle_failure


def unsafe_loads(source: str, name: str = "<string>") -> list[str]:
    """``name:line`` of every ``torch.load(...)`` call in Python ``source`` without ``weights_only=True``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or node.func.attr != "load":
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id == "torch"):
            continue
        safe = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if not safe:
            found.append(f"{name}:{node.lineno}")
    return found


def test_the_scanner_finds_unsafe_loads():
    code = "import torch\na = torch.load('x')\nb = torch.load('y', weights_only=True)\n"
    code += "c = torch.load('z', weights_only=False)\n"
    assert unsafe_loads(code) == ["<string>:2", "<string>:4"]


def test_every_torch_load_in_the_project_passes_weights_only_true():
    unsafe = []
    for folder in ("smart_nets", "benchmarks", "tests", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            unsafe += unsafe_loads(path.read_text(), str(path.relative_to(REPO)))
    for path in sorted((REPO / "bundles").rglob("*.json")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for call in re.findall(r"torch\.load\([^)]*\)", line):
                if "weights_only=True" not in call:
                    unsafe.append(f"{path.relative_to(REPO)}:{lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


class _Payload:
    """Pickles to a call of ``os.system``: what a hostile checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hostile_checkpoint(path: Path, marker: Path) -> None:
    state = SMARTSwin(**TINY).state_dict()
    state["payload"] = _Payload(marker)
    torch.save(state, path)


def test_a_checkpoint_carrying_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    _hostile_checkpoint(tmp_path / "hostile.pt", marker)
    with pytest.raises(ValueError, match="hostile.pt was refused: it holds Python objects besides tensors"):
        load_pretrained_encoder(SMARTSwin(**TINY), tmp_path / "hostile.pt")
    assert not marker.exists()


def test_a_bundle_refuses_a_hostile_checkpoint_without_running_it(tmp_path, bundle_workspace):
    bundle = bundle_workspace("smart_pretrain", root=tmp_path, phantoms=2) / "smart_pretrain"
    marker = tmp_path / "code_ran"
    _hostile_checkpoint(tmp_path / "hostile.pt", marker)
    proc = run_bundle_failure(
        bundle,
        ["train.json", "demo.json", "cluster.json"],
        dataset_dir=tmp_path / "data",
        cluster_weights=tmp_path / "hostile.pt",
        output_dir=tmp_path / "out",
    )
    assert "hostile.pt" in proc.stderr and "weights_only" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()


def test_a_truncated_checkpoint_is_named_not_a_bare_library_error(tmp_path):
    torch.save(SMARTSwin(**TINY).state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:4000])
    with pytest.raises(ValueError, match="cut.pt is not a readable PyTorch checkpoint"):
        load_pretrained_encoder(SMARTSwin(**TINY), tmp_path / "cut.pt")
