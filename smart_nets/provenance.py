"""What a weights file was trained on: a small record saved inside the file, read back wherever it is loaded.

A model trained on synthetic phantoms segments a real CT without complaint and its numbers look like measurements
(on two real lung CTs the demo's model reported 169 mL and 842 mL of tumour where radiologists drew 1.4 mL and 48 mL).
So every weights file a bundle writes carries a record, as model cards do: the bundle and its version, the
datalist, how many cases, whether they were synthetic, the date, and the record of the pretrained weights it started
from. Inference prints it when it loads the weights, and every output of weights trained on synthetic data says so
(the log, ``measurements.csv``, the DICOM-SEG series description, MONAI Label's ``/info``).

Where it lives: in the state dict's ``_metadata`` (the per-module dict PyTorch already saves with every
``state_dict()`` for its version numbers), under ``_metadata[""]["smart_provenance"]``. A weights file stays a
plain state dict: ``module.load_state_dict(torch.load(path, weights_only=True))`` and MONAI's ``CheckpointLoader``
read it as before, and ``weights_only`` loading keeps the record (plain strings, numbers and dicts). A copy made
with ``dict(state_dict)`` drops it, which is why :func:`attach` is called on the dict that is saved.

A datalist says its data are synthetic with a top-level ``"synthetic": true`` (``smart_nets.data.phantoms`` writes
it); anything else is recorded as "not marked synthetic", which is not the same as real.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "KEY",
    "attach",
    "check_encoder",
    "describe",
    "describe_arch",
    "from_file",
    "is_synthetic",
    "read",
    "series_description",
    "training_record",
    "warn_if_synthetic",
]

logger = logging.getLogger(__name__)

KEY = "smart_provenance"
SYNTHETIC_WARNING = "TRAINED ON SYNTHETIC DATA: its outputs on real CT are not measurements"


def training_record(
    datalist: str | os.PathLike,
    bundle_root: str | os.PathLike,
    items: Sequence | None = None,
    synthetic: bool | None = None,
    pretrained: str | os.PathLike | None = None,
    encoder: Any = None,
) -> dict:
    """The record of a training run, made when the bundle's config is parsed.

    Args:
        datalist: the MSD-style ``dataset.json`` named in the config; its ``name`` and top-level ``synthetic`` flag
            are read when it exists.
        bundle_root: the bundle's folder; ``configs/metadata.json`` gives its name and version.
        items: the training items the run really uses (the config's ``train#dataset#data``), counted; MONAI Label
            replaces them with its datastore's while ``datalist`` may not exist. None: the datalist's ``training``.
        synthetic: overrides the datalist's flag (for a datalist that does not say).
        pretrained: the weights the run starts from (a SMART encoder); their own record, if any, is kept as
            ``pretrained``. Empty or None: none.
        encoder: the network's ``SMARTSwin``; its ``arch`` (the sizes its weights need) is kept as ``encoder``, so
            that a model file says what it is and a loader can name both sides of a mismatch
            (:func:`check_encoder`).

    Raises:
        FileNotFoundError: when ``items`` is None and ``datalist`` does not exist.
        ValueError: when ``datalist`` exists but is not a JSON object.
    """
    path = Path(datalist)
    data: dict = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"datalist {path} is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"datalist {path} is not a JSON object with a 'training' list")
    elif items is None:
        raise FileNotFoundError(f"datalist {path} does not exist: cannot record what the weights are trained on")
    if items is None:
        items = data.get("training", [])
    meta_file = Path(bundle_root) / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    import smart_nets

    record: dict[str, Any] = {
        "bundle": meta.get("name", Path(bundle_root).resolve().name),
        "bundle_version": meta.get("version", "unknown"),
        "smart_nets": smart_nets.__version__,
        "data": str(path.resolve()) if data else "items given to the run (no datalist file)",
        "data_name": str(data.get("name", "")),
        "num_cases": len(items),
        "synthetic": bool(data.get("synthetic", False)) if synthetic is None else bool(synthetic),
        "date": datetime.date.today().isoformat(),
    }
    if getattr(encoder, "arch", None):
        record["encoder"] = dict(encoder.arch)
    if pretrained:
        record["pretrained"] = from_file(pretrained) or {"file": str(pretrained), "record": "none"}
    return record


def put_metadata(state_dict: Mapping, key: str, value: Mapping) -> Mapping:
    """Put ``value`` under ``key`` in ``state_dict``'s root metadata (in place, and returned), where PyTorch keeps it
    through ``torch.save`` and ``weights_only`` loading. A dict without PyTorch's ``_metadata`` (not from
    ``state_dict()``) is copied into an ``OrderedDict`` that has it."""
    if not hasattr(state_dict, "_metadata"):
        state_dict = OrderedDict(state_dict)
        state_dict._metadata = OrderedDict()  # type: ignore[attr-defined]
    state_dict._metadata.setdefault("", {})[key] = dict(value)  # type: ignore[attr-defined]
    return state_dict


def get_metadata(state_dict: Any, key: str) -> dict | None:
    """What :func:`put_metadata` put under ``key`` in ``state_dict``; None without it."""
    root = (getattr(state_dict, "_metadata", None) or {}).get("", {})
    value = root.get(key) if isinstance(root, Mapping) else None
    return dict(value) if isinstance(value, Mapping) else None


def attach(state_dict: Mapping[str, torch.Tensor], record: Mapping | None) -> Mapping[str, torch.Tensor]:
    """Put ``record`` into ``state_dict``'s metadata (in place, and returned; :func:`put_metadata`); None leaves it
    as it is."""
    return state_dict if record is None else put_metadata(state_dict, KEY, record)


def read(state_dict: Any) -> dict | None:
    """The record in a loaded state dict, or in the network of a ``{"model": ...}`` or resumable ``{"network": ...}``
    checkpoint; None without one."""
    for key in ("model", "network"):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(key), Mapping):
            state_dict = state_dict[key]
            break
    return get_metadata(state_dict, KEY)


def from_file(path: str | os.PathLike, missing_ok: bool = False) -> dict | None:
    """The record in a weights file, or None for a file without one (memory-mapped: the tensors are not read).

    ``missing_ok``: None for a file that does not exist (inference configs read the record of ``models/model.pt``
    while they are parsed, before the checkpoint loader reports a missing file in its own words; the ONNX and
    TensorRT paths read the weights their graph was exported from, where they are).

    Raises:
        FileNotFoundError, ValueError: as :func:`smart_nets.io.check_checkpoint_file`, or a file ``weights_only``
            loading refuses (:func:`smart_nets.io.refused`), naming the file.
    """
    from smart_nets.io import read_checkpoint

    if missing_ok and not os.path.isfile(path):
        return None
    return read(read_checkpoint(path, mmap=True))


def is_synthetic(record: Mapping | None) -> bool:
    """Whether the weights, or the pretrained weights they started from, were trained on synthetic data."""
    while record:
        if record.get("synthetic"):
            return True
        record = record.get("pretrained") if isinstance(record.get("pretrained"), Mapping) else None
    return False


def describe(record: Mapping | None) -> str:
    """One line for logs and files: who trained the weights on what; synthetic data first and in capitals."""
    if not record:
        return "unknown (the weights file carries no training record)"

    def one(r: Mapping) -> str:
        data = r.get("data_name") or r.get("data", "?")
        kind = "SYNTHETIC" if r.get("synthetic") else "not marked synthetic"
        who = f"{r.get('bundle', '?')} {r.get('bundle_version', '?')}"
        return f"{who} on {r.get('num_cases', '?')} cases of {data} ({kind}, {r.get('date', '?')})"

    text = one(record)
    parent = record.get("pretrained")
    if isinstance(parent, Mapping) and parent.get("bundle"):
        text += f", from weights pretrained by {one(parent)}"
    return (SYNTHETIC_WARNING + ": " if is_synthetic(record) else "") + text


def warn_if_synthetic(record: Mapping | None, source: str | os.PathLike) -> None:
    """Log where the weights in ``source`` come from; a warning when they were trained on synthetic data."""
    if is_synthetic(record):
        logger.warning("%s: %s", source, describe(record))
    else:
        logger.info("%s: trained by %s", source, describe(record))


def series_description(base: str, record: Mapping | None) -> str:
    """A DICOM SeriesDescription (at most 64 characters) that says when the weights were trained on synthetic data:
    a long ``base`` is shortened, never the warning."""
    mark = " [SYNTHETIC-TRAINED]" if is_synthetic(record) else ""
    return base[: 64 - len(mark)] + mark


def describe_arch(arch: Mapping) -> str:
    """``SMARTSwin preset 'demo'`` when ``arch`` has a preset's sizes, else ``SMARTSwin(feature_size=..., ...)``."""
    from smart_nets.networks.nets.presets import ENCODER_PRESETS

    for name, preset in ENCODER_PRESETS.items():
        if all(_same(arch.get(k), v) for k, v in preset.items()):
            return f"SMARTSwin preset {name!r}"
    return "SMARTSwin(" + ", ".join(f"{k}={v}" for k, v in arch.items()) + ")"


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    if isinstance(b, int) and isinstance(a, (list, tuple)):  # window_size 4 == [4, 4, 4]
        return list(a) == [b] * len(a)
    return norm(a) == norm(b)


def check_encoder(record: Mapping | None, encoder: Any, source: str | os.PathLike) -> None:
    """Stop when the weights in ``source`` were saved from another encoder than ``encoder`` (a ``SMARTSwin``),
    naming both: the file's record (:func:`training_record`) keeps the encoder's ``arch``. Nothing to compare (an old
    file, another network) passes.

    Raises:
        ValueError: naming the file, what it holds and what the config builds, and the fields that differ.
    """
    saved, built = (record or {}).get("encoder"), getattr(encoder, "arch", None)
    if not saved or not built:
        return
    differ = [k for k in built if k in saved and not _same(saved[k], built[k])]
    if differ:
        raise ValueError(
            f"{source} holds the weights of a {describe_arch(saved)}, but this config builds a "
            f"{describe_arch(built)}: {', '.join(f'{k} {saved[k]} vs {built[k]}' for k in differ)}. Build the encoder "
            "the file was trained with (encoder_def#preset, or these fields of encoder_def)."
        )
