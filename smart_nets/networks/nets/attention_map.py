"""SMARTSwin as a one-tensor network for bundles: its class-attention heatmap at the input's resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smart_nets.networks.nets.smart_swin import SMARTSwin

__all__ = ["SMARTAttentionMap"]


class SMARTAttentionMap(SMARTSwin):
    """A :class:`SMARTSwin` whose forward returns the class-attention map, upsampled to the input.

    Its state dict is SMARTSwin's, so the pretraining bundle's ``models/model.pt`` loads as is. The map is scaled
    by the number of tokens: 1 means "attended as much as under uniform attention", 5 means five times that.

    Args:
        **kwargs: as :class:`SMARTSwin`.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Args: x: ``(B, C, D, H, W)``. Returns: ``(B, 1, D, H, W)`` relative attention (trilinear)."""
        attn = super().forward(x, mask).attn_map
        grid = [int(s) // self.token_stride for s in x.shape[2:]]
        attn = attn.view(-1, 1, *grid) * (grid[0] * grid[1] * grid[2])
        return F.interpolate(attn, size=[int(s) for s in x.shape[2:]], mode="trilinear", align_corners=False)
