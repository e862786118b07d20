"""Losses."""

from smart_nets.losses.smart_loss import CENTERINGS, GLOBAL_TOKENS, SMARTLoss, koleo_loss, sinkhorn_knopp

__all__ = ["CENTERINGS", "GLOBAL_TOKENS", "SMARTLoss", "koleo_loss", "sinkhorn_knopp"]
