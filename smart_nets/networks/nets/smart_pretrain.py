"""The network SMART pretrains: SMARTSwin plus its projection and reconstruction heads (student and teacher)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from smart_nets.networks.blocks.heads import ProjectionHead, ReconstructionHead
from smart_nets.networks.nets.smart_swin import SMARTSwin

__all__ = ["SMARTPretrainNet"]


class SMARTPretrainNet(nn.Module):
    """SMARTSwin encoder with a shared DINO projection head (global and patch tokens) and a SimMIM head.

    The same class is the student and, as an EMA copy, the teacher (DESIGN section 2: the teacher includes class
    attention, mask token and head). Only ``encoder`` is kept for downstream tasks.

    Args:
        in_channels, feature_size, depths, num_heads, window_size, patch_size, num_class_attn_blocks,
            drop_path_rate, use_checkpoint, layer_scale_init: passed to :class:`SMARTSwin`.
        out_dim: prototypes K of the projection head (8192 at paper scale).
        head_hidden_dim: projection MLP width (2048).
        head_bottleneck_dim: projection bottleneck (256).
        norm_last_layer: fix the weight-norm gain of the projection's last layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 8, 2),
        num_heads: Sequence[int] = (4, 4, 8, 16),
        window_size: int | Sequence[int] = 4,
        patch_size: int = 2,
        num_class_attn_blocks: int = 2,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
        layer_scale_init: float = 1e-4,
        out_dim: int = 8192,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = SMARTSwin(
            in_channels=in_channels,
            feature_size=feature_size,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            patch_size=patch_size,
            num_class_attn_blocks=num_class_attn_blocks,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
            layer_scale_init=layer_scale_init,
        )
        self.head = ProjectionHead(8 * feature_size, out_dim, head_hidden_dim, head_bottleneck_dim, 3, norm_last_layer)
        self.recon_head = ReconstructionHead(16 * feature_size, in_channels, self.encoder.size_divisor)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, reconstruct: bool = True
    ) -> dict[str, torch.Tensor]:
        """Args:
            x: ``(B, C, D, H, W)`` views.
            mask: optional ``(B, N)`` or ``(B, D/16, H/16, W/16)`` bool token mask (True = masked).
            reconstruct: also run the reconstruction head (the teacher does not need it).

        Returns:
            ``global`` ``(B, 2, K)`` logits of [CLS] and the pooled token, ``patch`` ``(B, N, K)`` logits of the
            stage-3 tokens, ``attn_map`` ``(B, N)``, and with ``reconstruct`` ``recon`` ``(B, C, D, H, W)``.
        """
        features = self.encoder.forward_features(x, mask)
        out = self.encoder.forward_class_attention(features)
        result = {
            "global": self.head(torch.stack((out.cls_token, out.pooled), dim=1)),
            "patch": self.head(out.patch_tokens),
            "attn_map": out.attn_map,
        }
        if reconstruct:
            result["recon"] = self.recon_head(features[-1].permute(0, 4, 1, 2, 3))  # the last stage's tokens
        return result
