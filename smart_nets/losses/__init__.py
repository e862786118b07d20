"""Losses."""

from smart_nets.losses.smart_loss import SMARTLoss

__all__ = ["SMARTLoss"]
