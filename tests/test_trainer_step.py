"""benchmarks/trainer_step.py: the copies of smart_nets it times, and the constructor it picks for each."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks import trainer_step as ts


def test_a_folder_without_smart_nets_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ts.main(["--trees", ".", str(tmp_path), "--out", str(tmp_path / "r")])
    assert f"no smart_nets package in: {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_each_copy_is_built_with_the_constructor_it_has():
    paper = {"feature_size": 48}
    preset = SimpleNamespace(smart_swin=lambda name: ("preset", name), SMARTPretrainNet=lambda enc: ("net", enc))
    assert ts._network(preset, paper) == ("net", ("preset", "paper"))

    passed_in = SimpleNamespace(SMARTSwin=lambda **kw: ("swin", kw), SMARTPretrainNet=lambda enc: ("net", enc))
    assert ts._network(passed_in, paper) == ("net", ("swin", paper))

    def old_net(*args, **kw):  # before the encoder was passed in: keywords only
        if args:
            raise TypeError("unexpected positional argument")
        return ("old", kw)

    oldest = SimpleNamespace(SMARTSwin=lambda **kw: ("swin", kw), SMARTPretrainNet=old_net)
    assert ts._network(oldest, paper) == ("old", paper)


def test_the_timed_trainer_is_the_paper_network_on_two_views_of_batch_two():
    import torch

    trainer, teacher = ts.build(torch.device("cpu"), 32, 4, False)
    batch = trainer.data_loader[0]
    assert batch["view1"].shape == batch["view2"].shape == (2, 1, 32, 32, 32) and len(trainer.data_loader) == 4
    assert trainer.network.encoder.feature_size == 48 and trainer.loss_function.center.shape[-1] == 8192
    assert not any(p.requires_grad for p in teacher.parameters())
