"""Handlers: atomic checkpoints and encoder export."""

from smart_nets.handlers.checkpoint import AtomicCheckpoint, atomic_torch_save
from smart_nets.handlers.outcome_report import OutcomeReport

__all__ = ["AtomicCheckpoint", "OutcomeReport", "atomic_torch_save"]
