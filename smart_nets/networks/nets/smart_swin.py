"""SMARTSwin: the 3D Swin encoder with CaiT class attention used by SMART (Jiang and Veeraraghavan, arXiv 2310.01209).

Layout (for a 128^3 input at ``feature_size`` C = 48, see docs/method.md section 2)::

    image (B, 1, 128^3)
      -> patch embedding (Conv3d k = s = 2, LayerNorm)   64^3 x C    hidden_states[0]   <- mask token applied here
      -> stage 1 (Swin blocks) + merging                 32^3 x 2C   hidden_states[1]
      -> stage 2 + merging                               16^3 x 4C   hidden_states[2]
      -> stage 3 + merging                                8^3 x 8C   hidden_states[3]   -> class attention ([CLS])
      -> stage 4 + merging                                4^3 x 16C  hidden_states[4], last_tokens

Each stage-3 token covers a ``(patch_size * 8)^3`` = 16^3-voxel block; SMART's masks and the class-attention map live
on that token grid. The [CLS] branch reads the stage-3 tokens and never feeds back into the Swin stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.layers import trunc_normal_
from monai.networks.nets.swin_unetr import PatchMergingV2
from torch import nn

from smart_nets.networks.blocks.class_attention import ClassAttentionBlock
from smart_nets.networks.blocks.window_attention import SwinStage

__all__ = ["ClassAttentionOutput", "SMARTSwin", "SMARTSwinOutput"]

NUM_STAGES = 4
CLASS_ATTN_STAGE = 3  # class attention reads the output of stage 3 (after its merging)
TOKEN_INITS = ("zeros", "trunc_normal")
LINEAR_INITS = ("trunc_normal", "torch")


class SMARTSwinOutput(NamedTuple):
    """What :class:`SMARTSwin` returns (a NamedTuple, so it traces and exports as a flat tuple).

    Attributes:
        hidden_states: five channels-first maps for a UNETR-style decoder: the patch embedding ``(B, C, S/2)`` and
            each stage's merged output ``(B, 2^i C, S/2^(i+1))`` for i = 1..4 (``S`` the input size), layer-normalized
            without affine parameters when the network was built with ``normalize=True``.
        cls_token: ``(B, 8C)`` the [CLS] token after class attention and the final LayerNorm.
        pooled: ``(B, 8C)`` the mean of ``patch_tokens``.
        patch_tokens: ``(B, N, 8C)`` the stage-3 tokens after the final LayerNorm, ``N`` tokens of 16^3 voxels in
            row-major (D, H, W) order.
        last_tokens: ``(B, 16C, S/32)`` the raw (un-normalized) stage-4 output, for the reconstruction head.
        attn_map: ``(B, N)`` the [CLS]->patch attention of the last class-attention block, averaged over heads.
    """

    hidden_states: tuple[torch.Tensor, ...]
    cls_token: torch.Tensor
    pooled: torch.Tensor
    patch_tokens: torch.Tensor
    last_tokens: torch.Tensor
    attn_map: torch.Tensor


class ClassAttentionOutput(NamedTuple):
    """What :meth:`SMARTSwin.forward_class_attention` returns: ``cls_token`` ``(B, 8C)``, ``pooled`` ``(B, 8C)``,
    ``patch_tokens`` ``(B, N, 8C)`` and ``attn_map`` ``(B, N)``, as in :class:`SMARTSwinOutput`."""

    cls_token: torch.Tensor
    pooled: torch.Tensor
    patch_tokens: torch.Tensor
    attn_map: torch.Tensor


def _check_positive(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or any(int(v) != v or v < 1 for v in values):
        raise ValueError(f"{name} must be {length} positive integers, got {values}.")
    return values


class SMARTSwin(nn.Module):
    """3D Swin transformer with CaiT class attention and a learnable mask token.

    Args:
        in_channels: number of input channels.
        feature_size: patch-embedding width C; stage i works at ``2^(i-1) C`` channels.
        depths: number of Swin blocks in each of the four stages.
        num_heads: attention heads in each stage; ``num_heads[i]`` must divide ``feature_size * 2^i``.
        window_size: 3D attention window (int or three ints); clipped to a smaller grid, which then is not shifted.
        patch_size: patch-embedding kernel and stride.
        num_class_attn_blocks: number of CaiT class-attention blocks on the stage-3 tokens (at least 1).
        class_attn_heads: heads of the class-attention blocks (width 8C); ``None`` uses ``num_heads[2]``, as the SMART
            authors do (smart_nets < 0.8 used ``num_heads[3]``: pass it to run weights trained then).
        mlp_ratio: MLP hidden width as a multiple of the token width, in Swin and class-attention blocks.
        qkv_bias: add a learnable bias to query, key and value.
        drop_rate: dropout after projections and in MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly to this value over the Swin blocks.
        layer_scale_init: initial LayerScale of the class-attention blocks (CaiT).
        normalize: layer-normalize (without affine) the returned ``hidden_states``, as MONAI's SwinUNETR does.
        use_checkpoint: gradient checkpointing of the Swin blocks (less memory, more compute).
        token_init: how the [CLS] token starts: ``"zeros"`` (the SMART authors' code; the [CLS] output then depends on
            the input from the first step) or ``"trunc_normal"`` (std 0.02, CaiT/timm; behind LayerScale 1e-4 the
            constant token swamps the input-dependent update, so the [CLS] output starts the same for every volume).
            Before smart-nets 0.11 it set the mask token too.
        mask_token_init: how the mask token starts: ``"trunc_normal"`` (std 0.02, SimMIM's Swin) or ``"zeros"`` (the
            SMART authors' code, and the default of smart-nets 0.8-0.10). A zero mask token makes every window that
            masking covers a window of exactly zero vectors, which stay zero through the stage (zero biases at
            start) and sit where LayerNorm's gradient is ``1 / sqrt(eps)``, about 316; chained over a stage's
            LayerNorms the student's gradient reaches 1e19-1e20 at the first step, its float32 norm overflows, and
            gradient clipping then scales every gradient to zero.
        linear_init: initial weights of the linear layers: ``"trunc_normal"`` (std 0.02, Swin/CaiT/timm) or
            ``"torch"`` (PyTorch's default, Kaiming-uniform, which the SMART authors' backbone keeps since its
            ``init_weights`` is never called: larger weights, so features vary more across inputs at the start).

    Raises:
        ValueError: on a non-positive or mis-sized argument, heads that do not divide a stage's width, or an
            unknown ``token_init``/``mask_token_init``/``linear_init``.
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
        class_attn_heads: int | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        layer_scale_init: float = 1e-4,
        normalize: bool = True,
        use_checkpoint: bool = False,
        token_init: str = "zeros",
        linear_init: str = "trunc_normal",
        mask_token_init: str = "trunc_normal",
    ) -> None:
        super().__init__()
        if token_init not in TOKEN_INITS or mask_token_init not in TOKEN_INITS or linear_init not in LINEAR_INITS:
            raise ValueError(
                f"token_init and mask_token_init must be one of {TOKEN_INITS} and linear_init one of {LINEAR_INITS}, "
                f"got {token_init!r}, {mask_token_init!r} and {linear_init!r}."
            )
        in_channels, feature_size, patch_size, num_class_attn_blocks = _check_positive(
            "in_channels, feature_size, patch_size and num_class_attn_blocks",
            (in_channels, feature_size, patch_size, num_class_attn_blocks),
            4,
        )
        depths = _check_positive("depths", depths, NUM_STAGES)
        num_heads = _check_positive("num_heads", num_heads, NUM_STAGES)
        window_size = (window_size,) * 3 if isinstance(window_size, int) else window_size
        window_size = _check_positive("window_size", window_size, 3)
        for name, rate in (("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}.")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}.")
        for i, heads in enumerate(num_heads):
            if (feature_size * 2**i) % heads != 0:
                raise ValueError(
                    f"num_heads[{i}] = {heads} does not divide the stage-{i + 1} width {feature_size * 2**i} "
                    f"(feature_size={feature_size})."
                )

        # what the weights need to fit and behave the same: saved with them (smart_nets.provenance) and compared
        # when they are loaded, so that a model file says what it is
        self.arch = {
            "in_channels": in_channels,
            "feature_size": feature_size,
            "depths": list(depths),
            "num_heads": list(num_heads),
            "window_size": list(window_size),
            "patch_size": patch_size,
            "num_class_attn_blocks": num_class_attn_blocks,
            "class_attn_heads": num_heads[CLASS_ATTN_STAGE - 1] if class_attn_heads is None else class_attn_heads,
            "mlp_ratio": float(mlp_ratio),
            "qkv_bias": bool(qkv_bias),
            "normalize": bool(normalize),
        }
        self.in_channels = in_channels
        self.feature_size = feature_size
        self.patch_size = patch_size
        self.normalize = normalize
        self.embed_dim = 8 * feature_size  # width of [CLS], pooled and patch tokens
        self.token_stride = patch_size * 2**CLASS_ATTN_STAGE  # voxels per token side: 16 for patch 2
        self.size_divisor = patch_size * 2**NUM_STAGES  # every spatial size must be a multiple of this

        self.patch_embed = nn.Conv3d(in_channels, feature_size, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(feature_size)
        self.mask_token = nn.Parameter(torch.zeros(feature_size))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        self.stages = nn.ModuleList(
            SwinStage(
                dim=feature_size * 2**i,
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                drop_path_rates=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                downsample=PatchMergingV2,
                use_checkpoint=use_checkpoint,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
            )
            for i in range(NUM_STAGES)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        heads = num_heads[CLASS_ATTN_STAGE - 1] if class_attn_heads is None else class_attn_heads
        if heads < 1 or self.embed_dim % heads:
            raise ValueError(f"class_attn_heads = {heads} does not divide the class-token width {self.embed_dim}.")
        self.class_attn_blocks = nn.ModuleList(
            ClassAttentionBlock(
                self.embed_dim,
                heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
                layer_scale_init=layer_scale_init,
            )
            for _ in range(num_class_attn_blocks)
        )
        self.norm = nn.LayerNorm(self.embed_dim)
        if token_init == "trunc_normal":
            trunc_normal_(self.cls_token, std=0.02)
        if mask_token_init == "trunc_normal":
            trunc_normal_(self.mask_token, std=0.02)
        self.linear_init = linear_init
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # Swin/CaiT initialisation (timm): truncated-normal linear weights, zero biases, unit LayerNorms; with
        # linear_init "torch" the linear layers keep PyTorch's own initialisation (the SMART authors' backbone).
        if isinstance(module, nn.Linear) and self.linear_init == "trunc_normal":
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the buffers that checkpoints do not carry (each window attention's relative-position index).
        Call it after ``to_empty()`` of a model built on the meta device, before or after loading its weights."""
        for module in self.modules():
            if module is not self and hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()

    def token_grid(self, spatial_size: Sequence[int]) -> tuple[int, int, int]:
        """The ``(d, h, w)`` grid of 16^3-voxel tokens (masks, attention map) for an input of ``spatial_size``.

        Raises:
            ValueError: when a size is not a positive multiple of ``size_divisor``.
        """
        spatial_size = tuple(int(s) for s in spatial_size)
        if len(spatial_size) != 3 or any(s < self.size_divisor or s % self.size_divisor for s in spatial_size):
            raise ValueError(
                f"SMARTSwin needs three spatial sizes, each a positive multiple of {self.size_divisor} "
                f"(patch_size {self.patch_size} x 2^{NUM_STAGES} merges), got {spatial_size}."
            )
        return tuple(s // self.token_stride for s in spatial_size)  # type: ignore[return-value]

    def _check_input(self, x: torch.Tensor) -> tuple[int, int, int]:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SMARTSwin expects input of shape (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}."
            )
        return self.token_grid(x.shape[2:])

    def _apply_mask(self, x: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Replace the patch embeddings ``(B, D', H', W', C)`` under ``mask`` tokens with the mask token (SimMIM)."""
        b = x.shape[0]
        n = grid[0] * grid[1] * grid[2]
        if mask.dtype != torch.bool or tuple(mask.shape) not in ((b, n), (b, *grid)):
            raise ValueError(
                f"mask must be a bool tensor of shape ({b}, {n}) or ({b}, {grid[0]}, {grid[1]}, {grid[2]}) "
                f"(one entry per {self.token_stride}^3-voxel token), got {mask.dtype} {tuple(mask.shape)}."
            )
        s = self.token_stride // self.patch_size  # embedding voxels per token side
        up = mask.reshape(-1, grid[0], 1, grid[1], 1, grid[2], 1).expand(-1, -1, s, -1, s, -1, s)
        up = up.reshape(-1, grid[0] * s, grid[1] * s, grid[2] * s, 1)
        return torch.where(up, self.mask_token.to(x.dtype), x)

    def hidden_states(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Channels-first (and, with ``normalize``, affine-free layer-normalized) views of ``forward_features``."""
        out = []
        for f in features:
            if self.normalize:
                f = F.layer_norm(f, (int(f.shape[-1]),))
            out.append(f.permute(0, 4, 1, 2, 3))
        return tuple(out)

    def forward_features(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, num_stages: int | None = None
    ) -> list[torch.Tensor]:
        """The Swin trunk alone, without class attention.

        Args:
            x: ``(B, in_channels, D, H, W)``, each spatial size a multiple of ``size_divisor`` (32 for patch 2).
            mask: optional bool mask over the token grid, ``(B, N)`` or ``(B, D/16, H/16, W/16)``; ``True`` tokens
                (1 = remove, as in MAE) have their patch embeddings replaced by the learnable mask token.
            num_stages: run only the first this many stages (all by default); ``CLASS_ATTN_STAGE`` is all that
                :meth:`forward_class_attention` reads, which spares the last stage where nothing else needs it.

        Returns:
            The channels-last maps: the patch embedding ``(B, D/2, H/2, W/2, C)`` and the merged output of each
            stage run, ``(B, D/2^(i+1), H/2^(i+1), W/2^(i+1), 2^i C)`` for i = 1..4 (five maps by default).

        Raises:
            ValueError: on an input or mask of the wrong shape or dtype, or ``num_stages`` outside 0..4.
        """
        if num_stages is not None and not 0 <= num_stages <= len(self.stages):
            raise ValueError(f"num_stages must be in 0..{len(self.stages)}, got {num_stages}")
        grid = self._check_input(x)
        h = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 4, 1))
        if mask is not None:
            h = self._apply_mask(h, mask, grid)
        features = [self.pos_drop(h)]
        for stage in self.stages[:num_stages]:
            features.append(stage(features[-1]))
        return features

    def forward_class_attention(self, features: Sequence[torch.Tensor]) -> ClassAttentionOutput:
        """The [CLS] branch on the stage-3 tokens of :meth:`forward_features`, without the decoder's hidden states
        (pretraining, classification and heatmaps need only this; computing ``hidden_states`` would be wasted).

        Args:
            features: the output of :meth:`forward_features`.

        Returns:
            A :class:`ClassAttentionOutput` (fields as in :class:`SMARTSwinOutput`).
        """
        tokens = features[CLASS_ATTN_STAGE].flatten(1, 3)  # (B, N, 8C)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        for block in self.class_attn_blocks:  # at least one, checked in __init__
            cls, attn = block(cls, tokens)
        out = self.norm(torch.cat((cls, tokens), dim=1))
        patch_tokens = out[:, 1:]
        return ClassAttentionOutput(out[:, 0], patch_tokens.mean(dim=1), patch_tokens, attn[:, :, 1:].mean(dim=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> SMARTSwinOutput:
        """Encode a batch of volumes: the Swin trunk, then class attention on the stage-3 tokens.

        Args:
            x: ``(B, in_channels, D, H, W)``, each spatial size a multiple of ``size_divisor`` (32 for patch 2).
            mask: optional bool mask over the token grid, as in :meth:`forward_features`.

        Returns:
            A :class:`SMARTSwinOutput`.

        Raises:
            ValueError: on an input or mask of the wrong shape or dtype.
        """
        features = self.forward_features(x, mask)
        head = self.forward_class_attention(features)
        return SMARTSwinOutput(
            hidden_states=self.hidden_states(features),
            cls_token=head.cls_token,
            pooled=head.pooled,
            patch_tokens=head.patch_tokens,
            last_tokens=features[-1].permute(0, 4, 1, 2, 3),
            attn_map=head.attn_map,
        )
