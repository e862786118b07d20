"""Input checks that fail early with the file's name, and a MONAI Label-safe ``Spacingd``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform, Spacingd

__all__ = ["CheckFinited", "CheckSegmentationd", "LoadImageCheckedd", "SpacingExtrasSafed"]


def _source(data: Mapping, key: str) -> str:
    value = data.get(key)
    meta = value.meta if isinstance(value, MetaTensor) else {}
    return str(meta.get("filename_or_obj", f"item '{key}'"))


class CheckFinited(MapTransform):
    """Raise when an image holds NaN or infinite values, naming the file it was loaded from.

    MONAI has no such check; a NaN volume otherwise surfaces many steps later as a NaN loss with no file to blame.

    Args:
        keys: keys to check.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: ``"<file>: image has N non-finite voxels (NaN or inf)"``.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> Mapping:
        for key in self.key_iterator(data):
            value = torch.as_tensor(data[key])
            bad = int((~torch.isfinite(value)).sum()) if value.is_floating_point() else 0
            if bad:
                raise ValueError(f"{_source(data, key)}: {key} has {bad} non-finite voxels (NaN or inf)")
        return data


# The reader for each input format, chosen here rather than by MONAI's automatic choice: once ITK is installed (for
# MetaImage), MONAI's ``ITKReader`` claims every path, DICOM folders and NRRD included, and this package's DICOM-SEG
# output relies on ``PydicomReader``'s slice stacking. Suffix -> (MONAI reader, the module it needs, the extra that
# brings it). The readers' own defaults apply: ITK and NRRD files in LPS come back with a RAS affine.
READERS = {
    ".nii": ("NibabelReader", "nibabel", None),
    ".nii.gz": ("NibabelReader", "nibabel", None),
    ".nrrd": ("NrrdReader", "nrrd", "formats"),
    ".nhdr": ("NrrdReader", "nrrd", "formats"),
    ".mha": ("ITKReader", "itk", "formats"),
    ".mhd": ("ITKReader", "itk", "formats"),
}


def reader_for(path: str | os.PathLike) -> str | None:
    """The name of the MONAI reader :class:`LoadImageCheckedd` uses for ``path``: ``PydicomReader`` for a folder (a
    DICOM series), the reader of its suffix in :data:`READERS`, else ``None`` (MONAI's own choice).

    Raises:
        ImportError: when the reader's package is not installed, naming the file and the extra to install.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return "PydicomReader"
    name = path.lower()
    for suffix, (reader, module, extra) in READERS.items():
        if name.endswith(suffix):
            import importlib.util

            if importlib.util.find_spec(module) is None:
                raise ImportError(
                    f"{path}: reading {suffix} files needs the '{module}' package ({reader}): "
                    f"pip install 'smart-nets[{extra}]'"
                )
            return reader
    return None


class LoadImageCheckedd(LoadImaged):
    """MONAI's ``LoadImaged``, with the reader chosen by the input's format and read errors re-raised with the file's
    name.

    Formats: NIfTI (``.nii``, ``.nii.gz``, nibabel), DICOM series folders (pydicom), NRRD (``.nrrd`` including
    Slicer's ``.seg.nrrd``, and ``.nhdr``; MONAI's ``NrrdReader``, the ``pynrrd`` package) and MetaImage
    (``.mha``, ``.mhd``; MONAI's ``ITKReader``, the ``itk-io`` package); the last two come with the
    ``smart-nets[formats]`` extra (see :data:`READERS`). A reader given to the constructor or the call is used as
    given. A truncated ``.nii.gz`` otherwise surfaces as a bare ``EOFError: Compressed file ended before the
    end-of-stream marker was reached`` with no file to look at. A DICOM folder holding several series is refused
    before reading: MONAI would stack all their slices into one volume without a word.

    Args:
        keys: keys to load.
        **kwargs: as ``LoadImaged``.

    Raises:
        ValueError: ``"<file>: cannot read <key> (<original error>)"``, or a DICOM folder listing its series.
        ImportError: for a format whose reader's package is not installed, naming the extra that brings it.
    """

    def __init__(self, keys: KeysCollection, reader=None, **kwargs) -> None:
        super().__init__(keys, reader=reader, **kwargs)
        self._fixed_reader = reader is not None

    def _reader(self, path) -> object | None:
        """The loader's own instance of the reader :func:`reader_for` names (MONAI registers one of each reader whose
        package is installed, with the options given to this transform); ``None`` leaves the choice to MONAI."""
        name = reader_for(path) if isinstance(path, (str, os.PathLike)) else None
        return None if name is None else next((r for r in self._loader.readers if type(r).__name__ == name), None)

    def __call__(self, data, reader=None):
        # LoadImaged.__call__'s loop, with a reader per key (it passes one reader to every key)
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)) and os.path.isdir(d[key]):
                _check_single_series(str(d[key]), key)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            chosen = reader if reader is not None or self._fixed_reader else self._reader(d[key])
            try:
                loaded = self._loader(d[key], chosen)
            except Exception as e:
                raise ValueError(f"{d[key]}: cannot read {key} ({type(e).__name__}: {e})") from e
            if self._loader.image_only:
                d[key] = loaded
                continue
            d[key] = loaded[0]
            meta_key = meta_key or f"{key}_{meta_key_postfix}"
            if meta_key in d and not self.overwriting:
                raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
            d[meta_key] = loaded[1]
        return d


def _check_single_series(folder: str, key: str) -> None:
    from smart_nets.data.dicom import dicom_series_in

    series = dicom_series_in(folder)
    if len(series) > 1:
        listed = "; ".join(
            f"{uid} ({v['files']} files, SeriesNumber {v['number']}, '{v['description']}')" for uid, v in series.items()
        )
        raise ValueError(
            f"{folder}: the DICOM folder for {key} holds {len(series)} series ({listed}); MONAI would stack them "
            "into one volume - give each series its own folder"
        )


def _nifti_pixdim(path: str) -> np.ndarray | None:
    """``pixdim[1:1+n]`` of a NIfTI file's header as written when it defines the geometry (no sform), else ``None``.

    nibabel replaces zero and negative pixdims with 1 and their absolute value when it loads a header, so the
    loaded image no longer shows them; this reads the header's bytes instead."""
    if not path.endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
        return None
    try:
        import nibabel as nib
        from nibabel.openers import ImageOpener

        with ImageOpener(path) as f:
            block = f.read(540)
        for order in ("<", ">"):
            size = int(np.frombuffer(block[:4], dtype=f"{order}i4")[0])
            if size in (348, 540):
                klass = nib.Nifti1Header if size == 348 else nib.Nifti2Header
                header = klass(block[:size], endianness=order, check=False)
                if int(header["sform_code"]) > 0:
                    return None  # the geometry comes from srow_*, which the affine check covers
                n = int(min(max(header["dim"][0], 0), 3))
                return np.asarray(header["pixdim"][1 : 1 + n], dtype=float)
    except Exception:  # an unreadable header is LoadImageCheckedd's to report
        return None
    return None


def _check_geometry(data: Mapping, key: str) -> None:
    value = data[key]
    if isinstance(value, MetaTensor):
        affine = torch.as_tensor(value.affine, dtype=torch.float64)
        spacing = torch.linalg.norm(affine[:3, :3], dim=0)
        if not bool(torch.isfinite(affine).all()) or bool((spacing <= 1e-6).any()):
            raise ValueError(
                f"{_source(data, key)}: voxel spacing {tuple(round(float(v), 4) for v in spacing)} mm from its "
                "affine: zero or non-finite spacing, so it cannot be resampled - fix the header (pixdim, sform)"
            )
    pixdim = _nifti_pixdim(_source(data, key))
    if pixdim is not None and (pixdim <= 0).any():
        raise ValueError(
            f"{_source(data, key)}: header pixdim {tuple(float(v) for v in pixdim)}: zero or negative voxel spacing "
            "(nibabel would silently read it as 1 mm or its absolute value) - fix the header"
        )


class CheckSegmentationd(MapTransform):
    """Check an image (and label) as loaded: a 3D image with the expected channels and a valid voxel spacing, a
    label of the same spatial shape with only known classes.

    Run it right after ``EnsureChannelFirstd`` (before resampling), so that the shapes are those of the files.

    Args:
        image_key: image key (``(C, D, H, W)`` expected).
        label_key: label key; absent labels (inference) are skipped, and ``None`` checks the image only.
        num_classes: labels must be integers in ``[0, num_classes)``.
        channels: the image channels the network takes (``None``: any).

    Raises:
        ValueError: naming the file(s): a 2D or 4D+ image, another channel count, zero, negative or non-finite
            voxel spacing (in the affine, or in a NIfTI header's pixdim as written), an image/label shape mismatch,
            or label values outside the classes.
    """

    def __init__(
        self, image_key: str = "image", label_key: str = "label", num_classes: int = 2, channels: int | None = 1
    ) -> None:
        super().__init__([image_key], allow_missing_keys=True)
        self.image_key, self.label_key, self.num_classes, self.channels = image_key, label_key, num_classes, channels

    def __call__(self, data: Mapping) -> Mapping:
        image = data[self.image_key]
        if image.ndim != 4:
            hint = "is it a 2D slice?" if image.ndim < 4 else "is it a time series or a multi-volume file?"
            raise ValueError(
                f"{_source(data, self.image_key)}: a 3D volume is needed, got an image of shape "
                f"{tuple(image.shape)} (channel first) - {hint}"
            )
        if self.channels is not None and image.shape[0] != self.channels:
            raise ValueError(
                f"{_source(data, self.image_key)}: {image.shape[0]} channels (shape {tuple(image.shape)}, channel "
                f"first), the network takes {self.channels}"
            )
        _check_geometry(data, self.image_key)
        if self.label_key not in data:
            return data
        _check_geometry(data, self.label_key)
        label = data[self.label_key]
        if tuple(label.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(
                f"image {_source(data, self.image_key)} has spatial shape {tuple(image.shape[1:])} but label "
                f"{_source(data, self.label_key)} has {tuple(label.shape[1:])}"
            )
        values = torch.unique(torch.as_tensor(label))
        bad = [int(v) if v == int(v) else v for v in values.tolist() if v != int(v) or not 0 <= v < self.num_classes]
        if bad:
            classes = f"0..{self.num_classes - 1}"
            raise ValueError(f"{_source(data, self.label_key)}: label values {bad[:10]} outside the classes {classes}")
        return data


class SpacingExtrasSafed(Spacingd):
    """MONAI's ``Spacingd``, tolerant of non-dictionary items whose names start with ``"<key>_"``.

    With MONAI 1.6, ``Spacingd`` calls ``.update(meta)`` on every item named ``"<key>_..."`` (meant for the old
    ``image_meta_dict``), so a string such as MONAI Label's ``image_path`` makes it crash (MONAI PR #8269). This
    subclass sets such items aside during the call and puts them back unchanged; everything else, the inverse
    included, is MONAI's.

    Args:
        keys: as ``Spacingd``.
        **kwargs: as ``Spacingd``.
    """

    def __call__(self, data: Mapping, lazy: bool | None = None) -> dict:
        prefixes = tuple(f"{k}_" for k in self.keys)
        extras = {
            k: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefixes) and not isinstance(v, dict)
        }
        out = super().__call__({k: v for k, v in data.items() if k not in extras}, lazy=lazy)
        out.update(extras)
        return out
