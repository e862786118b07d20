"""Organ embeddings from a frozen encoder: stage features over the whole volume, averaged inside each organ mask."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EncoderStage", "pool_in_masks"]


class EncoderStage(nn.Module):
    """A ``SMARTSwin`` returning the normalised hidden state of one stage: ``0`` after the patch embedding (1/2 of
    the input size) to ``4``, the deepest (1/32); channels ``feature_size * 2**stage``. Sliding-window inference
    accepts its smaller output and stitches the windows at that scale."""

    def __init__(self, encoder: nn.Module, stage: int) -> None:
        super().__init__()
        if not 0 <= int(stage) <= 4:
            raise ValueError(f"stage must be 0 (1/2 resolution) to 4 (1/32), got {stage}")
        self.encoder, self.stage = encoder, int(stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.hidden_states(self.encoder.forward_features(x))[self.stage]


def pool_in_masks(
    features: torch.Tensor, organs: torch.Tensor, labels: list[int] | None = None, min_voxels: int = 1
) -> dict[int, np.ndarray]:
    """One embedding per organ: the average of ``features`` over the organ, each feature cell weighted by the
    fraction of its voxels inside the organ's mask (``F.interpolate(mode="area")`` of the mask to the feature grid).

    Cells without organ voxels get weight 0, so features outside the mask never enter the average. Organs with
    fewer than ``min_voxels`` voxels (absent from this image) are left out.

    Args:
        features: ``(C, d, h, w)`` stage features of one image.
        organs: ``(1, D, H, W)`` or ``(D, H, W)`` integer organ label map on the image grid the features came from.
        labels: the organ labels to pool (default: every non-zero label present).
        min_voxels: smallest organ, in label voxels, that gets an embedding.

    Returns:
        ``{label: (C,) float32 array}`` for each organ found.
    """
    organs = torch.as_tensor(organs, device=features.device)  # the features' device: a GPU's, with the encoder's
    organs = organs[0] if organs.ndim == 4 else organs
    if organs.ndim != 3 or features.ndim != 4:
        raise ValueError(f"need features (C, d, h, w) and an organ map (D, H, W), got {features.shape}, {organs.shape}")
    organs = organs.round().long()
    present = [int(v) for v in torch.unique(organs).tolist() if v != 0]
    wanted = present if labels is None else [int(v) for v in labels if int(v) in present]
    features = features.float()
    out = {}
    for label in wanted:
        mask = organs == label
        if int(mask.sum()) < min_voxels:
            continue
        weight = F.interpolate(mask[None, None].float(), size=tuple(features.shape[1:]), mode="area")[0, 0]
        total = weight.sum()
        if total <= 0:
            continue
        out[label] = ((features * weight).sum(dim=(1, 2, 3)) / total).cpu().numpy().astype(np.float32)
    return out
