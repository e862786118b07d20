"""Networks referenced by the bundles' ``network_def``."""

from smart_nets.networks.nets.attention_map import EncoderAttentionMap, attention_heatmap
from smart_nets.networks.nets.autocast import Autocast, native_bf16_cpu, with_precision
from smart_nets.networks.nets.presets import ENCODER_PRESETS, smart_swin
from smart_nets.networks.nets.smart_classifier import SMARTClassifier
from smart_nets.networks.nets.smart_pretrain import SMARTPretrainNet
from smart_nets.networks.nets.smart_swin import ClassAttentionOutput, SMARTSwin, SMARTSwinOutput
from smart_nets.networks.nets.smart_unetr import SMARTUNETR

__all__ = [
    "Autocast",
    "ENCODER_PRESETS",
    "ClassAttentionOutput",
    "EncoderAttentionMap",
    "attention_heatmap",
    "SMARTClassifier",
    "SMARTPretrainNet",
    "SMARTSwin",
    "SMARTSwinOutput",
    "SMARTUNETR",
    "native_bf16_cpu",
    "smart_swin",
    "with_precision",
]
