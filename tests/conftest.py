"""Shared fixtures; the plain helpers the tests share are in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smart_nets.networks.nets import SMARTSwin
from tests.helpers import TINY, copy_bundle, make_phantoms


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_swin() -> SMARTSwin:
    """A ~0.6M-parameter SMARTSwin in eval mode."""
    return SMARTSwin(**TINY).eval()


@pytest.fixture(scope="session")
def bundle_workspace(tmp_path_factory):
    """Lays out bundles and phantoms for a test: ``bundle_workspace(*bundles, root=None, phantoms=0, **kwargs)``
    copies each named bundle to ``root/<bundle>`` (outputs land there, not in the repository), writes ``phantoms``
    small phantoms to ``root/data`` (``make_phantoms``: the tests' grid unless ``shape``/``spacing`` are given;
    ``seed``, ``val_fraction`` ... in ``kwargs``) and returns ``root``, a fresh temporary folder unless given (a
    test's ``tmp_path``). Session-scoped, so module-scoped fixtures can use it too."""

    def make(*bundles: str, root: Path | None = None, phantoms: int = 0, **kwargs) -> Path:
        if kwargs and not phantoms:
            raise TypeError(f"phantom settings {sorted(kwargs)} given without a number of phantoms")
        root = tmp_path_factory.mktemp(bundles[0] if bundles else "phantoms") if root is None else Path(root)
        for bundle in bundles:
            copy_bundle(bundle, root / bundle)
        if phantoms:
            make_phantoms(root / "data", phantoms, **kwargs)
        return root

    return make
