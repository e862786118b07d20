"""Networks referenced by the bundles' ``network_def``."""

from smart_nets.networks.nets.attention_map import SMARTAttentionMap
from smart_nets.networks.nets.smart_pretrain import SMARTPretrainNet
from smart_nets.networks.nets.smart_swin import SMARTSwin, SMARTSwinOutput

__all__ = ["SMARTAttentionMap", "SMARTPretrainNet", "SMARTSwin", "SMARTSwinOutput"]
