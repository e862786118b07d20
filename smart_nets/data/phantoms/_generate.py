"""One phantom in memory (:func:`make_phantom`) and a whole dataset on disk (:func:`generate_phantoms`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from smart_nets.io import atomic_path

from ._anatomy import LUNGS, ORGAN_LABELS, draw_anatomy, draw_habitus
from ._geometry import FIELD_OF_VIEW_MM, Canvas
from ._intensity import PHASES, acquire, draw_phase, draw_scan, render
from ._tumours import TUMOUR_TYPES, add_tumour, endpoints, latent_scores

logger = logging.getLogger(__name__)

IN_PLANE_MM = (2.0, 3.0)  # drawn per case when no spacing is given
SLICE_MM = (2.5, 3.0, 3.75, 5.0)


@dataclass
class Phantom:
    """One synthetic case.

    Attributes:
        image: ``(X, Y, Z)`` int16 HU.
        organs: ``(X, Y, Z)`` uint8 organ labels (:data:`ORGAN_LABELS`; the tumour overrides what it lies in).
        tumour: ``(X, Y, Z)`` uint8 binary tumour mask.
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix.
        endpoints: ``{"response": 0/1, "recurrence": 0/1}``.
        tumour_properties: the hidden properties the endpoints were drawn from (``type`` is the tumour kind, the
            others are numbers; not written to the datalist).
        acquisition: ``phase``, ``kernel``, ``kernel_sigma_mm``, ``sharpening``, ``noise_hu``, ``spacing`` and
            ``shape`` of the scan.
    """

    image: np.ndarray
    organs: np.ndarray
    tumour: np.ndarray
    affine: np.ndarray
    endpoints: dict[str, int]
    tumour_properties: dict[str, float | str]
    acquisition: dict


def _names(value: str | Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """``value`` as a tuple of names from ``allowed`` (a string may list several, comma-separated)."""
    names = tuple(n.strip() for n in value.split(",")) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        raise ValueError(f"{what} must be a non-empty selection of {list(allowed)}, got {list(names)}")
    return names


def _grid(
    rng: np.random.Generator, shape: Sequence[int] | None, spacing: Sequence[float] | None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The case's grid: as given; or the missing half sized to a 320 mm field of view; or, with neither, a spacing
    drawn per case (in-plane 2.0-3.0 mm, slices 2.5-5.0 mm) and the shape that covers 320 mm with it."""
    if shape is not None and (len(shape) != 3 or any(int(n) != n or n < 8 for n in shape)):
        raise ValueError(f"shape must be three integers >= 8, got {tuple(shape)}")
    if spacing is not None and (len(spacing) != 3 or any(not s > 0 for s in spacing)):
        raise ValueError(f"spacing must be three positive numbers (mm), got {tuple(spacing)}")
    if spacing is None and shape is None:
        in_plane = round(float(rng.uniform(*IN_PLANE_MM)), 2)
        spacing = (in_plane, in_plane, float(SLICE_MM[int(rng.integers(len(SLICE_MM)))]))
    if spacing is None:
        spacing = tuple(FIELD_OF_VIEW_MM / n for n in shape)
    if shape is None:
        shape = tuple(math.ceil(FIELD_OF_VIEW_MM / s - 1e-6) for s in spacing)
    return tuple(int(n) for n in shape), tuple(float(s) for s in spacing)


def make_phantom(
    seed: int | Sequence[int] = 0,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    tumour_radius: Sequence[float] = (7.0, 24.0),
    tumour_types: str | Sequence[str] = TUMOUR_TYPES,
    phases: str | Sequence[str] = PHASES,
) -> Phantom:
    """Generate one phantom in memory.

    Args:
        seed: seed (or seed sequence) of this case; the same seed always gives the same case.
        shape: ``(X, Y, Z)`` voxels; None: sized to a 320 mm field of view.
        spacing: ``(X, Y, Z)`` voxel size in mm; None: 320 mm over ``shape``, or, with no shape either, drawn per
            case (in-plane 2.0-3.0 mm, slices 2.5, 3.0, 3.75 or 5.0 mm). The body is up to ~300 mm wide, so keep
            ``shape * spacing`` around 320 mm per axis.
        tumour_radius: (min, max) main radius of the tumour in mm, drawn log-uniformly.
        tumour_types: tumour kinds to draw from (:data:`TUMOUR_TYPES`; a string may list several, comma-separated).
        phases: contrast phases to draw from (:data:`PHASES`).

    Returns:
        A :class:`Phantom`.

    Raises:
        ValueError: on a shape or spacing that is not three positive numbers, an unknown tumour type or phase, or a
            field of view too small for lungs.
    """
    if len(tumour_radius) != 2 or not 0 < tumour_radius[0] <= tumour_radius[1]:
        raise ValueError(f"tumour_radius must be (min, max) mm with 0 < min <= max, got {tuple(tumour_radius)}")
    types, phases = _names(tumour_types, TUMOUR_TYPES, "tumour_types"), _names(phases, PHASES, "phases")
    # independent streams: the patient and the scanner settings stay the same when the grid or the tumour kind change
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    grid_rng, body_rng, scan_rng, tumour_rng, noise_rng = streams
    shape, spacing = _grid(grid_rng, shape, spacing)
    habitus = draw_habitus(body_rng)
    c = Canvas(shape, spacing, habitus.offset)
    anatomy = draw_anatomy(c, body_rng, habitus)
    if not np.isin(c.labels, LUNGS).any():
        raise ValueError(f"field of view {np.multiply(shape, spacing)} mm holds no lung; enlarge shape or spacing")
    phase = draw_phase(scan_rng, phases)
    scan = draw_scan(scan_rng)
    hu = render(c, scan_rng, noise_rng, phase, anatomy.inflation, habitus.visceral_fat)
    tumour, props = add_tumour(c, hu, tumour_rng, anatomy, tumour_radius, types, phase)
    hu = acquire(hu, noise_rng, scan, spacing)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)  # world origin at the volume centre
    return Phantom(
        image=np.clip(np.rint(hu), -1024, 3071).astype(np.int16),
        organs=c.labels,
        tumour=tumour,
        affine=affine,
        endpoints=endpoints(props, tumour_rng),
        tumour_properties=props,
        acquisition={"phase": phase, **scan, "spacing": list(spacing), "shape": list(shape)},
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
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    val_fraction: float = 0.25,
    tumour_radius: Sequence[float] = (7.0, 24.0),
    tumour_types: str | Sequence[str] = TUMOUR_TYPES,
    phases: str | Sequence[str] = PHASES,
) -> str:
    """Write ``num`` phantoms and an MSD-style ``dataset.json`` under ``out_dir``.

    Layout: ``imagesTr/phantom_XXX.nii.gz`` (int16 HU), ``labelsTr/`` (tumour masks, the segmentation ``label``),
    ``organsTr/`` (organ label maps, key ``organs``), and ``dataset.json`` with ``training`` and ``validation``
    lists whose items also carry ``case_id``, ``response`` and ``recurrence``; ``generator.cases`` records each case's
    grid, contrast phase, kernel, noise, tumour type and ``latent``, the noise-free scores its endpoints were drawn
    from (:func:`latent_scores`; never an input of a model, the ceiling of an outcome study). Case ``i`` depends only
    on ``(seed, i)``, so a larger ``num`` extends a smaller run. Existing files of the same names are replaced
    atomically.

    Args:
        out_dir: output folder (created).
        num: number of cases (at least 2, so that both lists are non-empty).
        seed: base seed.
        shape: ``(X, Y, Z)`` voxels per volume; None: sized to a 320 mm field of view (see :func:`make_phantom`).
        spacing: ``(X, Y, Z)`` voxel size in mm; None with no shape: drawn per case.
        val_fraction: share of cases (the last ones) in the ``validation`` list; at least one case each side.
        tumour_radius: (min, max) main tumour radius in mm.
        tumour_types: tumour kinds to draw from (:data:`TUMOUR_TYPES`).
        phases: contrast phases to draw from (:data:`PHASES`).

    Returns:
        The path of ``dataset.json``.

    Raises:
        ValueError: on ``num < 2``, ``val_fraction`` outside (0, 1), or an argument :func:`make_phantom` rejects.
    """
    if int(num) != num or num < 2:
        raise ValueError(f"num must be an integer >= 2 (one training and one validation case at least), got {num}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    types, phases = _names(tumour_types, TUMOUR_TYPES, "tumour_types"), _names(phases, PHASES, "phases")
    out = Path(out_dir)
    n_val = min(max(1, round(num * val_fraction)), num - 1)
    items, cases = [], {}
    for i in tqdm(range(int(num)), desc="phantoms", unit="case"):
        case = f"phantom_{i:03d}"
        p = make_phantom((int(seed), i), shape, spacing, tumour_radius, types, phases)
        files = {"image": f"imagesTr/{case}.nii.gz", "label": f"labelsTr/{case}.nii.gz"}
        files["organs"] = f"organsTr/{case}.nii.gz"
        for key, array in (("image", p.image), ("label", p.tumour), ("organs", p.organs)):
            _save_nifti(array, p.affine, out / files[key])
        items.append({**files, "case_id": case, **p.endpoints})
        latent = latent_scores(p.tumour_properties)  # the endpoints' noise-free scores: outcome studies' ceiling
        cases[case] = {**p.acquisition, "tumour_type": p.tumour_properties["type"], "latent": latent}
    generator = {
        "seed": int(seed),
        "shape": None if shape is None else [int(s) for s in shape],
        "spacing": None if spacing is None else [float(s) for s in spacing],
        "field_of_view_mm": FIELD_OF_VIEW_MM,
        "tumour_radius": [float(r) for r in tumour_radius],
        "tumour_types": list(types),
        "phases": list(phases),
        "cases": cases,
    }
    _write_dataset(out / "dataset.json", items, n_val, generator)
    logger.info("wrote %d phantoms and %s", num, out / "dataset.json")
    return str(out / "dataset.json")


def _write_dataset(path: Path, items: list[dict], n_val: int, generator: dict) -> None:
    """The MSD-style ``dataset.json``: the last ``n_val`` items are the validation list."""
    num = len(items)
    dataset = {
        "name": "SMART synthetic CT phantoms",
        "description": "Synthetic chest/abdomen CT (HU) with organ labels, lung tumours and image-level endpoints",
        "reference": "smart_nets.data.phantoms",
        "licence": "CC0-1.0 (generated data)",
        "synthetic": True,  # smart_nets.provenance: weights trained on these say so in every output
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "tumour"},
        "organ_labels": {str(k): v for k, v in ORGAN_LABELS.items()},
        "endpoints": {
            "response": "1 = responder (Task I, immunotherapy response)",
            "recurrence": "1 = recurrence (Task II)",
        },
        "generator": generator,
        "numTraining": num - n_val,
        "numValidation": n_val,
        "training": items[: num - n_val],
        "validation": items[num - n_val :],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dataset, indent=4) + "\n")
