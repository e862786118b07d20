"""SMARTLoss: which tokens and voxels count, cross-view pairing, and the centres' momentum."""

from __future__ import annotations

import torch

from smart_nets.losses import SMARTLoss

K, N = 16, 8


def _outputs(b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = {
        "global": torch.randn(2 * b, 2, K, generator=g),
        "patch": torch.randn(2 * b, N, K, generator=g),
        "recon": torch.rand(2 * b, 1, 32, 32, 64, generator=g),
    }
    teacher = {"global": torch.randn(2 * b, 2, K, generator=g), "patch": torch.randn(2 * b, N, K, generator=g)}
    views = torch.rand(2 * b, 1, 32, 32, 64, generator=g)
    masks = torch.zeros(2 * b, 2, 2, 2, dtype=torch.bool)
    masks[:, 0, 0, :] = True  # tokens 0 and 1 of each sample
    return student, teacher, views, masks


def _loss(**kw):
    return SMARTLoss(K, **kw)


def test_reconstruction_loss_ignores_unmasked_voxels():
    student, teacher, views, masks = _outputs()
    base = _loss()(student, teacher, views, masks, 0.04, 0.04)["rec"]
    unmasked = dict(student, recon=student["recon"].clone())
    unmasked["recon"][:, :, 16:] = 5.0  # token row 1 along D: never masked
    assert torch.equal(_loss()(unmasked, teacher, views, masks, 0.04, 0.04)["rec"], base)
    masked = dict(student, recon=student["recon"].clone())
    masked["recon"][:, :, :16, :16, :] = 5.0
    assert _loss()(masked, teacher, views, masks, 0.04, 0.04)["rec"] > base


def test_reconstruction_loss_is_the_mean_error_over_masked_voxels():
    recon, views = torch.zeros(1, 1, 32, 32, 32), torch.zeros(1, 1, 32, 32, 32)
    masks = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    masks[0, 1, 1, 1] = True
    recon[0, 0, 16:, 16:, 16:] = 2.0
    recon[0, 0, :16, :16, :16] = 100.0  # unmasked
    torch.testing.assert_close(SMARTLoss.reconstruction_loss(recon, views, masks), torch.tensor(2.0), rtol=1e-5, atol=0)


def test_patch_loss_ignores_unmasked_tokens():
    student, teacher, views, masks = _outputs()
    base = _loss()(student, teacher, views, masks, 0.04, 0.07)["patch"]
    changed = dict(student, patch=student["patch"].clone())
    changed["patch"][:, 2:] = torch.randn_like(changed["patch"][:, 2:]) * 10  # unmasked tokens
    assert torch.equal(_loss()(changed, teacher, views, masks, 0.04, 0.07)["patch"], base)
    changed["patch"][:, 0] += 10 * torch.randn_like(changed["patch"][:, 0])
    assert not torch.equal(_loss()(changed, teacher, views, masks, 0.04, 0.07)["patch"], base)


def test_global_loss_pairs_each_student_view_with_the_other_teacher_view():
    student, teacher, views, masks = _outputs(b=1)
    confident = torch.full((K,), -20.0)
    confident[3] = 20.0
    other = torch.full((K,), -20.0)
    other[7] = 20.0
    # teacher says "3" on view 1 and "7" on view 2; student says "7" on view 1 and "3" on view 2
    teacher = dict(teacher, **{"global": torch.stack([confident.expand(2, K), other.expand(2, K)])})
    student = dict(student, **{"global": torch.stack([other.expand(2, K), confident.expand(2, K)]) * 0.05})
    low = _loss()(student, teacher, views, masks, 0.04, 0.04)["cls"]
    swapped = dict(student, **{"global": student["global"].flip(0)})
    high = _loss()(swapped, teacher, views, masks, 0.04, 0.04)["cls"]
    assert low < 0.1 < high


def test_centres_follow_their_momentum_and_total_weights_the_parts():
    loss = _loss(center_momentum=0.9, w_cls=1.0, w_patch=2.0, w_rec=3.0)
    student, teacher, views, masks = _outputs()
    out = loss(student, teacher, views, masks, 0.04, 0.07)
    expected = 0.1 * teacher["global"].reshape(-1, K).mean(0, keepdim=True)
    torch.testing.assert_close(loss.center, expected)
    torch.testing.assert_close(loss.center_patch, 0.1 * teacher["patch"].mean(1).mean(0, keepdim=True))
    torch.testing.assert_close(out["loss"], out["cls"] + 2 * out["patch"] + 3 * out["rec"])
    loss(student, teacher, views, masks, 0.04, 0.07)
    torch.testing.assert_close(
        loss.center, 0.9 * expected + 0.1 * teacher["global"].reshape(-1, K).mean(0, keepdim=True)
    )


def test_pooled_only_ablation_distils_the_pooled_token_alone():
    student, teacher, views, masks = _outputs()
    pooled = _loss(global_tokens=["pooled"])(student, teacher, views, masks, 0.04, 0.04)
    # the pooled logits alone, moved to token 0 so that a one-token loss reads them
    sliced = [dict(out, **{"global": out["global"][:, 1:]}) for out in (student, teacher)]
    expected = _loss(global_tokens=["cls"])(*sliced, views, masks, 0.04, 0.04)
    assert torch.allclose(pooled["cls"], expected["cls"])
    both = _loss()(student, teacher, views, masks, 0.04, 0.04)
    assert not torch.allclose(pooled["cls"], both["cls"])
    cls_changed = dict(student, **{"global": student["global"].clone()})
    cls_changed["global"][:, 0] += 3.0  # the [CLS] logits no longer matter
    again = _loss(global_tokens="pooled")(cls_changed, teacher, views, masks, 0.04, 0.04)
    assert torch.equal(again["cls"], pooled["cls"])


def test_global_tokens_must_be_known_and_distinct():
    for bad in ([], ["patch"], ["pooled", "pooled"]):
        try:
            _loss(global_tokens=bad)
        except ValueError as err:
            assert "global_tokens" in str(err)
        else:
            raise AssertionError(f"global_tokens={bad!r} accepted")
