"""SMARTTrainer: EMA-only teacher, noisy teacher input, loss decrease, resumable schedules, clear input errors."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged, SelectItemsd

from smart_nets.data import generate_phantoms, load_datalist
from smart_nets.engines import SMARTSchedule, SMARTTrainer, ema_update_, make_teacher, param_groups
from smart_nets.losses import SMARTLoss
from smart_nets.networks.nets import SMARTPretrainNet, smart_swin
from smart_nets.transforms import CheckFinited, RandTokenMaskd, RandTwoViewsd
from tests.helpers import error_chain

K = 128


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    path = tmp_path_factory.mktemp("phantoms")
    return generate_phantoms(str(path), num=5, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0), val_fraction=0.2)


def _loader(datalist: str, teacher_mask_ratio: float = 0.3, batch_size: int = 2) -> DataLoader:
    transform = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            ScaleIntensityRanged("image", -750, 1750, 0.0, 1.0, clip=True),
            CheckFinited("image"),
            RandTwoViewsd("image", roi_size=(64, 64, 64)),
            RandTokenMaskd(["view1", "view2"], ratio=teacher_mask_ratio),
            SelectItemsd(["view1", "view2", "view1_noise", "view2_noise"]),
        ]
    ).set_random_state(0)
    return DataLoader(Dataset(load_datalist(datalist), transform), batch_size=batch_size, shuffle=False)


def _trainer(
    loader: DataLoader,
    max_epochs: int,
    schedule: SMARTSchedule | None = None,
    encoder: dict | None = None,
    loss: SMARTLoss | None = None,
    **kwargs,
) -> SMARTTrainer:
    net = SMARTPretrainNet(
        smart_swin("demo", drop_path_rate=0.0, **(encoder or {})),
        out_dim=K,
        head_hidden_dim=64,
        head_bottleneck_dim=32,
    )
    return SMARTTrainer(
        "cpu",
        max_epochs,
        loader,
        net,
        make_teacher(net),
        torch.optim.AdamW(param_groups(net), lr=1e-3),
        loss or SMARTLoss(K),
        schedule or SMARTSchedule(base_lr=1e-3, warmup_fraction=0.0),
        **kwargs,
    )


def _record(trainer: SMARTTrainer) -> list[dict]:
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output[0])))
    return outputs


def test_teacher_gets_no_gradient_and_moves_only_by_ema(phantoms):
    trainer = _trainer(_loader(phantoms), max_epochs=2, freeze_last_layer_epochs=0)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate())  # one step of a 4-step run
    teacher_before = {n: p.clone() for n, p in trainer.teacher.named_parameters()}
    student_before = {n: p.clone() for n, p in trainer.network.named_parameters()}
    outputs = _record(trainer)
    trainer.run()
    m = trainer.schedule(0, 4)["momentum"]
    assert len(outputs) == 1 and outputs[0]["momentum"] == pytest.approx(m) and m < 1.0
    student = dict(trainer.network.named_parameters())
    moved = 0
    for name, p in trainer.teacher.named_parameters():
        assert p.grad is None and not p.requires_grad
        torch.testing.assert_close(p, m * teacher_before[name] + (1 - m) * student[name], rtol=0, atol=1e-6)
        moved += int(not torch.equal(student[name], student_before[name]))
    assert moved > 10  # the student did take an optimizer step


def test_the_first_step_has_a_finite_gradient_that_moves_every_encoder_bias(phantoms):
    """Weight decay moves the weights even when every gradient is zero; the zero-initialised biases move only by a
    gradient. With a zero mask token, masked windows were exact zero vectors in front of LayerNorms: the gradient
    overflowed float32 (1e19-1e20 on the demo's phantoms), and clipping then zeroed every gradient at every step."""
    trainer = _trainer(_loader(phantoms), max_epochs=2, freeze_last_layer_epochs=0)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate())
    encoder = trainer.network.encoder
    zero_biases = [n for n, p in encoder.named_parameters() if n.endswith(".bias") and not p.any()]
    outputs = _record(trainer)
    trainer.run()
    assert outputs[0]["grad_norm"] < 1e10  # 1e5 here; a zero mask token gives inf
    params = dict(encoder.named_parameters())
    unused = {n for n in zero_biases if n.startswith(("stages.3.", "class_attn")) and params[n].grad is None}
    still = [n for n in zero_biases if n not in unused and not params[n].any()]
    assert len(zero_biases) > 20 and not still, still


def test_a_non_finite_gradient_stops_the_run_naming_the_tensor(phantoms):
    trainer = _trainer(_loader(phantoms), max_epochs=1)
    trainer.network.encoder.patch_embed.bias.register_hook(lambda g: g * float("inf"))
    with pytest.raises(FloatingPointError, match=r"non-finite gradient norm at iteration 1 .*encoder.patch_embed.bias"):
        trainer.run()


def test_a_non_finite_loss_stops_the_run_naming_its_parts_before_any_update(phantoms):
    trainer = _trainer(_loader(phantoms), max_epochs=1)
    # a NaN reconstruction: the loss, its rec part and every gradient become NaN
    trainer.network.recon_head.register_forward_hook(lambda module, args, out: out * float("nan"))
    before = {n: p.detach().clone() for n, p in trainer.network.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"non-finite SMART loss at iteration 1: \{.*'rec': nan"):
        trainer.run()
    assert all(torch.equal(p, before[n]) for n, p in trainer.network.named_parameters())  # no step was taken


def test_ema_arithmetic_for_a_known_momentum():
    student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        student.weight.fill_(1.0), student.bias.fill_(1.0), teacher.weight.fill_(3.0), teacher.bias.fill_(-1.0)
    ema_update_(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight, torch.full((1, 2), 0.9 * 3 + 0.1 * 1))
    torch.testing.assert_close(teacher.bias, torch.tensor([0.9 * -1 + 0.1 * 1]))
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(teacher, student, 1.5)


@pytest.mark.parametrize("ratio", [0.3, 0.0])
def test_teacher_sees_the_noise_masks_and_student_the_attention_masks(phantoms, ratio):
    trainer = _trainer(_loader(phantoms, teacher_mask_ratio=ratio), max_epochs=1, epoch_length=1)
    seen: dict[str, torch.Tensor] = {}
    trainer.teacher.register_forward_pre_hook(lambda m, args: seen.__setitem__("teacher", args[1]))
    trainer.network.register_forward_pre_hook(lambda m, args: seen.__setitem__("student", args[1]))
    trainer.run()
    teacher_mask, student_mask = seen["teacher"].flatten(1), seen["student"].flatten(1)
    assert teacher_mask.shape == (4, 64)  # two views of two volumes
    assert teacher_mask.sum(1).tolist() == [round(ratio * 64)] * 4
    assert student_mask.sum(1).tolist() == [48 - 5] * 4  # 75% minus a hint of 10% of them


def test_mask_probability_leaves_some_views_whole_and_checks_its_range(phantoms):
    """iBOT/DINOv2-style: only a share of the views is masked; the others keep every token."""
    trainer = _trainer(_loader(phantoms), max_epochs=1, epoch_length=1, mask_probability=0.5, seed=3)
    attn = torch.rand(400, 64)
    counts = trainer._student_masks(attn, (4, 4, 4)).flatten(1).sum(1)
    assert set(counts.tolist()) == {0, 48 - 5}  # whole, or masked as SMART masks
    assert 0.4 < (counts > 0).float().mean().item() < 0.6
    every = _trainer(_loader(phantoms), max_epochs=1, epoch_length=1)  # the default: SMART masks every view
    assert (every._student_masks(attn, (4, 4, 4)).flatten(1).sum(1) == 48 - 5).all()
    with pytest.raises(ValueError, match="mask_probability"):
        _trainer(_loader(phantoms), max_epochs=1, mask_probability=1.5)


def test_thirty_iterations_lower_the_loss(phantoms):
    trainer = _trainer(_loader(phantoms), max_epochs=15, schedule=SMARTSchedule(base_lr=5e-4, warmup_fraction=0.1))
    outputs = _record(trainer)
    trainer.run()
    losses = [o["loss"].item() for o in outputs]
    assert len(losses) == 30
    # by about 0.35 with the authors' defaults (zero [CLS], the student's own patch prototypes), 0.7 before them
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.25


def test_resumed_training_continues_iterations_and_schedules(phantoms):
    schedule = SMARTSchedule(base_lr=1e-3, warmup_fraction=0.25)
    first = _trainer(_loader(phantoms), max_epochs=2, schedule=schedule)
    first.run()
    state = {
        k: v.state_dict() for k, v in (("trainer", first), ("teacher", first.teacher), ("loss", first.loss_function))
    }
    second = _trainer(_loader(phantoms), max_epochs=4, schedule=schedule)
    second.teacher.load_state_dict(state["teacher"])
    second.loss_function.load_state_dict(state["loss"])

    @second.on(Events.STARTED)
    def _resume(engine):
        engine.load_state_dict(state["trainer"])
        engine.state.max_epochs = 4

    outputs = _record(second)
    second.run()
    assert len(outputs) == 4 and second.state.iteration == 8
    assert outputs[0]["lr"] == pytest.approx(schedule(4, 8)["lr"])
    assert outputs[-1]["momentum"] == 1.0


def test_missing_datalist_and_image_are_named(tmp_path, phantoms):
    with pytest.raises(FileNotFoundError, match="nowhere/dataset.json"):
        load_datalist(str(tmp_path / "nowhere" / "dataset.json"))
    broken = tmp_path / "dataset.json"
    broken.write_text('{"training": [{"image": "imagesTr/gone.nii.gz"}]}')
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        load_datalist(str(broken))


def test_nan_volume_is_named(tmp_path):
    path = tmp_path / "nan_ct.nii.gz"
    data = np.zeros((64, 64, 64), dtype=np.float32)
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    transform = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), CheckFinited("image")])
    with pytest.raises(Exception) as info:  # MONAI's Compose wraps it: look along the chain of causes
        transform({"image": str(path)})
    assert any(m.endswith("nan_ct.nii.gz: image has 1 non-finite voxels (NaN or inf)") for m in error_chain(info.value))


def test_start_up_warns_when_the_teacher_would_keep_its_random_start(phantoms, caplog):
    for momentum, warns in ((0.996, True), (0.0, False)):  # 0: the first update replaces the teacher
        caplog.clear()
        trainer = _trainer(_loader(phantoms), max_epochs=2, schedule=SMARTSchedule(momentum=momentum))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate())
        with caplog.at_level("INFO", logger="smart_nets.engines.smart_trainer"):
            trainer.run()
        assert "of its initial weights" in caplog.text
        assert ("set teacher_momentum (schedule#momentum) to" in caplog.text) == warns


def test_public_step_matches_a_run_and_prepare_batch_reads_other_keys(phantoms):
    """``step()`` outside ``run()`` gives the loss ``run()`` gives for the same first batch and weights;
    ``prepare_batch`` lets a loader name its views otherwise; a batch without them is refused naming its keys."""
    from smart_nets.engines import PrepareTwoViews

    batch = next(iter(_loader(phantoms)))
    torch.manual_seed(0)
    ran = _trainer([batch], max_epochs=1, epoch_length=1)
    outputs = _record(ran)
    ran.run()
    torch.manual_seed(0)
    renamed = {k.replace("view", "v"): v for k, v in batch.items()}
    stepped = _trainer([renamed], max_epochs=1, epoch_length=1, prepare_batch=PrepareTwoViews(("v1", "v2")))
    out = stepped.step(renamed)
    assert stepped.state.iteration == 1
    assert float(out["loss"]) == pytest.approx(float(outputs[0]["loss"]), rel=1e-5)
    with pytest.raises(ValueError, match=r"lacks views or noise masks for \['v1', 'v2'\].*view1"):
        stepped.step(batch)


def test_bf16_precision_trains_with_float32_weights_and_refuses_bad_choices(phantoms, monkeypatch, caplog):
    trainer = _trainer(_loader(phantoms), max_epochs=1, precision="bf16")
    assert trainer.autocast_dtype == torch.bfloat16
    seen = []
    trainer.network.head.mlp.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    outputs = _record(trainer)
    trainer.run()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(np.isfinite(o["loss"].item()) for o in outputs)
    assert {p.dtype for p in trainer.network.parameters()} == {torch.float32}
    assert {p.dtype for p in trainer.teacher.parameters()} == {torch.float32}
    assert trainer.loss_function.center.dtype == torch.float32
    with pytest.raises(ValueError, match="precision 'fp16'"):
        _trainer(_loader(phantoms), max_epochs=1, precision="fp16")
    with pytest.raises(ValueError, match="choose one"):
        _trainer(_loader(phantoms), max_epochs=1, precision="bf16", amp=True)
    monkeypatch.setattr("smart_nets.runtime.native_bf16_cpu", lambda: False)
    with caplog.at_level(logging.WARNING, logger="smart_nets.runtime"):
        assert _trainer(_loader(phantoms), max_epochs=1, precision="bf16").autocast_dtype is None
    assert "running in float32" in caplog.text


def test_student_has_its_own_patch_prototypes_and_the_teacher_shares_its_global_ones():
    net = SMARTPretrainNet(
        smart_swin("demo"),
        out_dim=K,
        head_hidden_dim=64,
        head_bottleneck_dim=32,
        shared_head=False,
    ).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        own, shared = net(x, reconstruct=False), net(x, reconstruct=False, shared_head=True)
        embedded = net.head.embed(net.encoder.forward_class_attention(net.encoder.forward_features(x)).patch_tokens)
    torch.testing.assert_close(shared["patch"], net.head.last_layer(embedded))
    torch.testing.assert_close(own["patch"], net.patch_last_layer(embedded))
    assert not torch.allclose(own["patch"], shared["patch"])
    decayed = {id(p) for p in param_groups(net)[0]["params"]}
    assert id(net.encoder.cls_token) in decayed  # as DINO and the authors (the mask token, 1-D here, is not)
    assert id(net.encoder.mask_token) not in decayed


def test_koleo_alone_trains_the_encoder_through_its_features_and_is_logged(phantoms):
    """With every SMART term at weight 0 and KoLeo on, the loss is KoLeo of the student's [CLS] and pooled features,
    and only the encoder (not the projection or reconstruction heads) receives a gradient."""
    loss = SMARTLoss(K, w_cls=0.0, w_patch=0.0, w_rec=0.0, w_koleo=1.0)
    trainer = _trainer(_loader(phantoms), max_epochs=2, loss=loss, freeze_last_layer_epochs=0)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate())
    grads: dict[str, bool] = {}

    def record_grads(engine):
        grads.update({n: p.grad is not None and bool(p.grad.any()) for n, p in engine.network.named_parameters()})

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), record_grads)
    outputs = _record(trainer)
    trainer.run()
    out = outputs[0]
    assert out["loss_koleo"] > 0 and float(out["loss"]) == pytest.approx(out["loss_koleo"], rel=1e-6)
    assert any(g for n, g in grads.items() if "class_attn" in n)
    assert any(g for n, g in grads.items() if n.startswith("encoder.stages.0"))
    assert not any(g for n, g in grads.items() if n.startswith(("head.", "patch_last_layer", "recon_head")))


def test_compile_traces_both_networks_in_place_and_trains_as_eager_does(phantoms):
    """``compile=True`` sends the student's and the teacher's forward passes through ``torch.compile`` (a
    recording backend that runs the captured graphs as they are, so no C++ compiler is needed here), keeps the
    eager parameter names (EMA pairing, checkpoints) and gives the eager run's losses step for step."""
    batches = list(_loader(phantoms))[:2]
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        kwargs = {"compile": True, "compile_kwargs": {"backend": recording_backend}} if compiled else {}
        trainer = _trainer(batches, max_epochs=1, **kwargs)
        outputs = _record(trainer)
        trainer.run()
        losses[compiled] = [float(o["loss"]) for o in outputs]
        names = sorted(trainer.network.state_dict())
        assert names == sorted(trainer.teacher.state_dict()) and not any("_orig_mod" in n for n in names)
    assert graphs, "compile=True: dynamo captured no graph"
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
