"""Cluster metrics of organ embeddings (Task IV), in numpy and scipy.

scikit-learn has silhouette, adjusted Rand and k-means, but it is not a dependency of the bundles (only of the tests,
which check these functions against it); the few lines below keep ``smart_pretrain``'s clustering workflow
runnable with what MONAI already needs.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.spatial.distance import cdist, pdist
from scipy.special import comb

__all__ = [
    "adjusted_rand_index",
    "centroid_separation",
    "cluster_metrics",
    "kmeans",
    "silhouette_score",
    "standardize",
]

DEFINITIONS = {
    "standardized space": "each embedding dimension z-scored over all (image, organ) embeddings; constant dims -> 0",
    "inter_class_distance": "mean Euclidean distance between the centroids of every pair of organs",
    "within_class_spread": "mean over organs of the mean Euclidean distance of its embeddings to its centroid",
    "separation_ratio": "inter_class_distance / within_class_spread",
    "silhouette": "mean over embeddings of (b - a) / max(a, b), a = mean distance to its own organ's other "
    "embeddings, b = smallest mean distance to another organ's (0 for an organ seen once)",
    "kmeans_ari": "adjusted Rand index between k-means clusters (k = number of organs, best of n_init "
    "k-means++ runs) and the true organs",
}


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score each column of ``x`` (N, F); constant columns become 0."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), std, out=np.zeros_like(x), where=std > 0)


def _check(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels)
    if x.ndim != 2 or labels.shape != (len(x),):
        raise ValueError(f"need embeddings (N, F) and N labels, got {x.shape} and {labels.shape}")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"cluster metrics need at least two organs, got labels {np.unique(labels).tolist()}")
    return x, labels


def centroid_separation(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Inter-class centroid distance, within-class spread and their ratio (see ``DEFINITIONS``) of ``x`` as given."""
    x, labels = _check(x, labels)
    classes = np.unique(labels)
    centroids = np.stack([x[labels == c].mean(axis=0) for c in classes])
    spread = np.mean([np.linalg.norm(x[labels == c] - centroids[i], axis=1).mean() for i, c in enumerate(classes)])
    distance = float(pdist(centroids).mean())
    return {
        "inter_class_distance": distance,
        "within_class_spread": float(spread),
        "separation_ratio": distance / float(spread) if spread > 0 else float("inf"),
    }


def silhouette_score(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient with Euclidean distances (the definition of scikit-learn's)."""
    x, labels = _check(x, labels)
    d = cdist(x, x)
    classes = np.unique(labels)
    member = labels[:, None] == classes[None, :]  # (N, K)
    sums = d @ member  # distance sums from each point to each class
    counts = member.sum(axis=0)
    own = member.argmax(axis=1)
    own_count = counts[own]
    a = np.divide(sums[np.arange(len(x)), own], own_count - 1, out=np.zeros(len(x)), where=own_count > 1)
    mean_other = sums / counts
    mean_other[np.arange(len(x)), own] = np.inf
    b = mean_other.min(axis=1)
    s = np.where(own_count > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def adjusted_rand_index(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert and Arabie 1985); 1 for identical partitions, ~0 for chance."""
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    _, p = np.unique(np.asarray(predicted), return_inverse=True)
    table = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(table, (t, p), 1)
    pairs = comb(table, 2).sum()
    rows, cols, total = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum(), comb(len(t), 2)
    expected = rows * cols / total if total else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((pairs - expected) / (maximum - expected))


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """Cluster assignments of the lowest-inertia of ``n_init`` k-means++ runs (scipy's ``kmeans2``)."""
    x = np.asarray(x, dtype=np.float64)
    best, best_inertia = None, np.inf
    rng = np.random.default_rng(seed)
    for _ in range(n_init):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "one of the clusters is empty": another run replaces it
            centroids, assign = kmeans2(x, k, minit="++", seed=rng)
        inertia = float(((x - centroids[assign]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = assign, inertia
    return best


def cluster_metrics(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Every Task IV metric of embeddings ``x`` (N, F) with organ ``labels`` (N,), in the standardized space."""
    x, labels = _check(x, labels)
    z = standardize(x)
    out = centroid_separation(z, labels)
    out["silhouette"] = silhouette_score(z, labels)
    out["kmeans_ari"] = adjusted_rand_index(labels, kmeans(z, len(np.unique(labels)), seed=seed))
    out["n_embeddings"], out["n_organs"] = int(len(x)), int(len(np.unique(labels)))
    return out
