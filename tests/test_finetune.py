"""Finetuning recipe: named parameter groups with layer-wise learning-rate decay, and an encoder kept still."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from smart_nets.engines import encoder_layer_id, finetune_param_groups
from smart_nets.handlers import FreezeEncoderEpochs
from smart_nets.networks.nets import SMARTUNETR, SMARTClassifier, SMARTSwin

ARCH = dict(feature_size=12, depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 6), drop_path_rate=0.0)


@pytest.mark.parametrize("make", [lambda e: SMARTUNETR(e), lambda e: SMARTClassifier(e)])
def test_groups_hold_every_trainable_parameter_once_with_the_configured_multipliers(make):
    net = make(SMARTSwin(**ARCH))
    groups = finetune_param_groups(net, lr=1e-3, weight_decay=0.05, encoder_lr_scale=0.5, layer_decay=0.8)
    ids = [id(p) for g in groups for p in g["params"]]
    # the encoder parameters a network never uses (mask token; class attention or stage 4) need no gradient
    assert sorted(ids) == sorted(id(p) for p in net.parameters() if p.requires_grad) and len(set(ids)) == len(ids)
    assert len({g["name"] for g in groups}) == len(groups)
    top = sum(ARCH["depths"]) + 1
    names = {id(p): n for n, p in net.named_parameters()}
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            if name.startswith("encoder."):
                layer = encoder_layer_id(name[len("encoder.") :], ARCH["depths"])
                assert g["lr"] == pytest.approx(1e-3 * 0.5 * 0.8 ** (top - layer)), name
            else:
                assert g["lr"] == pytest.approx(1e-3), name
            no_decay = (
                p.ndim <= 1
                or name.endswith(".bias")
                or name.endswith(("cls_token", "mask_token", "relative_position_bias_table"))
            )
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder.layer00.decay"]["lr_scale"] == pytest.approx(0.5 * 0.8**top)  # the patch embedding


def test_layer_ids_follow_depth_and_unknown_names_are_refused():
    depths = (2, 2, 8, 2)
    assert encoder_layer_id("patch_embed.weight", depths) == 0
    assert encoder_layer_id("stages.0.blocks.1.attn.qkv.weight", depths) == 2
    assert encoder_layer_id("stages.2.blocks.0.mlp.linear1.weight", depths) == 5
    assert encoder_layer_id("stages.2.downsample.reduction.weight", depths) == 12
    assert encoder_layer_id("class_attn_blocks.0.attn.q.weight", depths) == 14
    with pytest.raises(ValueError, match="'decoder1.conv' is not a SMARTSwin parameter"):
        encoder_layer_id("decoder1.conv", depths)
    with pytest.raises(ValueError, match="layer_decay"):
        finetune_param_groups(SMARTClassifier(SMARTSwin(**ARCH)), 1e-3, layer_decay=1.5)


def test_a_frozen_encoder_stays_still_for_its_epochs_while_the_head_learns():
    torch.manual_seed(0)
    net = SMARTClassifier(SMARTSwin(**ARCH))
    data = [{"image": torch.rand(2, 1, 32, 32, 32), "label": torch.tensor([0, 1])} for _ in range(2)]
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.AdamW(finetune_param_groups(net, 1e-2), lr=1e-2),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[FreezeEncoderEpochs(net, epochs=1)],
    )
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    trainer.run()  # epoch 1: frozen
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("head.") for n in moved), sorted(moved)[:5]
    trainer.state.max_epochs = 2
    trainer.run()  # epoch 2: everything trains
    assert not torch.equal(net.encoder.patch_embed.weight, before["encoder.patch_embed.weight"])
