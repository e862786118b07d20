"""DICOM in, DICOM-SEG out: a mask predicted on a DICOM series, written as a DICOM Segmentation object.

A NIfTI mask of a DICOM series loses the link to the study: a PACS or viewer cannot put it over the slices it came
from. A DICOM Segmentation (DICOM-SEG) object references the source series' study, series, frame of reference and
SOP instances and carries the slices' geometry, so it opens over the CT it was computed from.

The object itself is built by ``highdicom`` (the optional ``dicom`` extra: ``pip install 'smart-nets[dicom]'``).
What this module adds is the part highdicom cannot know: where each voxel of the mask MONAI's reader produced lies
on the source slices. ``LoadImage`` on a series folder stacks the slices by ``InstanceNumber`` into an ``(X, Y, Z)``
array whose affine is RAS (DICOM is LPS) and whose first two axes are swapped against DICOM's (rows, columns);
:func:`slice_frames` undoes all of that from the affine alone, and refuses a mask that does not lie voxel for voxel
on the slices instead of writing a misplaced one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from smart_nets.io import atomic_path

__all__ = [
    "OUTPUT_FORMATS",
    "SaveDicomSegd",
    "check_output_format",
    "read_series_headers",
    "slice_frames",
    "write_dicom_seg",
]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "dicom_seg")
INSTALL_HINT = "pip install 'smart-nets[dicom]' (or pip install highdicom)"
GRID_TOLERANCE = 0.1  # voxels: DICOM positions are decimal strings, so a slice may sit a hair off the mask's grid
GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
# Type 2 (present, possibly empty) patient and study attributes highdicom copies from the source; anonymisers and
# simple writers (smart_nets.data.write_dicom_series among them) often drop them
TYPE2_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def check_output_format(value: str) -> str:
    """``value`` when it is one of :data:`OUTPUT_FORMATS`, else a ``ValueError`` naming it.

    The inference config switches its mask writer on ``output_format`` with ``_disabled_`` expressions; without this
    check a misspelt value would disable both writers and the run would write nothing, silently.
    """
    if value not in OUTPUT_FORMATS:
        raise ValueError(
            f"output_format {value!r} is not one of {', '.join(repr(v) for v in OUTPUT_FORMATS)}: 'nifti' writes "
            "<name>_seg.nii.gz masks (any input), 'dicom_seg' writes <series>_seg.dcm DICOM Segmentation objects "
            "(DICOM series inputs only)"
        )
    return value


def _highdicom():
    """``highdicom``, or an ``ImportError`` saying how to install it."""
    try:
        import highdicom
    except ImportError as e:
        raise ImportError(f"writing DICOM-SEG (output_format 'dicom_seg') needs highdicom: {INSTALL_HINT}") from e
    return highdicom


def read_series_headers(folder: str | os.PathLike) -> list:
    """The headers (no pixel data) of the DICOM slices in ``folder``, sorted along the slice normal.

    The files are those MONAI's ``PydicomReader`` stacks (not recursive, hidden files skipped, files pydicom cannot
    parse ignored). Sorting by the position of ``ImagePositionPatient`` along the normal of
    ``ImageOrientationPatient`` gives the geometric slice order, whatever order the ``InstanceNumber`` tags give.
    Patient and study attributes of type 2 (:data:`TYPE2_TAGS`) missing from a header are added empty, as the
    standard allows, so that highdicom can copy them into the segmentation.

    Raises:
        ValueError: naming ``folder`` when it holds no DICOM slice or several series, or naming a slice without
            the geometry tags a segmentation needs.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    headers = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        missing = [tag for tag in GEOMETRY_TAGS if tag not in ds]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)}; a DICOM-SEG needs every slice's geometry")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ValueError(f"{path}: a multi-frame image; DICOM-SEG output supports series of single-frame slices")
        for tag in TYPE2_TAGS:
            if tag not in ds:
                setattr(ds, tag, "")
        headers.append(ds)
    if not headers:
        raise ValueError(f"{folder}: no DICOM slices found, so there is no series to reference")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in headers})
    if len(series) > 1:
        raise ValueError(f"{folder}: holds {len(series)} series ({', '.join(series)}); give each series its own folder")
    normal = np.cross(*np.reshape(np.asarray(headers[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(headers, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))


def _unit_axis(step: np.ndarray) -> tuple[int, int] | None:
    """``(axis, +1 or -1)`` when ``step`` (a move of one pixel, in voxel indices) is one voxel along one axis."""
    snapped = np.rint(step)
    if np.abs(snapped).sum() != 1 or np.abs(step - snapped).max() > GRID_TOLERANCE:
        return None
    axis = int(np.flatnonzero(snapped)[0])
    return axis, int(snapped[axis])


def slice_frames(mask: np.ndarray, affine: np.ndarray, slices: Sequence, source: str = "the series") -> np.ndarray:
    """The ``(slices, rows, columns)`` frames of ``mask`` on the DICOM ``slices``, frame ``i`` on ``slices[i]``.

    ``mask`` is a 3D array with a voxel-to-RAS ``affine``, as MONAI's reader gives a series folder (and as
    ``Invertd`` gives the prediction back). DICOM's patient frame is LPS, so a slice's pixel (row ``r``, column
    ``c``) lies at ``ImagePositionPatient + c * PixelSpacing[1] * ImageOrientationPatient[:3] + r * PixelSpacing[0]
    * ImageOrientationPatient[3:]`` (LPS), which ``inv(affine) @ diag(-1, -1, 1)`` turns into a voxel index. The mask
    must lie voxel for voxel on the slices (each pixel one voxel, each voxel one pixel): highdicom would resample a
    mismatched grid without a word, and a shifted mask is worse than none.

    Raises:
        ValueError: naming ``source`` and what does not match (shape, orientation, a slice off the grid).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"{source}: a DICOM-SEG needs a 3D mask, got shape {mask.shape}")
    first = slices[0]
    rows, cols = int(first.Rows), int(first.Columns)
    orientation = np.asarray(first.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    for ds in slices[1:]:
        same = (int(ds.Rows), int(ds.Columns)) == (rows, cols)
        same = same and np.allclose(np.asarray(ds.ImageOrientationPatient, float), orientation, atol=1e-4)
        if not (same and np.allclose([float(v) for v in ds.PixelSpacing], [row_spacing, col_spacing], atol=1e-4)):
            raise ValueError(
                f"{source}: slice {ds.get('SOPInstanceUID')} differs from the first slice in size, orientation or "
                "pixel spacing; a DICOM-SEG can only be written for a series of parallel slices of one size"
            )
    to_index = np.linalg.inv(np.asarray(affine, dtype=float)) @ np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS -> voxel
    linear, offset = to_index[:3, :3], to_index[:3, 3]
    step_col = linear @ (orientation[:3] * col_spacing)  # one column to the right: along the row direction
    step_row = linear @ (orientation[3:] * row_spacing)  # one row down: along the column direction
    along_col, along_row = _unit_axis(step_col), _unit_axis(step_row)
    geometry = f"mask shape {mask.shape}, affine {np.round(np.asarray(affine, float), 4).tolist()}"
    if along_col is None or along_row is None or along_col[0] == along_row[0]:
        raise ValueError(
            f"{source}: the mask's axes are not the slices' rows and columns ({geometry}; one pixel along a row is "
            f"{np.round(step_col, 3).tolist()} voxels, along a column {np.round(step_row, 3).tolist()})"
        )
    slice_axis = 3 - along_col[0] - along_row[0]
    if (mask.shape[along_row[0]], mask.shape[along_col[0]], mask.shape[slice_axis]) != (rows, cols, len(slices)):
        raise ValueError(
            f"{source}: {len(slices)} slices of {rows} x {cols} pixels do not match the mask ({geometry}); was the "
            "mask resampled, or the series changed since it was read?"
        )
    corners = [(r, c) for r in (0, rows - 1) for c in (0, cols - 1)]
    unit_row, unit_col = np.rint(step_row), np.rint(step_col)
    indices, worst = [], 0.0
    for ds in slices:
        origin = linear @ np.asarray(ds.ImagePositionPatient, float) + offset
        start = np.rint(origin)
        for r, c in corners:
            exact = origin + r * step_row + c * step_col
            snapped = start + r * unit_row + c * unit_col
            worst = max(worst, float(np.abs(exact - snapped).max()))
            if ((snapped < 0) | (snapped >= mask.shape)).any():
                raise ValueError(
                    f"{source}: slice {ds.get('SOPInstanceUID')} at {list(map(float, ds.ImagePositionPatient))} "
                    f"lies outside the mask ({geometry})"
                )
        indices.append(int(start[slice_axis]))
    if worst > GRID_TOLERANCE or sorted(indices) != list(range(len(slices))):
        raise ValueError(
            f"{source}: the slices do not lie on the mask's grid (up to {worst:.2f} voxels off; slice indices "
            f"{indices}; {geometry}). MONAI's reader stacks slices by InstanceNumber with the average spacing, so a "
            "series with uneven spacing, gaps or repeated positions cannot be mapped back slice for slice"
        )
    frames = np.moveaxis(mask, (slice_axis, along_row[0], along_col[0]), (0, 1, 2))
    frames = frames[:, :: along_row[1], :: along_col[1]]
    return np.ascontiguousarray(frames[indices])


def write_dicom_seg(
    mask: np.ndarray,
    affine: np.ndarray,
    source_folder: str | os.PathLike,
    path: str | os.PathLike,
    algorithm_version: str,
    algorithm_name: str = "SMART smart_seg",
    segment_label: str = "tumour",
    series_number: int = 900,
    series_description: str | None = None,
) -> Path:
    """Write the binary ``mask`` of the series in ``source_folder`` to ``path`` as a DICOM Segmentation object.

    One segment, ``segment_label``: segmented property category "Morphologically abnormal structure" (SCT 49755003),
    type "Neoplasm" (SCT 108369006), in the lung (SCT 39607008), made automatically by ``algorithm_name``
    ``algorithm_version`` (family: artificial intelligence). The object is BINARY, references the source study,
    series, frame of reference and every SOP instance, and has the slices' geometry; slices without a tumour voxel
    are left out (highdicom's default), and an empty mask gives a valid object with every frame, all zero. The
    file is written atomically (temporary file, fsync, rename).

    Args:
        mask: 3D, values 0 and 1, on the grid MONAI's reader gives ``source_folder`` (see :func:`slice_frames`).
        affine: the mask's voxel-to-RAS ``(4, 4)`` matrix.
        source_folder: the DICOM series the mask was predicted from.
        path: the ``.dcm`` file to write.
        algorithm_version: recorded with the algorithm name (the bundle's version).
        algorithm_name: the segmentation algorithm's name.
        segment_label: the segment's label.
        series_number: SeriesNumber of the new segmentation series.
        series_description: SeriesDescription; default ``"<algorithm_name> <segment_label>"``.

    Returns:
        ``path``.

    Raises:
        ImportError: without highdicom, naming the extra to install.
        ValueError: on a mask with values other than 0 and 1, or one that does not lie on the slices.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    import smart_nets

    source = str(source_folder)
    mask = np.asarray(mask)
    other = (mask != 0) & (mask != 1)
    if other.any():
        values = np.unique(mask[other])[:8].tolist()
        raise ValueError(f"{source}: a binary mask (0 background, 1 {segment_label}) is needed, it also holds {values}")
    slices = read_series_headers(source_folder)
    frames = slice_frames(mask.astype(np.uint8), affine, slices, source)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=str(algorithm_version)
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Lung],
    )
    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="smart_nets",
        manufacturer_model_name=algorithm_name,
        software_versions=[f"smart_nets {smart_nets.__version__}", f"{algorithm_name} {algorithm_version}"],
        device_serial_number="none",
        content_description=f"{algorithm_name} {algorithm_version}: {segment_label}"[:64],
        series_description=series_description or f"{algorithm_name} {segment_label}"[:64],
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    found = int(frames.any(axis=(1, 2)).sum())
    logger.info(f"{path}: DICOM-SEG of {source}, {segment_label} on {found} of {len(slices)} slices")
    return path


def _bundle_version(metadata_file: str | os.PathLike) -> str:
    """The ``version`` of a bundle's ``configs/metadata.json``."""
    try:
        return str(json.loads(Path(metadata_file).read_text())["version"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{metadata_file}: cannot read the bundle version for the DICOM-SEG ({e})") from e


class SaveDicomSegd(MapTransform):
    """Write each ``keys`` mask of a DICOM series input as ``<output_dir>/<series folder name>_<postfix>.dcm``.

    The DICOM counterpart of ``SaveImaged`` for the end of an inference ``postprocessing`` (after ``Invertd`` and
    ``AsDiscreted``): it reads the source series from the mask's ``filename_or_obj``, the folder ``LoadImage`` was
    given, and writes with :func:`write_dicom_seg`. MONAI's own DICOM writing (``ITKWriter``) writes image series,
    not Segmentation objects, hence this transform.

    Args:
        keys: mask keys, ``(1, X, Y, Z)`` or ``(X, Y, Z)`` MetaTensors with values 0 and 1.
        output_dir: folder for the objects (created).
        output_postfix: added to the series folder's name.
        algorithm_version: the version recorded in the object; default: ``metadata_file``'s ``version``.
        metadata_file: a bundle's ``configs/metadata.json``, read when the transform is built.
        algorithm_name, segment_label, series_number, series_description: see :func:`write_dicom_seg`; the bundle
            gives ``series_description`` from :func:`smart_nets.provenance.series_description`, which says when the
            weights were trained on synthetic data.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ImportError: when built without highdicom (naming the extra), so a run stops before its first case.
        ValueError: for an input that is not a DICOM series folder (NIfTI inputs get NIfTI masks), and see
            :func:`write_dicom_seg`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike = "./",
        output_postfix: str = "seg",
        algorithm_version: str | None = None,
        metadata_file: str | os.PathLike | None = None,
        algorithm_name: str = "SMART smart_seg",
        segment_label: str = "tumour",
        series_number: int = 900,
        series_description: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        _highdicom()
        if algorithm_version is None:
            if metadata_file is None:
                raise ValueError("SaveDicomSegd needs algorithm_version or a metadata_file to read it from")
            algorithm_version = _bundle_version(metadata_file)
        self.output_dir = Path(output_dir)
        self.output_postfix = output_postfix
        self.algorithm_version = str(algorithm_version)
        self.algorithm_name = algorithm_name
        self.segment_label = segment_label
        self.series_number = series_number
        self.series_description = series_description

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, MetaTensor) or "filename_or_obj" not in value.meta:
                raise ValueError(f"SaveDicomSegd: '{key}' must be a MetaTensor whose meta names its input")
            source = str(value.meta["filename_or_obj"])
            if not os.path.isdir(source):
                raise ValueError(
                    f"{source}: output_format 'dicom_seg' writes DICOM Segmentation objects for DICOM series inputs "
                    "(a folder of slices), and this input is a file; NIfTI inputs get NIfTI masks (output_format "
                    "'nifti')"
                )
            mask = value.detach().cpu()
            if mask.ndim == 4:
                if mask.shape[0] != 1:
                    raise ValueError(f"{source}: one channel of labels is needed, got {mask.shape[0]} channels")
                mask = mask[0]
            affine = torch.as_tensor(value.affine, dtype=torch.float64).numpy()
            path = self.output_dir / f"{Path(source).name}_{self.output_postfix}.dcm"
            write_dicom_seg(
                mask.numpy(),
                affine,
                source,
                path,
                algorithm_version=self.algorithm_version,
                algorithm_name=self.algorithm_name,
                segment_label=self.segment_label,
                series_number=self.series_number,
                series_description=self.series_description,
            )
            value.meta["saved_to"] = str(path)
        return d
