"""Lung tumours of five kinds, placed where a HU threshold inside the lungs fails on some of them, and the hidden
rule that draws the endpoints from their properties."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._anatomy import ID, LUNGS, Anatomy, Tissue
from ._geometry import Canvas, erode, near_segment, neighbours, smooth_noise

TUMOUR_TYPES = ("solid", "juxtapleural", "mediastinal", "part_solid", "ground_glass")
_TYPE_WEIGHTS = {"solid": 0.25, "juxtapleural": 0.2, "mediastinal": 0.2, "part_solid": 0.15, "ground_glass": 0.2}
_ENHANCEMENT = {"non_contrast": (0.0, 0.0), "arterial": (10.0, 30.0), "portal_venous": (20.0, 40.0)}


def add_tumour(
    c: Canvas,
    hu: np.ndarray,
    rng: np.random.Generator,
    anatomy: Anatomy,
    radius_range: Sequence[float],
    types: Sequence[str],
    phase: str,
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Draw one lung tumour into ``hu`` and the labels of ``c``.

    Kinds: ``solid`` (a nodule with lung all round), ``juxtapleural`` (a solid mass with a broad base on the chest
    wall), ``mediastinal`` (a solid hilar/mediastinal mass half in the lung, half in the mediastinal soft tissue,
    abutting heart and vessels), ``part_solid`` (ground glass around a solid core) and ``ground_glass`` (pure ground
    glass, about -700..-300 HU, vessels running through it). The mask is the whole lesion; it only replaces lung or
    unlabelled soft tissue, never another organ.

    Args:
        c: the drawn canvas (labels and tissue classes).
        hu: ``(X, Y, Z)`` float32 noise-free HU, modified in place.
        rng: random generator of this case.
        anatomy: the patient's landmarks.
        radius_range: (min, max) main radius in mm, drawn log-uniformly.
        types: the kinds allowed, drawn with fixed relative weights.
        phase: the contrast phase (solid tissue enhances a little).

    Returns:
        The ``(X, Y, Z)`` uint8 mask and the tumour's properties (``type``, ``volume_ml``, ``heterogeneity``,
        ``mean_hu``, ``necrotic``, ``spiculated``, ``lobes``, ``solid_fraction``).

    Raises:
        ValueError: when no tumour fits in the lungs (absurdly small volumes).
    """
    weights = np.array([_TYPE_WEIGHTS[t] for t in types])
    kind = str(types[int(rng.choice(len(types), p=weights / weights.sum()))])
    radius = float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
    box, mask, centre, radius, shape = _place(c, rng, anatomy, kind, radius)
    props = _fill(c, hu, rng, kind, box, mask, centre, radius, phase)
    props |= shape
    full = np.zeros(c.shape, dtype=np.uint8)
    full[box][mask] = 1
    c.labels[box][mask] = ID["tumour"]
    props["volume_ml"] = float(mask.sum() * np.prod(c.spacing) / 1000.0)
    return full, props


def _regions(c: Canvas, a: Anatomy, kind: str, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a tumour of ``kind`` and ``radius`` may be centred (deep in the lung, or contact points), where its voxels
    may lie, and what it must touch."""
    lung = np.isin(c.labels, LUNGS)
    if kind in ("solid", "part_solid", "ground_glass"):
        allowed = erode(lung)  # lung on every side
        return _deep(allowed, c.spacing, radius), allowed, np.zeros_like(lung)
    if kind == "juxtapleural":
        wall = (~a.inner & (c.tissue != Tissue.AIR) & (c.tissue != Tissue.COUCH)) | (c.labels == ID["ribs"])
        lateral = np.broadcast_to(np.abs(c.u) > a.mediastinum_mm + 15.0, c.shape)
        return lung & neighbours(wall) & lateral, lung, wall
    soft = (c.labels == 0) & a.inner & np.isin(c.tissue, (Tissue.VISCERAL, Tissue.FAT, Tissue.PULMONARY_VESSEL))
    soft &= c.w > a.dome[..., None] + 5.0
    medial = np.broadcast_to(np.abs(c.u) < a.mediastinum_mm + 25.0, c.shape)
    target = (soft & medial) | np.isin(c.labels, (ID["heart"], ID["aorta"]))
    return lung & neighbours(target), lung | soft, target


def _place(c: Canvas, rng: np.random.Generator, a: Anatomy, kind: str, radius: float) -> tuple:
    """Find a centre and shape that fit: returns ``(box, mask, centre, radius, shape properties)``."""
    candidates, allowed, target = _regions(c, a, kind, radius)
    points = np.argwhere(candidates)
    if len(points) == 0:
        raise ValueError(f"no room for a {kind} tumour in a phantom of shape {c.shape}")
    lung_centre = _lung_centres(c) if kind in ("juxtapleural", "mediastinal") else {}
    for _ in range(200):
        index = points[rng.integers(len(points))]
        centre = c.point(index)
        if kind in ("juxtapleural", "mediastinal"):  # from the contact point into the lung (or out of it)
            inward = lung_centre[int(c.labels[tuple(index)])] - centre
            depth = rng.uniform(0.3, 0.7) if kind == "juxtapleural" else rng.uniform(-0.3, 0.3)
            centre = centre + inward / (np.linalg.norm(inward) + 1e-9) * depth * radius
        box, mask, shape = _lesion(c, rng, centre, radius)
        inside = allowed[box][mask].all()
        if kind in ("juxtapleural", "mediastinal"):
            mask &= allowed[box]
            lung_share = np.isin(c.labels[box][mask], LUNGS).mean() if mask.any() else 0.0
            inside = (neighbours(mask) & target[box]).any() and lung_share >= (0.3 if kind == "mediastinal" else 1.0)
        if mask.sum() >= 8 and inside:
            return box, mask, centre, radius, shape
        radius *= 0.97
    raise ValueError(f"no room for a {kind} tumour in the lungs of a phantom of shape {c.shape}")


def _deep(region: np.ndarray, spacing: tuple[float, ...], radius: float) -> np.ndarray:
    """Voxels of ``region`` at least ~1.2 ``radius`` mm inside it (room for lobes and a bumpy margin), or, where the
    region is not that deep, its deepest voxels: a distance transform on every other voxel, the border counting as
    outside."""
    coarse = np.pad(region[::2, ::2, ::2], 1)
    depth = ndimage.distance_transform_edt(coarse, sampling=[2.0 * s for s in spacing])[1:-1, 1:-1, 1:-1]
    out = np.zeros_like(region)
    out[::2, ::2, ::2] = depth >= min(1.2 * radius + max(spacing), 0.8 * depth.max())
    return out & region


def _lung_centres(c: Canvas) -> dict[int, np.ndarray]:
    """Patient coordinates of each lung's centroid (from every other voxel: enough for a direction)."""
    out = {}
    for side in LUNGS:
        points = np.argwhere(c.labels[::2, ::2, ::2] == side)
        out[side] = c.point(points.mean(axis=0) * 2) if len(points) else np.zeros(3)
    return out


def _lesion(c: Canvas, rng: np.random.Generator, centre: np.ndarray, radius: float) -> tuple:
    """A lobulated, irregular (sometimes spiculated) ball: ``(box, mask, {"lobes", "spiculated"})``."""
    lobes = int(rng.integers(1, 5))
    offsets = rng.normal(0.0, radius * 0.35, size=(lobes, 3))
    offsets[0] = 0.0
    sizes = radius * rng.uniform(0.55, 1.0, size=lobes)
    sizes[0] = radius
    reach = float(np.max(np.linalg.norm(offsets, axis=1) + sizes)) * 1.3 + 2.0 + max(c.spacing)
    box = c.box(centre - reach, centre + reach)
    pu, pv, pw = c.coords(box)
    shape = tuple(sl.stop - sl.start for sl in box)
    bumps = 1.0 + 0.12 * smooth_noise(rng, shape, c.spacing, max(reach / 2.0, 1.0))  # irregular margin
    mask = np.zeros(shape, dtype=bool)
    for off, size in zip(offsets, sizes):
        p = centre + off
        mask |= (pu - p[0]) ** 2 + (pv - p[1]) ** 2 + (pw - p[2]) ** 2 <= (size * bumps) ** 2
    spiculated = rng.random() < 0.4
    if spiculated:
        for _ in range(int(rng.integers(4, 9))):
            direction = rng.normal(size=3)
            end = centre + direction / (np.linalg.norm(direction) + 1e-9) * radius * 1.25
            mask |= near_segment(c, box, centre, end, 1.2)
    return box, mask, {"lobes": float(lobes), "spiculated": float(spiculated)}


def _fill(
    c: Canvas,
    hu: np.ndarray,
    rng: np.random.Generator,
    kind: str,
    box: tuple[slice, ...],
    mask: np.ndarray,
    centre: np.ndarray,
    radius: float,
    phase: str,
) -> dict[str, float | str]:
    """Paint the lesion's HU: solid tissue (enhancing a little, necrotic core if large) or ground glass (vessels kept),
    with a solid core for part-solid lesions. Returns the intensity properties."""
    pu, pv, pw = c.coords(box)
    shape = mask.shape
    heterogeneity = rng.uniform(4.0, 35.0)
    texture = smooth_noise(rng, shape, c.spacing, 6.0)
    solid_base = rng.uniform(15.0, 50.0)
    solid = solid_base + rng.uniform(*_ENHANCEMENT[phase]) + heterogeneity * texture
    necrotic = kind not in ("ground_glass", "part_solid") and radius > 14.0 and rng.random() < 0.5
    dist2 = (pu - centre[0]) ** 2 + (pv - centre[1]) ** 2 + (pw - centre[2]) ** 2
    if necrotic:
        solid = np.where(dist2 <= (0.45 * radius) ** 2, rng.uniform(-5.0, 15.0), solid)
    values, solid_part, base = solid, mask, solid_base
    if kind in ("part_solid", "ground_glass"):
        base = rng.uniform(-700.0, -350.0)
        glass = base + 1.5 * heterogeneity * texture
        glass = np.where(c.tissue[box] == Tissue.PULMONARY_VESSEL, hu[box], glass)  # vessels run through it
        core = np.zeros(shape, dtype=bool)
        if kind == "part_solid":
            offset = rng.normal(0.0, 0.15 * radius, size=3)
            core_r = radius * rng.uniform(0.4, 0.75)
            core = (pu - centre[0] - offset[0]) ** 2 + (pv - centre[1] - offset[1]) ** 2 + (
                pw - centre[2] - offset[2]
            ) ** 2 <= core_r**2
        values, solid_part = np.where(core, solid, glass), core & mask
    region = hu[box]
    region[mask] = values[mask]
    return {
        "type": kind,
        "heterogeneity": float(heterogeneity),
        "mean_hu": float(base),
        "necrotic": float(necrotic),
        "solid_fraction": float(solid_part.sum() / max(mask.sum(), 1)),
    }


ENDPOINT_NOISE_SD = 0.8  # the Gaussian noise added to each latent score before thresholding at 0


def latent_scores(props: dict[str, float | str]) -> dict[str, float]:
    """The noise-free scores the endpoints are thresholded from (:func:`endpoints` adds Gaussian noise of
    ``ENDPOINT_NOISE_SD``). ``P(endpoint = 1 | tumour) = Phi(score / ENDPOINT_NOISE_SD)`` rises with the score, so
    the score ranks cases as well as anything can: its AUC is the ceiling no model of the image can beat."""
    size = (np.log(max(float(props["volume_ml"]), 1e-3)) - np.log(8.0)) / 1.2
    hetero = (float(props["heterogeneity"]) - 20.0) / 9.0
    glass = 1.0 - float(props["solid_fraction"])
    response = -1.4 * size - 0.9 * hetero - 1.0 * float(props["necrotic"]) + 0.6 * glass
    recurrence = 1.2 * size + 1.3 * float(props["spiculated"]) + 0.35 * (float(props["lobes"]) - 2.5)
    recurrence += -0.9 * glass - 0.4
    return {"response": float(response), "recurrence": float(recurrence)}


def endpoints(props: dict[str, float | str], rng: np.random.Generator) -> dict[str, int]:
    """The hidden rule: small, homogeneous, non-necrotic and ground-glass tumours respond; large, spiculated,
    lobulated, solid ones recur. Logistic-like with Gaussian noise, so learnable from the image but not trivially."""
    latent = latent_scores(props)
    response = latent["response"] + rng.normal(0.0, ENDPOINT_NOISE_SD)
    recurrence = latent["recurrence"] + rng.normal(0.0, ENDPOINT_NOISE_SD)
    return {"response": int(response > 0), "recurrence": int(recurrence > 0)}
