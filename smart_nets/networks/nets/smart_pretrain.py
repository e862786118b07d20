"""The network SMART pretrains: SMARTSwin plus its projection and reconstruction heads (student and teacher)."""

from __future__ import annotations

import torch
from torch import nn

from smart_nets.networks.blocks.heads import ProjectionHead, ReconstructionHead, prototype_layer
from smart_nets.networks.nets.smart_swin import SMARTSwin
from smart_nets.networks.pretrained import prepare_encoder

__all__ = ["SMARTPretrainNet"]


class SMARTPretrainNet(nn.Module):
    """SMARTSwin encoder with a shared DINO projection head (global and patch tokens) and a SimMIM head.

    The same class is the student and, as an EMA copy, the teacher (``docs/method.md`` section 4: the teacher
    includes class attention, mask token and head). Only ``encoder`` is kept for downstream tasks.

    Args:
        encoder: the :class:`SMARTSwin` to pretrain; ``None`` builds a paper-scale one.
        out_dim: prototypes K of the projection head (8192 at paper scale).
        head_hidden_dim: projection MLP width (2048).
        head_bottleneck_dim: projection bottleneck (256).
        norm_last_layer: fix the weight-norm gain of the projection's last layer.
        shared_head: one last layer (prototypes) for the global and the patch tokens (iBOT's published recipes), or
            (False, the SMART authors' and iBOT's default) a second last layer, ``patch_last_layer``, for the patch
            tokens. The MLP is shared either way. A teacher called with ``shared_head=True`` maps its patch tokens
            with its global last layer whatever this says, as the authors' teacher does.
        head_use_bn: batch normalization in the projection MLP (DINO's ``use_bn_in_head``; see ``ProjectionHead``).

    Raises:
        TypeError: when ``encoder`` is not a ``SMARTSwin``.
    """

    def __init__(
        self,
        encoder: SMARTSwin | None = None,
        out_dim: int = 8192,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        shared_head: bool = False,
        head_use_bn: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = prepare_encoder(encoder)
        feature_size, in_channels = self.encoder.feature_size, self.encoder.in_channels
        self.head = ProjectionHead(
            8 * feature_size, out_dim, head_hidden_dim, head_bottleneck_dim, 3, norm_last_layer, head_use_bn
        )
        self.shared_head = shared_head
        if not shared_head:
            self.patch_last_layer = prototype_layer(head_bottleneck_dim, out_dim, norm_last_layer)
        self.recon_head = ReconstructionHead(16 * feature_size, in_channels, self.encoder.size_divisor)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        reconstruct: bool = True,
        shared_head: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args:
            x: ``(B, C, D, H, W)`` views.
            mask: optional ``(B, N)`` or ``(B, D/16, H/16, W/16)`` bool token mask (True = masked).
            reconstruct: also run the reconstruction head (the teacher does not need it).
            shared_head: map the patch tokens with the global last layer (True) or with ``patch_last_layer``
                (False); ``None``: as built.

        Returns:
            ``global`` ``(B, 2, K)`` logits of [CLS] and the pooled token, ``patch`` ``(B, N, K)`` logits of the
            stage-3 tokens, ``attn_map`` ``(B, N)``, ``embedding`` ``(B, 2, 8 * feature_size)`` the encoder's [CLS]
            and pooled features before the head, ``bottleneck`` ``(B, 2, head_bottleneck_dim)`` their L2-normalised
            head bottleneck, which the prototypes read (either is ``SMARTLoss``'s KoLeo input), and with
            ``reconstruct`` ``recon`` ``(B, C, D, H, W)``.
        """
        features = self.encoder.forward_features(x, mask)
        out = self.encoder.forward_class_attention(features)
        shared = self.shared_head if shared_head is None else shared_head
        patch_last_layer = self.head.last_layer if shared else self.patch_last_layer
        # one head call per token kind, so that a batch-normalized head normalizes each over its own rows
        bottleneck = torch.stack((self.head.embed(out.cls_token), self.head.embed(out.pooled)), dim=1)
        result = {
            "global": self.head.last_layer(bottleneck),
            "patch": patch_last_layer(self.head.embed(out.patch_tokens)),
            "attn_map": out.attn_map,
            "embedding": torch.stack((out.cls_token, out.pooled), dim=1),
            "bottleneck": bottleneck,
        }
        if reconstruct:
            result["recon"] = self.recon_head(features[-1].permute(0, 4, 1, 2, 3))  # the last stage's tokens
        return result
