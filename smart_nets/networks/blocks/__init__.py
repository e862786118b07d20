"""Building blocks: shifted-window attention and CaiT class attention."""

from smart_nets.networks.blocks.class_attention import ClassAttention, ClassAttentionBlock, LayerScale
from smart_nets.networks.blocks.window_attention import SwinBlock, SwinStage, WindowAttention

__all__ = ["ClassAttention", "ClassAttentionBlock", "LayerScale", "SwinBlock", "SwinStage", "WindowAttention"]
