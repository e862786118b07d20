"""CaiT class attention (Touvron et al. 2021, "Going deeper with Image Transformers", arXiv 2103.17239).

Neither MONAI nor PyTorch has class attention, and timm's ``ClassAttn`` does not return its attention weights,
which SMART needs: the [CLS]->patch map of the teacher's last block chooses the tokens the student must rebuild.
So the weights are computed explicitly here (one query per sample, so this costs nothing next to the Swin stages).
"""

from __future__ import annotations

import torch
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath
from torch import nn

__all__ = ["ClassAttention", "LayerScale", "ClassAttentionBlock"]


class ClassAttention(nn.Module):
    """Attention whose only query is the [CLS] token; keys and values come from ``[CLS; patch tokens]``.

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: add a learnable bias to the query, key and value projections.
        attn_drop_rate: dropout on the attention weights.
        proj_drop_rate: dropout after the output projection.

    Raises:
        ValueError: when ``num_heads`` does not divide ``dim``.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide the class-token width ({dim}).")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: ``(B, 1 + N, C)``, the [CLS] token first.

        Returns:
            The updated [CLS] ``(B, 1, C)`` and the attention weights ``(B, heads, 1 + N)`` (softmax over keys,
            before dropout; index 0 is [CLS] attending to itself).
        """
        b, n, c = x.shape
        hd = c // self.num_heads
        q = self.q(x[:, :1]).view(b, 1, self.num_heads, hd).transpose(1, 2)  # (B, h, 1, hd)
        k, v = self.kv(x).view(b, n, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N+1, hd)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, 1, N+1)
        cls = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, 1, c)
        return self.proj_drop(self.proj(cls)), attn.squeeze(2)


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), initialised small so deep stacks train stably.

    Args:
        dim: number of channels.
        init_value: initial value of every scale.
    """

    def __init__(self, dim: int, init_value: float = 1e-4) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., dim)``. Returns: ``x * gamma``."""
        return x * self.gamma


class ClassAttentionBlock(nn.Module):
    """CaiT's ``LayerScaleBlockClassAttn``: updates only the [CLS] token from the frozen patch tokens.

    Args:
        dim: token width.
        num_heads: number of heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        qkv_bias: add a learnable bias to query, key and value.
        drop_rate: dropout after projections and in the MLP.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic-depth rate.
        layer_scale_init: initial LayerScale value (CaiT uses 1e-5 to 1e-4 depending on depth).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-4,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop_rate, drop_rate)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), drop_rate, act="GELU", dropout_mode="swin")
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            cls: ``(B, 1, C)`` class token.
            tokens: ``(B, N, C)`` patch tokens (not modified).

        Returns:
            The new class token ``(B, 1, C)`` and the attention weights ``(B, heads, 1 + N)``.
        """
        update, attn = self.attn(self.norm1(torch.cat((cls, tokens), dim=1)))
        cls = cls + self.drop_path(self.ls1(update))
        cls = cls + self.drop_path(self.ls2(self.mlp(self.norm2(cls))))
        return cls, attn
