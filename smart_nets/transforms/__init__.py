"""Transforms: SMART's two-view sampling, token masks and input checks (MONAI dictionary transforms).

CT intensity scaling reuses MONAI's ``ScaleIntensityRanged`` (the bundles' HU window, [-1000, 400] -> [0, 1], clipped).
"""

from smart_nets.transforms.checks import CheckFinited, CheckSegmentationd, LoadImageCheckedd, SpacingExtrasSafed
from smart_nets.transforms.endpoints import EndpointLabeld, class_weights
from smart_nets.transforms.masking import RandTokenMaskd, attention_guided_mask, random_token_mask
from smart_nets.transforms.views import RandTwoViewsd

__all__ = [
    "CheckFinited",
    "CheckSegmentationd",
    "EndpointLabeld",
    "LoadImageCheckedd",
    "RandTokenMaskd",
    "RandTwoViewsd",
    "SpacingExtrasSafed",
    "attention_guided_mask",
    "class_weights",
    "random_token_mask",
]
