"""Tumour measurements a tumour board reads: volume, longest axial diameter (RECIST-style), connected components.

MONAI has no measurement of a segmentation in physical units (its ``compute_*`` metrics compare a prediction with
a label); the few lines here follow the RECIST 1.1 convention of the longest diameter in the axial plane.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

__all__ = ["MEASUREMENT_COLUMNS", "axial_axis", "longest_axial_diameter", "tumour_measurements"]

MEASUREMENT_COLUMNS = (
    "tumour_voxels",
    "tumour_volume_mm3",
    "longest_axial_diameter_mm",
    "connected_components",
)


def _checked_affine(affine) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite, invertible (4, 4) voxel-to-world matrix, got {a.tolist()}")
    return a


def _checked(mask, affine) -> tuple[np.ndarray, np.ndarray]:
    """``mask`` as a 3D boolean array and ``affine`` as a checked float (4, 4) matrix."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be (X, Y, Z), got shape {mask.shape}")
    return mask, _checked_affine(affine)


def axial_axis(affine) -> int:
    """The voxel axis closest to the patient's superior-inferior axis (RAS/LPS world: the third coordinate); the
    other two span the slice plane closest to axial."""
    a = _checked_affine(affine)[:3, :3]
    return int(np.argmax(np.abs(a[2]) / np.linalg.norm(a, axis=0)))


def longest_axial_diameter(mask: np.ndarray, affine) -> float:
    """The longest in-plane extent of ``mask`` over its slices closest to axial, in mm.

    Each slice's foreground is taken as the union of its voxels' squares (the four in-plane corners of every
    voxel), so one voxel measures its diagonal and a run of n voxels along a row n times the spacing, as a reader
    measures edge to edge on screen; the diameter is the largest distance between two corners of the convex hull.

    Args:
        mask: ``(X, Y, Z)`` boolean (or 0/1) array.
        affine: its ``(4, 4)`` voxel-to-world matrix (mm).

    Returns:
        The diameter in mm; 0 for an empty mask.
    """
    mask, affine = _checked(mask, affine)
    return _longest_axial_diameter(mask, affine)


def _longest_axial_diameter(mask: np.ndarray, affine: np.ndarray) -> float:
    a = affine[:3, :3]
    k = axial_axis(affine)
    plane = [d for d in range(3) if d != k]
    u, v = a[:, plane[0]], a[:, plane[1]]  # world steps along the two in-plane voxel axes
    basis, _ = np.linalg.qr(np.stack([u, v], axis=1))  # orthonormal in-plane axes: distances are kept
    corners = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    best = 0.0
    for s in np.unique(np.nonzero(mask)[k]):
        ij = np.argwhere(np.take(mask, s, axis=k)).astype(np.float64)
        points = (ij[:, None, :] + corners[None]).reshape(-1, 2)
        world = points[:, :1] * u + points[:, 1:] * v  # (P, 3), in the slice plane
        flat = world @ basis
        hull = flat[ConvexHull(flat).vertices]
        best = max(best, float(np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max()))
    return best


def tumour_measurements(mask: np.ndarray, affine) -> dict[str, float | int]:
    """Volume, longest axial diameter and number of connected components (26-connected) of a binary mask.

    Args:
        mask: ``(X, Y, Z)`` boolean (or 0/1) tumour mask in the image's own grid.
        affine: the image's ``(4, 4)`` voxel-to-world matrix (mm).

    Returns:
        ``{column: value}`` for :data:`MEASUREMENT_COLUMNS`.
    """
    mask, a = _checked(mask, affine)
    voxels = int(mask.sum())
    _, components = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return {
        "tumour_voxels": voxels,
        "tumour_volume_mm3": voxels * float(abs(np.linalg.det(a[:3, :3]))),
        "longest_axial_diameter_mm": _longest_axial_diameter(mask, a),
        "connected_components": int(components),
    }
