"""Pure, per-iteration schedules (DINO's ``cosine_scheduler``, evaluated at one step instead of tabulated).

Every schedule is indexed by the global iteration over the whole run; the authors' code indexed the EMA momentum
per epoch, which this deliberately does not do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

__all__ = ["cosine_schedule", "linear_warmup", "SMARTSchedule", "teacher_init_share"]


def _check_step(step: int, total_steps: int) -> None:
    if total_steps < 1 or not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, total_steps), got step={step}, total_steps={total_steps}")


def cosine_schedule(
    step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warmup from ``warmup_start`` to ``start`` over ``warmup_steps``, then cosine from ``start`` to ``end``.

    The first post-warmup step gives exactly ``start`` and the last step (``total_steps - 1``) exactly ``end``.

    Raises:
        ValueError: when ``step`` is outside ``[0, total_steps)`` or the warmup is not shorter than the run.
    """
    _check_step(step, total_steps)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps), got {warmup_steps} of {total_steps}")
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    span = total_steps - warmup_steps - 1
    progress = (step - warmup_steps) / span if span > 0 else 1.0
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """``start`` at step 0 rising linearly to ``end`` at ``warmup_steps``, then constant (iBOT's temperatures)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


@dataclass
class SMARTSchedule:
    """All of SMART's schedules at one iteration (``docs/method.md`` sections 8 and 9).

    Attributes:
        base_lr: peak learning rate after warmup (8e-4 for the authors' global batch; scale with your batch).
        min_lr: learning rate at the last iteration.
        warmup_fraction: share of the run spent warming the learning rate up from 0.
        weight_decay, weight_decay_end: cosine from the first to the last iteration.
        momentum, momentum_end: EMA momentum of the teacher, cosine per iteration (0.996 -> 1).
        teacher_temp, teacher_temp_end: global-token teacher temperature, warmed up linearly.
        teacher_temp_patch, teacher_temp_patch_end: patch-token teacher temperature (0.04, then 0.07).
        teacher_temp_warmup_fraction: share of the run over which the global temperature warms up.
        teacher_temp_patch_hold_fraction: share of the run during which the patch temperature stays at
            ``teacher_temp_patch``; it is ``teacher_temp_patch_end`` afterwards. The SMART authors hold 0.04 for 400
            of 500 epochs (0.8); a warm-up over the first iterations, as iBOT's 30 of 800 epochs, would end within
            a short run's first few dozen iterations.
    """

    base_lr: float = 8e-4
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum: float = 0.996
    momentum_end: float = 1.0
    teacher_temp: float = 0.04
    teacher_temp_end: float = 0.04
    teacher_temp_patch: float = 0.04
    teacher_temp_patch_end: float = 0.07
    teacher_temp_warmup_fraction: float = 0.3
    teacher_temp_patch_hold_fraction: float = 0.8

    def __post_init__(self) -> None:
        for name in ("warmup_fraction", "teacher_temp_warmup_fraction", "teacher_temp_patch_hold_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def __call__(self, step: int, total_steps: int) -> dict[str, float]:
        """Values at 0-based ``step`` of a ``total_steps`` run: ``lr``, ``weight_decay``, ``momentum``,
        ``teacher_temp``, ``teacher_temp_patch``."""
        warmup = int(self.warmup_fraction * total_steps)
        temp_warmup = int(self.teacher_temp_warmup_fraction * total_steps)
        patch_hold = int(self.teacher_temp_patch_hold_fraction * total_steps)
        return {
            "lr": cosine_schedule(step, total_steps, self.base_lr, self.min_lr, warmup),
            "weight_decay": cosine_schedule(step, total_steps, self.weight_decay, self.weight_decay_end),
            "momentum": cosine_schedule(step, total_steps, self.momentum, self.momentum_end),
            "teacher_temp": linear_warmup(step, temp_warmup, self.teacher_temp, self.teacher_temp_end),
            "teacher_temp_patch": self.teacher_temp_patch if step < patch_hold else self.teacher_temp_patch_end,
        }

    def teacher_init_share(self, total_steps: int) -> float:
        """The share of its initial weights the EMA teacher still holds after ``total_steps`` (see
        :func:`teacher_init_share`)."""
        momenta = [cosine_schedule(step, total_steps, self.momentum, self.momentum_end) for step in range(total_steps)]
        return teacher_init_share(momenta)

    def momentum_for(self, total_steps: int, max_share: float = 0.05) -> float:
        """The largest base momentum (to 4 decimals) whose teacher keeps at most ``max_share`` of its initial weights
        after ``total_steps`` on this schedule's cosine to ``momentum_end``."""
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if replace(self, momentum=mid).teacher_init_share(total_steps) <= max_share:
                lo = mid
            else:
                hi = mid
        return math.floor(lo * 1e4) / 1e4

    def as_dict(self) -> dict[str, float]:
        """The settings, for logging."""
        return asdict(self)


def teacher_init_share(momenta: Sequence[float]) -> float:
    """The weight of the teacher's initial parameters after EMA updates with ``momenta``: their product.

    ``teacher <- m teacher + (1 - m) student`` keeps a share ``m`` of the previous teacher at every step, so after T
    steps the random initialisation still contributes ``prod(m_t)``, about ``exp(-(1 - m0) T / 2)`` on a cosine
    from ``m0`` to 1. DINO's 0.996 forgets its start only over thousands of iterations (0.996 over 640 iterations
    of a cosine: 28%); a short run needs a smaller ``m0``.
    """
    return float(math.exp(sum(math.log(m) if m > 0 else -math.inf for m in momenta)))
