"""Load SMART-pretrained encoder weights into a downstream network, and say what matched."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from monai.networks.utils import copy_model_state
from torch import nn

from smart_nets.io import read_checkpoint

__all__ = ["encoder_state_from", "load_pretrained_encoder", "prepare_encoder"]

logger = logging.getLogger(__name__)
_PREFIXES = ("module.", "encoder.", "swinViT.")


def encoder_state_from(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's tensors, keyed as in ``SMARTSwin.state_dict()``, from any SMART artefact.

    Accepts a path or a state dict of: a ``SMARTSwin`` (``smart_pretrain``'s ``models/model.pt``); a full
    ``smart_pretrain`` checkpoint (the ``teacher`` entry is used, else ``network``); a ``SMARTPretrainNet``,
    ``SMARTUNETR`` or ``SMARTClassifier`` state dict; any of these saved from DDP (``module.`` prefixes).
    Files are read with ``torch.load(..., weights_only=True)``.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: when the file holds no tensors, is truncated or not a checkpoint, or carries other pickled
            objects (refused by ``weights_only``; the file's code never runs).
    """
    if isinstance(source, (str, os.PathLike)):
        state = read_checkpoint(source)
        name = str(source)
    else:
        state, name = source, "the given state dict"
    if isinstance(state, Mapping) and "teacher" in state and isinstance(state["teacher"], Mapping):
        state = state["teacher"]  # smart_pretrain checkpoint: the teacher is the model SMART keeps
    elif isinstance(state, Mapping) and "network" in state and isinstance(state["network"], Mapping):
        state = state["network"]
    elif isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)} if isinstance(state, Mapping) else {}
    if not tensors:
        raise ValueError(f"{name} holds no tensors to load as encoder weights")
    has_encoder = any(k.replace("module.", "", 1).startswith("encoder.") for k in tensors)
    out = {}
    for key, value in tensors.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if has_encoder and not key.startswith("encoder."):
            continue  # heads of a pretraining or downstream network
        for prefix in _PREFIXES[1:]:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_pretrained_encoder(encoder: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict:
    """Copy pretrained tensors into ``encoder`` by name, log what matched, and fail loudly when it is wrong.

    MONAI's ``copy_model_state`` does the copy; the checks around it are what pretraining users of SwinUNETR miss
    most: a checkpoint whose keys match nothing used to load silently as a no-op.

    Args:
        encoder: a ``SMARTSwin``.
        source: see :func:`encoder_state_from`.

    Returns:
        ``{"matched": [...], "missing": [...], "unexpected": [...]}``: encoder keys loaded, encoder keys left at
        their initial values, and source keys that went nowhere; and ``"provenance"``, the file's training record
        (:mod:`smart_nets.provenance`; None for tensors given directly or a file without one).

    Raises:
        ValueError: when the file's record says it holds another encoder (naming both), no tensor matched (another
            architecture) or a matching name has another shape (another configuration), naming the first mismatches.
    """
    state = encoder_state_from(source)  # checks the file first, naming it
    record = None
    if isinstance(source, (str, os.PathLike)):  # the file says which encoder it holds: name both sides
        from smart_nets import provenance

        record = provenance.from_file(source)
        provenance.check_encoder(record, encoder, source)
    own = encoder.state_dict()
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"pretrained encoder weights do not fit this network ({len(mismatched)} shape mismatches, e.g. "
            f"{mismatched[:3]}); build the network with the pretraining's feature_size, depths and num_heads"
        )
    _, matched, missing = copy_model_state(encoder, state, inplace=True)
    if not matched:
        raise ValueError(
            f"none of the {len(state)} pretrained tensors matched the encoder's {len(own)} (e.g. source "
            f"{sorted(state)[:3]} vs encoder {sorted(own)[:3]}): is this a SMART checkpoint?"
        )
    unexpected = sorted(set(state) - set(own))
    logger.info(
        "pretrained encoder: %d of %d tensors loaded, %d left at initial values%s, %d source tensors unused%s",
        len(matched),
        len(own),
        len(missing),
        f" {missing[:5]}" if missing else "",
        len(unexpected),
        f" {unexpected[:5]}" if unexpected else "",
    )
    return {"matched": list(matched), "missing": list(missing), "unexpected": unexpected, "provenance": record}


def prepare_encoder(encoder: nn.Module | None, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """The encoder a SMART network wraps: ``encoder`` (a paper-scale ``SMARTSwin()`` when ``None``), with the weights
    of ``pretrained`` loaded by :func:`load_pretrained_encoder` when it is given.

    Every network that takes an encoder goes through here, so the bundles build the encoder once (``encoder_def``)
    and load pretrained weights in one place.

    Raises:
        TypeError: when ``encoder`` is not a ``SMARTSwin``.
        FileNotFoundError, ValueError: from :func:`load_pretrained_encoder`.
    """
    from smart_nets.networks.nets.smart_swin import SMARTSwin  # the nets import this module

    encoder = SMARTSwin() if encoder is None else encoder
    if not isinstance(encoder, SMARTSwin):
        raise TypeError(f"encoder must be a smart_nets SMARTSwin, got {type(encoder).__name__}")
    if pretrained:
        record = load_pretrained_encoder(encoder, pretrained)["provenance"]
        from smart_nets import provenance

        provenance.warn_if_synthetic(record, pretrained)
    return encoder
