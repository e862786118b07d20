"""Pretraining heads: DINO's projection head and SimMIM's reconstruction head for 3D volumes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import trunc_normal_
from monai.networks.utils import pixelshuffle
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["ProjectionHead", "ReconstructionHead", "prototype_layer"]


class ProjectionHead(nn.Module):
    """DINO head (Caron et al. 2021): MLP -> L2-normalised bottleneck -> weight-normalised linear to K prototypes.

    MONAI has no such head; this follows ``dino/vision_transformer.py::DINOHead`` with PyTorch's parametrized
    ``weight_norm``. The last layer's name contains ``last_layer``, which the trainer uses to freeze it early on.

    Args:
        in_dim: token width (8C for SMARTSwin).
        out_dim: number of prototypes K (8192 at paper scale).
        hidden_dim: MLP hidden width.
        bottleneck_dim: width before the last layer.
        num_layers: MLP depth (at least 1).
        norm_last_layer: fix the weight-norm gain to 1 (DINO's default, more stable).
        use_bn: batch normalization after each hidden linear layer (DINO's ``use_bn_in_head``). It always uses the
            statistics of the rows it is given (no running averages), in the teacher's eval mode too, so it removes
            what every input has in common before the prototypes: with small batches it keeps an untrained
            network's outputs from being the same for every input. Not synchronised across processes.

    Raises:
        ValueError: on a non-positive size.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        if min(in_dim, out_dim, hidden_dim, bottleneck_dim, num_layers) < 1:
            raise ValueError(
                f"ProjectionHead sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}, "
                f"hidden_dim={hidden_dim}, bottleneck_dim={bottleneck_dim}, num_layers={num_layers}"
            )
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                if use_bn:
                    layers.append(_RowBatchNorm(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = prototype_layer(bottleneck_dim, out_dim, norm_last_layer)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in_dim)``. Returns: ``(..., bottleneck_dim)``, the L2-normalised bottleneck."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in_dim)``. Returns: ``(..., out_dim)`` logits."""
        return self.last_layer(self.embed(x))


class _RowBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over every row of a ``(..., C)`` input, with batch statistics in train and eval mode alike."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def prototype_layer(bottleneck_dim: int, out_dim: int, norm_last_layer: bool = True) -> nn.Module:
    """DINO's last layer: a weight-normalised ``Linear(bottleneck_dim, out_dim, bias=False)`` whose gain starts at 1
    and is frozen with ``norm_last_layer``."""
    layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
    gain = layer.parametrizations.weight.original0
    with torch.no_grad():
        gain.fill_(1.0)
    gain.requires_grad = not norm_last_layer
    return layer


class ReconstructionHead(nn.Module):
    """SimMIM decoder (Xie et al. 2022): LayerNorm, 1x1x1 convolution to ``out_channels * scale^3``, pixel shuffle.

    Args:
        in_channels: channels of the last encoder stage (16C).
        out_channels: image channels to rebuild.
        scale: upsampling factor back to the input (patch size x 2^4 = 32 for SMARTSwin).
    """

    def __init__(self, in_channels: int, out_channels: int = 1, scale: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.norm = nn.LayerNorm(in_channels)
        self.conv = nn.Conv3d(in_channels, out_channels * scale**3, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, in_channels, d, h, w)``. Returns: ``(B, out_channels, d*scale, h*scale, w*scale)``.

        The 1x1x1 convolution runs as the matrix product it is (``F.linear`` on channels-last tokens, with the
        convolution's own weight, so checkpoints are unchanged): oneDNN's convolution of 16C channels to
        ``scale^3`` = 32,768 on a grid of one or a few voxels took about 15% of a CPU pretraining step at the
        distillation toy's scale (ROI 32, batch 16; about 4% at the demo's), forward and backward, where the product
        takes a few milliseconds.
        """
        x = self.norm(x.permute(0, 2, 3, 4, 1))  # (B, d, h, w, C)
        x = F.linear(x, self.conv.weight.flatten(1), self.conv.bias).permute(0, 4, 1, 2, 3)
        return pixelshuffle(x, spatial_dims=3, scale_factor=self.scale)
