"""A MONAI Label app serving this project's bundles (``smart_seg``, ``smart_response``) from local folders.

It does what MONAI Label's ``monaibundle`` sample app does with MONAI Label's own tasks (``BundleInferTask``,
``BundleTrainTask``), with three differences:

- Bundles come only from ``<app>/model/<name>`` (a packaged zip unpacked there, weights in ``models/model.pt``):
  nothing is downloaded, and a missing folder stops the app with its path. ``--conf models smart_seg,smart_response``
  names them.
- A classifier is served as one. MONAI Label takes a bundle's task from its folder name (``BundleInferTask._get_type``:
  only names containing "classification" are classifiers; anything else is a segmentation, whose ``Restored``
  post-transform resizes the prediction to the image grid and fails on a class vector). Here a bundle is a classifier
  when its name says so or when its metadata's output has ``"format": "classes"`` (``smart_response``); it is served
  with type ``classification``, without ``Restored``, and with a softmax, so that ``/infer`` returns class
  probabilities (``{"prediction": [{"idx", "label", "score"}, ...]}``).
- Only segmentation bundles get a trainer: MONAI Label's datastore holds label masks, and a classifier's label is an
  image-level endpoint it has no place for. ``/info/``'s ``labels`` (3D Slicer's segment names) come from the
  segmentation bundles only.

3D Slicer's MONAI Label module lists segmentation (and DeepGrow, DeepEdit, scribbles) models only; ``smart_response``
answers ``POST /infer/smart_response?image=<id>`` (``monailabel.client.MONAILabelClient.infer``) with JSON.

Config (``--conf key value``): ``models`` (comma-separated folder names under ``model/``), ``preload`` (``false``),
``skip_trainers`` (``false``).
"""

from __future__ import annotations

import json
import logging
import os

import monailabel
from monai.transforms import Activationsd
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


def is_classifier(name: str, bundle: str) -> bool:
    """MONAI Label's rule (the name contains "classification") or the metadata's first output is ``classes``."""
    if "classification" in name.lower():
        return True
    with open(os.path.join(bundle, "configs", "metadata.json")) as f:
        outputs = json.load(f).get("network_data_format", {}).get("outputs", {})
    return bool(outputs) and next(iter(outputs.values())).get("format") == "classes"


class ClassifierInferTask(BundleInferTask):
    """``BundleInferTask`` for an image-level classifier: type ``classification`` (MONAI Label's
    ``ClassificationWriter`` answers JSON, no mask), no ``Restored`` post-transform, and a softmax over the class
    axis after the bundle's own post-processing, so that the scores are probabilities."""

    def __init__(self, path: str, conf: dict):
        super().__init__(path, conf, type=InferType.CLASSIFICATION, add_post_restore=False)

    def post_transforms(self, data=None):
        return list(super().post_transforms(data)) + [Activationsd(keys=self.key_pred, softmax=True)]


class SmartBundleApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        names = [m.strip() for m in conf.get("models", "").split(",") if m.strip()]
        if not names:
            raise ValueError("no bundles to serve: start the server with --conf models smart_seg,smart_response")
        self.models = {}
        for name in names:
            path = os.path.join(app_dir, "model", name)
            if not os.path.isfile(os.path.join(path, "configs", "metadata.json")):
                raise FileNotFoundError(
                    f"bundle {name!r} not found: {path} should hold an unpacked bundle (configs/metadata.json, "
                    "models/model.pt)"
                )
            self.models[name] = path
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"SMART bundles (MONAI Label {monailabel.__version__})",
            description="SMART tumour segmentation and outcome prediction bundles, served from local folders",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = (
                ClassifierInferTask(path, self.conf) if is_classifier(name, path) else BundleInferTask(path, self.conf)
            )
            if not task.is_valid():
                raise RuntimeError(f"MONAI Label cannot serve bundle {name!r} from {path}; see the log above")
            # MONAI Label offers every models/*.pt as a choice of weights; only model.pt holds the network (a
            # training run leaves its resumable checkpoint.pt beside it, which would load nothing and serve random
            # weights with a warning)
            task._config["model_filename"] = ["model.pt"]
            logger.info(f"+++ Adding Inferer:: {name} => {task.type} ({path})")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.models.items():
            if is_classifier(name, path):
                logger.info(
                    f"+++ No trainer for {name}: a classifier's labels are not masks in MONAI Label's datastore"
                )
                continue
            task = BundleTrainTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Trainer:: {name} => {path}")
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def info(self):
        """MONAI Label's ``/info/``, with ``labels`` (which 3D Slicer turns into segments) merged from the
        segmentation models only, not from a classifier's class names, and for each model ``trained_on``: what its
        ``models/model.pt`` was trained on (``smart_nets.provenance``); the description of a model trained on
        synthetic data starts by saying so."""
        meta = super().info()
        labels: list[str] = []
        for model in meta["models"].values():
            if model.get("type") != InferType.CLASSIFICATION and isinstance(model.get("labels"), dict):
                labels += [k for k, _ in sorted(model["labels"].items(), key=lambda kv: kv[1]) if k not in labels]
        meta["labels"] = labels
        provenance = _provenance(next(iter(self.models.values())))
        for name, path in self.models.items():
            if name not in meta["models"]:
                continue
            record = provenance.from_file(os.path.join(path, "models", "model.pt"), missing_ok=True)
            model = meta["models"][name]
            model["trained_on"] = provenance.describe(record)
            if provenance.is_synthetic(record):
                model["description"] = f"[{provenance.SYNTHETIC_WARNING}] {model.get('description', '')}".strip()
        return meta


def _provenance(bundle: str):
    """``smart_nets.provenance``: installed, or the copy a packaged bundle carries in ``scripts/smart_nets``."""
    try:
        from smart_nets import provenance
    except ImportError:
        import sys

        sys.path.insert(0, os.path.join(bundle, "scripts"))
        from smart_nets import provenance
    return provenance
