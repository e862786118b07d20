"""The EMA teacher (DINO's momentum encoder), and parameter groups with and without weight decay."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["unwrap", "make_teacher", "ema_update_", "param_groups"]

# Swin's relative-position tables are not decayed (timm's ``no_weight_decay``); the [CLS] token is, as in DINO's
# ``get_params_groups`` and the SMART authors' code (decay keeps a zero-initialised [CLS] small).
NO_DECAY_NAMES = ("relative_position_bias_table",)


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``, or ``network`` itself."""
    return network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network


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


def param_groups(network: nn.Module) -> list[dict]:
    """Two AdamW groups as in DINO: weights (the [CLS] token included) with weight decay, and biases, norms, other
    one-dimensional parameters (the mask token) and relative-position tables without.

    The first group carries ``apply_weight_decay=True``; the trainer sets its scheduled weight decay there only.
    """
    decay, no_decay = [], []
    for name, p in unwrap(network).named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "apply_weight_decay": True}, {"params": no_decay, "weight_decay": 0.0}]
