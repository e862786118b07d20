"""SMARTUNETR: the SMARTSwin encoder with SwinUNETR's decoder, for Task III tumour segmentation."""

from __future__ import annotations

import os

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

from smart_nets.networks.nets.smart_swin import SMARTSwin
from smart_nets.networks.pretrained import prepare_encoder

__all__ = ["SMARTUNETR"]


class SMARTUNETR(nn.Module):
    """SwinUNETR's layout (Hatamizadeh et al. 2022) with SMART's encoder, built from MONAI's UNETR blocks.

    Skip connections: the input (``encoder1``), the patch embedding and the outputs of stages 1, 2 and 4 through
    residual ``UnetrBasicBlock``s; stage 3's output feeds the first up-block directly, as in MONAI's SwinUNETR.
    The class-attention branch is not used here (its weights load and stay unused; see ``EncoderAttentionMap``), nor
    is the mask token: these parameters stay in the state dict with ``requires_grad`` off, so that
    ``DistributedDataParallel`` (``find_unused_parameters`` off) does not wait for gradients that never come (it
    stopped at the second iteration) and the optimizer leaves them out.

    Args:
        encoder: the :class:`SMARTSwin` (built with ``patch_size`` 2, the decoder's first skip is at half
            resolution); ``None`` builds a paper-scale one. Its architecture must match the pretraining to load
            SMART weights.
        out_channels: segmentation classes, background included.
        norm_name: decoder normalisation (MONAI's names, e.g. ``"instance"``).
        dropout: dropout before the output layer (MONAI Label's epistemic scoring sets it); 0 disables.
        pretrained: path of SMART weights to load into the encoder (``smart_pretrain``'s ``models/model.pt`` or
            ``models/checkpoint.pt``); ``None`` or ``""`` keeps the encoder's weights.

    Raises:
        TypeError: when ``encoder`` is not a ``SMARTSwin``.
        ValueError: on bad arguments, or pretrained weights that do not fit (see ``load_pretrained_encoder``).
        FileNotFoundError: when ``pretrained`` names a missing file.
    """

    def __init__(
        self,
        encoder: SMARTSwin | None = None,
        out_channels: int = 2,
        norm_name: str | tuple = "instance",
        dropout: float = 0.0,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.encoder = prepare_encoder(encoder, pretrained)
        if self.encoder.patch_size != 2:
            raise ValueError(f"SMARTUNETR needs an encoder with patch_size 2, got {self.encoder.patch_size}")
        in_channels, fs = self.encoder.in_channels, self.encoder.feature_size
        enc = self.encoder
        for p in (enc.mask_token, enc.cls_token, *enc.class_attn_blocks.parameters(), *enc.norm.parameters()):
            p.requires_grad_(False)  # never used here (see above)

        def basic(cin: int, cout: int) -> UnetrBasicBlock:
            return UnetrBasicBlock(3, cin, cout, kernel_size=3, stride=1, norm_name=norm_name, res_block=True)

        def up(cin: int, cout: int) -> UnetrUpBlock:
            return UnetrUpBlock(
                3, cin, cout, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True
            )

        self.encoder1, self.encoder2, self.encoder3 = basic(in_channels, fs), basic(fs, fs), basic(2 * fs, 2 * fs)
        self.encoder4, self.encoder10 = basic(4 * fs, 4 * fs), basic(16 * fs, 16 * fs)
        self.decoder5, self.decoder4, self.decoder3 = up(16 * fs, 8 * fs), up(8 * fs, 4 * fs), up(4 * fs, 2 * fs)
        self.decoder2, self.decoder1 = up(2 * fs, fs), up(fs, fs)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.out = UnetOutBlock(3, fs, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, in_channels, D, H, W)``, sizes multiples of 32. Returns: ``(B, out_channels, D, H, W)``
        logits.

        Raises:
            ValueError: on an input the encoder rejects (wrong channels or sizes), naming its shape.
        """
        h = self.encoder.hidden_states(self.encoder.forward_features(x))
        dec4 = self.encoder10(h[4])
        dec3 = self.decoder5(dec4, h[3])
        dec2 = self.decoder4(dec3, self.encoder4(h[2]))
        dec1 = self.decoder3(dec2, self.encoder3(h[1]))
        dec0 = self.decoder2(dec1, self.encoder2(h[0]))
        out = self.decoder1(dec0, self.encoder1(x))
        return self.out(self.dropout(out))
