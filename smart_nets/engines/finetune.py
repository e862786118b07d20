"""Finetuning a SMART encoder the way the self-supervised papers do: a learning-rate multiplier for the pretrained
encoder, layer-wise learning-rate decay, and named AdamW parameter groups that say what each one gets."""

from __future__ import annotations

import logging
import re

from torch import nn

from smart_nets.engines.optim import NO_DECAY_NAMES
from smart_nets.runtime import unwrap

__all__ = ["encoder_layer_id", "finetune_param_groups"]

logger = logging.getLogger(__name__)
# finetuning leaves the tokens undecayed too, as timm's ``no_weight_decay`` does (pretraining decays them)
FINETUNE_NO_DECAY_NAMES = NO_DECAY_NAMES + ("cls_token", "mask_token")


def encoder_layer_id(name: str, depths: tuple[int, ...]) -> int:
    """Depth of a ``SMARTSwin`` parameter, counted as SimMIM counts Swin layers when it finetunes them.

    0: patch embedding and mask token; ``1 + sum(depths[:i]) + j``: block ``j`` of stage ``i``; a stage's patch
    merging shares the id of the stage's last block; the class-attention branch ([CLS] token, class-attention blocks,
    final norm), which reads stage 3 and is the head's input, the id of the encoder's last block, ``sum(depths)``.

    Raises:
        ValueError: for a name that is not a ``SMARTSwin`` parameter.
    """
    if name.startswith(("patch_embed.", "patch_norm.")) or name == "mask_token":
        return 0
    stage = re.match(r"stages\.(\d+)\.(blocks\.(\d+)|downsample)\.", name)
    if stage:
        i = int(stage.group(1))
        if stage.group(3) is None:
            return sum(depths[: i + 1])
        return 1 + sum(depths[:i]) + int(stage.group(3))
    if name == "cls_token" or name.startswith(("class_attn_blocks.", "norm.")):
        return sum(depths)
    raise ValueError(f"{name!r} is not a SMARTSwin parameter")


def finetune_param_groups(
    network: nn.Module,
    lr: float,
    weight_decay: float = 1e-5,
    encoder_lr_scale: float = 1.0,
    layer_decay: float = 1.0,
) -> list[dict]:
    """AdamW parameter groups for finetuning ``network.encoder`` (a ``SMARTSwin``) with the rest of ``network``.

    Every parameter that needs a gradient is in exactly one group. The layers outside the encoder (decoder, head)
    get ``lr_scale`` 1; encoder layer ``l`` (:func:`encoder_layer_id`) of ``L = sum(depths) + 1`` gets
    ``encoder_lr_scale * layer_decay ** (L - l)``, so the patch embedding moves least (BEiT/SimMIM layer-wise decay).
    Each group's ``lr`` is ``lr * lr_scale``; a scheduler that multiplies every group's initial rate by one factor
    (``monai.optimizers.WarmupCosineSchedule``) keeps the ratios. Biases, norms and tokens get no weight decay (as
    in pretraining). Groups are named (``encoder.layer03.decay``, ``decoder5.no_decay``, ...) so that logs and
    checkpoints say what each one is.

    PyTorch and MONAI have no layer-wise decay (``monai.optimizers.generate_param_groups`` matches names to one
    rate each, without depths), hence this function.

    Args:
        network: a network with an ``encoder`` attribute (``SMARTUNETR``, ``SMARTClassifier``), possibly in DDP.
        lr: base learning rate (the new layers' rate).
        weight_decay: AdamW weight decay of the weights that get it.
        encoder_lr_scale: learning-rate multiplier of the whole encoder (1: the same rate as the new layers).
        layer_decay: per-layer multiplier below the top (1: no decay; SimMIM finetunes Swin with 0.9).

    Raises:
        ValueError: when ``network`` has no ``encoder`` or a multiplier is not positive.
    """
    network = unwrap(network)
    encoder = getattr(network, "encoder", None)
    depths = tuple(len(stage.blocks) for stage in getattr(encoder, "stages", ()))
    if not depths:
        raise ValueError(f"{type(network).__name__} has no SMARTSwin encoder to finetune")
    if encoder_lr_scale <= 0 or not 0 < layer_decay <= 1:
        raise ValueError(f"need encoder_lr_scale > 0 and layer_decay in (0, 1], got {encoder_lr_scale}, {layer_decay}")
    top = sum(depths) + 1
    groups: dict[str, dict] = {}
    for name, p in network.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in FINETUNE_NO_DECAY_NAMES)
        kind = "no_decay" if no_decay else "decay"
        if name.startswith("encoder."):
            layer = encoder_layer_id(name[len("encoder.") :], depths)
            key, scale = f"encoder.layer{layer:02d}.{kind}", encoder_lr_scale * layer_decay ** (top - layer)
        else:
            key, scale = f"{name.split('.')[0]}.{kind}", 1.0
        wd = 0.0 if no_decay else weight_decay
        group = groups.setdefault(
            key, {"name": key, "params": [], "lr": lr * scale, "lr_scale": scale, "weight_decay": wd}
        )
        group["params"].append(p)
    logger.info(
        "finetuning groups: %d parameter groups, encoder learning-rate scale %.3g (bottom) to %.3g (top)",
        len(groups),
        encoder_lr_scale * layer_decay**top,
        encoder_lr_scale * layer_decay,
    )
    return list(groups.values())
