"""SMART's two global views of a CT volume (``docs/method.md`` section 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandTwoViewsd"]


class RandTwoViewsd(Randomizable, MapTransform):
    """Sample two augmented global views of one volume, each resized to the ROI.

    A random sub-volume of ``sub_volume_scale`` x the ROI (one scale for all axes, clipped to the image) is cut
    first; two crops of ``view_scale`` x the ROI are then cut from it independently, resized (trilinear) to the
    ROI, flipped along each axis with probability ``flip_prob``, given a random contrast and brightness
    (``x * a + b``, ``a`` from ``intensity_scale``, ``b`` from ``intensity_shift``, drawn per view), and given
    Gaussian noise of standard deviation ``noise_std`` with probability ``noise_prob``. The intensity jitter keeps a
    whole-volume brightness from being the one thing two views share (a shortcut self-distillation otherwise
    learns first); it is off by default. Views overlap by construction, which the cross-view [CLS] loss
    needs. An image smaller than the ROI is zero-padded (after intensity scaling, 0 is the window's floor).

    MONAI has each step (``RandSpatialCrop``, ``Resize``, ``RandFlip``, ``RandGaussianNoise``), but its random
    crops are sized relative to the image rather than the ROI and a dictionary transform draws once for all keys;
    one transform here keeps the two-stage sampling explicit and every draw on one seeded ``RandomState``.

    Args:
        keys: the image key (exactly one), e.g. ``"image"``; its value is ``(C, D, H, W)``.
        roi_size: output size of each view, e.g. ``(96, 96, 96)``.
        view_keys: output keys of the two views.
        sub_volume_scale: (min, max) side of the sub-volume as a multiple of the ROI.
        view_scale: (min, max) side of each view's crop as a multiple of the ROI.
        flip_prob: probability of a flip along each spatial axis, per view.
        noise_std: standard deviation of the additive Gaussian noise (intensities scaled to [0, 1]).
        noise_prob: probability of adding noise, per view.
        intensity_scale: (min, max) of the per-view contrast factor ``a`` (``(1, 1)``: none).
        intensity_shift: (min, max) of the per-view brightness offset ``b`` (``(0, 0)``: none).
        delete_source: drop the source image from the output to save memory.

    Raises:
        ValueError: on a bad scale range or probability, or an input that is not ``(C, D, H, W)``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int],
        view_keys: Sequence[str] = ("view1", "view2"),
        sub_volume_scale: Sequence[float] = (1.0, 2.2),
        view_scale: Sequence[float] = (0.5, 1.5),
        flip_prob: float = 0.2,
        noise_std: float = 0.02,
        noise_prob: float = 0.5,
        intensity_scale: Sequence[float] = (1.0, 1.0),
        intensity_shift: Sequence[float] = (0.0, 0.0),
        delete_source: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandTwoViewsd takes exactly one image key, got {self.keys}")
        for name, (lo, hi) in (("sub_volume_scale", sub_volume_scale), ("view_scale", view_scale)):
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {tuple((lo, hi))}")
        for name, (lo, hi) in (("intensity_scale", intensity_scale), ("intensity_shift", intensity_shift)):
            if not lo <= hi:
                raise ValueError(f"{name} must be (min, max) with min <= max, got {tuple((lo, hi))}")
        for name, p in (("flip_prob", flip_prob), ("noise_prob", noise_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.roi_size = tuple(int(r) for r in roi_size)
        self.view_keys = tuple(view_keys)
        self.sub_volume_scale = tuple(sub_volume_scale)
        self.view_scale = tuple(view_scale)
        self.flip_prob = flip_prob
        self.noise_std = noise_std
        self.noise_prob = noise_prob
        self.intensity_scale = tuple(float(v) for v in intensity_scale)
        self.intensity_shift = tuple(float(v) for v in intensity_shift)
        self.delete_source = delete_source

    def randomize(self, data=None) -> None:  # draws happen while cropping, see __call__
        pass

    def _crop(self, x: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
        """A random crop whose side is ``U(scale) x roi`` (clipped to ``x``), at a uniform position."""
        s = self.R.uniform(*scale)
        sizes = [min(max(1, round(r * s)), n) for r, n in zip(self.roi_size, x.shape[1:])]
        starts = [int(self.R.randint(0, n - c + 1)) for n, c in zip(x.shape[1:], sizes)]
        return x[
            :, starts[0] : starts[0] + sizes[0], starts[1] : starts[1] + sizes[1], starts[2] : starts[2] + sizes[2]
        ]

    def _view(self, sub: torch.Tensor) -> torch.Tensor:
        v = F.interpolate(self._crop(sub, self.view_scale)[None], size=self.roi_size, mode="trilinear")[0]
        flips = [axis + 1 for axis in range(3) if self.R.rand() < self.flip_prob]
        if flips:
            v = v.flip(flips)
        if self.intensity_scale != (1.0, 1.0) or self.intensity_shift != (0.0, 0.0):  # no draw when off
            v = v * self.R.uniform(*self.intensity_scale) + self.R.uniform(*self.intensity_shift)
        if self.R.rand() < self.noise_prob:
            noise = self.R.standard_normal(v.shape).astype("float32")
            v = v + self.noise_std * torch.from_numpy(noise)
        return v.contiguous()

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        (key,) = self.keys
        x = d[key].as_tensor() if isinstance(d[key], MetaTensor) else d[key]  # views are resampled: drop geometry
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim != 4:
            raise ValueError(f"{key} must be (C, D, H, W), got shape {tuple(x.shape)}")
        pad = [max(0, r - n) for r, n in zip(self.roi_size, x.shape[1:])]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        sub = self._crop(x, self.sub_volume_scale)
        for view_key in self.view_keys:
            d[view_key] = self._view(sub)
        if self.delete_source:
            del d[key]
        return d
