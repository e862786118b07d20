"""Input checks that fail early with the file's name, and a MONAI Label-safe ``Spacingd``."""

from __future__ import annotations

from collections.abc import Mapping

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


class LoadImageCheckedd(LoadImaged):
    """MONAI's ``LoadImaged``, re-raising read errors with the file's name.

    A truncated ``.nii.gz`` otherwise surfaces as a bare ``EOFError: Compressed file ended before the
    end-of-stream marker was reached`` with no file to look at.

    Args:
        keys: keys to load.
        **kwargs: as ``LoadImaged``.

    Raises:
        ValueError: ``"<file>: cannot read <key> (<original error>)"``.
    """

    def __call__(self, data, reader=None):
        try:
            return super().__call__(data, reader)
        except Exception as e:
            names = [str(data[k]) for k in self.keys if k in data]
            raise ValueError(
                f"{', '.join(names)}: cannot read {'/'.join(map(str, self.keys))} ({type(e).__name__}: {e})"
            ) from e


class CheckSegmentationd(MapTransform):
    """Check an image/label pair as loaded: a 3D image with the expected channels, a label of the same spatial
    shape, only known classes.

    Run it right after ``EnsureChannelFirstd`` (before resampling), so that the shapes are those of the files.

    Args:
        image_key: image key (``(C, D, H, W)`` expected).
        label_key: label key; absent labels (inference) are skipped.
        num_classes: labels must be integers in ``[0, num_classes)``.
        channels: the image channels the network takes (``None``: any).

    Raises:
        ValueError: naming the file(s): a 2D or 4D+ image, another channel count, an image/label shape mismatch, or
            label values outside the classes.
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
        if self.label_key not in data:
            return data
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
