"""Voxel grid in patient coordinates and the shape primitives the phantom is drawn with (boxes, blobs, tubes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FIELD_OF_VIEW_MM = 320.0  # per axis: 128 voxels at 2.5 mm, twice a 64^3 pretraining ROI


class Canvas:
    """Patient coordinates of every voxel and the label and tissue maps drawn on them.

    Coordinates are in mm from the patient's centre (which sits ``offset`` mm from the centre of the field of view):
    ``u`` to the patient's left (index i runs right to left), ``v`` anterior (index j runs anterior to posterior) and
    ``w`` superior (index k runs inferior to superior), as a DICOM series converted to NIfTI usually is.

    Args:
        shape: ``(X, Y, Z)`` voxels.
        spacing: ``(X, Y, Z)`` voxel size in mm.
        offset: ``(u, v, w)`` position of the patient's centre in the field of view, mm.
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float], offset: Sequence[float] = (0.0, 0.0, 0.0)):
        self.shape, self.spacing = tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
        axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(self.shape, self.spacing)]
        self.axes = (axes[0] - offset[0], -axes[1] - offset[1], axes[2] - offset[2])
        self.u = self.axes[0][:, None, None]
        self.v = self.axes[1][None, :, None]
        self.w = self.axes[2][None, None, :]
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self.tissue = np.zeros(self.shape, dtype=np.uint8)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, ...]:
        """Index box covering the patient-space corners ``lo`` .. ``hi`` (empty slices outside the volume)."""
        out = []
        for coords, a, b in zip(self.axes, lo, hi):
            idx = np.nonzero((coords >= min(a, b)) & (coords <= max(a, b)))[0]
            out.append(slice(int(idx.min()), int(idx.max()) + 1) if idx.size else slice(0, 0))
        return tuple(out)

    def coords(self, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable ``u, v, w`` of the voxels in ``box``."""
        return self.u[box[0]], self.v[:, box[1]], self.w[:, :, box[2]]

    def point(self, index: Sequence[int]) -> np.ndarray:
        """Patient coordinates (mm) of the voxel at ``index``."""
        return np.array([self.axes[a][int(index[a])] for a in range(3)], dtype=np.float64)

    def paint(self, box: tuple[slice, ...], mask: np.ndarray, tissue: int, label: int | None = None) -> None:
        """Set the tissue (and, unless ``label`` is None, the organ label) of the voxels ``mask`` of ``box``."""
        self.tissue[box][mask] = tissue
        if label is not None:
            self.labels[box][mask] = label


@dataclass
class Blob:
    """A rotated, wobbly ellipsoid evaluated in its bounding box.

    Attributes:
        box: index box.
        radius: normalised radius (``<= 1`` inside; ``1 - t / r`` is a shell of thickness ``t`` mm for radius ``r``).
        local: the box's coordinates in the blob's own frame (mm), three broadcast arrays.
    """

    box: tuple[slice, ...]
    radius: np.ndarray
    local: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def mask(self) -> np.ndarray:
        """Voxels inside the blob."""
        return self.radius <= 1.0


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (degrees): ``yaw`` about the superior axis, then ``pitch`` about left, then ``roll``."""
    a, b, g = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(g), 0, np.sin(g)], [0, 1, 0], [-np.sin(g), 0, np.cos(g)]])
    return rz @ rx @ ry


def blob(
    c: Canvas,
    rng: np.random.Generator,
    centre: Sequence[float],
    radii: Sequence[float],
    angles: Sequence[float] = (0.0, 0.0, 0.0),
    wobble: float = 0.0,
) -> Blob:
    """An ellipsoid with radii ``radii`` (mm) rotated by ``angles`` (see :func:`rotation`), its surface displaced by
    up to ``wobble`` (a fraction of the radius) along three random low-frequency waves, so no two organs share a
    shape."""
    centre, radii = np.asarray(centre, dtype=np.float32), np.asarray(radii, dtype=np.float32)
    rot = rotation(*angles).astype(np.float32)
    reach = float(radii.max()) * (1.0 + 2.0 * wobble) + max(c.spacing)
    box = c.box(centre - reach, centre + reach)
    du, dv, dw = (x - o for x, o in zip(c.coords(box), centre))
    local = tuple(rot[0, k] * du + rot[1, k] * dv + rot[2, k] * dw for k in range(3))
    radius = np.sqrt(sum((x / r) ** 2 for x, r in zip(local, radii)))
    if wobble > 0:
        bump = 0.0
        for _ in range(3):
            n = rng.normal(size=3)
            n *= rng.uniform(1.5, 3.5) / np.linalg.norm(n)
            bump = bump + np.sin(sum(float(n[k]) * local[k] / radii[k] for k in range(3)) + rng.uniform(0, 2 * np.pi))
        radius = radius / (1.0 + wobble / 1.7 * bump)
    return Blob(box, radius, local)


def tube(c: Canvas, p0: np.ndarray, p1: np.ndarray, radius: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels within ``radius`` mm of the segment ``p0``-``p1``: the box around it and the mask in that box."""
    box = c.box(np.minimum(p0, p1) - radius - 1, np.maximum(p0, p1) + radius + 1)
    return box, near_segment(c, box, p0, p1, radius)


def near_segment(c: Canvas, box: tuple[slice, ...], p0: np.ndarray, p1: np.ndarray, radius: float) -> np.ndarray:
    """Which voxels of ``box`` lie within ``radius`` mm of the segment ``p0``-``p1``."""
    pu, pv, pw = c.coords(box)
    d = p1 - p0
    t = ((pu - p0[0]) * d[0] + (pv - p0[1]) * d[1] + (pw - p0[2]) * d[2]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    dist2 = (pu - p0[0] - t * d[0]) ** 2 + (pv - p0[1] - t * d[1]) ** 2 + (pw - p0[2] - t * d[2]) ** 2
    return dist2 <= radius**2


def branches(
    rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, length: float, radius: float, depth: int
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """A random binary/ternary vessel tree: ``(p0, p1, radius)`` segments, each generation ~0.8 times shorter and
    ~0.8 times thinner (at least 1.4 mm, about the smallest vessel a 2-3 mm CT shows), branching 25-50 degrees off
    its parent."""
    direction = direction / (np.linalg.norm(direction) + 1e-9)
    end = root + direction * length
    segments = [(root, end, radius)]
    if depth > 0:
        for _ in range(int(rng.integers(2, 4))):
            child = direction + np.tan(np.radians(rng.uniform(25, 50))) * _orthogonal(rng, direction)
            thinner = max(radius * rng.uniform(0.7, 0.85), 1.4)
            segments += branches(rng, end, child, length * rng.uniform(0.7, 0.9), thinner, depth - 1)
    return segments


def _orthogonal(rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    """A random unit vector orthogonal to ``direction``."""
    n = rng.normal(size=3)
    n -= (n @ direction) * direction
    return n / (np.linalg.norm(n) + 1e-9)


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], cell_mm: float
) -> np.ndarray:
    """Zero-mean, unit-variance texture with features about ``cell_mm`` mm across: a coarse random grid upsampled
    trilinearly (float32)."""
    coarse_shape = [max(2, int(round(n * s / cell_mm)) + 1) for n, s in zip(shape, spacing)]
    coarse = torch.from_numpy(rng.standard_normal(coarse_shape, dtype=np.float32))[None, None]
    out = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()
    return out / max(float(out.std()), 1e-6)


def neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels 6-adjacent to ``mask`` but not in it (no wrap-around at the volume border)."""
    grown = mask.copy()
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(1, None), slice(None, -1)
        grown[tuple(lo)] |= mask[tuple(hi)]
        grown[tuple(hi)] |= mask[tuple(lo)]
    return grown & ~mask


def erode(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by one voxel (6-neighbourhood); the volume border counts as outside."""
    out = mask & ~neighbours(~mask)
    for axis in range(3):
        edge = [slice(None)] * 3
        for end in (0, -1):
            edge[axis] = end
            out[tuple(edge)] = False
    return out
