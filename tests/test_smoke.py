"""The demo's encoder smoke run on generated phantoms."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from smart_nets.data.phantoms import generate_phantoms
from smart_nets.smoke import run


def test_smoke_run_writes_an_attention_map_per_case(tmp_path):
    datalist = generate_phantoms(str(tmp_path / "data"), num=3, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))
    shapes = run(datalist, num=1, out_dir=str(tmp_path / "out"))
    assert shapes["attn_map"] == [1, 64] and shapes["cls_token"] == [1, 96]
    (attn,) = list((tmp_path / "out").glob("*_attn.nii.gz"))
    data = np.asanyarray(nib.load(attn).dataobj)
    assert data.shape[-3:] == (64, 64, 64) and np.isfinite(data).all() and data.max() == pytest.approx(1.0)


def test_smoke_run_names_a_missing_datalist(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        run(str(tmp_path / "nowhere.json"))
