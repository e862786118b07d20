"""Networks referenced by the bundles' ``network_def``."""

from smart_nets.networks.nets.smart_swin import SMARTSwin, SMARTSwinOutput

__all__ = ["SMARTSwin", "SMARTSwinOutput"]
