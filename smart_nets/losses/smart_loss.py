"""SMART's self-distillation loss: DINO [CLS] loss + iBOT patch loss + SimMIM masked reconstruction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["CENTERINGS", "GLOBAL_TOKENS", "SMARTLoss", "koleo_loss", "sinkhorn_knopp"]

logger = logging.getLogger(__name__)

GLOBAL_TOKENS = ("cls", "pooled")  # the order of SMARTPretrainNet's ``global`` output
CENTERINGS = ("center", "sinkhorn")
KOLEO_FEATURES = {"encoder": "embedding", "head": "bottleneck"}  # koleo_features -> SMARTPretrainNet output


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


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets balanced over the prototypes by Sinkhorn-Knopp (SwAV; DINOv2's ``sinkhorn_knopp_teacher``).

    ``exp(logits / temperature)`` is normalised alternately so that every prototype gets the same total mass over
    the rows (summed across processes) and every row sums to 1: the targets cannot collapse onto one prototype or
    onto the uniform distribution, whatever the batch. Written here because neither MONAI nor PyTorch has it.

    Args:
        logits: ``(R, K)`` teacher logits, one row per target.
        temperature: teacher temperature.
        iterations: normalisation rounds (3, as DINOv2).

    Returns:
        ``(R, K)`` probabilities (each row sums to 1).
    """
    logits = logits.float() / temperature
    q = torch.exp(logits - logits.max()).t()  # (K, R); the shift cancels in the normalisation
    rows, k = q.shape[1], q.shape[0]
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        rows *= dist.get_world_size()
    total = q.sum()
    if distributed:
        dist.all_reduce(total)
    q /= total
    for _ in range(iterations):
        per_prototype = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(per_prototype)
        q /= per_prototype * k
        q /= q.sum(dim=0, keepdim=True) * rows
    return (q * rows).t()


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser (DINOv2's KoLeo): ``-mean_i log(||x_i - x_nn(i)||)`` over the
    L2-normalised rows of ``x``, ``nn(i)`` the row nearest to row ``i`` (itself excluded).

    It grows without bound as two rows meet, so minimising it spreads a batch's features over the sphere: a direct
    counter to the collapse where every input gets the same feature. PyTorch and MONAI have no such loss.

    Args:
        x: ``(R, D)`` features, R >= 2 (the rows of one view; across processes nothing is gathered, as in DINOv2).
        eps: added to the distances before the log, and the normalisation's floor.

    Raises:
        ValueError: when ``x`` has fewer than 2 rows (there is no nearest neighbour).
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 rows of features (volumes per view), got shape {tuple(x.shape)}")
    x = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        similarity = x @ x.t()
        similarity.fill_diagonal_(-2.0)  # below any cosine: a row is never its own neighbour
        nearest = similarity.argmax(dim=1)
    distance = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distance + eps).mean()


class SMARTLoss(nn.Module):
    """``L = w_cls * L_cls + w_patch * L_patch + w_rec * L_rec [+ w_koleo * L_koleo]`` (SMART's pretraining objective).

    - ``L_cls`` (DINO): cross-entropy between the teacher's centred, sharpened distribution of one view's global
      tokens ([CLS] and pooled) and the student's distribution of the *other* view's, averaged over both pairings
      and both global tokens.
    - ``L_patch`` (iBOT): per-token cross-entropy between teacher and student patch distributions of the same view,
      averaged over the masked tokens of each view (unmasked tokens contribute nothing), then over views.
    - ``L_rec`` (SimMIM): L1 between each view and its reconstruction over the masked voxels only.
    - ``L_koleo`` (DINOv2's regulariser, not part of SMART; off at ``w_koleo=0``): :func:`koleo_loss` of the
      student's features of each distilled global token, per view, averaged: the encoder's (before the head, as
      DINOv2; the student's ``embedding`` output) or the head's L2-normalised bottleneck (``bottleneck``), per
      ``koleo_features``. It needs at least 2 volumes per view on each process: with fewer it is 0, with one
      warning.

    The loss owns its state (DINO's manner): one centre per teacher output - a row of ``center`` ``(G, K)`` for each
    of the G distilled global tokens, and ``center_patch`` ``(1, K)`` for the patch tokens - updated after each call
    with momentum ``center_momentum`` from the batch mean, all-reduced across processes. The centres are set to the
    first batch's mean rather than grown from zero (``center_from_first_batch``), so the first iterations are not
    sharpened around an arbitrary offset. One centre per token matters: a centre shared by [CLS] and pooled never
    removes the constant gap between their mean logits, and the [CLS] target then becomes one sharp prototype for
    every input while ``L_cls`` falls (DINO, iBOT and the SMART authors all keep one centre per output).
    With ``centering="sinkhorn"`` the teacher targets are balanced by :func:`sinkhorn_knopp` instead (DINOv2's
    cure for collapse, which does not rely on a large batch the way the centre's running mean does); the centres
    are still tracked. MONAI has no self-distillation loss, hence this module.

    Args:
        out_dim: prototypes K of the projection head.
        student_temp: student temperature (0.1).
        center_momentum: momentum of the centres (0.9).
        w_cls, w_patch, w_rec: weights of the three parts (1, 1, and 10 by the authors' code default, 60 in their
            scripts).
        global_tokens: which global tokens ``L_cls`` distils, from ``("cls", "pooled")`` (both, SMART). The
            ablation without class-attention guidance uses ``["pooled"]`` (with ``masking="random"``): the [CLS]
            token and its class-attention blocks then receive no gradient, and ``center`` has one row.
        center_from_first_batch: set the centres to the first batch's mean (True), or start them at zero as DINO
            does (False).
        centering: how the teacher's targets are kept from collapsing: ``"center"`` (DINO/iBOT/SMART: subtract a
            running mean, then sharpen) or ``"sinkhorn"`` (DINOv2: Sinkhorn-Knopp over the batch's rows).
        w_koleo: weight of the KoLeo term (0: off, SMART; DINOv2 uses 0.1).
        koleo_features: what KoLeo spreads: ``"encoder"`` (DINOv2: the encoder's [CLS] and pooled features) or
            ``"head"`` (the projection head's normalised bottleneck, the vectors the prototypes score: an option
            against a head that maps spread features to one output).

    Raises:
        ValueError: on an empty or unknown ``global_tokens`` or ``centering``, and on inputs whose batch sizes or
            token counts disagree.
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
        center_from_first_batch: bool = True,
        centering: str = "center",
        w_koleo: float = 0.0,
        koleo_features: str = "encoder",
    ) -> None:
        super().__init__()
        if w_koleo < 0:
            raise ValueError(f"w_koleo must be >= 0, got {w_koleo}")
        if koleo_features not in KOLEO_FEATURES:
            raise ValueError(f"koleo_features must be one of {tuple(KOLEO_FEATURES)}, got {koleo_features!r}")
        self.koleo_key = KOLEO_FEATURES[koleo_features]
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.centering = centering
        tokens = [global_tokens] if isinstance(global_tokens, str) else list(global_tokens)
        unknown = [t for t in tokens if t not in GLOBAL_TOKENS]
        if not tokens or unknown or len(set(tokens)) != len(tokens):
            raise ValueError(f"global_tokens must be distinct names from {GLOBAL_TOKENS}, got {global_tokens!r}")
        self.global_tokens = tuple(tokens)
        self.global_index = [GLOBAL_TOKENS.index(t) for t in tokens]
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.w_cls, self.w_patch, self.w_rec, self.w_koleo = w_cls, w_patch, w_rec, w_koleo
        self._koleo_warned = False
        self.center_from_first_batch = center_from_first_batch
        self.register_buffer("center", torch.zeros(len(tokens), out_dim))
        self.register_buffer("center_patch", torch.zeros(1, out_dim))
        self.register_buffer("centers_started", torch.tensor(not center_from_first_batch))

    def global_targets(self, t_global: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """The teacher's centred, sharpened distributions of the distilled global tokens.

        Args:
            t_global: ``(R, 2, K)`` teacher logits of [CLS] and pooled (``SMARTPretrainNet``'s ``global``).
            teacher_temp: teacher temperature.

        Returns:
            ``(R, G, K)`` probabilities, one row per distilled token (``global_tokens``), each centred by its own
            row of ``center``.
        """
        logits = t_global[:, self.global_index].float()
        if self.centering == "sinkhorn":
            return torch.stack([sinkhorn_knopp(logits[:, g], teacher_temp) for g in range(logits.shape[1])], dim=1)
        return F.softmax((logits - self.center) / teacher_temp, dim=-1)

    def patch_targets(self, t_patch: torch.Tensor, teacher_temp_patch: float) -> torch.Tensor:
        """``(R, N, K)`` centred, sharpened teacher distributions of the patch tokens ``t_patch`` ``(R, N, K)``."""
        if self.centering == "sinkhorn":  # over every token of the batch (DINOv2: over the masked ones)
            return sinkhorn_knopp(t_patch.flatten(0, 1), teacher_temp_patch).view(t_patch.shape)
        return F.softmax((t_patch.float() - self.center_patch) / teacher_temp_patch, dim=-1)

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
            ``loss`` (the weighted total), ``cls``, ``patch``, ``rec`` and ``koleo`` (0-d tensors; ``koleo`` 0 when
            ``w_koleo`` is 0); ``cls_per_token`` ``(G,)``,
            the DINO loss of each distilled global token; and the targets the teacher gave, detached:
            ``global_targets`` ``(2B, G, K)`` and ``patch_targets`` ``(2B, N, K)`` (for monitoring).
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
        t_global, t_patch = teacher["global"].detach(), teacher["patch"].detach()
        if not bool(self.centers_started):
            self.start_centers(t_global, t_patch)

        t_probs = self.global_targets(t_global, teacher_temp)
        s_logits = student["global"][:, self.global_index].float() / self.student_temp
        b = n2 // 2
        swapped = torch.cat((t_probs[b:], t_probs[:b]))  # teacher view 2 for student view 1 and vice versa
        cls_per_token = _cross_entropy(swapped, s_logits).mean(dim=0)  # (G,)
        loss_cls = cls_per_token.mean()

        tp_probs = self.patch_targets(t_patch, teacher_temp_patch)
        per_token = _cross_entropy(tp_probs, student["patch"].float() / self.student_temp)  # (2B, N)
        weights = flat_masks.float()
        loss_patch = ((per_token * weights).sum(1) / weights.sum(1).clamp(min=1.0)).mean()

        loss_rec = self.reconstruction_loss(student["recon"].float(), views.float(), masks)
        total = self.w_cls * loss_cls + self.w_patch * loss_patch + self.w_rec * loss_rec
        loss_koleo = self.koleo(student, b)
        if self.w_koleo:
            total = total + self.w_koleo * loss_koleo
        self.update_centers(t_global, t_patch)
        return {
            "loss": total,
            "cls": loss_cls,
            "patch": loss_patch,
            "rec": loss_rec,
            "koleo": loss_koleo,
            "cls_per_token": cls_per_token,
            "global_targets": t_probs.detach(),
            "patch_targets": tp_probs.detach(),
        }

    def koleo(self, student: dict[str, torch.Tensor], b: int) -> torch.Tensor:
        """The KoLeo term of the student's ``embedding`` or ``bottleneck`` ``(2B, 2, D)`` (``koleo_features``): over
        each view's B rows, for each distilled global token, averaged; a 0 tensor when ``w_koleo`` is 0 or ``B`` < 2
        (warned once)."""
        if not self.w_koleo:
            return student["global"].new_zeros(())
        if self.koleo_key not in student:
            raise ValueError(f"w_koleo > 0 needs the student's {self.koleo_key!r} output (SMARTPretrainNet gives it)")
        if b < 2:  # no nearest neighbour (DINOv2's KoLeo then adds a constant); say so once instead
            if not self._koleo_warned:
                logger.warning(
                    "w_koleo %s is inactive: KoLeo needs at least 2 volumes per view on each process and this batch "
                    "has %d; raise the batch size per process, or set w_koleo to 0 to silence this",
                    self.w_koleo,
                    b,
                )
                self._koleo_warned = True
            return student["global"].new_zeros(())
        embedding = student[self.koleo_key][:, self.global_index]
        terms = [koleo_loss(embedding[v * b : (v + 1) * b, g]) for v in (0, 1) for g in range(embedding.shape[1])]
        return torch.stack(terms).mean()

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

    def _batch_means(self, t_global: torch.Tensor, t_patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G, K)`` mean of each distilled global token and ``(1, K)`` mean patch logit, over all processes."""
        return _all_mean(t_global[:, self.global_index].float()).squeeze(0), _all_mean(t_patch.float().mean(dim=1))

    @torch.no_grad()
    def start_centers(self, t_global: torch.Tensor, t_patch: torch.Tensor) -> None:
        """Set the centres to the batch means of ``t_global`` ``(R, 2, K)`` and ``t_patch`` ``(R, N, K)``."""
        g, p = self._batch_means(t_global, t_patch)
        self.center.copy_(g)
        self.center_patch.copy_(p)
        self.centers_started.fill_(True)

    @torch.no_grad()
    def update_centers(self, t_global: torch.Tensor, t_patch: torch.Tensor) -> None:
        """EMA of the batch means, one per teacher output: ``c <- m c + (1 - m) mean``.

        Args:
            t_global: ``(R, 2, K)`` teacher logits of [CLS] and pooled; each distilled token updates its own row.
            t_patch: ``(R, N, K)`` teacher patch logits.
        """
        m = self.center_momentum
        g, p = self._batch_means(t_global, t_patch)
        self.center.mul_(m).add_(g, alpha=1 - m)
        self.center_patch.mul_(m).add_(p, alpha=1 - m)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, *args, **kwargs):
        """Read checkpoints written before the centres were split (one ``(1, K)`` centre shared by every global
        token, and no ``centers_started``): the shared centre is copied to each token's row, with a warning, and
        the centres count as started (the run was under way)."""
        key = prefix + "center"
        old = state_dict.get(key)
        if old is not None and old.ndim == 2 and old.shape[0] == 1 and self.center.shape[0] > 1:
            logger.warning(
                "%s holds one DINO centre shared by %s (checkpoints written before smart_nets 0.4.0); it is copied "
                "to each token's centre, which separate within about %d iterations",
                key,
                "/".join(self.global_tokens),
                round(3 / max(1e-6, 1 - self.center_momentum)),
            )
            state_dict[key] = old.expand_as(self.center).clone()
        started = prefix + "centers_started"
        if started not in state_dict and key in state_dict:
            state_dict[started] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args, **kwargs)
