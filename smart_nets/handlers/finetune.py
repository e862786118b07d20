"""Keep a pretrained encoder still for the first epochs of finetuning, while the new layers settle."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from torch import nn

from smart_nets.runtime import unwrap

__all__ = ["FreezeEncoderEpochs"]

logger = logging.getLogger(__name__)


class FreezeEncoderEpochs:
    """Drop the encoder's gradients after every backward pass of the first ``epochs`` epochs, so that the optimizer
    (which skips parameters without a gradient) leaves the pretrained encoder as it is while the randomly initialised
    decoder or head learns to read it; then finetune everything.

    Dropping gradients after the backward pass, rather than switching ``requires_grad`` off, keeps
    ``DistributedDataParallel`` working (its hooks are registered once, for the parameters that need gradients) and
    keeps AdamW's moment estimates of the encoder untouched while frozen. MONAI's engines fire
    ``IterationEvents.BACKWARD_COMPLETED`` between backward and optimizer step; nothing in MONAI or ignite freezes a
    sub-module for a number of epochs.

    Args:
        network: the network being finetuned, with an ``encoder`` attribute (possibly wrapped in DDP).
        epochs: number of epochs the encoder stays still (0: never).

    Raises:
        ValueError: when ``epochs`` is negative or ``network`` has no ``encoder``.
    """

    def __init__(self, network: nn.Module, epochs: int = 0) -> None:
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if not isinstance(getattr(unwrap(network), "encoder", None), nn.Module):
            raise ValueError(f"{type(unwrap(network)).__name__} has no encoder to freeze")
        self.network = network
        self.epochs = int(epochs)

    def attach(self, engine: Engine) -> None:
        """Register on the engine's backward pass (needs MONAI's ``IterationEvents``) and at its start."""
        if self.epochs == 0:
            return
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)
        engine.add_event_handler(Events.STARTED, self._log)

    def _log(self, engine: Engine) -> None:
        logger.info("encoder frozen for the first %d of %d epochs", self.epochs, engine.state.max_epochs)

    def __call__(self, engine: Engine) -> None:
        """Set the encoder's gradients to ``None`` while ``engine.state.epoch <= epochs``."""
        if engine.state.epoch > self.epochs:
            return
        for p in unwrap(self.network).encoder.parameters():
            p.grad = None
