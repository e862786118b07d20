"""ROC AUC with a bootstrap confidence interval, and threshold metrics, for image-level endpoints (Tasks I, II).

The paper's cohorts have 156-200 patients, where a bare AUC misleads: every AUC here comes with its percentile
bootstrap 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = ["roc_auc", "bootstrap_auc", "bootstrap_auc_difference", "threshold_metrics"]


def _binary(y_true: Sequence, y_score: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    if y.shape != s.shape or y.size == 0:
        raise ValueError(f"need as many scores as labels, got {s.size} scores and {y.size} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()))[:10]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    positives = int(y.sum())
    if positives in (0, y.size):
        raise ValueError(
            f"ROC AUC needs both classes, got {positives} positive and {y.size - positives} negative cases: "
            "evaluate on a set that contains both"
        )
    return y, s


def roc_auc(y_true: Sequence, y_score: Sequence) -> float:
    """Area under the ROC curve (ties count one half), computed by MONAI's ``compute_roc_auc``.

    Raises:
        ValueError: on a single-class set (AUC is undefined), mismatched lengths, labels other than 0/1, or NaN.
    """
    y, s = _binary(y_true, y_score)
    return float(compute_roc_auc(torch.as_tensor(s), torch.as_tensor(y)))


def _auc_rank(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row of ``(R, n)`` arrays, vectorised over rows (average ranks for ties).

    MONAI's ``compute_roc_auc`` loops over samples in Python; 2000 bootstrap resamples need this vectorised form.
    Rows with a single class give NaN.
    """
    order = np.argsort(s, axis=1, kind="mergesort")
    sorted_s = np.take_along_axis(s, order, axis=1)
    ranks = np.empty_like(s)
    n = s.shape[1]
    base = np.arange(1, n + 1, dtype=float)
    for r in range(s.shape[0]):  # average ranks within ties
        uniq, start, counts = np.unique(sorted_s[r], return_index=True, return_counts=True)
        avg = start + (counts + 1) / 2.0
        ranks[r, order[r]] = np.repeat(avg, counts) if len(uniq) < n else base
    pos = y.sum(axis=1)
    neg = n - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - pos * (pos + 1) / 2.0) / (pos * neg)


def bootstrap_auc(
    y_true: Sequence, y_score: Sequence, n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """AUC with a percentile bootstrap confidence interval (cases resampled with replacement).

    Resamples that happen to hold one class only are discarded and counted.

    Args:
        y_true: 0/1 labels.
        y_score: scores, higher meaning class 1.
        n_bootstrap: number of resamples.
        confidence: interval coverage, e.g. 0.95.
        seed: seed of the resampling.

    Returns:
        ``auc``, ``ci_low``, ``ci_high``, ``n``, ``n_positive``, ``n_bootstrap`` (resamples used).

    Raises:
        ValueError: as :func:`roc_auc`, or when ``confidence`` is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    auc = roc_auc(y_true, y_score)
    y, s = _binary(y_true, y_score)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n_bootstrap, y.size))
    aucs = _auc_rank(y[idx], s[idx])
    aucs = aucs[np.isfinite(aucs)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(aucs, [tail, 100.0 - tail]) if aucs.size else (np.nan, np.nan)
    return {
        "auc": auc,
        "ci_low": float(low),
        "ci_high": float(high),
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "n_bootstrap": int(aucs.size),
    }


def bootstrap_auc_difference(
    y_true: Sequence,
    score_a: Sequence,
    score_b: Sequence,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """``AUC(a) - AUC(b)`` of two scores of the same cases, with a paired percentile bootstrap interval (the same
    resampled cases for both scores, so what the two share does not widen the interval).

    Resamples that happen to hold one class only are discarded and counted.

    Returns:
        ``difference``, ``ci_low``, ``ci_high``, ``auc_a``, ``auc_b``, ``n``, ``n_positive``, ``n_bootstrap``
        (resamples used).

    Raises:
        ValueError: as :func:`roc_auc` for either score, or when ``confidence`` is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    y, a = _binary(y_true, score_a)
    _, b = _binary(y_true, score_b)
    auc_a, auc_b = roc_auc(y, a), roc_auc(y, b)
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_bootstrap, y.size))
    diffs = _auc_rank(y[idx], a[idx]) - _auc_rank(y[idx], b[idx])
    diffs = diffs[np.isfinite(diffs)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail]) if diffs.size else (np.nan, np.nan)
    return {
        "difference": auc_a - auc_b,
        "ci_low": float(low),
        "ci_high": float(high),
        "auc_a": auc_a,
        "auc_b": auc_b,
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "n_bootstrap": int(diffs.size),
    }


def threshold_metrics(y_true: Sequence, y_prob: Sequence, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity and specificity when predicting class 1 for ``y_prob >= threshold``.

    Raises:
        ValueError: as :func:`roc_auc` (both classes are needed for sensitivity and specificity).
    """
    y, p = _binary(y_true, y_prob)
    pred = p >= threshold
    tp, tn = float(((pred == 1) & (y == 1)).sum()), float(((pred == 0) & (y == 0)).sum())
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / y.size,
        "sensitivity": tp / y.sum(),
        "specificity": tn / (y.size - y.sum()),
    }
