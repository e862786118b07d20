"""3D shifted-window self-attention (Swin, Liu et al. 2021, arXiv 2103.14030) for SMARTSwin.

Laid out as timm lays out Swin (``WindowAttention`` inside ``SwinBlock`` inside ``SwinStage``), in 3D, with MONAI's
``get_window_size``, ``MLPBlock``, ``DropPath`` and ``trunc_normal_``. It computes exactly what MONAI's
``SwinTransformer`` computes (``tests/test_smart_swin.py`` checks outputs and gradients against it), and keeps its
own attention and block for speed in training, where SMART spends its time (``benchmarks/encoder_speed.py``
measures both against MONAI):

- the relative-position bias and the shift mask form one additive mask for PyTorch's
  ``scaled_dot_product_attention``, in training as well as inference;
- the roll and window partition of a block (and their inverses) are one cached token permutation, a single gather;
- features stay channels-last through all stages;
- shift masks and permutations are built once per grid size (and device).

Under tracing or ONNX export, attention is written out in plain tensor ops instead (matmul, add, softmax: portable
graphs, which TensorRT fuses itself), and the cached tensors are made afresh so that every trace records the same
graph. Method and layout: ``docs/method.md`` section 2.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath, trunc_normal_
from monai.networks.nets.swin_unetr import get_window_size
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["WindowAttention", "SwinBlock", "SwinStage", "attend", "relative_position_index"]


def relative_position_index(window_size: Sequence[int]) -> torch.Tensor:
    """Index into a ``(2w_d-1)(2w_h-1)(2w_w-1)`` relative-position bias table for every pair of window positions.

    Args:
        window_size: the 3D window size ``(w_d, w_h, w_w)``.

    Returns:
        A ``(n, n)`` long tensor with ``n = w_d * w_h * w_w``.
    """
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window_size], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (n, n, 3), each in [-(w-1), w-1]
    rel = rel + torch.tensor([w - 1 for w in window_size])
    strides = (2 * window_size[1] - 1) * (2 * window_size[2] - 1), 2 * window_size[2] - 1, 1
    return (rel * torch.tensor(strides)).sum(-1)


def _partition(grid: np.ndarray, window_size: Sequence[int]) -> np.ndarray:
    """``(D, H, W)`` -> ``(num_windows, n)``: the values of each window, windows and positions in row-major order."""
    (d, h, w), (wd, wh, ww) = grid.shape, window_size
    return grid.reshape(d // wd, wd, h // wh, wh, w // ww, ww).transpose(0, 2, 4, 1, 3, 5).reshape(-1, wd * wh * ww)


# The two caches below hold NumPy arrays. Eager code keeps device copies of them (_on_device); traced code makes fresh
# tensors on every call, so that two traces of the same network record the same graph (torch.jit.trace's check
# re-traces, and a cached tensor would be created in only one of them).
@functools.lru_cache(maxsize=32)
def _shift_mask(dims: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]) -> np.ndarray:
    """The ``(num_windows, n, n)`` additive mask of a shifted-window layer on a padded grid: -100 between positions
    that came from different regions of the unrolled grid (as MONAI's ``compute_mask``)."""
    regions = np.zeros(dims, dtype=np.int64)
    bounds = [((0, -ws), (-ws, -sh), (-sh, None)) for ws, sh in zip(window_size, shift_size)]
    for i, region in enumerate(itertools.product(*bounds)):
        regions[tuple(slice(*b) for b in region)] = i
    windows = _partition(regions, window_size)
    return np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _window_order(
    dims: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Token permutation from row-major grid order to (rolled) window order, and its inverse (cached per grid).

    Gathering ``x.flatten(1, 3)[:, order]`` equals MONAI's ``window_partition(torch.roll(x, -shift), window_size)``.
    """
    grid = np.roll(np.arange(dims[0] * dims[1] * dims[2]).reshape(dims), [-s for s in shift_size], axis=(0, 1, 2))
    order = _partition(grid, window_size).reshape(-1)
    return order, np.argsort(order)


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


@functools.lru_cache(maxsize=64)
def _on_device(
    device: torch.device, dims: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Shift mask, order and inverse order as tensors on ``device``, built once: copying them to a GPU in every
    block and step would be a sizeable part of a forward pass."""
    mask = None
    if any(s > 0 for s in shift_size):
        mask = torch.as_tensor(_shift_mask(dims, window_size, shift_size), device=device)
    order, inverse = (torch.as_tensor(t, device=device) for t in _window_order(dims, window_size, shift_size))
    return mask, order, inverse


def _window_tensors(
    device: torch.device, dims: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """:func:`_on_device`, except under tracing or export, where fresh tensors keep every trace's graph the same."""
    if not _exporting():
        return _on_device(device, dims, tuple(window_size), tuple(shift_size))
    return _on_device.__wrapped__(device, dims, tuple(window_size), tuple(shift_size))


class _GatherTokens(torch.autograd.Function):
    """``x.index_select(1, order)`` whose backward is the inverse gather, not a scatter-add.

    Why: one gather replaces MONAI's roll + partition copies (and reverse + roll back), and since ``order`` is a
    permutation its gradient is again a plain gather (no atomic adds on a GPU, deterministic), where autograd would
    scatter-add (``index_add``) into zeros.
    """

    @staticmethod
    def forward(ctx, x, order, inverse):  # noqa: D102 (see the class docstring)
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def _gather_tokens(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Permute the tokens of ``x`` ``(B, L, C)`` along ``L``."""
    if torch.is_grad_enabled() and not _exporting():
        return _GatherTokens.apply(x, order, inverse)
    return x.index_select(1, order)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    dropout_p: float,
    scale: float,
    head_multiple: int = 1,
) -> torch.Tensor:
    """``scaled_dot_product_attention`` with the head width zero-padded to a multiple of ``head_multiple``.

    Zeros added to queries and keys leave every dot product unchanged (the scale is passed explicitly), and zeros
    added to the values only add output channels, which are cut off again: the result is the same attention.

    Args:
        q, k, v: ``(B, heads, n, head_dim)``.
        mask: additive mask broadcastable to ``(B, heads, n, n)``.
        dropout_p: attention dropout.
        scale: the softmax scale (``head_dim ** -0.5`` of the unpadded width).
        head_multiple: pad ``head_dim`` up to a multiple of this (1: no padding).

    Returns:
        ``(B, heads, n, head_dim)``.
    """
    width = q.shape[-1]
    pad = (-width) % head_multiple
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return x[..., :width] if pad else x


class WindowAttention(nn.Module):
    """Multi-head self-attention inside 3D windows with a learned relative-position bias.

    Args:
        dim: number of feature channels.
        num_heads: number of attention heads; must divide ``dim``.
        window_size: the full (unclipped) 3D window size; the bias table is sized for it.
        qkv_bias: add a learnable bias to the query, key and value projections.
        attn_drop_rate: dropout on the attention weights (training only).
        proj_drop_rate: dropout after the output projection.

    Raises:
        ValueError: when ``num_heads`` does not divide ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        qkv_bias: bool = True,
        attn_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide the feature width ({dim}).")
        self.num_heads = num_heads
        self.window_size = tuple(window_size)
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop_rate = attn_drop_rate
        table_size = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_size, num_heads))
        # derived from window_size alone, so not saved in checkpoints (timm's convention)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, window_size: Sequence[int]) -> torch.Tensor:
        """The ``(num_heads, n, n)`` bias for a (possibly clipped) window of ``n`` positions.

        A window clipped to a smaller grid uses the bias of the positions it keeps, indexed in the full window.
        """
        if tuple(window_size) == self.window_size:
            index = self.relative_position_index
        else:
            keep = torch.zeros(self.window_size, dtype=torch.bool)
            keep[: window_size[0], : window_size[1], : window_size[2]] = True
            keep = keep.flatten().to(self.relative_position_index.device)
            index = self.relative_position_index[keep][:, keep]
        n = index.shape[0]
        return self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, window_size: Sequence[int], shift_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: windows ``(B * num_windows, n, C)``, batch-major (all windows of sample 0 first).
            window_size: the window actually used (clipped to the grid), with ``prod(window_size) == n``.
            shift_mask: ``(num_windows, n, n)`` additive mask of a shifted layer, or ``None``.

        Returns:
            ``(B * num_windows, n, C)``.
        """
        n, c = int(x.shape[1]), int(x.shape[2])  # Python ints keep traced graphs free of shape arithmetic
        qkv = self.qkv(x).view(-1, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B * num_windows, heads, n, head_dim) each
        bias = self.relative_position_bias(window_size).unsqueeze(0)  # (1, heads, n, n)
        if shift_mask is not None:
            bias = (bias + shift_mask.unsqueeze(1)).unsqueeze(0)  # (1, num_windows, heads, n, n)
        if _exporting():
            x = self._attention_ops(q, k, v, bias)
        else:
            if bias.ndim == 5:  # SDPA's fused kernels take 4D masks: repeat over the samples (a view for one sample)
                bias = bias.expand(q.shape[0] // bias.shape[1], -1, -1, -1, -1).reshape(-1, *bias.shape[2:])
            drop = self.attn_drop_rate if self.training else 0.0
            # CUDA's fused kernels take 16-bit heads only in multiples of 8 channels (C 48 with 4 heads has 12):
            # padded there, bf16 does not fall back to the math kernel, which writes out every attention matrix
            multiple = 8 if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) else 1
            x = attend(q, k, v, bias.to(q.dtype), drop, self.scale, multiple)
        x = x.transpose(1, 2).reshape(-1, n, c)
        return self.proj_drop(self.proj(x))

    def _attention_ops(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T * scale + bias) v`` in plain ops, for tracing and export (no dropout: inference only).

        ``bias`` is ``(1, heads, n, n)``, or ``(1, num_windows, heads, n, n)`` added to the scores viewed per sample,
        so that the graph never repeats the mask over a batch whose size it does not know.
        """
        heads, n = q.shape[1], q.shape[2]
        scores = ((q * self.scale) @ k.transpose(-2, -1)).view(-1, *bias.shape[1:]) + bias
        return scores.view(-1, heads, n, n).softmax(dim=-1) @ v


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block, pre-norm, on channels-last features.

    Args:
        dim: number of feature channels.
        num_heads: number of attention heads.
        window_size: 3D window size.
        shifted: shift the windows by half a window (every second block of a stage).
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        qkv_bias: add a learnable bias to query, key and value.
        drop_rate: dropout after the attention projection and inside the MLP.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic-depth rate of this block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in window_size) if shifted else (0, 0, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop_rate, drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), drop_rate, act="GELU", dropout_mode="swin")

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w, c = (int(s) for s in x.shape[1:])
        window_size, shift_size = get_window_size((d, h, w), self.window_size, self.shift_size)
        pads = [(ws - s % ws) % ws for s, ws in zip((d, h, w), window_size)]
        x = self.norm1(x)
        if any(p > 0 for p in pads):
            x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        dims = (d + pads[0], h + pads[1], w + pads[2])
        shift_mask, order, inverse = _window_tensors(x.device, dims, window_size, shift_size)
        n = window_size[0] * window_size[1] * window_size[2]
        windows = _gather_tokens(x.reshape(-1, order.numel(), c), order, inverse).view(-1, n, c)
        windows = self.attn(windows, window_size, shift_mask).view(-1, order.numel(), c)
        x = _gather_tokens(windows, inverse, order).view(-1, *dims, c)
        if any(p > 0 for p in pads):
            x = x[:, :d, :h, :w].contiguous()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, D, H, W, C)``. Returns: ``(B, D, H, W, C)``."""
        x = x + self.drop_path(self._attention(x))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """A Swin stage: ``depth`` blocks alternating regular and shifted windows, then optional 2x patch merging.

    Args:
        dim: number of input channels (the output has ``2 * dim`` when ``downsample`` is set).
        depth: number of blocks.
        num_heads: number of attention heads.
        window_size: 3D window size.
        drop_path_rates: one stochastic-depth rate per block.
        downsample: a patch-merging module class taking ``(dim, norm_layer, spatial_dims)``, e.g. MONAI's
            ``PatchMergingV2``, or ``None``.
        use_checkpoint: trade compute for memory with gradient checkpointing of each block.
        **block_kwargs: passed to :class:`SwinBlock` (``mlp_ratio``, ``qkv_bias``, ``drop_rate``, ``attn_drop_rate``).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        drop_path_rates: Sequence[float],
        downsample: type[nn.Module] | None = None,
        use_checkpoint: bool = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, i % 2 == 1, drop_path_rate=drop_path_rates[i], **block_kwargs)
            for i in range(depth)
        )
        self.downsample = downsample(dim=dim, norm_layer=nn.LayerNorm, spatial_dims=3) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, D, H, W, C)``. Returns: ``(B, D/2, H/2, W/2, 2C)`` with downsampling, else as ``x``."""
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x
