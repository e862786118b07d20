"""Handlers: atomic checkpoints, a checkpoint loader that names its file, the outcome report, a collapse monitor, an
encoder kept still for the first epochs of finetuning, tumour measurements per case."""

from smart_nets.handlers.checkpoint import AtomicCheckpoint, CheckedCheckpointLoader, atomic_torch_save, read_score
from smart_nets.handlers.collapse import CollapseMonitor, target_information
from smart_nets.handlers.finetune import FreezeEncoderEpochs
from smart_nets.handlers.measurements import TumourMeasurements
from smart_nets.handlers.outcome_report import OutcomeReport

__all__ = [
    "AtomicCheckpoint",
    "CheckedCheckpointLoader",
    "CollapseMonitor",
    "FreezeEncoderEpochs",
    "OutcomeReport",
    "TumourMeasurements",
    "atomic_torch_save",
    "read_score",
    "target_information",
]
