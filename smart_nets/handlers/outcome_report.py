"""Per-case outcome predictions, and for labelled data the AUC report with its bootstrap interval and ROC plot."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from smart_nets.io import atomic_path, write_csv
from smart_nets.metrics import bootstrap_auc, threshold_metrics

__all__ = ["OutcomeReport"]

logger = logging.getLogger(__name__)


class OutcomeReport:
    """Collect ``softmax`` probabilities per case from an evaluator; at the end write ``predictions.csv`` and, when
    labels are present, ``metrics.json`` (ROC AUC with bootstrap CI, accuracy, sensitivity, specificity at
    ``threshold``) and ``roc.png``. Every file is written atomically.

    Args:
        output_dir: folder of the outputs.
        positive_class: the class whose probability is the score (binary endpoints: 1).
        threshold: probability threshold for accuracy, sensitivity and specificity.
        n_bootstrap: bootstrap resamples of the AUC interval.
        with_labels: expect ``label`` in the batch (evaluation) or not (inference).
        endpoint: name of the endpoint, written into the report.
        trained_on: what the weights were trained on (:func:`smart_nets.provenance.describe`): a
            ``model_trained_on`` column of every prediction and a key of the report; None: neither.

    Raises:
        ValueError: at completion, for a single-class labelled set (AUC undefined), naming the counts.
    """

    def __init__(
        self,
        output_dir: str,
        positive_class: int = 1,
        threshold: float = 0.5,
        n_bootstrap: int = 2000,
        with_labels: bool = True,
        endpoint: str = "endpoint",
        trained_on: str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.positive_class, self.threshold, self.n_bootstrap = positive_class, threshold, n_bootstrap
        self.with_labels, self.endpoint, self.trained_on = with_labels, endpoint, trained_on
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s start, iterations and completion."""
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:  # decollated: one dict per case
            probs = torch.softmax(torch.as_tensor(item["pred"]).float().flatten(), dim=0)
            meta = getattr(item["image"], "meta", {})
            case = os.path.basename(str(meta.get("filename_or_obj", len(self.rows))))
            row = {"case": case, **{f"prob_{k}": float(p) for k, p in enumerate(probs)}}
            row["predicted_class"] = int(probs.argmax())
            if self.with_labels:
                label = torch.as_tensor(item["label"]).flatten()
                row["label"] = int(label.argmax() if label.numel() > 1 else label.item())  # one-hot or index
            if self.trained_on is not None:
                row["model_trained_on"] = self.trained_on
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        write_csv(self.output_dir / "predictions.csv", self.rows, list(self.rows[0]) if self.rows else ["case"])
        logger.info("wrote %d predictions to %s", len(self.rows), self.output_dir / "predictions.csv")
        if not self.with_labels:
            return
        y = np.array([r["label"] for r in self.rows]) == self.positive_class
        score = np.array([r[f"prob_{self.positive_class}"] for r in self.rows])
        report = {"endpoint": self.endpoint, **bootstrap_auc(y, score, self.n_bootstrap)}
        report.update(threshold_metrics(y, score, self.threshold))
        if self.trained_on is not None:
            report["model_trained_on"] = self.trained_on
        with atomic_path(self.output_dir / "metrics.json") as tmp:
            tmp.write_bytes((json.dumps(report, indent=2) + "\n").encode())
        self._plot(y, score, report)
        logger.info(
            "%s: AUC %.3f (95%% CI %.3f-%.3f, n=%d), accuracy %.3f, sensitivity %.3f, specificity %.3f at %.2f",
            self.endpoint,
            report["auc"],
            report["ci_low"],
            report["ci_high"],
            report["n"],
            report["accuracy"],
            report["sensitivity"],
            report["specificity"],
            self.threshold,
        )

    def _plot(self, y: np.ndarray, score: np.ndarray, report: dict) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        order = np.argsort(-score, kind="mergesort")
        tpr = np.concatenate([[0.0], np.cumsum(y[order]) / y.sum()])
        fpr = np.concatenate([[0.0], np.cumsum(~y[order]) / (~y).sum()])
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot(
            fpr, tpr, lw=2, label=f"AUC {report['auc']:.3f} (95% CI {report['ci_low']:.2f}-{report['ci_high']:.2f})"
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{self.endpoint} (n = {report['n']})")
        ax.legend(loc="lower right")
        with atomic_path(self.output_dir / "roc.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
