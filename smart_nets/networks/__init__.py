"""Networks and their building blocks."""

from smart_nets.networks import blocks, nets, pretrained  # noqa: F401
