"""Shared fixtures: tiny SMARTSwin configs (DEVELOPERS.md: embed 12-24, depths 1-2 per stage)."""

from __future__ import annotations

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
