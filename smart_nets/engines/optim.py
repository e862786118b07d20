"""AdamW parameter groups for SMART pretraining: weights with weight decay, the rest without."""

from __future__ import annotations

from torch import nn

from smart_nets.runtime import unwrap

__all__ = ["NO_DECAY_NAMES", "param_groups"]

# Swin's relative-position tables are not decayed (timm's ``no_weight_decay``); the [CLS] token is, as in DINO's
# ``get_params_groups`` and the SMART authors' code (decay keeps a zero-initialised [CLS] small).
NO_DECAY_NAMES = ("relative_position_bias_table",)


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
