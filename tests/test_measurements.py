"""Tumour measurements in mm: volume, longest axial diameter (RECIST-style), connected components, on masks whose
sizes are known by construction and on phantoms whose tumour volume the generator records."""

from __future__ import annotations

import numpy as np
import pytest

from smart_nets.data import make_phantom
from smart_nets.metrics import tumour_measurements
from smart_nets.metrics.measurements import axial_axis


def _sphere(shape, spacing, radius_mm):
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r2 = sum(((g - n / 2) * s) ** 2 for g, n, s in zip(grid, shape, spacing))
    return r2 <= radius_mm**2


def test_a_box_measures_its_volume_diagonal_and_one_component():
    mask = np.zeros((20, 20, 10), bool)
    mask[2:5, 2:6, 1:3] = True  # 3 x 4 voxels in plane, 2 slices
    m = tumour_measurements(mask, np.diag([2.0, 3.0, 5.0, 1.0]))
    assert m["tumour_voxels"] == 24 and m["tumour_volume_mm3"] == pytest.approx(24 * 30.0)
    assert m["longest_axial_diameter_mm"] == pytest.approx(np.hypot(3 * 2.0, 4 * 3.0))  # edge to edge
    assert m["connected_components"] == 1
    mask[10:12, 10:12, 5] = True  # a second lesion, apart
    mask[14, 14, 8] = True  # and a single voxel
    assert tumour_measurements(mask, np.diag([2.0, 3.0, 5.0, 1.0]))["connected_components"] == 3


def test_a_sphere_measures_about_its_volume_and_diameter_in_any_orientation():
    spacing, radius = (0.8, 0.8, 2.5), 15.0
    mask = _sphere((100, 100, 40), spacing, radius)
    ras = tumour_measurements(mask, np.diag([*spacing, 1.0]))
    assert ras["tumour_volume_mm3"] == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.02)
    assert 2 * radius <= ras["longest_axial_diameter_mm"] <= 2 * radius + np.hypot(*spacing[:2])
    # the same voxels stored slice-first with LPS in-plane axes: the axial axis is found, the numbers do not move
    lps = np.zeros((4, 4))
    lps[0, 1], lps[1, 2], lps[2, 0], lps[3, 3] = -spacing[0], -spacing[1], spacing[2], 1.0
    assert axial_axis(lps) == 0
    assert tumour_measurements(np.transpose(mask, (2, 0, 1)), lps) == pytest.approx(ras)


def test_an_empty_mask_measures_zero_and_bad_inputs_are_refused():
    assert tumour_measurements(np.zeros((8, 8, 8)), np.eye(4)) == {
        "tumour_voxels": 0,
        "tumour_volume_mm3": 0.0,
        "longest_axial_diameter_mm": 0.0,
        "connected_components": 0,
    }
    with pytest.raises(ValueError, match="invertible"):
        tumour_measurements(np.zeros((8, 8, 8)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mask must be"):
        tumour_measurements(np.zeros((8, 8)), np.eye(4))


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_phantom_tumours_measure_the_volume_the_generator_recorded(seed):
    p = make_phantom(seed, shape=(96, 96, 48), spacing=(3.0, 3.0, 5.0))
    m = tumour_measurements(p.tumour, p.affine)
    assert m["tumour_volume_mm3"] == pytest.approx(p.tumour_properties["volume_ml"] * 1000, rel=0.01)
    # these tumours are compact: the longest diameter is near that of the sphere of the same volume
    equivalent = 2 * (3 * m["tumour_volume_mm3"] / (4 * np.pi)) ** (1 / 3)
    assert equivalent - 5.0 <= m["longest_axial_diameter_mm"] <= 3 * equivalent, (m, equivalent)
