"""Leave-one-case-out probes of frozen features, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from smart_nets.cluster import knn_probe, linear_probe


def _organs(noise: float, cases: int = 6, organs: int = 5, dim: int = 8, seed: int = 0):
    """Each case has one embedding per organ: the organ's centre plus noise, plus a per-case offset."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(organs, dim))
    x = np.concatenate([centres + rng.normal(0, noise, (organs, dim)) + rng.normal(0, 0.3, dim) for _ in range(cases)])
    labels = np.tile(np.arange(1, organs + 1), cases)
    groups = np.repeat(np.arange(cases), organs)
    return x, labels, groups


def _sklearn(model, x, labels, groups) -> float:
    return float(
        cross_val_score(make_pipeline(StandardScaler(), model), x, labels, groups=groups, cv=LeaveOneGroupOut()).mean()
    )


@pytest.mark.parametrize("noise", [0.1, 0.8, 1.5])
def test_knn_probe_matches_scikit_learn(noise):
    x, labels, groups = _organs(noise)
    assert knn_probe(x, labels, groups) == pytest.approx(_sklearn(KNeighborsClassifier(1), x, labels, groups))


@pytest.mark.parametrize("noise", [0.1, 0.8, 1.5])
def test_linear_probe_matches_scikit_learn(noise):
    x, labels, groups = _organs(noise)
    n_train = len(x) - 5  # one case of 5 organs held out
    expected = _sklearn(LogisticRegression(C=1.0 / (1e-2 * n_train), max_iter=2000), x, labels, groups)
    assert abs(linear_probe(x, labels, groups, weight_decay=1e-2) - expected) <= 1.5 / len(x)


def test_knn_probe_per_embedding_matches_scikit_learn_predictions():
    x, labels, groups = _organs(0.8)
    order = np.random.default_rng(2).permutation(len(x))  # cases interleaved: hits must come back in input order
    x, labels, groups = x[order], labels[order], groups[order]
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(1))
    expected = cross_val_predict(model, x, labels, groups=groups, cv=LeaveOneGroupOut()) == labels
    hits = knn_probe(x, labels, groups, per_embedding=True)
    assert hits.dtype == bool and 0 < hits.sum() < len(x)
    np.testing.assert_array_equal(hits, expected)
    assert linear_probe(x, labels, groups, per_embedding=True).mean() == linear_probe(x, labels, groups)


def test_probes_separate_informative_from_random_features():
    x, labels, groups = _organs(0.2)
    assert knn_probe(x, labels, groups) >= 0.85 and linear_probe(x, labels, groups) >= 0.85
    noise = np.random.default_rng(1).normal(size=x.shape)
    assert knn_probe(noise, labels, groups) < 0.5 and linear_probe(noise, labels, groups) < 0.5


def test_probes_need_two_cases_and_matching_shapes():
    x, labels, groups = _organs(0.2, cases=2)
    with pytest.raises(ValueError, match="two cases"):
        knn_probe(x, labels, np.zeros_like(groups))
    with pytest.raises(ValueError, match="N labels"):
        linear_probe(x, labels[:-1], groups)
