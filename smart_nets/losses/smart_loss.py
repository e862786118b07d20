"""SMART's self-distillation loss: DINO [CLS] loss + iBOT patch loss + SimMIM masked reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["GLOBAL_TOKENS", "SMARTLoss"]

GLOBAL_TOKENS = ("cls", "pooled")  # the order of SMARTPretrainNet's ``global`` output


def _cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per-row ``H(teacher, student) = -sum_k t_k log softmax(s)_k`` over the last dimension."""
    return torch.sum(-teacher_probs * F.log_softmax(student_logits, dim=-1), dim=-1)


def _all_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 across all processes (DINO all-reduces its centres)."""
    total = x.sum(dim=0, keepdim=True)
    count = x.shape[0]
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        count *= dist.get_world_size()
    return total / count


class SMARTLoss(nn.Module):
    """``L = w_cls * L_cls + w_patch * L_patch + w_rec * L_rec`` (DESIGN section 2, pretraining step 5).

    - ``L_cls`` (DINO): cross-entropy between the teacher's centred, sharpened distribution of one view's global
      tokens ([CLS] and pooled) and the student's distribution of the *other* view's, averaged over both pairings
      and both global tokens.
    - ``L_patch`` (iBOT): per-token cross-entropy between teacher and student patch distributions of the same view,
      averaged over the masked tokens of each view (unmasked tokens contribute nothing), then over views.
    - ``L_rec`` (SimMIM): L1 between each view and its reconstruction over the masked voxels only.

    The loss owns its state (DINO's manner): the centres of the teacher's global and patch outputs are buffers,
    updated after each call with momentum ``center_momentum`` from the batch mean, all-reduced across processes.
    MONAI has no self-distillation loss, hence this module.

    Args:
        out_dim: prototypes K of the projection head.
        student_temp: student temperature (0.1).
        center_momentum: momentum of both centres (0.9).
        w_cls, w_patch, w_rec: weights of the three parts (1, 1, and 10 by the authors' code default, 60 in their
            scripts).
        global_tokens: which global tokens ``L_cls`` distils, from ``("cls", "pooled")`` (both, SMART). The
            ablation without class-attention guidance uses ``["pooled"]`` (with ``masking="random"``): the [CLS]
            token and its class-attention blocks then receive no gradient.

    Raises:
        ValueError: on an empty or unknown ``global_tokens``, and on inputs whose batch sizes or token counts
            disagree.
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        w_cls: float = 1.0,
        w_patch: float = 1.0,
        w_rec: float = 10.0,
        global_tokens: Sequence[str] = GLOBAL_TOKENS,
    ) -> None:
        super().__init__()
        tokens = [global_tokens] if isinstance(global_tokens, str) else list(global_tokens)
        unknown = [t for t in tokens if t not in GLOBAL_TOKENS]
        if not tokens or unknown or len(set(tokens)) != len(tokens):
            raise ValueError(f"global_tokens must be distinct names from {GLOBAL_TOKENS}, got {global_tokens!r}")
        self.global_index = [GLOBAL_TOKENS.index(t) for t in tokens]
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.w_cls, self.w_patch, self.w_rec = w_cls, w_patch, w_rec
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_patch", torch.zeros(1, out_dim))

    def forward(
        self,
        student: dict[str, torch.Tensor],
        teacher: dict[str, torch.Tensor],
        views: torch.Tensor,
        masks: torch.Tensor,
        teacher_temp: float,
        teacher_temp_patch: float,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss and update the centres.

        Args:
            student: the student's outputs on the masked views: ``global`` ``(2B, 2, K)``, ``patch`` ``(2B, N, K)``,
                ``recon`` ``(2B, C, D, H, W)``; rows ``[:B]`` are view 1, ``[B:]`` view 2.
            teacher: the teacher's ``global`` and ``patch`` on the (noised) views, same layout.
            views: ``(2B, C, D, H, W)`` the clean views the student must rebuild.
            masks: ``(2B, d, h, w)`` bool student masks on the token grid (True = masked).
            teacher_temp: teacher temperature of the global tokens.
            teacher_temp_patch: teacher temperature of the patch tokens.

        Returns:
            ``loss`` (the weighted total), ``cls``, ``patch`` and ``rec``.
        """
        n2 = views.shape[0]
        if n2 % 2 or student["global"].shape[0] != n2 or masks.shape[0] != n2:
            raise ValueError(
                f"expected 2B rows everywhere (view 1 then view 2), got views {tuple(views.shape)}, "
                f"student global {tuple(student['global'].shape)}, masks {tuple(masks.shape)}"
            )
        flat_masks = masks.flatten(1)
        if student["patch"].shape[1] != flat_masks.shape[1]:
            raise ValueError(f"{student['patch'].shape[1]} patch tokens but {flat_masks.shape[1]} mask entries")
        s_global = student["global"][:, self.global_index].float()
        t_global = teacher["global"][:, self.global_index].float().detach()
        s_patch, t_patch = student["patch"].float(), teacher["patch"].float().detach()

        t_probs = F.softmax((t_global - self.center) / teacher_temp, dim=-1)
        s_logits = s_global / self.student_temp
        b = n2 // 2
        swapped = torch.cat((t_probs[b:], t_probs[:b]))  # teacher view 2 for student view 1 and vice versa
        loss_cls = _cross_entropy(swapped, s_logits).mean()

        tp_probs = F.softmax((t_patch - self.center_patch) / teacher_temp_patch, dim=-1)
        per_token = _cross_entropy(tp_probs, s_patch / self.student_temp)  # (2B, N)
        weights = flat_masks.float()
        loss_patch = ((per_token * weights).sum(1) / weights.sum(1).clamp(min=1.0)).mean()

        loss_rec = self.reconstruction_loss(student["recon"].float(), views.float(), masks)
        total = self.w_cls * loss_cls + self.w_patch * loss_patch + self.w_rec * loss_rec
        self.update_centers(t_global, t_patch)
        return {"loss": total, "cls": loss_cls, "patch": loss_patch, "rec": loss_rec}

    @staticmethod
    def reconstruction_loss(recon: torch.Tensor, views: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean absolute error over the voxels of masked tokens (SimMIM); 0 when nothing is masked.

        Args:
            recon: ``(B, C, D, H, W)`` reconstruction.
            views: ``(B, C, D, H, W)`` target.
            masks: ``(B, d, h, w)`` bool token masks; each token covers ``D/d x H/h x W/w`` voxels.
        """
        factors = [s // g for s, g in zip(views.shape[2:], masks.shape[1:])]
        voxels = masks[:, None].float()
        for axis, f in enumerate(factors):
            voxels = voxels.repeat_interleave(f, dim=axis + 2)
        error = (recon - views).abs() * voxels
        return error.sum() / (voxels.sum() * views.shape[1] + 1e-5)

    @torch.no_grad()
    def update_centers(self, t_global: torch.Tensor, t_patch: torch.Tensor) -> None:
        """EMA of the batch mean of the teacher's outputs: ``c <- m c + (1 - m) mean``."""
        m = self.center_momentum
        self.center.mul_(m).add_(_all_mean(t_global.reshape(-1, t_global.shape[-1])), alpha=1 - m)
        self.center_patch.mul_(m).add_(_all_mean(t_patch.mean(dim=1)), alpha=1 - m)
