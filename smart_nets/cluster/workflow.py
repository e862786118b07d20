"""Task IV: cluster organs from frozen encoder features, no finetuning, for one or more encoders side by side."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn
from tqdm import tqdm

from smart_nets.cluster.embed import EncoderStage, pool_in_masks
from smart_nets.cluster.metrics import DEFINITIONS, cluster_metrics, standardize
from smart_nets.data.datalist import check_datalist_file
from smart_nets.io import atomic_path
from smart_nets.networks.pretrained import load_pretrained_encoder

__all__ = ["OrganClustering", "load_frozen_encoder", "organ_names_from"]

logger = logging.getLogger(__name__)


def load_frozen_encoder(encoder: nn.Module, path: str | os.PathLike) -> nn.Module:
    """``encoder`` with the weights of ``path``, in eval mode, with gradients off.

    ``path`` is any SMART artefact; :func:`smart_nets.networks.pretrained.load_pretrained_encoder` logs how many
    tensors matched and stops when none did."""
    load_pretrained_encoder(encoder, path)
    return encoder.eval().requires_grad_(False)


def organ_names_from(datalist: str | os.PathLike) -> dict[int, str]:
    """The ``organ_labels`` mapping of an MSD-style ``dataset.json`` (the phantoms write one), else ``{}``."""
    check_datalist_file(datalist)
    with open(datalist) as f:
        data = json.load(f)
    return {int(k): str(v) for k, v in data.get("organ_labels", {}).items()}


class OrganClustering:
    """Embed every (image, organ) pair with each frozen encoder and measure how well the embeddings cluster by organ.

    For each image: the encoder's stage features over the whole volume (``SlidingWindowInferer`` at ``roi_size``, so
    any volume size works), averaged inside each organ mask (:func:`pool_in_masks`). Then, per encoder, in the
    standardized embedding space: centroid distance, within-class spread, their ratio, silhouette and the adjusted
    Rand index of k-means with k = number of organs (``smart_nets.cluster.metrics.DEFINITIONS``).

    Writes to ``output_dir`` (each file atomically): ``cluster_metrics.json``, ``cluster_embeddings.npz``
    (``<encoder>_embeddings``, ``<encoder>_labels``, ``<encoder>_cases`` per encoder, and ``organ_names``) and
    ``cluster_scatter.png`` (PCA, and t-SNE where scikit-learn is installed; a row per encoder, coloured by organ).

    Args:
        encoders: ``{name: SMARTSwin}``, e.g. ``{"pretrained": ..., "random_init": ...}``.
        dataset: items with ``image_key`` ``(1, D, H, W)`` and ``organ_key`` ``(1, D, H, W)`` on the same grid.
        output_dir: where the three outputs go.
        stage: encoder stage to pool (0 = 1/2 resolution ... 4 = 1/32).
        roi_size: sliding-window size, a multiple of 32.
        organ_names: ``{label: name}`` for reports and legends; labels without a name are called ``organ_<n>``.
        organs: labels to embed (default: every non-zero label found).
        min_voxels: smallest organ, in voxels of the resampled label map, to embed.
        seed: k-means and t-SNE seed.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        dataset: Sequence,
        output_dir: str,
        stage: int = 3,
        roi_size: Sequence[int] = (96, 96, 96),
        sw_batch_size: int = 2,
        overlap: float = 0.25,
        device: str | torch.device = "cpu",
        image_key: str = "image",
        organ_key: str = "organs",
        organ_names: Mapping[int, str] | None = None,
        organs: Sequence[int] | None = None,
        min_voxels: int = 8,
        seed: int = 0,
        tsne: bool = True,
        progress: bool = True,
    ) -> None:
        if not encoders:
            raise ValueError("OrganClustering needs at least one encoder")
        self.device = torch.device(device)
        self.encoders = {k: EncoderStage(v, stage).to(self.device).eval() for k, v in encoders.items()}
        self.dataset, self.output_dir, self.stage = dataset, str(output_dir), int(stage)
        self.inferer = SlidingWindowInferer(tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap)
        self.image_key, self.organ_key = image_key, organ_key
        self.organ_names = {int(k): str(v) for k, v in (organ_names or {}).items()}
        self.organs, self.min_voxels, self.seed = organs, int(min_voxels), int(seed)
        self.tsne, self.progress = tsne, progress

    def _name(self, label: int) -> str:
        return self.organ_names.get(int(label), f"organ_{int(label)}")

    @torch.no_grad()
    def embed(self) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
        """``{encoder: (embeddings (N, C), organ labels (N,), case names (N,))}`` over the dataset."""
        rows: dict[str, tuple[list, list, list]] = {k: ([], [], []) for k in self.encoders}
        for i in tqdm(range(len(self.dataset)), desc="organ embeddings", unit="image", disable=not self.progress):
            item = self.dataset[i]
            image = torch.as_tensor(item[self.image_key])[None].to(self.device)
            meta = getattr(item[self.image_key], "meta", {})
            case = os.path.basename(str(meta.get("filename_or_obj", f"case_{i}")))
            for name, net in self.encoders.items():
                features = self.inferer(image, net)[0]
                pooled = pool_in_masks(features, item[self.organ_key], self.organs, self.min_voxels)
                for label, vector in pooled.items():
                    rows[name][0].append(vector)
                    rows[name][1].append(label)
                    rows[name][2].append(case)
        out = {}
        for name, (vectors, labels, cases) in rows.items():
            if not vectors:
                raise ValueError(
                    f"no organ of at least {self.min_voxels} voxels in any of the {len(self.dataset)} images"
                )
            out[name] = (np.stack(vectors), np.asarray(labels), cases)
        return out

    def run(self) -> dict:
        """Embed, measure, write the three outputs; returns the metrics ``{encoder: {metric: value}}``."""
        embeddings = self.embed()
        metrics = {name: cluster_metrics(x, y, seed=self.seed) for name, (x, y, _) in embeddings.items()}
        labels = sorted({int(v) for _, y, _ in embeddings.values() for v in y})
        report = {
            "stage": self.stage,
            "n_images": len(self.dataset),
            "organs": {str(v): self._name(v) for v in labels},
            "encoders": metrics,
            "definitions": DEFINITIONS,
        }
        os.makedirs(self.output_dir, exist_ok=True)
        with atomic_path(os.path.join(self.output_dir, "cluster_metrics.json")) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        arrays = {"organ_names": np.asarray([self._name(v) for v in labels]), "organ_labels": np.asarray(labels)}
        for name, (x, y, cases) in embeddings.items():
            arrays |= {f"{name}_embeddings": x, f"{name}_labels": y, f"{name}_cases": np.asarray(cases)}
        with atomic_path(os.path.join(self.output_dir, "cluster_embeddings.npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        self._scatter(embeddings, metrics, labels)
        keys = ("inter_class_distance", "separation_ratio", "silhouette", "kmeans_ari")
        for name, m in metrics.items():
            logger.info(f"{name}: " + ", ".join(f"{k} {m[k]:.3f}" for k in keys) + f" ({m['n_embeddings']} embeddings)")
        return metrics

    def _scatter(self, embeddings: dict, metrics: dict, labels: list[int]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        try:
            from sklearn.manifold import TSNE
        except ImportError:
            TSNE = None
            logger.info("scikit-learn is not installed: the scatter plot shows PCA only")
        methods = ["PCA"] + (["t-SNE"] if self.tsne and TSNE is not None else [])
        width = 5.5 * len(methods) + 2.0  # room for the legend on the right
        fig, axes = plt.subplots(len(embeddings), len(methods), figsize=(width, 4.5 * len(embeddings)))
        axes = np.atleast_2d(axes).reshape(len(embeddings), len(methods))
        colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(labels), 2)))
        for row, (name, (x, y, _)) in enumerate(embeddings.items()):
            z = standardize(x)
            for col, method in enumerate(methods):
                if method == "PCA":
                    u, s, _ = np.linalg.svd(z - z.mean(0), full_matrices=False)
                    xy = u[:, :2] * s[:2]
                else:
                    perplexity = float(max(2, min(30, (len(z) - 1) // 3)))
                    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=self.seed).fit_transform(z)
                ax = axes[row, col]
                for i, label in enumerate(labels):
                    sel = y == label
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=18, color=colours[i], label=self._name(label))
                m = metrics[name]
                ax.set_title(f"{name}, {method}: silhouette {m['silhouette']:.2f}, ARI {m['kmeans_ari']:.2f}")
                ax.set_xticks([]), ax.set_yticks([])
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="center right", fontsize=8, title="organ")
        fig.suptitle(f"Organ embeddings from frozen encoders (stage {self.stage}), no finetuning")
        fig.tight_layout(rect=(0, 0, 1 - 2.0 / width, 0.96))
        with atomic_path(os.path.join(self.output_dir, "cluster_scatter.png")) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
