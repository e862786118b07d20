"""smart_nets.io, the bottom layer: file hashes, checkpoint reading that names the file, no package imports."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
import torch

import smart_nets.io as smart_io
from smart_nets.io import read_checkpoint, sha256_file


def test_sha256_file_matches_hashlib_across_block_boundaries(tmp_path):
    data = bytes(range(256)) * (2**12 + 7)  # about 1 MiB + 1.75 KiB: more than one read block
    (tmp_path / "blob.bin").write_bytes(data)
    assert sha256_file(tmp_path / "blob.bin") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(str(tmp_path / "empty")) == hashlib.sha256(b"").hexdigest()


def test_read_checkpoint_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt does not exist"):
        read_checkpoint(tmp_path / "nowhere.pt")


def test_read_checkpoint_names_a_truncated_file(tmp_path):
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "full.pt")
    assert torch.equal(read_checkpoint(tmp_path / "full.pt")["w"], torch.zeros(64, 64))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pt is not a readable PyTorch checkpoint: truncated"):
        read_checkpoint(tmp_path / "cut.pt")


def test_io_imports_nothing_from_smart_nets():
    tree = ast.parse(Path(smart_io.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] == "smart_nets"], imported
