"""Named SMARTSwin sizes, defined once: the bundles' configs and the tests name a preset instead of repeating it.

timm registers each model variant under a name (``swin_base_patch4_window7_224``) so that its hyper-parameters live
in one place; this is the same idea for the one encoder of this package. A config writes::

    "encoder_def": {"_target_": "smart_nets.networks.nets.presets.smart_swin", "preset": "paper", "drop_path_rate": 0.1}

and a demo override ``"encoder_def#preset": "demo"``; any field can still be overridden on its own
(``"encoder_def#feature_size": 24``). Training choices (drop-path rate, token and weight initialisation, gradient
checkpointing) are not part of a preset.
"""

from __future__ import annotations

from smart_nets.networks.nets.smart_swin import SMARTSwin

__all__ = ["ENCODER_PRESETS", "smart_swin"]

ENCODER_PRESETS: dict[str, dict] = {
    # the paper's Swin-B-like encoder (SMIT/SMART): C 48, depths 2-2-8-2, window 4, 2x2x2 patches
    "paper": {
        "feature_size": 48,
        "depths": (2, 2, 8, 2),
        "num_heads": (4, 4, 8, 16),
        "window_size": 4,
        "patch_size": 2,
        "num_class_attn_blocks": 2,
    },
    # the CPU demo's and the tests' encoder: the same layout, C 12 and one block a stage (~0.6M parameters)
    "demo": {
        "feature_size": 12,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 3, 6),
        "window_size": 4,
        "patch_size": 2,
        "num_class_attn_blocks": 2,
    },
}


def smart_swin(preset: str = "paper", **overrides) -> SMARTSwin:
    """A ``SMARTSwin`` of a named size, with any of its arguments overridden.

    Raises:
        ValueError: for an unknown preset, naming the known ones.
    """
    if preset not in ENCODER_PRESETS:
        raise ValueError(f"unknown SMARTSwin preset {preset!r}: expected one of {sorted(ENCODER_PRESETS)}")
    return SMARTSwin(**{**ENCODER_PRESETS[preset], **overrides})
