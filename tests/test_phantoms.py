"""The CT phantom generator: determinism, HU per organ and contrast phase, tumour kinds, variation across cases,
per-case grids, aligned labels, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scipy import ndimage

from smart_nets.data.phantoms import ORGAN_LABELS, PHASES, TUMOUR_TYPES, generate_phantoms, make_phantom

ID = {name: i for i, name in ORGAN_LABELS.items()}
LUNGS = (ID["lung_left"], ID["lung_right"])
ABDOMEN = (ID["liver"], ID["spleen"], ID["kidney_left"], ID["kidney_right"])
SEEDS = [0, 7, 42]
SMALL = {"shape": (64, 64, 32), "spacing": (5.0, 5.0, 10.0)}
MEDIUM = {"shape": (96, 96, 64), "spacing": (3.34, 3.34, 5.0)}


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


def _median(p, organ: str) -> float:
    return float(np.median(p.image[p.organs == ID[organ]]))


def test_same_seed_same_phantom_other_seed_other_phantom():
    a, b, c = make_phantom((3, 1)), make_phantom((3, 1)), make_phantom((3, 2))
    for field in ("image", "organs", "tumour", "affine"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.endpoints == b.endpoints and a.acquisition == b.acquisition
    assert a.tumour_properties == b.tumour_properties
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_the_phase_and_tumour_kind_change_the_scan_not_the_patient():
    base = make_phantom(5, phases=("non_contrast",), **SMALL)
    arterial = make_phantom(5, phases=("arterial",), **SMALL)
    other_tumour = make_phantom(5, phases=("non_contrast",), tumour_types=("ground_glass",), **SMALL)
    np.testing.assert_array_equal(base.organs, arterial.organs)
    assert not np.array_equal(base.image, arterial.image)
    body = ~np.isin(base.organs, (ID["tumour"],)) & ~np.isin(other_tumour.organs, (ID["tumour"],))
    np.testing.assert_array_equal(base.organs[body], other_tumour.organs[body])


@pytest.mark.parametrize("seed", SEEDS)
def test_hounsfield_units_are_plausible_per_organ(seed):
    p = make_phantom(seed, **MEDIUM)
    lung = np.isin(p.organs, LUNGS)
    assert np.median(p.image[lung]) < -700 and np.percentile(p.image[lung], 75) < -600
    assert _median(p, "spine") > 250 and _median(p, "ribs") > 250
    for organ in ("liver", "spleen", "heart", "kidney_left", "kidney_right", "aorta"):
        assert 0 < _median(p, organ) < 400, organ
    assert np.median(p.image[p.organs == 0][:1000]) < -900  # the corner of the volume is air
    assert p.image.dtype == np.int16 and len(np.unique(p.organs)) == len(ORGAN_LABELS)


@pytest.mark.parametrize("seed", [0, 1])
def test_contrast_phases_order_the_organs(seed):
    """Non-contrast: liver brighter than kidney, all soft tissue below 100 HU; arterial: bright aorta, kidney
    cortex and spleen above the liver; portal venous: the liver enhanced, the aorta down again."""
    plain, arterial, portal = (make_phantom(seed, phases=(phase,), **MEDIUM) for phase in PHASES)
    assert [p.acquisition["phase"] for p in (plain, arterial, portal)] == list(PHASES)
    for organ in ("liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart"):
        assert 0 < _median(plain, organ) < 100, organ
    assert _median(plain, "liver") > _median(plain, "kidney_left") + 10
    assert _median(arterial, "aorta") > 200 and _median(arterial, "kidney_left") > _median(arterial, "liver") + 30
    assert _median(arterial, "spleen") > _median(arterial, "liver")
    assert _median(portal, "liver") > 90 and _median(portal, "liver") > _median(plain, "liver") + 30
    assert 120 < _median(portal, "aorta") < _median(arterial, "aorta")


@pytest.mark.parametrize("kind", TUMOUR_TYPES)
def test_each_tumour_kind_has_its_mask_and_hounsfield_units(kind):
    for seed in (0, 1):
        p = make_phantom(seed, tumour_types=(kind,), **SMALL)
        tumour = p.tumour.astype(bool)
        assert p.tumour_properties["type"] == kind and tumour.sum() >= 8
        assert np.array_equal(tumour, p.organs == ID["tumour"])
        around = set(np.unique(p.organs[_neighbours(tumour)]).tolist())
        assert not around & set(ABDOMEN), around  # it never reaches the abdominal organs
        median = np.median(p.image[tumour])
        if kind == "ground_glass":
            assert -750 < median < -300
        elif kind == "part_solid":
            assert median < -250 and np.percentile(p.image[tumour], 95) > -150  # glass around a solid core
        else:
            assert median > -150
        if kind in ("solid", "part_solid", "ground_glass"):
            assert around <= set(LUNGS), around  # lung all round
        elif kind == "mediastinal":
            assert around - set(LUNGS) and around & set(LUNGS)  # half in the lung, half against the mediastinum


def test_juxtapleural_tumours_touch_the_chest_wall():
    """Their non-lung neighbours are chest wall (unlabelled tissue or ribs) within the body wall's depth of the
    skin, not the mediastinum."""
    for seed in range(3):
        p = make_phantom(seed, tumour_types=("juxtapleural",), **MEDIUM)
        tumour = p.tumour.astype(bool)
        contact = _neighbours(tumour) & ~np.isin(p.organs, LUNGS)
        assert contact.any() and set(np.unique(p.organs[contact]).tolist()) <= {0, ID["ribs"]}
        depths = []
        for k in np.unique(np.nonzero(contact)[2]):  # depth under the skin, slice by slice
            body = ndimage.binary_fill_holes(p.image[:, :, k] > -500)
            depths.append(ndimage.distance_transform_edt(body, sampling=MEDIUM["spacing"][:2])[contact[:, :, k]].min())
        assert min(depths) < 60.0, depths


def test_anatomy_varies_across_cases():
    """Lung volume, diaphragm height, body width and the patient's position in the field of view differ across four
    seeds by clear margins."""
    volumes, diaphragms, widths, centres = [], [], [], []
    for seed in range(4):
        p = make_phantom(seed, **MEDIUM)
        lung = np.isin(p.organs, LUNGS)
        volumes.append(lung.sum() * np.prod(MEDIUM["spacing"]) / 1e3)
        area = lung.sum(axis=(0, 1))
        diaphragms.append(np.nonzero(area >= 0.25 * area.max())[0].min() * MEDIUM["spacing"][2])
        body = (p.image > -200).any(axis=(1, 2))  # fat and denser: not the couch (about -300 HU)
        widths.append(np.ptp(np.nonzero(body)[0]) * MEDIUM["spacing"][0])
        centres.append(np.mean(np.nonzero(body)[0][[0, -1]]) * MEDIUM["spacing"][0])
    assert max(volumes) > 1.25 * min(volumes), volumes
    assert np.ptp(diaphragms) > 10.0, diaphragms
    assert np.ptp(widths) > 20.0, widths
    assert np.ptp(centres) > 10.0, centres


@pytest.mark.parametrize("seed", SEEDS)
def test_labels_align_with_image_voxel_for_voxel(seed):
    """Lung labels sit on air-like voxels and the voxels just outside them are tissue: a one-voxel shift would
    put tissue inside the label or lung outside it."""
    p = make_phantom(seed, tumour_types=("solid",), **MEDIUM)
    lung = np.isin(p.organs, LUNGS) & ~_neighbours(~np.isin(p.organs, LUNGS))  # interior, away from the edge
    ring = _neighbours(np.isin(p.organs, LUNGS)) & (p.organs != ID["tumour"])
    assert np.median(p.image[lung]) < -750
    assert np.median(p.image[ring]) > -200
    for organ in ("spine", "liver"):
        m = p.organs == ID[organ]
        assert abs(np.median(p.image[m]) - np.median(p.image[_neighbours(m)])) > 15, organ


def test_endpoints_are_binary_and_both_classes_occur():
    labels = [make_phantom((0, i), shape=(96, 96, 48), spacing=(3.3, 3.3, 6.5)).endpoints for i in range(24)]
    for key in ("response", "recurrence"):
        values = [e[key] for e in labels]
        assert set(values) == {0, 1}, key


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"shape": (64, 64)}, "shape"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"tumour_types": ("solid", "benign")}, "tumour_types"),
        ({"phases": "delayed"}, "phases"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom(0, **kwargs)


def test_bad_generator_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="num must be an integer >= 2"):
        generate_phantoms(str(tmp_path), num=1)
    with pytest.raises(ValueError, match="val_fraction"):
        generate_phantoms(str(tmp_path), num=4, val_fraction=1.0)


def test_command_line_writes_a_decathlon_datalist_monai_reads(tmp_path):
    cmd = [sys.executable, "-m", "smart_nets.data.phantoms", str(tmp_path), "--num", "3", "--seed", "5"]
    cmd += ["--shape", "[64,64,32]", "--spacing", "[5.0,5.0,10.0]", "--tumour_types", "solid,ground_glass"]
    subprocess.run(cmd, check=True, capture_output=True)
    train = load_decathlon_datalist(tmp_path / "dataset.json", data_list_key="training")
    val = load_decathlon_datalist(tmp_path / "dataset.json", data_list_key="validation")
    assert len(train) == 2 and len(val) == 1
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "tumour"} and len(meta["organ_labels"]) == 12
    assert meta["generator"]["tumour_types"] == ["solid", "ground_glass"]
    for item, raw in zip(train + val, meta["training"] + meta["validation"]):
        image = nib.load(item["image"])
        assert image.shape == (64, 64, 32) and image.get_data_dtype() == np.int16
        np.testing.assert_allclose(np.abs(np.diag(image.affine))[:3], (5.0, 5.0, 10.0))
        for key in ("label", "organs"):
            other = nib.load(tmp_path / raw[key])
            assert other.shape == image.shape
            np.testing.assert_array_equal(other.affine, image.affine)
        assert item["response"] in (0, 1) and item["recurrence"] in (0, 1)
        assert meta["generator"]["cases"][raw["case_id"]]["tumour_type"] in ("solid", "ground_glass")
    # the same seed writes the same volumes
    expected = make_phantom((5, 0), tumour_types=("solid", "ground_glass"), **SMALL)
    np.testing.assert_array_equal(np.asanyarray(nib.load(train[0]["image"]).dataobj), expected.image)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_default_grid_varies_per_case_and_covers_320_mm(tmp_path):
    """Without shape and spacing each case gets its own spacing, and a grid that covers 320 mm per axis, so that it
    is at least 128 voxels (twice a 64^3 ROI) per axis at 2.5 mm."""
    subprocess.run([sys.executable, "-m", "smart_nets.data.phantoms", str(tmp_path), "--num", "2"], check=True)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["generator"]["shape"] is None and meta["generator"]["spacing"] is None
    spacings = []
    for raw in meta["training"] + meta["validation"]:
        image = nib.load(tmp_path / raw["image"])
        spacing = np.abs(np.diag(image.affine))[:3]
        spacings.append(tuple(spacing))
        np.testing.assert_allclose(spacing, meta["generator"]["cases"][raw["case_id"]]["spacing"])
        assert 2.0 <= spacing[0] == spacing[1] <= 3.0 and 2.5 <= spacing[2] <= 5.0
        extent = np.multiply(image.shape, spacing)
        assert np.all(extent >= 320.0 - 1e-3) and np.all(extent < 320.0 + spacing), extent
        assert np.all(np.round(extent / 2.5) >= 128)
    assert spacings[0] != spacings[1]


def test_endpoints_threshold_the_latent_scores_plus_noise():
    """The recorded latent scores are the endpoints' noise-free scores: the same noise draws reproduce the labels."""
    from smart_nets.data.phantoms import ENDPOINT_NOISE_SD, latent_scores
    from smart_nets.data.phantoms._tumours import endpoints

    p = make_phantom((0, 3), shape=(96, 96, 48), spacing=(3.3, 3.3, 6.5))
    latent = latent_scores(p.tumour_properties)
    for seed in range(20):
        noise = np.random.default_rng(seed)
        drawn = [noise.normal(0.0, ENDPOINT_NOISE_SD), noise.normal(0.0, ENDPOINT_NOISE_SD)]
        got = endpoints(p.tumour_properties, np.random.default_rng(seed))
        assert got == {
            "response": int(latent["response"] + drawn[0] > 0),
            "recurrence": int(latent["recurrence"] + drawn[1] > 0),
        }


def test_dataset_json_records_each_case_latent_scores(tmp_path):
    from smart_nets.data.phantoms import latent_scores

    path = generate_phantoms(str(tmp_path), num=2, shape=(96, 96, 48), spacing=(3.3, 3.3, 6.5))
    cases = json.loads(open(path).read())["generator"]["cases"]
    expected = latent_scores(make_phantom((0, 1), shape=(96, 96, 48), spacing=(3.3, 3.3, 6.5)).tumour_properties)
    assert cases["phantom_001"]["latent"] == pytest.approx(expected)
