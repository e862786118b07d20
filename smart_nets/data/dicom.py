"""DICOM series: write a HU volume as a CT series (one file per axial slice), for testing DICOM inputs end to end, and
list the series a folder holds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from smart_nets.io import atomic_path

__all__ = ["dicom_series_in", "write_dicom_series"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SERIES_TAGS = ["SeriesInstanceUID", "SeriesDescription", "SeriesNumber"]


def write_dicom_series(volume: np.ndarray, affine: np.ndarray, out_dir: str, patient_id: str = "PHANTOM") -> list[str]:
    """Write ``volume`` (``(X, Y, Z)`` HU, NIfTI/RAS axes as :func:`smart_nets.data.make_phantom` gives) as a series.

    The DICOM patient frame is LPS, so the RAS affine's first two rows change sign; slices are written along Z
    with ``ImagePositionPatient`` from the affine, so a reader that sorts by position rebuilds the same geometry.
    Each file is written atomically.

    Args:
        volume: ``(X, Y, Z)`` HU values (int16 range).
        affine: ``(4, 4)`` voxel-to-RAS matrix with axis-aligned columns.
        out_dir: folder for ``slice_XXXX.dcm`` (created).
        patient_id: PatientID written to every slice.

    Returns:
        The written paths.

    Raises:
        ImportError: when pydicom is not installed.
        ValueError: on a volume that is not 3D.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if volume.ndim != 3:
        raise ValueError(f"volume must be (X, Y, Z), got shape {volume.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    row_dir, col_dir = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]  # along X (columns of a row), along Y
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        position = np.diag([-1.0, -1.0, 1.0]) @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (along Y), column spacing (along X)
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()  # rows = Y
        path = out / f"slice_{k:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(str(path))
    return paths


def dicom_series_in(folder: str | os.PathLike) -> dict[str, dict]:
    """The DICOM series in ``folder`` (not recursive), read from the headers only.

    MONAI's DICOM readers stack every slice of a folder into one volume, so a folder holding two series (a CT and
    its scout, two reconstructions) silently becomes one garbled image; this lists them so that a loader can refuse.

    Args:
        folder: a folder of DICOM files; files pydicom cannot parse as DICOM are ignored.

    Returns:
        ``{SeriesInstanceUID: {"files": n, "description": SeriesDescription, "number": SeriesNumber}}``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, dict] = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=SERIES_TAGS)
        except (InvalidDicomError, OSError, ValueError):
            continue
        uid = str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))
        entry = series.setdefault(
            uid, {"files": 0, "description": str(ds.get("SeriesDescription", "")), "number": ds.get("SeriesNumber")}
        )
        entry["files"] += 1
    return series
