"""The EMA teacher (DINO's momentum encoder)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from smart_nets.runtime import unwrap

__all__ = ["make_teacher", "ema_update_"]


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the (unwrapped) student: same weights at the start, no gradients ever, eval mode.

    Args:
        student: the student network, possibly wrapped in DDP.

    Returns:
        The teacher, on the student's device.
    """
    teacher = copy.deepcopy(unwrap(student))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, parameter by parameter, in place.

    Args:
        teacher: the teacher (same architecture as the student).
        student: the student, possibly wrapped in DDP.
        momentum: in [0, 1]; 1 leaves the teacher unchanged.

    Raises:
        ValueError: on a momentum outside [0, 1] or networks whose parameters differ in name.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params = dict(teacher.named_parameters())
    s_params = dict(unwrap(student).named_parameters())
    if t_params.keys() != s_params.keys():
        raise ValueError("teacher and student have different parameters; build the teacher with make_teacher")
    names = list(t_params)
    torch._foreach_lerp_([t_params[n] for n in names], [s_params[n].detach() for n in names], 1.0 - momentum)
