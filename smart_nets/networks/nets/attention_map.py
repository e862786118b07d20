"""SMART's class-attention map as a one-tensor network for bundles: a heatmap at the input's resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smart_nets.networks.nets.smart_swin import CLASS_ATTN_STAGE, SMARTSwin

__all__ = ["attention_heatmap", "EncoderAttentionMap"]


def attention_heatmap(attn_map: torch.Tensor, spatial_size: Sequence[int], token_stride: int) -> torch.Tensor:
    """Upsample a ``(B, N)`` class-attention map to ``(B, 1, *spatial_size)`` (trilinear), scaled by ``N``.

    After scaling, 1 means "attended as much as under uniform attention" and 5 means five times that.
    """
    grid = [int(s) // token_stride for s in spatial_size]
    attn = attn_map.view(-1, 1, *grid) * (grid[0] * grid[1] * grid[2])
    return F.interpolate(attn, size=[int(s) for s in spatial_size], mode="trilinear", align_corners=False)


class EncoderAttentionMap(nn.Module):
    """The class-attention heatmap of an encoder (shared, not copied): the bundles' ``encoder_def``, or
    ``SMARTUNETR.encoder`` after its weights load. Its state dict is the encoder's under ``encoder.``.

    Args:
        encoder: a :class:`SMARTSwin`.
    """

    def __init__(self, encoder: SMARTSwin) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C, D, H, W)``. Returns: ``(B, 1, D, H, W)`` relative attention."""
        features = self.encoder.forward_features(x, num_stages=CLASS_ATTN_STAGE)  # the last stage is not read
        attn = self.encoder.forward_class_attention(features).attn_map
        return attention_heatmap(attn, x.shape[2:], self.encoder.token_stride)
