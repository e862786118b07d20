"""Task IV of SMART: organ clustering from frozen encoder features (``bundles/smart_pretrain/configs/cluster.json``)."""

from smart_nets.cluster.embed import EncoderStage, pool_in_masks
from smart_nets.cluster.metrics import (
    DEFINITIONS,
    adjusted_rand_index,
    centroid_separation,
    cluster_metrics,
    kmeans,
    silhouette_score,
    standardize,
)
from smart_nets.cluster.probes import knn_probe, linear_probe
from smart_nets.cluster.workflow import OrganClustering, load_frozen_encoder, organ_names_from

__all__ = [
    "DEFINITIONS",
    "EncoderStage",
    "OrganClustering",
    "adjusted_rand_index",
    "centroid_separation",
    "cluster_metrics",
    "kmeans",
    "knn_probe",
    "linear_probe",
    "load_frozen_encoder",
    "organ_names_from",
    "pool_in_masks",
    "silhouette_score",
    "standardize",
]
