"""The CT phantom generator: determinism, plausible HU per organ, tumours in the lungs, aligned labels, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from smart_nets.data.phantoms import ORGAN_LABELS, generate_phantoms, make_phantom

ID = {name: i for i, name in ORGAN_LABELS.items()}
LUNGS = (ID["lung_left"], ID["lung_right"])
SEEDS = [0, 7, 42]


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels 6-adjacent to ``mask`` but not in it."""
    grown = mask.copy()
    for axis in range(3):
        for step in (1, -1):
            shifted = np.roll(mask, step, axis)
            edge = [slice(None)] * 3
            edge[axis] = 0 if step == 1 else -1
            shifted[tuple(edge)] = False  # no wrap-around
            grown |= shifted
    return grown & ~mask


def test_same_seed_same_phantom_other_seed_other_phantom():
    a, b, c = make_phantom(3), make_phantom(3), make_phantom(4)
    for field in ("image", "organs", "tumour", "affine"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.endpoints == b.endpoints
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", SEEDS)
def test_hounsfield_units_are_plausible_per_organ(seed):
    p = make_phantom(seed)
    lung = np.isin(p.organs, LUNGS)
    bone = np.isin(p.organs, (ID["spine"], ID["ribs"]))
    assert np.median(p.image[lung]) < -600 and np.percentile(p.image[lung], 75) < -600
    assert np.percentile(p.image[bone], 1) > 300
    for organ in ("liver", "spleen", "heart", "kidney_left", "kidney_right", "aorta", "tumour"):
        assert 0 < np.median(p.image[p.organs == ID[organ]]) < 100, organ
    assert np.median(p.image[p.organs == 0][:1000]) < -900  # the corner of the volume is air
    assert p.image.dtype == np.int16 and len(np.unique(p.organs)) == len(ORGAN_LABELS)


@pytest.mark.parametrize("seed", SEEDS)
def test_tumour_lies_inside_a_lung(seed):
    p = make_phantom(seed)
    tumour = p.tumour.astype(bool)
    assert tumour.sum() >= 8
    assert np.array_equal(tumour, p.organs == ID["tumour"])
    assert set(np.unique(p.organs[_neighbours(tumour)])) <= set(LUNGS)


@pytest.mark.parametrize("seed", SEEDS)
def test_labels_align_with_image_voxel_for_voxel(seed):
    """Lung labels sit on air-like voxels and the voxels just outside them are tissue: a one-voxel shift would
    put tissue inside the label or lung outside it."""
    p = make_phantom(seed)
    lung = np.isin(p.organs, LUNGS) & ~_neighbours(~np.isin(p.organs, LUNGS))  # interior, away from the edge
    ring = _neighbours(np.isin(p.organs, LUNGS)) & (p.organs != ID["tumour"])
    assert np.median(p.image[lung]) < -750
    assert np.median(p.image[ring]) > -200
    for organ in ("spine", "liver"):
        m = p.organs == ID[organ]
        assert np.median(p.image[m]) - np.median(p.image[_neighbours(m)]) > 15, organ


def test_endpoints_are_binary_and_both_classes_occur():
    labels = [make_phantom((0, i), shape=(96, 96, 48), spacing=(3.3, 3.3, 6.5)).endpoints for i in range(24)]
    for key in ("response", "recurrence"):
        values = [e[key] for e in labels]
        assert set(values) == {0, 1}, key


@pytest.mark.parametrize("kwargs,match", [({"shape": (64, 64)}, "shape"), ({"spacing": (1.0, 0.0, 1.0)}, "spacing")])
def test_bad_geometry_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom(0, **kwargs)


def test_bad_generator_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="num must be an integer >= 2"):
        generate_phantoms(str(tmp_path), num=1)
    with pytest.raises(ValueError, match="val_fraction"):
        generate_phantoms(str(tmp_path), num=4, val_fraction=1.0)


def test_command_line_writes_a_decathlon_datalist_monai_reads(tmp_path):
    cmd = [sys.executable, "-m", "smart_nets.data.phantoms", str(tmp_path), "--num", "3", "--seed", "5"]
    cmd += ["--shape", "[64,64,32]", "--spacing", "[5.0,5.0,10.0]"]
    subprocess.run(cmd, check=True, capture_output=True)
    train = load_decathlon_datalist(tmp_path / "dataset.json", data_list_key="training")
    val = load_decathlon_datalist(tmp_path / "dataset.json", data_list_key="validation")
    assert len(train) == 2 and len(val) == 1
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "tumour"} and len(meta["organ_labels"]) == 12
    for item, raw in zip(train + val, meta["training"] + meta["validation"]):
        image = nib.load(item["image"])
        assert image.shape == (64, 64, 32) and image.get_data_dtype() == np.int16
        np.testing.assert_allclose(np.abs(np.diag(image.affine))[:3], (5.0, 5.0, 10.0))
        for key in ("label", "organs"):
            other = nib.load(tmp_path / raw[key])
            assert other.shape == image.shape
            np.testing.assert_array_equal(other.affine, image.affine)
        assert item["response"] in (0, 1) and item["recurrence"] in (0, 1)
    # the same seed writes the same volumes
    expected = make_phantom((5, 0), shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))
    np.testing.assert_array_equal(np.asanyarray(nib.load(train[0]["image"]).dataobj), expected.image)
    assert not list(tmp_path.rglob(".tmp-*"))
