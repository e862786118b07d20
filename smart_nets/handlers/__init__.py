"""Handlers: atomic checkpoints and encoder export."""

from smart_nets.handlers.checkpoint import AtomicCheckpoint, atomic_torch_save

__all__ = ["AtomicCheckpoint", "atomic_torch_save"]
