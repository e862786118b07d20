"""SMARTSwin: shapes, attention map, masking, gradients, argument checks, and equivalence with MONAI's Swin."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import monai_twin
from smart_nets.networks.nets import SMARTSwin, smart_swin
from tests.helpers import TINY


@pytest.mark.parametrize("size,batch", [(64, 1), (64, 2), (96, 1)])
def test_output_shapes(tiny_swin, size, batch):
    with torch.no_grad():
        out = tiny_swin(torch.randn(batch, 1, size, size, size))
    c, n = TINY["feature_size"], (size // 16) ** 3
    expected = [(batch, c * 2**i, *(3 * (size // 2 ** (i + 1),))) for i in range(5)]
    assert [tuple(h.shape) for h in out.hidden_states] == expected
    assert tuple(out.cls_token.shape) == (batch, 8 * c)
    assert tuple(out.pooled.shape) == (batch, 8 * c)
    assert tuple(out.patch_tokens.shape) == (batch, n, 8 * c)
    assert tuple(out.last_tokens.shape) == (batch, 16 * c, *(3 * (size // 32,)))
    assert tuple(out.attn_map.shape) == (batch, n)
    assert tiny_swin.token_grid((size,) * 3) == (size // 16,) * 3


def test_attention_map_is_a_distribution_over_tokens_that_follows_the_input():
    # a non-zero [CLS] (as after training): a zero one has a zero query in the first block at initialisation, so
    # its map starts (nearly) uniform
    net = SMARTSwin(**TINY, token_init="trunc_normal").eval()
    x = torch.randn(2, 1, 64, 64, 64)
    with torch.no_grad():
        a = net(x).attn_map
        b = net(x.flip(2)).attn_map
    assert torch.isfinite(a).all() and (a >= 0).all()
    # [CLS]->patches plus [CLS]->[CLS] sums to one, so the patch part is at most one
    assert (a.sum(dim=1) <= 1 + 1e-5).all() and (a.sum(dim=1) > 0.5).all()
    assert not torch.allclose(a, b, atol=1e-6)


def test_mask_replaces_exactly_the_masked_patch_embeddings(tiny_swin):
    x = torch.randn(2, 1, 64, 64, 64)
    mask = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    mask[0, 1, 2, 3] = True
    mask[1, 0, 0, 0] = mask[1, 3, 3, 3] = True
    with torch.no_grad():
        plain = tiny_swin.forward_features(x)[0]
        masked = tiny_swin.forward_features(x, mask)[0]
        flat = tiny_swin.forward_features(x, mask.flatten(1))[0]
    torch.testing.assert_close(masked, flat)
    expected = mask.repeat_interleave(8, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)  # 16^3 voxels = 8^3 patches
    changed = (masked != plain).any(dim=-1)
    assert torch.equal(changed, expected)
    assert torch.equal(masked[expected], tiny_swin.mask_token.expand(int(expected.sum()), -1))


def test_every_parameter_receives_a_gradient():
    # a non-zero [CLS]: a zero one (the default) gives the first class-attention query a zero input, so its weight
    # has no gradient in the very first step (the token itself does, and moves off zero)
    net = SMARTSwin(**(TINY | {"depths": (2, 2, 2, 2), "drop_path_rate": 0.1, "token_init": "trunc_normal"})).train()
    mask = torch.rand(2, 64) < 0.5
    out = net(torch.randn(2, 1, 64, 64, 64), mask)
    loss = sum(h.square().mean() for h in out.hidden_states) + out.cls_token.square().mean()
    loss = loss + out.pooled.square().mean() + out.last_tokens.square().mean() + out.attn_map.square().sum()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"depths": (1, 1, 1)}, "depths"),
        ({"num_heads": (1, 2, 3, 0)}, "num_heads"),
        ({"num_heads": (5, 2, 3, 6)}, "num_heads\\[0\\] = 5"),
        ({"feature_size": 0}, "feature_size"),
        ({"window_size": (4, 4)}, "window_size"),
        ({"num_class_attn_blocks": 0}, "num_class_attn_blocks"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"class_attn_heads": 5}, "class_attn_heads = 5 does not divide the class-token width 96"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SMARTSwin(**(TINY | kwargs))


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 1, 64, 64, 48), r"multiple of 32.*\(64, 64, 48\)"),
        ((1, 2, 64, 64, 64), r"\(1, 2, 64, 64, 64\)"),
        ((64,) * 3, ""),
    ],
)
def test_bad_input_raises_value_error_naming_the_shape(tiny_swin, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_swin(torch.zeros(shape))


def test_bad_mask_raises_value_error(tiny_swin):
    x = torch.zeros(1, 1, 64, 64, 64)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(1, 64\).*torch.float32 \(1, 64\)"):
        tiny_swin(x, torch.zeros(1, 64))
    with pytest.raises(ValueError, match=r"\(1, 27\)"):
        tiny_swin(x, torch.zeros(1, 27, dtype=torch.bool))


@pytest.mark.parametrize("grad", [False, True])
def test_trunk_equals_monai_swin_transformer_with_the_same_weights(grad):
    """Window order, shifts, shift masks, relative-position bias and the attention kernels all agree with MONAI."""
    net = SMARTSwin(**(TINY | {"depths": (2, 2, 2, 2)})).eval()
    with torch.no_grad():
        for p in net.parameters():  # break the symmetric initialisation so a wrong index would show
            p.add_(torch.randn_like(p) * 0.05)
    ref = monai_twin(net).eval()
    x = torch.randn(2, 1, 64, 64, 64)
    with torch.set_grad_enabled(grad):
        ours = net.hidden_states(net.forward_features(x))
        theirs = ref(x, normalize=True)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    if grad:
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in ours).backward()
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in theirs).backward()
        for i in range(4):
            for j in range(2):
                ours_g = net.stages[i].blocks[j].attn.relative_position_bias_table.grad
                ref_g = getattr(ref, f"layers{i + 1}")[0].blocks[j].attn.relative_position_bias_table.grad
                torch.testing.assert_close(ours_g, ref_g, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(net.patch_embed.weight.grad, ref.patch_embed.proj.weight.grad, atol=1e-3, rtol=1e-3)


def _smooth_volumes(n: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 1, size // 8, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size,) * 3, mode="trilinear")


@pytest.mark.parametrize("token_init,differs", [("zeros", True), ("trunc_normal", False)])
def test_cls_output_depends_on_the_volume_at_initialisation(token_init, differs):
    # The SMART authors start the [CLS] token at zero: behind LayerScale 1e-4 a 0.02-scale constant token swamps
    # the input-dependent update, and the [CLS] output is then (to float precision) the same for every volume.
    torch.manual_seed(0)
    net = SMARTSwin(**TINY, token_init=token_init).eval()
    with torch.no_grad():
        cls = net(_smooth_volumes(2)).cls_token
    gap = ((cls[0] - cls[1]).abs().max() / cls.abs().mean()).item()  # relative: 0.2 with zeros, 4e-5 without
    assert (gap > 0.01) == differs, gap
    assert (net.cls_token.abs().max().item() == 0.0) == (token_init == "zeros")


def test_authors_class_attention_heads_and_the_mask_tokens_start():
    net = SMARTSwin(**{**TINY, "num_heads": (1, 2, 3, 6)})
    assert net.class_attn_blocks[0].attn.num_heads == 3  # num_heads[2], as the SMART authors
    assert SMARTSwin(**TINY, class_attn_heads=6).class_attn_blocks[0].attn.num_heads == 6
    # SimMIM's truncated normal by default (a zero one overflows the student's gradient); the authors' zero on request
    assert torch.count_nonzero(net.mask_token) == net.mask_token.numel() and net.mask_token.abs().max() <= 0.04
    assert torch.count_nonzero(SMARTSwin(**TINY, mask_token_init="zeros").mask_token) == 0
    assert torch.count_nonzero(SMARTSwin(**TINY, token_init="trunc_normal").mask_token) == net.mask_token.numel()
    for bad in ({"token_init": "ones"}, {"mask_token_init": "ones"}):
        with pytest.raises(ValueError, match="token_init and mask_token_init must be one of"):
            SMARTSwin(**TINY, **bad)
    with pytest.raises(ValueError, match="linear_init one of"):
        SMARTSwin(**TINY, linear_init="xavier")


def test_torch_linear_init_keeps_pytorchs_larger_weights():
    torch.manual_seed(0)
    timm_like = SMARTSwin(**TINY).class_attn_blocks[0].attn.q.weight.std().item()
    torch_default = SMARTSwin(**TINY, linear_init="torch").class_attn_blocks[0].attn.q.weight.std().item()
    assert timm_like == pytest.approx(0.02, rel=0.15) and torch_default > 2 * timm_like


def test_attention_with_padded_heads_is_the_same_attention():
    # the bf16 CUDA path pads 12-channel heads to 16 so that fused kernels take them; checked here on the CPU
    from smart_nets.networks.blocks.window_attention import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 64, 12, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.randn(1, 2, 64, 64, generator=g)
    plain = attend(q, k, v, mask, 0.0, 12**-0.5)
    padded = attend(q, k, v, mask, 0.0, 12**-0.5, head_multiple=8)
    assert padded.shape == plain.shape == (3, 2, 64, 12)
    torch.testing.assert_close(padded, plain)
    (grad_plain,) = torch.autograd.grad(plain.square().sum(), q)
    (grad_padded,) = torch.autograd.grad(padded.square().sum(), q)
    torch.testing.assert_close(grad_padded, grad_plain)


def test_reconstruction_head_is_its_convolution_pixel_shuffled():
    """The decoder's product form (F.linear with the Conv3d weight) is the 1x1x1 convolution it replaces."""
    from monai.networks.utils import pixelshuffle

    from smart_nets.networks.blocks.heads import ReconstructionHead

    torch.manual_seed(0)
    head = ReconstructionHead(24, out_channels=2, scale=4)
    x = torch.randn(3, 24, 2, 1, 3, requires_grad=True)
    out = head(x)
    reference = pixelshuffle(head.conv(head.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)), 3, 4)
    assert out.shape == (3, 2, 8, 4, 12)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), x)
    # float32 sums in another order (the convolution's backward against F.linear's): 2.7e-6 apart at one element in a
    # fresh-clone run (gradients up to ~0.1); a wrong product form differs by the gradient itself
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-5)


def test_the_class_attention_readers_skip_the_last_stage_and_give_the_same_outputs():
    """SMARTClassifier and EncoderAttentionMap read stage 3's tokens only: the last stage is not run for them."""
    from smart_nets.networks.nets import EncoderAttentionMap, SMARTClassifier, attention_heatmap

    torch.manual_seed(0)
    encoder = SMARTSwin(**TINY).eval()
    calls = []
    encoder.stages[-1].register_forward_hook(lambda *args: calls.append(1))
    classifier = SMARTClassifier(encoder).eval()
    x = torch.randn(2, 1, 64, 64, 64)
    with torch.no_grad():
        full = encoder.forward_class_attention(encoder.forward_features(x))
        assert calls == [1]
        logits, heatmap = classifier(x), EncoderAttentionMap(encoder)(x)
        expected = classifier.head(torch.cat((full.cls_token, full.pooled), dim=1))
    assert calls == [1]  # neither ran it
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(heatmap, attention_heatmap(full.attn_map, x.shape[2:], encoder.token_stride))
    assert len(encoder.forward_features(x, num_stages=0)) == 1
    with pytest.raises(ValueError, match="num_stages must be in 0..4, got 5"):
        encoder.forward_features(x, num_stages=5)


def test_a_model_built_on_the_meta_device_matches_once_its_buffers_are_recomputed():
    torch.manual_seed(0)
    reference = smart_swin("demo").eval()
    with torch.device("meta"):
        deferred = smart_swin("demo")
    deferred = deferred.to_empty(device="cpu").eval()
    attn = deferred.stages[0].blocks[0].attn
    for name, buffer in deferred.named_buffers():  # to_empty's memory holds anything (out-of-range indices here)
        if name.endswith("relative_position_index"):
            buffer.fill_(0)  # surely wrong, and in range
    deferred.load_state_dict(reference.state_dict())  # the index is not in the state dict: still wrong
    x = torch.randn(1, 1, 32, 32, 32)
    assert not torch.equal(deferred(x).pooled, reference(x).pooled)
    deferred.init_non_persistent_buffers()
    assert torch.equal(attn.relative_position_index, reference.stages[0].blocks[0].attn.relative_position_index)
    assert torch.equal(deferred(x).pooled, reference(x).pooled)
