"""CollapseMonitor: collapsed targets (constant, uniform) warn once, healthy ones do not, statistics are exact."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from smart_nets.handlers import CollapseMonitor, target_information
from smart_nets.losses import SMARTLoss

K, N, R = 64, 8, 4  # prototypes, patch tokens, rows (2 views x 2 volumes)


def _engine(make_targets, iterations: int, loss: SMARTLoss | None = None, interval: int = 5, patience: int = 2):
    """An engine whose steps publish what SMARTTrainer publishes, with targets from ``make_targets(step, rows)``."""
    g = torch.Generator().manual_seed(0)

    def step(engine, _):
        i = engine.state.iteration
        engine.state.distillation = {
            "teacher_global": torch.randn(R, 2, K, generator=g),
            "teacher_patch": torch.randn(R, N, K, generator=g),
            "global_targets": make_targets(i, R * 2).view(R, 2, K)[:, : len(engine.loss_function.global_tokens)],
            "patch_targets": make_targets(i, R * N).view(R, N, K),
            "masks": torch.zeros(R, 2, 2, 2, dtype=torch.bool),
        }
        return [{"loss_cls_cls": 1.0, "loss_cls_pooled": 2.0, "loss_patch": 3.0}]

    engine = Engine(step)
    engine.loss_function = loss or SMARTLoss(K)
    monitor = CollapseMonitor(interval=interval, patience=patience)
    monitor.attach(engine)
    return engine, monitor, iterations


def _run(engine, monitor, iterations, caplog):
    with caplog.at_level(logging.INFO, logger="smart_nets.handlers.collapse"):
        engine.run([0] * iterations, max_epochs=1)
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def _one_hot(indices: torch.Tensor) -> torch.Tensor:
    return F.one_hot(indices, K).float()


def test_constant_targets_warn_once_naming_the_statistic(caplog):
    engine, monitor, n = _engine(lambda i, rows: _one_hot(torch.full((rows,), 3)), iterations=30)
    warnings = _run(engine, monitor, n, caplog)
    assert len(warnings) == 3  # one per token type (cls, pooled, patch), not one per window
    text = " ".join(w.getMessage() for w in warnings)
    assert "collapse/patch_information" in text and "collapse/cls_information" in text
    assert "stuck" in text and "1 prototype" in text and "learning rate" in text
    assert engine.state.metrics["collapse/patch_information"] == pytest.approx(0.0, abs=1e-6)
    assert engine.state.metrics["collapse/patch_prototypes"] == 1.0


def test_uniform_targets_warn_as_flat(caplog):
    engine, monitor, n = _engine(lambda i, rows: torch.full((rows, K), 1.0 / K), iterations=10)
    warnings = _run(engine, monitor, n, caplog)
    assert warnings and all("flat" in w.getMessage() for w in warnings)
    assert engine.state.metrics["collapse/pooled_entropy"] == pytest.approx(math.log(K))
    assert engine.state.metrics["collapse/ln_k"] == pytest.approx(math.log(K))


def test_diverse_sharp_targets_do_not_warn(caplog):
    g = torch.Generator().manual_seed(1)
    engine, monitor, n = _engine(lambda i, rows: _one_hot(torch.randint(0, K, (rows,), generator=g)), iterations=30)
    warnings = _run(engine, monitor, n, caplog)
    assert not warnings
    m = engine.state.metrics
    assert m["collapse/patch_information"] > 3.0 and m["collapse/cls_information"] > 2.0
    assert m["collapse/patch_prototypes"] > 50
    assert len(monitor.history) == 6 and "collapse monitor, iteration 30" in caplog.text


def test_statistics_are_exact_for_a_two_prototype_window():
    # volumes alternate between prototype 0 and 1 (each (R, 2) global row pair shares one): H(p) = 0, H(mean) = ln 2
    engine, monitor, n = _engine(lambda i, rows: _one_hot(torch.arange(rows) // 2 % 2), iterations=5, patience=1)
    engine.run([0] * n, max_epochs=1)
    m = engine.state.metrics
    assert m["collapse/patch_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert m["collapse/patch_information"] == pytest.approx(math.log(2))
    assert m["collapse/cls_prototypes"] == 2.0
    assert m["collapse/pooled_loss"] == 2.0 and m["collapse/patch_loss"] == 3.0
    assert m["collapse/cls_logit_std"] == pytest.approx(1.0, abs=0.15)  # standard normal logits


def test_token_types_without_loss_weight_are_not_judged(caplog):
    simmim = SMARTLoss(K, w_cls=0.0, w_patch=0.0)
    engine, monitor, n = _engine(lambda i, rows: _one_hot(torch.full((rows,), 3)), iterations=30, loss=simmim)
    assert not _run(engine, monitor, n, caplog)
    pooled_only = SMARTLoss(K, global_tokens=["pooled"])
    engine, monitor, n = _engine(lambda i, rows: _one_hot(torch.full((rows,), 3)), iterations=10, loss=pooled_only)
    engine.run([0] * n, max_epochs=1)
    assert "collapse/pooled_information" in engine.state.metrics
    assert "collapse/cls_information" not in engine.state.metrics
    assert "collapse/cls_logit_std" in engine.state.metrics  # [CLS] spread is reported even when not distilled


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="interval"):
        CollapseMonitor(interval=0)


def test_target_information_of_fixed_logits():
    same = torch.randn(1, K).expand(10, K)
    assert target_information(same, 0.04)["information"] == pytest.approx(0.0, abs=1e-6)
    two = torch.zeros(10, K)
    two[::2, 0] = 5.0
    two[1::2, 1] = 5.0  # two sharp groups
    stats = target_information(two, 0.04)
    assert stats["information"] == pytest.approx(math.log(2), abs=1e-3) and stats["prototypes"] == 2.0
