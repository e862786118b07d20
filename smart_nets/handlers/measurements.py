"""One CSV row of tumour measurements per case of a segmentation evaluator."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from smart_nets.io import write_csv
from smart_nets.metrics.measurements import MEASUREMENT_COLUMNS, tumour_measurements

__all__ = ["TumourMeasurements"]

logger = logging.getLogger(__name__)


class TumourMeasurements:
    """Measure the predicted tumour of every case (:func:`smart_nets.metrics.tumour_measurements`) and write
    ``<output_dir>/<filename>``: ``image`` (the input's path) then :data:`MEASUREMENT_COLUMNS`.

    Attach it to an evaluator whose postprocessing has brought ``pred_key`` back to the input's grid (``Invertd``)
    and made it a label map (``AsDiscreted(argmax=True)``), so that the mask's affine is the input's. The file is
    rewritten atomically after every case, so an interrupted run leaves the rows of the cases it finished.

    Args:
        output_dir: folder of the CSV file.
        filename: its name.
        pred_key: the label map in each decollated output item.
        foreground: the label value counted as tumour.
        trained_on: what the weights were trained on (:func:`smart_nets.provenance.describe`), a last column
            ``model_trained_on`` of every row; None: no such column.
    """

    def __init__(
        self,
        output_dir: str,
        filename: str = "measurements.csv",
        pred_key: str = "pred",
        foreground: int = 1,
        trained_on: str | None = None,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.pred_key, self.foreground, self.trained_on = pred_key, foreground, trained_on
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s start and iterations."""
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for item in engine.state.output:  # decollated: one dict per case
            pred = item[self.pred_key]
            affine = getattr(pred, "affine", None)
            if affine is None:
                raise ValueError(f"'{self.pred_key}' carries no affine: measure a MetaTensor in the input's grid")
            mask = torch.as_tensor(pred).detach().cpu().numpy()
            mask = mask[0] if mask.ndim == 4 else mask  # channel-first label map
            image = pred.meta.get("filename_or_obj", f"case_{len(self.rows)}")
            row = {"image": str(image), **tumour_measurements(mask == self.foreground, np.asarray(affine))}
            if self.trained_on is not None:
                row["model_trained_on"] = self.trained_on
            self.rows.append(row)
            logger.debug("measured %s: %s", os.path.basename(str(image)), row)
        extra = ["model_trained_on"] if self.trained_on is not None else []
        write_csv(self.path, self.rows, ["image", *MEASUREMENT_COLUMNS, *extra])
