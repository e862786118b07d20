"""Image-level endpoint labels (Tasks I and II) read from datalist items."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform

__all__ = ["EndpointLabeld", "class_weights"]


def _case(item: Mapping) -> str:
    if "case_id" in item:
        return str(item["case_id"])
    image = item.get("image")
    meta = getattr(image, "meta", None)
    if meta is not None and "filename_or_obj" in meta:
        return str(meta["filename_or_obj"])
    return os.path.basename(str(image)) if isinstance(image, (str, os.PathLike)) else "an item without case_id"


def _label(item: Mapping, key: str, num_classes: int) -> int:
    if key not in item or item[key] is None:
        raise ValueError(f"case {_case(item)} has no '{key}' label (endpoint label_key='{key}')")
    value = item[key]
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not float(value).is_integer() or not 0 <= int(value) < num_classes:
        raise ValueError(f"case {_case(item)}: '{key}' = {value!r} is not a class in 0..{num_classes - 1}")
    return int(value)


class EndpointLabeld(MapTransform):
    """Copy the endpoint ``label_key`` (e.g. ``response``, ``recurrence``) of an item to ``output_key`` as a tensor.

    The endpoint is a config choice: the same datalist serves Task I and Task II.

    Args:
        label_key: item key of the endpoint.
        output_key: where the training label goes (``label``, MONAI's ``CommonKeys.LABEL``).
        num_classes: labels must be integers in ``[0, num_classes)``.

    Raises:
        ValueError: naming the case when the endpoint is missing or not a class.
    """

    def __init__(self, label_key: str = "response", output_key: str = "label", num_classes: int = 2) -> None:
        super().__init__([label_key], allow_missing_keys=True)
        self.label_key, self.output_key, self.num_classes = label_key, output_key, num_classes

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        d[self.output_key] = torch.tensor(_label(d, self.label_key, self.num_classes), dtype=torch.long)
        return d


def class_weights(items: Sequence[Mapping], label_key: str, num_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency class weights ``n / (K * n_k)`` for a weighted cross-entropy (class imbalance).

    Raises:
        ValueError: naming the case with a missing or invalid label, or when a class is absent from ``items``.
    """
    counts = np.bincount([_label(item, label_key, num_classes) for item in items], minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"'{label_key}': classes {np.flatnonzero(counts == 0).tolist()} have no training case")
    return torch.as_tensor(len(items) / (num_classes * counts), dtype=torch.float32)
