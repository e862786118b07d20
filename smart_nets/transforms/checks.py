"""Input checks that fail early with the file's name, before a bad volume reaches the network."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["CheckFinited"]


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
                meta = data[key].meta if isinstance(data[key], MetaTensor) else {}
                source = meta.get("filename_or_obj", f"item '{key}'")
                raise ValueError(f"{source}: {key} has {bad} non-finite voxels (NaN or inf)")
        return data
