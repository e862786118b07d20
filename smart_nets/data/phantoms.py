"""Synthetic chest/abdomen CT phantoms in Hounsfield units, with organ labels, lung-tumour masks and endpoints.

No public CT can be downloaded where this project is built and the SMART paper's cohorts are private, so tests, the
demo and the benchmarks run on these phantoms (../shared/DESIGN.md section 3). Each case is a body outline with
subcutaneous fat and muscle, two lungs with vessels, heart, aorta, spine and ribs in the chest, liver, spleen and
kidneys below a domed diaphragm, and one lung tumour of varied size, shape and texture, with correlated noise. Images
are stored as int16 HU with a real affine (anisotropic spacing, axes running patient right-to-left,
anterior-to-posterior and inferior-to-superior as a DICOM series converted to NIfTI usually is).

Image-level endpoints follow a hidden, noisy rule on tumour properties (volume, heterogeneity, necrosis, margin), so
they are learnable from the image but not trivially: ``response`` (Task I) and ``recurrence`` (Task II).

Command line (writes ``OUT_DIR/dataset.json`` in the Medical Segmentation Decathlon form)::

    python -m smart_nets.data.phantoms OUT_DIR --num 16 --seed 0 [--shape "[128,128,64]"] [--spacing "[2.5,2.5,5.0]"]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from smart_nets.data.writers import atomic_path

__all__ = ["ORGAN_LABELS", "Phantom", "make_phantom", "generate_phantoms"]

logger = logging.getLogger(__name__)

ORGAN_LABELS = {
    0: "background",
    1: "lung_left",
    2: "lung_right",
    3: "heart",
    4: "aorta",
    5: "liver",
    6: "spleen",
    7: "kidney_left",
    8: "kidney_right",
    9: "spine",
    10: "ribs",
    11: "tumour",
}
_ID = {name: i for i, name in ORGAN_LABELS.items()}


@dataclass
class Phantom:
    """One synthetic case.

    Attributes:
        image: ``(X, Y, Z)`` int16 HU.
        organs: ``(X, Y, Z)`` uint8 organ labels (:data:`ORGAN_LABELS`; the tumour overrides the lung it lies in).
        tumour: ``(X, Y, Z)`` uint8 binary tumour mask.
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix.
        endpoints: ``{"response": 0/1, "recurrence": 0/1}``.
        tumour_properties: the hidden properties the endpoints were drawn from (not written to the datalist).
    """

    image: np.ndarray
    organs: np.ndarray
    tumour: np.ndarray
    affine: np.ndarray
    endpoints: dict[str, int]
    tumour_properties: dict[str, float]


class _Canvas:
    """Patient coordinates of every voxel (mm; u to the patient's left, v anterior, w superior) and the label map."""

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape, self.spacing = tuple(shape), tuple(spacing)
        axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
        self.u = axes[0][:, None, None]  # index i runs right -> left
        self.v = -axes[1][None, :, None]  # index j runs anterior -> posterior
        self.w = axes[2][None, None, :]  # index k runs inferior -> superior
        self.labels = np.zeros(self.shape, dtype=np.uint8)

    def ellipsoid(self, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
        (cu, cv, cw), (ru, rv, rw) = centre, radii
        return ((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2 + ((self.w - cw) / rw) ** 2 <= 1.0

    def cylinder(self, cu: float, cv: float, radius: float) -> np.ndarray:
        return np.broadcast_to((self.u - cu) ** 2 + (self.v - cv) ** 2 <= radius**2, self.shape)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int = 6) -> np.ndarray:
    """Zero-mean, unit-scale low-frequency texture: a coarse random grid upsampled trilinearly."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, *[max(2, s * cells // max(shape)) for s in shape])))
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _segment_distance(c: _Canvas, box: tuple[slice, ...], p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance (mm) from the voxels inside ``box`` to the segment p0-p1."""
    pu, pv, pw = c.u[box[0]], c.v[:, box[1]], c.w[:, :, box[2]]
    d = p1 - p0
    t = ((pu - p0[0]) * d[0] + (pv - p0[1]) * d[1] + (pw - p0[2]) * d[2]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((pu - p0[0] - t * d[0]) ** 2 + (pv - p0[1] - t * d[1]) ** 2 + (pw - p0[2] - t * d[2]) ** 2)


def _box(c: _Canvas, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
    """Index box covering patient-space corners lo..hi."""
    out = []
    for axis, (a, b) in enumerate(zip(lo, hi)):
        coords = (c.u.ravel(), c.v.ravel(), c.w.ravel())[axis]
        idx = np.nonzero((coords >= min(a, b)) & (coords <= max(a, b)))[0]
        out.append(slice(int(idx.min()), int(idx.max()) + 1) if idx.size else slice(0, 0))
    return tuple(out)


def _erode(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by one voxel (6-neighbourhood); the volume border counts as outside."""
    out = mask.copy()
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(1, None), slice(None, -1)
        out[tuple(lo)] &= mask[tuple(hi)]
        out[tuple(hi)] &= mask[tuple(lo)]
        edge = [slice(None)] * 3
        for end in (0, -1):
            edge[axis] = end
            out[tuple(edge)] = False
    return out


def _anatomy(c: _Canvas, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Draw the body and organs; returns the HU image (float) and the diaphragm height."""
    hu = np.full(c.shape, -1000.0)
    s = rng.uniform(0.85, 1.05)  # body habitus
    a, b = 150.0 * s, 105.0 * s * rng.uniform(0.92, 1.08)
    fat = rng.uniform(8.0, 25.0)
    r = np.sqrt((c.u / a) ** 2 + (c.v / b) ** 2) * np.ones((1, 1, c.shape[2]))
    body = r <= 1.0
    hu[body] = -100.0  # subcutaneous fat
    muscle = r <= 1.0 - fat / b
    hu[muscle] = 45.0
    inner = r <= 1.0 - (fat + 10.0) / b
    hu[inner] = 10.0 + 25.0 * _smooth_noise(rng, c.shape)[inner]  # mediastinal / visceral soft tissue

    w0 = rng.uniform(-35.0, 5.0)  # diaphragm
    dome = w0 + 25.0 * np.clip(1.0 - ((np.abs(c.u) - 75.0 * s) / (60.0 * s)) ** 2, 0.0, 1.0) + 0.05 * c.v
    for name, side in (("lung_left", 1.0), ("lung_right", -1.0)):
        lung = c.ellipsoid((side * 72.0 * s, 0.0, w0 + 110.0), (55.0 * s, 78.0 * s, 130.0)) & (c.w > dome) & inner
        c.labels[lung] = _ID[name]
    lungs = np.isin(c.labels, (_ID["lung_left"], _ID["lung_right"]))
    hu[lungs] = -860.0 + 25.0 * _smooth_noise(rng, c.shape)[lungs]

    organs = [
        ("heart", c.ellipsoid((20.0 * s, 28.0 * s, w0 + 48.0), (55.0 * s, 45.0 * s, 50.0)), 40.0),
        ("liver", c.ellipsoid((-55.0 * s, 8.0 * s, w0 - 45.0), (85.0 * s, 72.0 * s, 65.0)) & (c.w < dome - 4), 60.0),
        ("spleen", c.ellipsoid((80.0 * s, -35.0 * s, w0 - 40.0), (28.0 * s, 45.0 * s, 45.0)) & (c.w < dome - 4), 48.0),
        ("kidney_left", c.ellipsoid((60.0 * s, -55.0 * s, w0 - 105.0), (24.0, 30.0, 50.0)), 32.0),
        ("kidney_right", c.ellipsoid((-60.0 * s, -55.0 * s, w0 - 115.0), (24.0, 30.0, 50.0)), 32.0),
        ("aorta", c.cylinder(18.0 * s, -38.0 * s, 12.0) & (c.w < w0 + 115.0), 45.0),
    ]
    for name, region, value in organs:
        region = region & inner
        c.labels[region] = _ID[name]
        hu[region] = value + 6.0 * _smooth_noise(rng, c.shape, cells=10)[region]

    spine_v = -b + fat + 40.0 * s
    body_vertebra = c.cylinder(0.0, spine_v, 17.0 * s)
    disc = np.broadcast_to(((c.w - rng.uniform(0, 30)) % 30.0) < 6.0, c.shape)
    process = c.cylinder(0.0, spine_v - 27.0 * s, 7.0 * s)
    spine = (body_vertebra & ~disc) | process
    c.labels[spine] = _ID["spine"]
    shell = spine & ~c.cylinder(0.0, spine_v, 13.0 * s)
    hu[spine] = 420.0
    hu[shell] = 850.0
    hu[body_vertebra & disc] = 90.0

    # ribs: arcs just inside the muscle wall of the chest, sloping down anteriorly, gaps at the spine and sternum
    ring = np.abs(r - (1.0 - (fat + 16.0) / b)) * b < 5.0
    level = (c.w - w0 + 0.25 * c.v) % 26.0 < 8.0
    ribs = ring & level & (c.w > w0 - 30.0) & (np.abs(c.u) > 25.0) & (c.v < 0.55 * b)
    c.labels[ribs & (c.labels == 0)] = _ID["ribs"]
    ribs = c.labels == _ID["ribs"]
    hu[ribs] = 700.0 + 60.0 * _smooth_noise(rng, c.shape, cells=12)[ribs]
    return hu, w0


def _vessels(c: _Canvas, hu: np.ndarray, rng: np.random.Generator, w0: float) -> None:
    """Branching pulmonary vessels from each hilum, drawn only inside the lungs (they stay labelled lung)."""
    for name, side in (("lung_left", 1.0), ("lung_right", -1.0)):
        lung = c.labels == _ID[name]
        idx = np.argwhere(lung)
        if len(idx) == 0:
            continue
        hilum = np.array([side * 30.0, 0.0, w0 + 70.0])
        for target in idx[rng.choice(len(idx), size=int(rng.integers(10, 18)))]:
            end = np.array([c.u.ravel()[target[0]], c.v.ravel()[target[1]], c.w.ravel()[target[2]]])
            radius = rng.uniform(1.5, 3.5)
            box = _box(c, np.minimum(hilum, end) - radius - 1, np.maximum(hilum, end) + radius + 1)
            vessel = (_segment_distance(c, box, hilum, end) <= radius) & lung[box]
            hu[box][vessel] = 40.0


def _tumour(
    c: _Canvas, hu: np.ndarray, rng: np.random.Generator, radius_range: Sequence[float]
) -> tuple[np.ndarray, dict[str, float]]:
    """A lobulated, textured lung tumour wholly inside one lung; returns its mask and its hidden properties."""
    lungs = _erode(np.isin(c.labels, (_ID["lung_left"], _ID["lung_right"])))  # lung on every side of the tumour
    candidates = np.argwhere(lungs)
    radius = float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
    for _ in range(200):
        centre_idx = candidates[rng.integers(len(candidates))]
        centre = np.array([c.u.ravel()[centre_idx[0]], c.v.ravel()[centre_idx[1]], c.w.ravel()[centre_idx[2]]])
        lobes = int(rng.integers(1, 5))
        offsets = rng.normal(0.0, radius * 0.35, size=(lobes, 3))
        offsets[0] = 0.0
        sizes = radius * rng.uniform(0.55, 1.0, size=lobes)
        sizes[0] = radius
        reach = float(np.max(np.linalg.norm(offsets, axis=1) + sizes)) * 1.3 + 2.0
        box = _box(c, centre - reach, centre + reach)
        pu, pv, pw = c.u[box[0]], c.v[:, box[1]], c.w[:, :, box[2]]
        shape = tuple(sl.stop - sl.start for sl in box)
        bumps = 1.0 + 0.15 * _smooth_noise(rng, shape, cells=4)  # irregular margin
        mask = np.zeros(shape, dtype=bool)
        for off, size in zip(offsets, sizes):
            p = centre + off
            mask |= (pu - p[0]) ** 2 + (pv - p[1]) ** 2 + (pw - p[2]) ** 2 <= (size * bumps) ** 2
        spiculated = rng.random() < 0.4
        if spiculated:
            for _ in range(int(rng.integers(4, 9))):
                direction = rng.normal(size=3)
                end = centre + direction / (np.linalg.norm(direction) + 1e-9) * radius * 1.25
                mask |= _segment_distance(c, box, centre, end) <= 1.2
        if mask.sum() >= 8 and lungs[box][mask].all():
            break
        radius *= 0.95
    else:  # pragma: no cover - only for absurdly small volumes
        raise ValueError(f"no room for a tumour in the lungs of a phantom of shape {c.shape}")

    necrotic = radius > 14.0 and rng.random() < 0.5
    heterogeneity = rng.uniform(4.0, 35.0)
    base = rng.uniform(15.0, 50.0)
    texture = base + heterogeneity * _smooth_noise(rng, shape, cells=8)
    if necrotic:
        core = (pu - centre[0]) ** 2 + (pv - centre[1]) ** 2 + (pw - centre[2]) ** 2 <= (0.45 * radius) ** 2
        texture = np.where(core, rng.uniform(-5.0, 15.0), texture)
    region = hu[box]
    region[mask] = texture[mask]
    full = np.zeros(c.shape, dtype=np.uint8)
    full[box][mask] = 1
    c.labels[full > 0] = _ID["tumour"]
    volume_ml = float(mask.sum() * np.prod(c.spacing) / 1000.0)
    props = dict(
        volume_ml=volume_ml,
        heterogeneity=heterogeneity,
        mean_hu=base,
        necrotic=float(necrotic),
        spiculated=float(spiculated),
        lobes=float(lobes),
    )
    return full, props


def _endpoints(props: dict[str, float], rng: np.random.Generator) -> dict[str, int]:
    """The hidden rule: small, homogeneous, non-necrotic tumours respond; large, spiculated, lobulated ones recur."""
    size = (np.log(max(props["volume_ml"], 1e-3)) - np.log(8.0)) / 1.2
    hetero = (props["heterogeneity"] - 20.0) / 9.0
    response = -1.4 * size - 0.9 * hetero - 1.0 * props["necrotic"] + 0.1 + rng.normal(0.0, 0.8)
    recurrence = 1.2 * size + 1.3 * props["spiculated"] + 0.35 * (props["lobes"] - 2.5) - 0.6 + rng.normal(0.0, 0.8)
    return {"response": int(response > 0), "recurrence": int(recurrence > 0)}


def make_phantom(
    seed: int | Sequence[int] = 0,
    shape: Sequence[int] = (128, 128, 64),
    spacing: Sequence[float] = (2.5, 2.5, 5.0),
    tumour_radius: Sequence[float] = (7.0, 24.0),
) -> Phantom:
    """Generate one phantom in memory.

    Args:
        seed: seed (or seed sequence) of this case; the same seed always gives the same case.
        shape: ``(X, Y, Z)`` voxels.
        spacing: ``(X, Y, Z)`` voxel size in mm; the body is ~300 mm wide, so keep ``shape * spacing`` around
            320 x 320 x 300 mm for a whole chest and upper abdomen.
        tumour_radius: (min, max) main radius of the tumour in mm, drawn log-uniformly.

    Returns:
        A :class:`Phantom`.

    Raises:
        ValueError: on a shape or spacing that is not three positive numbers, or a field of view too small for lungs.
    """
    if len(shape) != 3 or any(int(n) != n or n < 8 for n in shape):
        raise ValueError(f"shape must be three integers >= 8, got {tuple(shape)}")
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (mm), got {tuple(spacing)}")
    if len(tumour_radius) != 2 or not 0 < tumour_radius[0] <= tumour_radius[1]:
        raise ValueError(f"tumour_radius must be (min, max) mm with 0 < min <= max, got {tuple(tumour_radius)}")
    rng = np.random.default_rng(seed)
    c = _Canvas([int(n) for n in shape], [float(s) for s in spacing])
    hu, w0 = _anatomy(c, rng)
    if not np.isin(c.labels, (_ID["lung_left"], _ID["lung_right"])).any():
        raise ValueError(f"field of view {np.multiply(shape, spacing)} mm holds no lung; enlarge shape or spacing")
    _vessels(c, hu, rng, w0)
    tumour, props = _tumour(c, hu, rng, tumour_radius)
    # CT noise is spatially correlated: smooth white noise in-plane before adding it
    noise = rng.standard_normal(c.shape)
    noise = 0.25 * (np.roll(noise, 1, 0) + np.roll(noise, -1, 0) + np.roll(noise, 1, 1) + np.roll(noise, -1, 1)) + noise
    hu = hu + rng.uniform(10.0, 20.0) * noise / noise.std()
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)  # world origin at the volume centre
    return Phantom(
        image=np.clip(np.rint(hu), -1024, 3071).astype(np.int16),
        organs=c.labels,
        tumour=tumour,
        affine=affine,
        endpoints=_endpoints(props, rng),
        tumour_properties=props,
    )


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a NIfTI file atomically, with the affine as both qform and sform."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def generate_phantoms(
    out_dir: str,
    num: int = 16,
    seed: int = 0,
    shape: Sequence[int] = (128, 128, 64),
    spacing: Sequence[float] = (2.5, 2.5, 5.0),
    val_fraction: float = 0.25,
    tumour_radius: Sequence[float] = (7.0, 24.0),
) -> str:
    """Write ``num`` phantoms and an MSD-style ``dataset.json`` under ``out_dir``.

    Layout: ``imagesTr/phantom_XXX.nii.gz`` (int16 HU), ``labelsTr/`` (tumour masks, the segmentation ``label``),
    ``organsTr/`` (organ label maps, key ``organs``), and ``dataset.json`` with ``training`` and ``validation``
    lists whose items also carry ``case_id``, ``response`` and ``recurrence``. Case ``i`` depends only on
    ``(seed, i)``, so a larger ``num`` extends a smaller run. Existing files of the same names are replaced atomically.

    Args:
        out_dir: output folder (created).
        num: number of cases (at least 2, so that both lists are non-empty).
        seed: base seed.
        shape: ``(X, Y, Z)`` voxels per volume.
        spacing: ``(X, Y, Z)`` voxel size in mm.
        val_fraction: share of cases (the last ones) in the ``validation`` list; at least one case each side.
        tumour_radius: (min, max) main tumour radius in mm.

    Returns:
        The path of ``dataset.json``.

    Raises:
        ValueError: on ``num < 2`` or ``val_fraction`` outside (0, 1).
    """
    if int(num) != num or num < 2:
        raise ValueError(f"num must be an integer >= 2 (one training and one validation case at least), got {num}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    out = Path(out_dir)
    n_val = min(max(1, round(num * val_fraction)), num - 1)
    items = []
    for i in tqdm(range(int(num)), desc="phantoms", unit="case"):
        case = f"phantom_{i:03d}"
        p = make_phantom((int(seed), i), shape, spacing, tumour_radius)
        files = {
            "image": f"imagesTr/{case}.nii.gz",
            "label": f"labelsTr/{case}.nii.gz",
            "organs": f"organsTr/{case}.nii.gz",
        }
        _save_nifti(p.image, p.affine, out / files["image"])
        _save_nifti(p.tumour, p.affine, out / files["label"])
        _save_nifti(p.organs, p.affine, out / files["organs"])
        items.append({**files, "case_id": case, **p.endpoints})
    dataset = {
        "name": "SMART synthetic CT phantoms",
        "description": "Synthetic chest/abdomen CT (HU) with organ labels, lung tumours and image-level endpoints",
        "reference": "smart_nets.data.phantoms",
        "licence": "CC0-1.0 (generated data)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "tumour"},
        "organ_labels": {str(k): v for k, v in ORGAN_LABELS.items()},
        "endpoints": {
            "response": "1 = responder (Task I, immunotherapy response)",
            "recurrence": "1 = recurrence (Task II)",
        },
        "generator": {
            "seed": int(seed),
            "shape": [int(s) for s in shape],
            "spacing": [float(s) for s in spacing],
            "tumour_radius": [float(r) for r in tumour_radius],
        },
        "numTraining": num - n_val,
        "numValidation": n_val,
        "training": items[: num - n_val],
        "validation": items[num - n_val :],
    }
    path = out / "dataset.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dataset, indent=4) + "\n")
    logger.info("wrote %d phantoms and %s", num, path)
    return str(path)


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(generate_phantoms)
