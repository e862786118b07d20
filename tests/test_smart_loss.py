"""SMARTLoss: which tokens and voxels count, cross-view pairing, and the centres' momentum."""

from __future__ import annotations

import pytest
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


def test_centres_follow_their_momentum_one_per_output_and_total_weights_the_parts():
    loss = _loss(center_momentum=0.9, w_cls=1.0, w_patch=2.0, w_rec=3.0, center_from_first_batch=False)
    student, teacher, views, masks = _outputs()
    out = loss(student, teacher, views, masks, 0.04, 0.07)
    expected = 0.1 * teacher["global"].mean(0)  # (2, K): one row per global token
    torch.testing.assert_close(loss.center, expected)
    torch.testing.assert_close(loss.center_patch, 0.1 * teacher["patch"].mean(1).mean(0, keepdim=True))
    torch.testing.assert_close(out["loss"], out["cls"] + 2 * out["patch"] + 3 * out["rec"])
    torch.testing.assert_close(out["cls"], out["cls_per_token"].mean())
    loss(student, teacher, views, masks, 0.04, 0.07)
    torch.testing.assert_close(loss.center, 0.9 * expected + 0.1 * teacher["global"].mean(0))


def test_centres_start_at_the_first_batch_mean():
    loss = _loss()
    student, teacher, views, masks = _outputs()
    out = loss(student, teacher, views, masks, 0.04, 0.07)
    torch.testing.assert_close(loss.center, teacher["global"].mean(0))  # set, then an EMA step towards itself
    torch.testing.assert_close(loss.center_patch, teacher["patch"].mean(1).mean(0, keepdim=True))
    expected = torch.softmax((teacher["global"] - teacher["global"].mean(0)) / 0.04, dim=-1)
    torch.testing.assert_close(out["global_targets"], expected)


def test_constant_gap_between_cls_and_pooled_gives_uniform_targets_for_both_tokens():
    """A teacher that ignores its input, with [CLS] and pooled logits a constant offset apart, carries no
    information: once the centres converge both tokens' targets must be uniform. A centre shared by the two tokens
    (the bug this guards against) converges to their average and leaves each token a sharp, input-independent
    target."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(K, generator=g)
    offset = 0.5 * torch.randn(K, generator=g)
    student, _, views, masks = _outputs()
    teacher = {
        "global": torch.stack((base + offset, base - offset)).expand(4, 2, K).clone(),
        "patch": base.expand(4, N, K).clone(),
    }
    loss = _loss(center_from_first_batch=False)
    for _ in range(200):
        out = loss(student, teacher, views, masks, 0.04, 0.04)
    uniform = torch.full((4, 2, K), 1.0 / K)
    torch.testing.assert_close(out["global_targets"], uniform, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["patch_targets"], torch.full((4, N, K), 1.0 / K), atol=1e-4, rtol=0)


def test_checkpoint_with_a_shared_centre_loads_into_both_rows(caplog):
    old = {"center": torch.arange(K, dtype=torch.float32)[None], "center_patch": torch.ones(1, K)}
    loss = _loss()
    with caplog.at_level("WARNING"):
        loss.load_state_dict(old)
    assert "shared" in caplog.text and "cls/pooled" in caplog.text
    torch.testing.assert_close(loss.center, old["center"].expand(2, K))
    assert bool(loss.centers_started)  # a run under way: no restart from the next batch
    with pytest.raises(RuntimeError, match="center"):
        _loss().load_state_dict({**old, "center": torch.zeros(3, K)})


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


def test_sinkhorn_targets_are_distributions_balanced_over_prototypes():
    from smart_nets.losses import sinkhorn_knopp

    logits = torch.randn(64, K, generator=torch.Generator().manual_seed(1))
    logits[:, 0] += 3.0  # one prototype that a softmax would give most of the mass
    q = sinkhorn_knopp(logits, 0.1, iterations=20)
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    torch.testing.assert_close(q.sum(0), torch.full((K,), 64 / K), rtol=0.1, atol=0.0)
    assert torch.softmax(logits / 0.1, 1).sum(0)[0] > 5 * q.sum(0)[0]


def test_sinkhorn_centring_replaces_the_centres_in_the_targets():
    student, teacher, views, masks = _outputs(b=4)
    loss = _loss(centering="sinkhorn")
    out = loss(student, teacher, views, masks, 0.04, 0.04)
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(out["global_targets"].sum(-1), torch.ones(8, 2))
    mass = out["global_targets"][:, 0].sum(0)  # over the 8 rows, per prototype: about 8 / K each
    assert mass.max() < 0.5 * 8  # centring at temperature 0.04 would give one prototype nearly all of it
    with pytest.raises(ValueError, match="centering must be one of"):
        _loss(centering="softmax")


def test_koleo_is_minus_the_log_distance_to_each_rows_nearest_neighbour():
    from smart_nets.losses import koleo_loss

    # on the unit circle: a and b 0.1 rad apart, c opposite; a's and b's neighbours are each other, c's is a or b
    angles = torch.tensor([0.0, 0.1, 3.0])
    x = torch.stack((angles.cos(), angles.sin()), dim=1) * torch.tensor([[2.0], [0.5], [3.0]])  # norms do not count
    chord = lambda t: 2 * torch.sin(torch.tensor(t) / 2)  # noqa: E731
    expected = -(2 * torch.log(chord(0.1)) + torch.log(chord(2.9))) / 3
    torch.testing.assert_close(koleo_loss(x), expected)
    with pytest.raises(ValueError, match="at least 2 rows"):
        koleo_loss(x[:1])


def test_koleo_term_pushes_the_volumes_of_a_view_apart_and_is_off_by_default():
    student, teacher, views, masks = _outputs(b=2)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1, 2, 24, generator=g)
    embedding = (base + 0.01 * torch.randn(4, 2, 24, generator=g)).requires_grad_()  # four nearly equal rows
    student = dict(student, embedding=embedding)
    off = _loss()(student, teacher, views, masks, 0.04, 0.07)
    assert off["koleo"] == 0 and off["koleo"].grad_fn is None
    on = _loss(w_koleo=0.5)(student, teacher, views, masks, 0.04, 0.07)
    torch.testing.assert_close(on["loss"], off["loss"] + 0.5 * on["koleo"])
    assert on["koleo"] > 2.0  # -log of distances ~0.01 on the unit sphere
    on["koleo"].backward()
    # the gradient step moves the two rows of each view apart (rows 0-1 are view 1, rows 2-3 view 2)
    moved = (embedding - 0.1 * embedding.grad).detach()
    for v in (0, 1):
        before = torch.nn.functional.normalize(embedding[2 * v : 2 * v + 2].detach(), dim=-1)
        after = torch.nn.functional.normalize(moved[2 * v : 2 * v + 2], dim=-1)
        assert (after[0] - after[1]).norm(dim=-1).min() > (before[0] - before[1]).norm(dim=-1).max()


def test_koleo_term_needs_the_embedding_and_is_off_with_a_warning_below_two_volumes_per_view(caplog):
    student, teacher, views, masks = _outputs(b=1)
    with pytest.raises(ValueError, match="'embedding'"):
        _loss(w_koleo=0.1)(student, teacher, views, masks, 0.04, 0.07)
    student = dict(student, embedding=torch.randn(2, 2, 24))
    loss = _loss(w_koleo=0.1)
    with caplog.at_level("WARNING", logger="smart_nets.losses.smart_loss"):
        outs = [loss(student, teacher, views, masks, 0.04, 0.07) for _ in range(3)]
    assert all(o["koleo"] == 0 for o in outs)
    warned = [r.getMessage() for r in caplog.records if "w_koleo" in r.getMessage()]
    assert len(warned) == 1 and "at least 2 volumes per view" in warned[0]
    with pytest.raises(ValueError, match="w_koleo must be >= 0"):
        _loss(w_koleo=-1.0)


def test_koleo_on_the_head_reads_the_bottleneck_and_refuses_unknown_features():
    """``koleo_features="head"`` spreads the head's bottleneck rows and leaves the encoder features alone; the
    pretraining network gives that bottleneck, normalised, and its prototypes score exactly it."""
    from smart_nets.networks.nets import SMARTPretrainNet, smart_swin

    student, teacher, views, masks = _outputs(b=2)
    g = torch.Generator().manual_seed(4)
    embedding = torch.randn(4, 2, 24, generator=g).requires_grad_()
    bottleneck = (torch.randn(1, 2, 8, generator=g) + 0.01 * torch.randn(4, 2, 8, generator=g)).requires_grad_()
    student = dict(student, embedding=embedding, bottleneck=bottleneck)
    head = _loss(w_koleo=0.1, koleo_features="head")(student, teacher, views, masks, 0.04, 0.07)
    encoder = _loss(w_koleo=0.1)(student, teacher, views, masks, 0.04, 0.07)
    assert head["koleo"] > encoder["koleo"] + 2.0  # the nearly equal bottleneck rows, not the random features
    head["koleo"].backward()
    assert embedding.grad is None and bottleneck.grad.abs().sum() > 0
    without = {k: v for k, v in student.items() if k != "bottleneck"}
    with pytest.raises(ValueError, match="'bottleneck'"):
        _loss(w_koleo=0.1, koleo_features="head")(without, teacher, views, masks, 0.04, 0.07)
    with pytest.raises(ValueError, match="koleo_features must be one of"):
        _loss(koleo_features="projection")
    net = SMARTPretrainNet(smart_swin("demo"), out_dim=K, head_hidden_dim=32, head_bottleneck_dim=8).eval()
    out = net(torch.rand(2, 1, 64, 64, 64), reconstruct=False)
    assert out["bottleneck"].shape == (2, 2, 8)
    torch.testing.assert_close(out["bottleneck"].norm(dim=-1), torch.ones(2, 2))
    torch.testing.assert_close(net.head.last_layer(out["bottleneck"]), out["global"])
