"""Token masks for SMART: random block masks (teacher noise, random-masking ablation) and attention-guided masks.

Masks live on the encoder's token grid (one token per 16^3-voxel block for patch size 2) and follow MAE's
convention: ``True`` = masked (1 = remove). They are flat ``(B, N)`` bool tensors in row-major (D, H, W) order, or
``(d, h, w)`` per sample in the dictionary transform.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["random_token_mask", "attention_guided_mask", "RandTokenMaskd"]


def _count(ratio: float, n: int, name: str) -> int:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {ratio}")
    return int(round(ratio * n))


def random_token_mask(
    batch: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Mask exactly ``round(ratio * num_tokens)`` tokens per sample, chosen uniformly without replacement.

    Args:
        batch: number of samples B.
        num_tokens: tokens per sample N.
        ratio: share of tokens to mask, in [0, 1].
        generator: optional torch generator (CPU) for reproducibility.
        device: device of the returned mask.

    Returns:
        ``(B, N)`` bool mask.

    Raises:
        ValueError: when ``ratio`` is outside [0, 1].
    """
    k = _count(ratio, num_tokens, "ratio")
    ranks = torch.rand(batch, num_tokens, generator=generator).argsort(dim=1).argsort(dim=1)
    return (ranks < k).to(device)


def attention_guided_mask(
    attn_map: torch.Tensor,
    mask_ratio: float = 0.75,
    hint_ratio: float = 0.1,
    hint_pool: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """AttMask-High with hints (Kakogeorgiou et al. 2022), as SMART uses it with the teacher's class attention.

    The ``round(mask_ratio * N)`` most-attended tokens are masked; then ``round(hint_ratio * mask_ratio * N)`` of
    them, drawn uniformly from the ``round(hint_pool * N)`` most-attended tokens, are unmasked again as a hint, so
    the student never has to rebuild all of the most salient region from nothing.

    Args:
        attn_map: ``(B, N)`` attention scores (higher = more attended); detached inside.
        mask_ratio: share of tokens masked before the hint.
        hint_ratio: hint size as a share of the masked tokens.
        hint_pool: share of all tokens (the most attended) the hint is drawn from.
        generator: optional torch generator (CPU) for the hint draw.

    Returns:
        ``(B, N)`` bool mask on ``attn_map``'s device with exactly ``n_mask - n_hint`` masked tokens per sample.

    Raises:
        ValueError: on a ratio outside [0, 1] or an ``attn_map`` that is not 2D.
    """
    if attn_map.ndim != 2:
        raise ValueError(f"attn_map must be (B, N), got shape {tuple(attn_map.shape)}")
    b, n = attn_map.shape
    n_mask = _count(mask_ratio, n, "mask_ratio")
    n_pool = min(max(_count(hint_pool, n, "hint_pool"), 1), n_mask) if n_mask else 0
    n_hint = min(_count(hint_ratio, n_mask, "hint_ratio"), n_pool)
    order = attn_map.detach().float().argsort(dim=1, descending=True)  # (B, N) token ids, most attended first
    mask = torch.zeros(b, n, dtype=torch.bool, device=attn_map.device)
    mask.scatter_(1, order[:, :n_mask], True)
    if n_hint:
        pick = torch.rand(b, n_pool, generator=generator).argsort(dim=1)[:, :n_hint].to(attn_map.device)
        mask.scatter_(1, order[:, :n_pool].gather(1, pick), False)
    return mask


class RandTokenMaskd(Randomizable, MapTransform):
    """Add a random token mask for each image key: SMART's teacher patch-dropout noise, one draw per key.

    For an image ``(C, D, H, W)`` it writes ``data[f"{key}{mask_postfix}"]``, a ``(D/t, H/t, W/t)`` bool tensor
    with exactly ``round(ratio * N)`` tokens masked (``t = token_size``). With ``ratio = 0`` the mask is all
    ``False``: the teacher sees clean views (the authors' code, which sets this ratio to 0).

    Args:
        keys: image keys, e.g. ``("view1", "view2")``; each gets an independent mask.
        ratio: share of tokens to mask (the bundles' ``teacher_mask_ratio`` = 0.3; ``docs/method.md`` section 6).
        token_size: voxels per token side (patch size x 8 = 16 for SMARTSwin).
        mask_postfix: suffix of the output key.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: when a spatial size is not a multiple of ``token_size`` or ``ratio`` is outside [0, 1].
    """

    def __init__(
        self,
        keys: KeysCollection,
        ratio: float = 0.3,
        token_size: int = 16,
        mask_postfix: str = "_noise",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        _count(ratio, 1, "ratio")
        self.ratio = ratio
        self.token_size = token_size
        self.mask_postfix = mask_postfix

    def randomize(self, data=None) -> None:  # draws happen per key in __call__
        pass

    def _grid(self, key: Hashable, shape: Sequence[int]) -> tuple[int, ...]:
        if any(s % self.token_size for s in shape):
            raise ValueError(f"{key} has spatial size {tuple(shape)}, not a multiple of token_size {self.token_size}")
        return tuple(s // self.token_size for s in shape)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            grid = self._grid(key, d[key].shape[1:])
            n = int(np.prod(grid))
            chosen = self.R.permutation(n)[: _count(self.ratio, n, "ratio")]
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.as_tensor(chosen, dtype=torch.long)] = True
            d[f"{key}{self.mask_postfix}"] = mask.view(grid)
        return d
