"""SMART's class-attention map as a one-tensor network for bundles: a heatmap at the input's resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smart_nets.networks.nets.smart_swin import SMARTSwin

__all__ = ["attention_heatmap", "SMARTAttentionMap", "EncoderAttentionMap"]


def attention_heatmap(attn_map: torch.Tensor, spatial_size: Sequence[int], token_stride: int) -> torch.Tensor:
    """Upsample a ``(B, N)`` class-attention map to ``(B, 1, *spatial_size)`` (trilinear), scaled by ``N``.

    After scaling, 1 means "attended as much as under uniform attention" and 5 means five times that.
    """
    grid = [int(s) // token_stride for s in spatial_size]
    attn = attn_map.view(-1, 1, *grid) * (grid[0] * grid[1] * grid[2])
    return F.interpolate(attn, size=[int(s) for s in spatial_size], mode="trilinear", align_corners=False)


class SMARTAttentionMap(SMARTSwin):
    """A :class:`SMARTSwin` whose forward returns :func:`attention_heatmap`; its state dict is SMARTSwin's, so the
    pretraining bundle's ``models/model.pt`` loads as is.

    Args:
        **kwargs: as :class:`SMARTSwin`.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Args: x: ``(B, C, D, H, W)``. Returns: ``(B, 1, D, H, W)`` relative attention."""
        attn = self.forward_class_attention(self.forward_features(x, mask)).attn_map
        return attention_heatmap(attn, x.shape[2:], self.token_stride)


class EncoderAttentionMap(nn.Module):
    """The heatmap of an existing encoder (shared, not copied), e.g. ``SMARTUNETR.encoder`` after its weights load.

    Args:
        encoder: a :class:`SMARTSwin`.
    """

    def __init__(self, encoder: SMARTSwin) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C, D, H, W)``. Returns: ``(B, 1, D, H, W)`` relative attention."""
        attn = self.encoder.forward_class_attention(self.encoder.forward_features(x)).attn_map
        return attention_heatmap(attn, x.shape[2:], self.encoder.token_stride)
