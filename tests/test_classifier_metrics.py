"""SMARTClassifier (finetuning vs linear probing) and the AUC metrics with their bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smart_nets.metrics import bootstrap_auc, roc_auc, threshold_metrics
from smart_nets.metrics.auc import _auc_rank
from smart_nets.networks.nets import SMARTClassifier, SMARTSwin
from tests.helpers import TINY

ARCH = {k: TINY[k] for k in ("feature_size", "depths", "num_heads")}


@pytest.mark.parametrize(
    "y,s,expected",
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # one discordant pair of four
        ([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9], 0.875),  # a tie counts one half
        ([1, 1, 0], [0.9, 0.8, 0.1], 1.0),
        ([1, 0], [0.2, 0.7], 0.0),
    ],
)
def test_auc_against_hand_computed_cases(y, s, expected):
    assert roc_auc(y, s) == pytest.approx(expected)
    assert _auc_rank(np.asarray([y], float), np.asarray([s], float))[0] == pytest.approx(expected)


def test_single_class_set_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="needs both classes, got 0 positive and 3 negative"):
        roc_auc([0, 0, 0], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="needs both classes"):
        bootstrap_auc([1, 1], [0.1, 0.2])


def test_bootstrap_interval_brackets_the_auc_and_shrinks_with_more_cases():
    rng = np.random.default_rng(0)
    small_y, large_y = rng.integers(0, 2, 40), rng.integers(0, 2, 400)
    small = bootstrap_auc(small_y, small_y + rng.normal(0, 1.0, 40), n_bootstrap=500)
    large = bootstrap_auc(large_y, large_y + rng.normal(0, 1.0, 400), n_bootstrap=500)
    for r in (small, large):
        assert r["ci_low"] <= r["auc"] <= r["ci_high"] and r["n_bootstrap"] == 500
    assert large["ci_high"] - large["ci_low"] < small["ci_high"] - small["ci_low"]
    perfect = bootstrap_auc([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.8, 0.9, 0.3, 0.7], n_bootstrap=200)
    assert perfect["auc"] == perfect["ci_low"] == perfect["ci_high"] == 1.0


def test_threshold_metrics():
    m = threshold_metrics([1, 1, 0, 0, 0], [0.9, 0.4, 0.6, 0.1, 0.2], threshold=0.5)
    assert m == {"threshold": 0.5, "accuracy": 0.6, "sensitivity": 0.5, "specificity": pytest.approx(2 / 3)}


@pytest.mark.parametrize("freeze", [True, False])
def test_linear_probing_keeps_the_encoder_and_finetuning_changes_it(freeze):
    net = SMARTClassifier(SMARTSwin(**ARCH), num_classes=2, freeze_encoder=freeze).train()
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    head_before = net.head[-1].weight.clone()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 1, 64, 64, 64)), torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    changed = [k for k, v in net.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert (changed == []) if freeze else (len(changed) > 10)
    assert not torch.equal(net.head[-1].weight, head_before)
    assert net.encoder.training is not freeze


def test_bootstrap_auc_difference_is_paired():
    from smart_nets.metrics import bootstrap_auc_difference

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    shared = rng.normal(size=200)
    a = y + shared + 0.3 * rng.normal(size=200)
    b = y + shared + 0.3 * rng.normal(size=200) - 0.4 * y  # the same cases, a weaker signal
    out = bootstrap_auc_difference(y, a, b, n_bootstrap=500, seed=1)
    assert out["difference"] == pytest.approx(roc_auc(y, a) - roc_auc(y, b))
    assert out["ci_low"] <= out["difference"] <= out["ci_high"] and out["n_bootstrap"] == 500
    # pairing removes the shared noise: the difference's interval is narrower than either AUC's
    width = out["ci_high"] - out["ci_low"]
    ci_a = bootstrap_auc(y, a, n_bootstrap=500, seed=1)
    assert width < ci_a["ci_high"] - ci_a["ci_low"]
    # a score against itself differs by exactly 0 in every resample
    same = bootstrap_auc_difference(y, a, a, n_bootstrap=100)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_auc_difference(np.zeros(10), a[:10], b[:10])
