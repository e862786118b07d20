"""SMARTClassifier: the SMARTSwin encoder with a head on its global tokens, for Tasks I and II."""

from __future__ import annotations

import os

import torch
from torch import nn

from smart_nets.networks.nets.smart_swin import CLASS_ATTN_STAGE, SMARTSwin
from smart_nets.networks.pretrained import prepare_encoder

__all__ = ["SMARTClassifier"]


class SMARTClassifier(nn.Module):
    """Image-level outcome prediction from the [CLS] and average-pooled tokens of a SMART encoder.

    Head: ``LayerNorm -> Dropout -> Linear`` on ``[cls_token; pooled]`` (``2 x 8C`` features). With
    ``freeze_encoder`` (linear probing) the encoder's parameters get no gradient and the encoder stays in eval
    mode (no stochastic depth or dropout, whatever the encoder was built with) even while the network trains.

    The encoder parameters this network never uses, the mask token (nothing is masked here) and the stages after the
    one class attention reads (stage 4), stay in the state dict (SMART weights and earlier ``model.pt`` files load
    strictly) with ``requires_grad`` off: ``DistributedDataParallel`` (``find_unused_parameters`` off) would otherwise
    wait for their gradients and stop at the second iteration, and the optimizer leaves them out.

    Args:
        encoder: the :class:`SMARTSwin` (its architecture must match the pretraining to load SMART weights);
            ``None`` builds a paper-scale one.
        num_classes: output classes (2 for a binary endpoint; the bundle applies softmax).
        head_dropout: dropout before the linear layer.
        freeze_encoder: linear probing.
        pretrained: SMART weights for the encoder (see ``load_pretrained_encoder``); ``None``/``""`` keeps the
            encoder's weights.

    Raises:
        TypeError: when ``encoder`` is not a ``SMARTSwin``.
        ValueError: on ``num_classes < 2`` or a bad dropout, or pretrained weights that do not fit.
        FileNotFoundError: when ``pretrained`` names a missing file.
    """

    def __init__(
        self,
        encoder: SMARTSwin | None = None,
        num_classes: int = 2,
        head_dropout: float = 0.0,
        freeze_encoder: bool = False,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (two for a binary endpoint), got {num_classes}")
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
        self.encoder = prepare_encoder(encoder, pretrained)
        width = 2 * self.encoder.embed_dim
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(head_dropout), nn.Linear(width, num_classes))
        nn.init.zeros_(self.head[-1].bias)
        nn.init.trunc_normal_(self.head[-1].weight, std=0.02)
        self.freeze_encoder = freeze_encoder
        for p in (self.encoder.mask_token, *self.encoder.stages[CLASS_ATTN_STAGE:].parameters()):
            p.requires_grad_(False)  # never used here (see above)
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> SMARTClassifier:
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, in_channels, D, H, W)``. Returns: ``(B, num_classes)`` logits."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            out = self.encoder.forward_class_attention(self.encoder.forward_features(x, num_stages=CLASS_ATTN_STAGE))
        return self.head(torch.cat((out.cls_token, out.pooled), dim=1))
