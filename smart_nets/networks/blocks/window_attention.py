"""3D shifted-window self-attention (Swin, Liu et al. 2021, arXiv 2103.14030) for SMARTSwin.

Laid out as timm lays out Swin (``WindowAttention`` inside ``SwinBlock`` inside ``SwinStage``), in 3D, with MONAI's
``get_window_size``, ``MLPBlock``, ``DropPath`` and ``trunc_normal_``. It computes exactly what MONAI's
``SwinTransformer`` computes (``tests/test_smart_swin.py`` checks outputs and gradients against it), and keeps its
own attention and block for speed in training, where SMART spends its time (``benchmarks/encoder_speed.py``
measures both against MONAI):

- the relative-position bias and the shift mask form one additive mask for PyTorch's
  ``scaled_dot_product_attention``, in training as well as inference;
- the roll and window partition of a block (and their inverses) are one token permutation, a single gather;
- features stay channels-last through all stages.

The window tensors of a grid (shift mask, token order and its inverse) depend on the padded grid, which is known
only at the first forward, so they cannot be made at construction as timm makes its fixed-size mask. A
:class:`WindowCache` keeps them instead, owned by the modules: a ``SwinStage`` makes one and shares it among its
blocks (one mask per stage, not per block), it holds the latest grid only, and the blocks clear it in ``_apply``,
so that ``.to()``/``.cuda()``/``.half()`` never leave it on the old device or dtype (it is rebuilt on the next
forward) and it is freed with the model; ``copy.deepcopy`` (the EMA teacher) and pickling give an empty one.
Not buffers: ``DistributedDataParallel`` (the bundles' ``multi_gpu_train.json`` keep its default
``broadcast_buffers=True``) would broadcast every buffer from rank 0 at every step (stage 1's mask alone is 64 MiB
for a 128^3 input), and buffers are what EMA and checkpoint code iterate.

One switch chooses the attention: ``WindowAttention.fused_attn`` (set at construction, as timm's), and, found once
per block and call, tracing or ONNX export (``torch.jit.trace``, ``torch.onnx.export`` of either exporter, hence
``python -m monai.bundle onnx_export``). Traced and exported graphs write attention in plain tensor ops instead of
``scaled_dot_product_attention`` (matmul, add, softmax: portable graphs, which TensorRT fuses itself) and make the
window tensors afresh, so that every trace records them as the same constants (``torch.jit.trace``'s check
re-traces, and a cached tensor would be created in only one of them). Under ``torch.compile`` they are computed
inside the graph in tensor ops of static shape (:func:`window_tensors_in_graph`, as timm's ``dynamic_mask``), so that
dynamo traces no NumPy and no cache and compiles the whole encoder as one graph (a cached tensor would be a guarded
input, a cache miss a graph break). Method and layout: ``docs/method.md`` section 2.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath, trunc_normal_
from monai.networks.nets.swin_unetr import get_window_size
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "SwinBlock",
    "SwinStage",
    "WindowAttention",
    "WindowCache",
    "WindowTensors",
    "attend",
    "relative_position_index",
    "window_tensors",
    "window_tensors_in_graph",
]


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


def _partition(grid, window_size: Sequence[int]):
    """``(D, H, W)`` -> ``(num_windows, n)``: the values of each window, windows and positions in row-major order (a
    NumPy array or a tensor)."""
    (d, h, w), (wd, wh, ww) = grid.shape, window_size
    grid = grid.reshape(d // wd, wd, h // wh, wh, w // ww, ww)
    axes = (0, 2, 4, 1, 3, 5)
    grid = grid.permute(*axes) if isinstance(grid, torch.Tensor) else grid.transpose(axes)
    return grid.reshape(-1, wd * wh * ww)


def _shift_mask(dims: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]) -> np.ndarray:
    """The ``(num_windows, n, n)`` additive mask of a shifted-window layer on a padded grid: -100 between positions
    that came from different regions of the unrolled grid (as MONAI's ``compute_mask``)."""
    regions = np.zeros(dims, dtype=np.int64)
    bounds = [((0, -ws), (-ws, -sh), (-sh, None)) for ws, sh in zip(window_size, shift_size)]
    for i, region in enumerate(itertools.product(*bounds)):
        regions[tuple(slice(*b) for b in region)] = i
    windows = _partition(regions, window_size)
    return np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0).astype(np.float32)


def _window_order(dims: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]) -> np.ndarray:
    """Token permutation from row-major grid order to (rolled) window order.

    Gathering ``x.flatten(1, 3)[:, order]`` equals MONAI's ``window_partition(torch.roll(x, -shift), window_size)``.
    """
    grid = np.roll(np.arange(dims[0] * dims[1] * dims[2]).reshape(dims), [-s for s in shift_size], axis=(0, 1, 2))
    return _partition(grid, window_size).reshape(-1)


class WindowTensors(NamedTuple):
    """What a (shifted-)window block needs for one padded grid.

    Attributes:
        mask: ``(num_windows, n, n)`` additive shift mask, or ``None`` for an unshifted block.
        order: ``(L,)`` long, the permutation from row-major grid order to (rolled) window order.
        inverse: ``(L,)`` long, its inverse.
    """

    mask: torch.Tensor | None
    order: torch.Tensor
    inverse: torch.Tensor


def window_tensors(
    dims: Sequence[int],
    window_size: Sequence[int],
    shift_size: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WindowTensors:
    """The shift mask (in ``dtype``), token order and inverse order of a padded grid, made afresh on ``device``.

    Made with NumPy, so that a trace records them as constants.

    Args:
        dims: the padded grid ``(D, H, W)``, each a multiple of ``window_size``.
        window_size: the (clipped) window.
        shift_size: the shift of each axis; all zero for an unshifted block, which gets no mask.
        device: where to make them.
        dtype: the dtype of the mask (the relative-position bias's).
    """
    dims, window_size, shift_size = (tuple(int(v) for v in t) for t in (dims, window_size, shift_size))
    mask = None
    if any(s > 0 for s in shift_size):
        mask = torch.as_tensor(_shift_mask(dims, window_size, shift_size), dtype=dtype, device=device)
    order = _window_order(dims, window_size, shift_size)
    order, inverse = (torch.as_tensor(t, device=device) for t in (order, np.argsort(order)))
    return WindowTensors(mask, order, inverse)


def window_tensors_in_graph(
    dims: tuple[int, int, int],
    window_size: tuple[int, ...],
    shift_size: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> WindowTensors:
    """:func:`window_tensors` in tensor ops of static shape, for ``torch.compile``: computed inside the compiled
    graph (index arithmetic that inductor fuses), with no NumPy for dynamo to trace and no state to guard on.

    Regions are labelled per axis (before the last window, in the last window but not its shifted-in part, the
    shifted-in part); an axis without shift gets one label, as MONAI's mask then keeps it whole.
    """
    length = dims[0] * dims[1] * dims[2]
    positions = torch.arange(length, device=device)
    grid = positions.view(dims)
    shifted = any(s > 0 for s in shift_size)
    if shifted:
        grid = grid.roll([-s for s in shift_size], (0, 1, 2))
    order = _partition(grid, window_size).reshape(-1)
    inverse = torch.empty_like(order).scatter_(0, order, positions)
    mask = None
    if shifted:
        labels = []
        for axis, (size, ws, sh) in enumerate(zip(dims, window_size, shift_size)):
            index = torch.arange(size, device=device)
            label = (index >= size - ws).long() + (index >= size - sh).long() if sh > 0 else torch.zeros_like(index)
            labels.append(label.view([-1 if a == axis else 1 for a in range(3)]))
        windows = _partition(labels[0] * 9 + labels[1] * 3 + labels[2], window_size)
        mask = torch.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0).to(dtype)
    return WindowTensors(mask, order, inverse)


class WindowCache:
    """:func:`window_tensors` of the latest padded grid, kept by the modules that use them (see the module docstring).

    Entries are keyed by window, shift, device and dtype; a new grid replaces them all. :meth:`clear` empties it
    (``SwinBlock._apply`` does, so that the tensors follow ``.to()``); ``copy.deepcopy`` and pickling give an empty
    cache, so that a copied network (the EMA teacher) shares nothing with the original.
    """

    def __init__(self) -> None:
        self._grid: tuple[int, ...] | None = None
        self._entries: dict[tuple, WindowTensors] = {}

    def get(
        self,
        dims: tuple[int, int, int],
        window_size: tuple[int, ...],
        shift_size: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype,
    ) -> WindowTensors:
        """The window tensors of ``dims``, made by :func:`window_tensors` on a miss."""
        if dims != self._grid:
            self._entries.clear()
            self._grid = dims
        key = (window_size, shift_size, device, dtype)
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = window_tensors(dims, window_size, shift_size, device, dtype)
        return found

    def clear(self) -> None:
        """Drop every entry (they are rebuilt on demand)."""
        self._grid = None
        self._entries.clear()

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor held, for tests and memory accounting."""
        return [t for entry in self._entries.values() for t in entry if t is not None]

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo) -> WindowCache:
        return WindowCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def __repr__(self) -> str:
        return f"WindowCache(grid={self._grid}, entries={len(self._entries)})"


def _tracing() -> bool:
    """Under ``torch.jit.trace`` or ONNX export (either exporter): plain-op attention and fresh window tensors."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


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


def _gather_tokens(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, tracing: bool = False) -> torch.Tensor:
    """Permute the tokens of ``x`` ``(B, L, C)`` along ``L`` (plain ``index_select`` without autograd or traced)."""
    if torch.is_grad_enabled() and not tracing:
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
        fused_attn: attend with ``scaled_dot_product_attention`` (its fused kernels); ``False`` writes attention out
            in plain tensor ops, as always under tracing and ONNX export. The attribute of that name can be changed
            later (timm's ``fused_attn``).

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
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide the feature width ({dim}).")
        self.num_heads = num_heads
        self.window_size = tuple(window_size)
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop_rate = attn_drop_rate
        self.fused_attn = fused_attn
        table_size = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_size, num_heads))
        # derived from window_size alone, so not saved in checkpoints (timm's convention)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        """Recompute ``relative_position_index`` in place. It is not saved in checkpoints, so a model built on the
        meta device and materialised with ``to_empty()`` (deferred initialisation, as FSDP does) holds whatever that
        memory held until this runs; loading a state dict does not repair it. timm's convention of the same name."""
        with torch.no_grad():
            self.relative_position_index.copy_(relative_position_index(self.window_size))

    def relative_position_bias(self, window_size: Sequence[int]) -> torch.Tensor:
        """The ``(num_heads, n, n)`` bias for a (possibly clipped) window of ``n`` positions.

        A window clipped to a smaller grid uses the bias of the positions it keeps, indexed in the full window (a
        slice of the index viewed per axis: static shapes, which ``torch.compile`` needs, where a boolean mask would
        give a data-dependent one).
        """
        index = self.relative_position_index
        if tuple(window_size) != self.window_size:
            (a, b, c), n = window_size, window_size[0] * window_size[1] * window_size[2]
            index = index.view(*self.window_size, *self.window_size)[:a, :b, :c, :a, :b, :c].reshape(n, n)
        n = index.shape[0]
        return self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(
        self,
        x: torch.Tensor,
        window_size: Sequence[int],
        shift_mask: torch.Tensor | None = None,
        tracing: bool | None = None,
    ) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: windows ``(B * num_windows, n, C)``, batch-major (all windows of sample 0 first).
            window_size: the window actually used (clipped to the grid), with ``prod(window_size) == n``.
            shift_mask: ``(num_windows, n, n)`` additive mask of a shifted layer, or ``None``.
            tracing: whether a trace or ONNX export is under way (plain ops); ``None``: find out.

        Returns:
            ``(B * num_windows, n, C)``.
        """
        n, c = int(x.shape[1]), int(x.shape[2])  # Python ints keep traced graphs free of shape arithmetic
        qkv = self.qkv(x).view(-1, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B * num_windows, heads, n, head_dim) each
        bias = self.relative_position_bias(window_size).unsqueeze(0)  # (1, heads, n, n)
        if shift_mask is not None:
            bias = (bias + shift_mask.unsqueeze(1)).unsqueeze(0)  # (1, num_windows, heads, n, n)
        if tracing is None:
            tracing = _tracing()
        if tracing or not self.fused_attn:
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
        """``softmax(q k^T * scale + bias) v`` in plain ops, for tracing and export and without ``fused_attn``.

        ``bias`` is ``(1, heads, n, n)``, or ``(1, num_windows, heads, n, n)`` added to the scores viewed per sample,
        so that the graph never repeats the mask over a batch whose size it does not know. Attention dropout only in
        training (a traced or exported graph has none).
        """
        heads, n = q.shape[1], q.shape[2]
        scores = ((q * self.scale) @ k.transpose(-2, -1)).view(-1, *bias.shape[1:]) + bias
        probs = scores.view(-1, heads, n, n).softmax(dim=-1)
        if self.training and self.attn_drop_rate > 0:
            probs = F.dropout(probs, self.attn_drop_rate)
        return probs @ v


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
        windows: the :class:`WindowCache` to keep this block's window tensors in, shared with the other blocks of a
            stage (``None``: a cache of its own).
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
        windows: WindowCache | None = None,
    ) -> None:
        super().__init__()
        self.windows = WindowCache() if windows is None else windows
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in window_size) if shifted else (0, 0, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop_rate, drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), drop_rate, act="GELU", dropout_mode="swin")

    def _apply(self, fn, recurse: bool = True):
        # .to(), .cuda(), .half(), ... : drop the window tensors, rebuilt on the next forward where the weights are
        self.windows.clear()
        return super()._apply(fn, recurse)

    def _window_tensors(self, dims, window_size, shift_size, device, tracing: bool) -> WindowTensors:
        dtype = self.attn.relative_position_bias_table.dtype
        if tracing:  # made afresh: constants in every trace
            return window_tensors(dims, window_size, shift_size, device, dtype)
        if torch.compiler.is_compiling():  # computed in the graph: nothing cached for dynamo to guard on
            return window_tensors_in_graph(dims, window_size, shift_size, device, dtype)
        return self.windows.get(dims, window_size, shift_size, device, dtype)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w, c = (int(s) for s in x.shape[1:])
        window_size, shift_size = get_window_size((d, h, w), self.window_size, self.shift_size)
        pads = [(ws - s % ws) % ws for s, ws in zip((d, h, w), window_size)]
        x = self.norm1(x)
        if any(p > 0 for p in pads):
            x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        dims = (d + pads[0], h + pads[1], w + pads[2])
        tracing = _tracing()  # once per call: chooses plain ops and fresh window tensors below
        shift_mask, order, inverse = self._window_tensors(dims, window_size, shift_size, x.device, tracing)
        n, tokens = window_size[0] * window_size[1] * window_size[2], dims[0] * dims[1] * dims[2]
        windows = _gather_tokens(x.reshape(-1, tokens, c), order, inverse, tracing).view(-1, n, c)
        windows = self.attn(windows, window_size, shift_mask, tracing).view(-1, tokens, c)
        x = _gather_tokens(windows, inverse, order, tracing).view(-1, *dims, c)
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
        self.windows = WindowCache()  # one for all blocks: the grid is the same for each
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                i % 2 == 1,
                drop_path_rate=drop_path_rates[i],
                windows=self.windows,
                **block_kwargs,
            )
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
