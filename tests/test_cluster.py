"""Task IV organ clustering: the metrics on embeddings with known answers, mask pooling, and the bundle workflow."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics import silhouette_score as sklearn_silhouette

from smart_nets.cluster import (
    adjusted_rand_index,
    centroid_separation,
    cluster_metrics,
    pool_in_masks,
    silhouette_score,
    standardize,
)
from tests.helpers import REPO, demo_network, error_chain, make_phantoms, run_bundle

BUNDLE = REPO / "bundles" / "smart_pretrain"


def _blobs(spread: float, seed: int = 0, n: int = 12, k: int = 4, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    labels = np.repeat(np.arange(k), n)
    return centres[labels] + rng.normal(size=(k * n, dim)) * spread, labels


def test_centroid_separation_on_a_hand_computed_case():
    x = np.array([[-1.0, 0], [1, 0], [9, 0], [11, 0]])
    got = centroid_separation(x, np.array([0, 0, 1, 1]))
    assert got == {"inter_class_distance": 10.0, "within_class_spread": 1.0, "separation_ratio": 10.0}


def test_metrics_separate_well_clustered_from_mixed_embeddings():
    x, labels = _blobs(spread=0.5)
    separated = cluster_metrics(x, labels)
    assert separated["kmeans_ari"] == pytest.approx(1.0) and separated["silhouette"] > 0.8
    assert separated["separation_ratio"] > 5 and separated["n_organs"] == 4 and separated["n_embeddings"] == 48
    mixed = cluster_metrics(x, np.random.default_rng(1).permutation(labels))  # organ labels unrelated to position
    assert mixed["kmeans_ari"] < 0.2 and mixed["silhouette"] < 0.05 and mixed["separation_ratio"] < 1


@pytest.mark.parametrize("spread", [0.5, 5.0, 20.0])
def test_silhouette_and_ari_equal_scikit_learns(spread):
    x, labels = _blobs(spread, seed=2)
    z = standardize(x)
    assert silhouette_score(z, labels) == pytest.approx(sklearn_silhouette(z, labels), abs=1e-10)
    predicted = np.random.default_rng(3).integers(0, 5, size=len(labels))
    assert adjusted_rand_index(labels, predicted) == pytest.approx(adjusted_rand_score(labels, predicted), abs=1e-12)
    assert adjusted_rand_index(labels, (labels + 1) % 4) == 1.0  # same partition, other names


def test_metrics_refuse_a_single_organ():
    with pytest.raises(ValueError, match="at least two organs"):
        cluster_metrics(np.zeros((4, 3)), np.ones(4))


def test_mask_pooling_ignores_everything_outside_the_organ_and_skips_absent_organs():
    features = torch.randn(5, 4, 4, 4)
    organs = torch.zeros(1, 8, 8, 8, dtype=torch.long)  # image grid twice the feature grid
    organs[0, :4, :4, :4] = 3  # exactly feature cell (0..1, 0..1, 0..1)
    organs[0, 4:, 4:, 6:] = 7  # half of each cell (2..3, 2..3, 3)
    features[:, 2:, :, :] = 1e6  # only outside organ 3
    features[:, :2, 2:, :] = -1e6
    expected = features[:, :2, :2, :2].mean(dim=(1, 2, 3)).numpy()
    pooled = pool_in_masks(features, organs)
    assert sorted(pooled) == [3, 7]
    np.testing.assert_allclose(pooled[3], expected, rtol=1e-5)
    assert set(pool_in_masks(features, organs, labels=[3, 5])) == {3}  # 5 is absent: skipped, no error
    assert set(pool_in_masks(features, organs, min_voxels=50)) == {3}  # organ 3 has 64 voxels, organ 7 has 32


def test_cluster_workflow_on_four_phantoms_writes_metrics_embeddings_and_scatter(tmp_path):
    data = tmp_path / "data"
    make_phantoms(data, 8, val_fraction=0.5)
    torch.save(demo_network("smart_pretrain").encoder.state_dict(), tmp_path / "encoder.pt")
    log = run_bundle(
        BUNDLE,
        ["train.json", "demo.json", "cluster.json"],
        cwd=tmp_path,
        dataset_dir=data,
        cluster_weights=tmp_path / "encoder.pt",
        output_dir=tmp_path / "out",
        cluster_stage=2,
    )
    out = tmp_path / "out" / "clusters"
    report = json.loads((out / "cluster_metrics.json").read_text())
    assert set(report["encoders"]) == {"pretrained", "random_init"} and report["n_images"] == 4
    for metrics in report["encoders"].values():
        assert {"inter_class_distance", "separation_ratio", "silhouette", "kmeans_ari"} <= set(metrics)
        assert -1 <= metrics["silhouette"] <= 1 and metrics["n_organs"] >= 8
    assert "liver" in report["organs"].values() and "inter_class_distance" in report["definitions"]
    arrays = np.load(out / "cluster_embeddings.npz")
    x, labels = arrays["pretrained_embeddings"], arrays["pretrained_labels"]
    assert x.shape == (len(labels), 48) and len(set(arrays["pretrained_cases"].tolist())) == 4  # stage 2: 4 x 12
    assert (out / "cluster_scatter.png").stat().st_size > 10_000
    assert "pretrained encoder: 104 of 104 tensors loaded" in log
    assert not list(out.glob(".tmp-*"))


def test_an_organ_map_of_another_shape_names_both_files(tmp_path):
    data = tmp_path / "data"
    make_phantoms(data, 2)
    item = json.loads((data / "dataset.json").read_text())["training"][0]
    image, organs = data / item["image"], data / item["organs"]
    cropped = nib.load(organs)
    nib.save(nib.Nifti1Image(np.asanyarray(cropped.dataobj)[:, :, :30], cropped.affine), organs)
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in ("train.json", "demo.json", "cluster.json")])
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("cluster_preprocessing")({"image": str(image), "organs": str(organs)})
    message = " ".join(error_chain(info.value))
    assert str(image) in message and str(organs) in message and "(64, 64, 32)" in message and "(64, 64, 30)" in message
    shutil.rmtree(data)
