"""Token masks: attention-guided masking with hints, random masks, the teacher-noise transform, two-view sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smart_nets.transforms import RandTokenMaskd, RandTwoViewsd, attention_guided_mask, random_token_mask


def test_attention_mask_is_the_top_tokens_minus_a_hint_from_the_most_attended():
    n = 512
    attn = torch.stack([torch.randperm(n).float(), torch.randperm(n).float()])  # distinct scores
    mask = attention_guided_mask(attn, mask_ratio=0.75, hint_ratio=0.1, hint_pool=0.1, generator=torch.Generator())
    n_mask, n_pool = round(0.75 * n), round(0.1 * n)
    n_hint = round(0.1 * n_mask)
    for row in range(2):
        order = attn[row].argsort(descending=True)
        top, pool = set(order[:n_mask].tolist()), set(order[:n_pool].tolist())
        masked = set(torch.nonzero(mask[row]).flatten().tolist())
        hint = top - masked
        assert len(masked) == n_mask - n_hint and len(hint) == n_hint
        assert masked <= top and hint <= pool  # never masks a less attended token; hints come from the pool


def test_attention_mask_without_hint_is_exactly_the_top_k():
    attn = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.05, 0.3, 0.7, 0.0]])
    mask = attention_guided_mask(attn, mask_ratio=0.5, hint_ratio=0.0)
    assert mask.tolist() == [[False, True, False, True, False, True, True, False]]


@pytest.mark.parametrize("ratio,expected", [(0.75, 48), (0.3, 19), (0.0, 0)])
def test_random_token_mask_counts(ratio, expected):
    mask = random_token_mask(3, 64, ratio, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 64) and mask.sum(1).tolist() == [expected] * 3
    torch.testing.assert_close(mask, random_token_mask(3, 64, ratio, torch.Generator().manual_seed(1)))


def test_mask_ratios_are_checked():
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        attention_guided_mask(torch.rand(1, 8), mask_ratio=1.5)
    with pytest.raises(ValueError, match=r"attn_map must be \(B, N\)"):
        attention_guided_mask(torch.rand(8))


def test_teacher_noise_transform_masks_its_ratio_independently_per_view():
    t = RandTokenMaskd(["view1", "view2"], ratio=0.3, token_size=16)
    t.set_random_state(3)
    data = t({"view1": torch.zeros(1, 64, 64, 64), "view2": torch.zeros(1, 64, 64, 64)})
    m1, m2 = data["view1_noise"], data["view2_noise"]
    assert m1.shape == (4, 4, 4) and m1.dtype == torch.bool
    assert int(m1.sum()) == int(m2.sum()) == round(0.3 * 64)
    assert not torch.equal(m1, m2)
    again = RandTokenMaskd(["view1", "view2"], ratio=0.3).set_random_state(3)
    views = {"view1": torch.zeros(1, 64, 64, 64), "view2": torch.zeros(1, 64, 64, 64)}
    assert torch.equal(again(views)["view1_noise"], m1)


def test_teacher_noise_ratio_zero_masks_nothing_and_bad_sizes_raise():
    data = RandTokenMaskd("view1", ratio=0.0)({"view1": torch.zeros(1, 64, 64, 64)})
    assert not data["view1_noise"].any()
    with pytest.raises(ValueError, match=r"view1 has spatial size \(64, 64, 40\)"):
        RandTokenMaskd("view1", ratio=0.3)({"view1": torch.zeros(1, 64, 64, 40)})


def test_two_views_have_the_roi_shape_differ_and_are_reproducible():
    image = torch.rand(1, 100, 90, 40)  # thinner than the ROI along one axis: padded
    t = RandTwoViewsd("image", roi_size=(64, 64, 64)).set_random_state(0)
    out = t({"image": image})
    assert "image" not in out
    assert out["view1"].shape == out["view2"].shape == (1, 64, 64, 64)
    assert not torch.allclose(out["view1"], out["view2"])
    again = RandTwoViewsd("image", roi_size=(64, 64, 64)).set_random_state(0)({"image": image})
    np.testing.assert_array_equal(again["view1"].numpy(), out["view1"].numpy())
    with pytest.raises(ValueError, match="view_scale"):
        RandTwoViewsd("image", roi_size=(64, 64, 64), view_scale=(1.5, 0.5))


def test_per_view_intensity_jitter_scales_and_shifts_each_view_alone():
    image = torch.full((1, 40, 40, 40), 0.5)
    plain = RandTwoViewsd("image", (32, 32, 32), noise_prob=0.0, flip_prob=0.0).set_random_state(0)({"image": image})
    assert torch.allclose(plain["view1"], torch.tensor(0.5)) and torch.allclose(plain["view2"], torch.tensor(0.5))
    t = RandTwoViewsd(
        "image", (32, 32, 32), noise_prob=0.0, flip_prob=0.0, intensity_scale=(0.5, 1.5), intensity_shift=(-0.2, 0.2)
    )
    out = t.set_random_state(0)({"image": image})
    v1, v2 = out["view1"].unique(), out["view2"].unique()
    assert len(v1) == len(v2) == 1  # one contrast and brightness per view, not per voxel
    assert 0.05 <= v1.item() <= 0.95 and v1.item() != pytest.approx(v2.item()) and v1.item() != pytest.approx(0.5)
    with pytest.raises(ValueError, match="intensity_shift"):
        RandTwoViewsd("image", (32, 32, 32), intensity_shift=(0.2, -0.2))
