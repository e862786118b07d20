"""Probes of frozen features: leave-one-case-out k-nearest-neighbour and linear (logistic) classification.

A probe asks how much of a label (here: which organ an embedding came from) a frozen encoder's features make
readable, without finetuning. Folds hold out whole cases (every embedding of one image), so an organ is never
recognised from another organ of the same image; each fold standardizes with its training embeddings only.
scikit-learn has both classifiers but is not a dependency of the bundles (the tests check these against it).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import cdist

__all__ = ["knn_probe", "linear_probe"]


def _folds(x: np.ndarray, labels: np.ndarray, groups: np.ndarray):
    x, labels, groups = np.asarray(x, dtype=np.float64), np.asarray(labels), np.asarray(groups)
    if x.ndim != 2 or labels.shape != (len(x),) or groups.shape != (len(x),):
        raise ValueError(
            f"need embeddings (N, F), N labels and N groups, got {x.shape}, {labels.shape}, {groups.shape}"
        )
    cases = np.unique(groups)
    if len(cases) < 2:
        raise ValueError(f"leave-one-case-out needs at least two cases, got {cases.tolist()}")
    for case in cases:
        test = groups == case
        train_x = x[~test]
        mean, std = train_x.mean(axis=0), train_x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        yield (train_x - mean) / std, labels[~test], (x[test] - mean) / std, labels[test], np.flatnonzero(test)


def knn_probe(
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 1, per_embedding: bool = False
) -> float | np.ndarray:
    """Leave-one-case-out accuracy of a k-nearest-neighbour vote (Euclidean, standardized features; ties go to the
    nearest neighbour's label).

    Args:
        x: ``(N, F)`` embeddings.
        labels: ``(N,)`` classes (e.g. organ labels).
        groups: ``(N,)`` case of each embedding; each case is held out once.
        k: neighbours.
        per_embedding: return whether each embedding was classified right instead of the share (for a bootstrap
            over cases).

    Returns:
        The share of embeddings whose class the vote gets right, or ``(N,)`` bools in the input's order.

    Raises:
        ValueError: on mismatched shapes or fewer than two cases.
    """
    hits = np.zeros(len(labels), dtype=bool)
    for train_x, train_y, test_x, test_y, index in _folds(x, labels, groups):
        order = np.argsort(cdist(test_x, train_x), axis=1)[:, :k]
        for row, truth, i in zip(order, test_y, index):
            votes = train_y[row]
            values, counts = np.unique(votes, return_counts=True)
            best = values[counts == counts.max()]
            guess = votes[0] if votes[0] in best else best[0]
            hits[i] = guess == truth
    return hits if per_embedding else float(hits.mean())


def linear_probe(
    x: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    weight_decay: float = 1e-2,
    max_iter: int = 200,
    per_embedding: bool = False,
) -> float | np.ndarray:
    """Leave-one-case-out accuracy of multinomial logistic regression on standardized features (L-BFGS, L2 penalty
    ``weight_decay`` on the weights, as scikit-learn's ``LogisticRegression(C=1 / (weight_decay * n))``).

    Args:
        x: ``(N, F)`` embeddings.
        labels: ``(N,)`` classes.
        groups: ``(N,)`` case of each embedding.
        weight_decay: L2 penalty.
        max_iter: L-BFGS iterations per fold.
        per_embedding: return whether each embedding was classified right instead of the share.

    Returns:
        The share of held-out embeddings classified right, or ``(N,)`` bools in the input's order.

    Raises:
        ValueError: on mismatched shapes or fewer than two cases.
    """
    classes = np.unique(labels)
    hits = np.zeros(len(labels), dtype=bool)
    for train_x, train_y, test_x, test_y, index in _folds(x, labels, groups):
        xt = torch.as_tensor(train_x)
        yt = torch.as_tensor(np.searchsorted(classes, train_y))
        w = torch.zeros(xt.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + 0.5 * weight_decay * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            guess = classes[(torch.as_tensor(test_x) @ w + b).argmax(dim=1).numpy()]
        hits[index] = guess == test_y
    return hits if per_embedding else float(hits.mean())
