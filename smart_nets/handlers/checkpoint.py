"""Atomic checkpoints for long runs (a best-model file that records its score, so a resumed run keeps it), and a
checkpoint loader whose errors name the file and that restores a trainer before it runs."""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from smart_nets import provenance
from smart_nets.io import atomic_path, check_checkpoint_file, read_checkpoint, refused

__all__ = ["SCORE_KEY", "AtomicCheckpoint", "CheckedCheckpointLoader", "atomic_torch_save", "read_score"]

logger = logging.getLogger(__name__)

# where a best-model file keeps the validation score it was saved for: beside the training record
# (smart_nets.provenance) in each network's state-dict metadata, so the file stays a plain state dict
SCORE_KEY = "smart_best_score"


def read_score(path: str | os.PathLike) -> dict | None:
    """The score a best-model file was saved for, ``{"metric": name, "value": v, "epoch": e}``; None for a missing
    file or one without it (written before smart-nets 0.10.1, or not by a ``key_metric`` checkpoint). The file is
    memory-mapped: its tensors are not read.

    Raises:
        ValueError: for a truncated or foreign file (:func:`smart_nets.io.check_checkpoint_file`).
    """
    if not os.path.isfile(path):
        return None
    state = read_checkpoint(path, mmap=True)
    candidates = [state] + (list(state.values()) if isinstance(state, Mapping) else [])
    for sd in candidates:
        score = provenance.get_metadata(sd, SCORE_KEY)
        if score is not None:
            return score
    return None


def _attach_score(state_dict: Mapping, score: Mapping) -> Mapping:
    """Put ``score`` into ``state_dict``'s metadata, beside the training record."""
    return provenance.put_metadata(state_dict, SCORE_KEY, score)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A run killed mid-write leaves the previous file intact under its name, never a truncated one.
    """
    with atomic_path(path) as tmp:  # atomic_path fsyncs the file and the folder around the rename
        torch.save(obj, tmp)


class AtomicCheckpoint:
    """Save the state dicts of ``save_dict`` to one file, every N iterations and/or epochs and at completion.

    MONAI's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)``, so a run killed while saving can
    leave a truncated checkpoint in place of the last good one; this handler always writes atomically
    (:func:`atomic_torch_save`) to a fixed name that resumption can point at. Only rank 0 writes.

    Args:
        save_dict: objects with ``state_dict()`` (networks, optimizer, loss, the trainer itself).
        path: file to write, e.g. ``models/checkpoint.pt``.
        every_n_iterations: save every N iterations (0: never).
        every_n_epochs: save every N epochs (0: never).
        on_completed: save when the run completes.
        unwrap_single: with a single entry, save its state dict itself rather than ``{name: state_dict}`` (a plain
            weights file that ``module.load_state_dict(torch.load(path, weights_only=True))`` reads).
        key_metric: attach to an evaluator instead and save only when ``engine.state.metrics[key_metric]`` beats
            the best value seen so far (higher is better); the interval arguments are then ignored. The file records
            the score it was saved for (``{"metric", "value", "epoch"}`` in each network's state-dict metadata,
            :func:`read_score`).
        resume: with ``key_metric``, a resumed run: the best value so far is the score recorded in the existing
            ``path`` (read at the first validation), so a validation after resuming replaces that file only with a
            better model (without it, or for a file that is missing, unreadable, or records no score, a NaN one or
            another metric's, the best starts at -inf and the first validation overwrites the file).
        save_engine_as: also save the engine this handler is attached to, under this key, first. A bundle config
            cannot name the trainer inside the trainer's own handler list (a reference cycle), so a resumable
            checkpoint in ``train#handlers`` says ``"save_engine_as": "trainer"`` instead.
        provenance: what the weights are trained on (:func:`smart_nets.provenance.training_record`), saved inside
            every network's state dict (:func:`smart_nets.provenance.attach`; the file stays a plain state dict).

    Raises:
        ValueError: when ``save_dict`` is empty or an entry has no ``state_dict``.
    """

    def __init__(
        self,
        save_dict: dict[str, Any],
        path: str,
        every_n_iterations: int = 0,
        every_n_epochs: int = 1,
        on_completed: bool = True,
        unwrap_single: bool = False,
        key_metric: str | None = None,
        save_engine_as: str | None = None,
        provenance: dict | None = None,
        resume: bool = False,
    ) -> None:
        bad = [k for k, v in save_dict.items() if not callable(getattr(v, "state_dict", None))]
        if (not save_dict and not save_engine_as) or bad:
            raise ValueError(f"save_dict needs objects with state_dict(); empty or without it: {bad or 'empty'}")
        self.save_dict = save_dict
        self.path = path
        self.every_n_iterations = every_n_iterations
        self.every_n_epochs = every_n_epochs
        self.on_completed = on_completed
        self.unwrap_single = unwrap_single
        self.key_metric = key_metric
        self.save_engine_as = save_engine_as
        self.provenance = provenance
        self.resume = bool(resume)  # read the file's score at the first validation (after the trainer is restored)
        self.best = float("-inf")
        self._score: dict | None = None

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s iteration, epoch and completion events (epoch completion only with a key
        metric)."""
        if self.save_engine_as:
            self.save_dict = {self.save_engine_as: engine, **self.save_dict}
        if self.key_metric is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_if_better)
            return
        if self.every_n_iterations > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
        if self.every_n_epochs > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)
        if self.on_completed:
            engine.add_event_handler(Events.COMPLETED, self)

    def _restore_best(self) -> None:
        """Resuming: start from the score the existing best-model file records (a NaN one counts as none; an
        unreadable file is an output to replace, not a reason to stop)."""
        self.resume = False
        try:
            score = read_score(self.path)
        except (ValueError, RuntimeError, OSError) as e:
            logger.warning(
                "cannot read the score of %s (%s): the first validation after resuming replaces it", self.path, e
            )
            return
        if score is None:
            if os.path.isfile(self.path):
                logger.warning(
                    "%s records no %s score (written before smart-nets 0.10.1?): the first validation after resuming "
                    "replaces it, whatever its score",
                    self.path,
                    self.key_metric,
                )
            return
        value = float(score.get("value", float("nan")))
        if score.get("metric") != self.key_metric:
            logger.warning(
                "%s records a %s score, not %s: the first validation after resuming replaces it",
                self.path,
                score.get("metric"),
                self.key_metric,
            )
        elif math.isnan(value):
            logger.info("%s was saved for a NaN %s: the next comparable value replaces it", self.path, self.key_metric)
        else:
            self.best = value
            logger.info(
                "resuming: %s holds the best %s so far, %.4g (epoch %s); only a better model replaces it",
                self.path,
                self.key_metric,
                value,
                score.get("epoch", "?"),
            )

    def _save_if_better(self, engine: Engine) -> None:
        if self.resume:
            self._restore_best()
        value = float(engine.state.metrics[self.key_metric])
        self._score = {"metric": self.key_metric, "value": value, "epoch": int(engine.state.epoch)}
        if value > self.best:
            self.best = value
            self(engine)
        elif value != value and self.best == float("-inf"):  # NaN (e.g. a single-class AUC) before any number
            logger.warning(
                "%s is NaN; saving the latest model to %s until a comparable value comes", self.key_metric, self.path
            )
            self(engine)

    def __call__(self, engine: Engine) -> None:
        """Write the checkpoint (rank 0 only)."""
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        state = {
            k: provenance.attach(v.state_dict(), self.provenance) if isinstance(v, torch.nn.Module) else v.state_dict()
            for k, v in self.save_dict.items()
        }
        if self.key_metric is not None and self._score is not None:
            state = {
                k: _attach_score(sd, self._score) if isinstance(self.save_dict[k], torch.nn.Module) else sd
                for k, sd in state.items()
            }
        if self.unwrap_single and len(state) == 1:
            state = next(iter(state.values()))
        atomic_torch_save(state, self.path)
        logger.info("saved %s at iteration %d", self.path, engine.state.iteration)


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` whose errors name the checkpoint and say what is wrong.

    MONAI's loader reports a truncated file as ``PytorchStreamReader failed reading zip archive``, a text file as
    ``KeyError: 101`` and another architecture as ``Error(s) in loading state_dict for SMARTUNETR: ...``, none of
    them with the file's name. This checks the file first (:func:`smart_nets.io.check_checkpoint_file`) and
    re-raises loading errors with the path, the objects it was loaded into, and the likely cause. Arguments as
    ``CheckpointLoader``; loading is still ``torch.load(..., weights_only=True)``. Loading one network's weights,
    it first compares the encoder the file says it holds with the network's (naming both on a mismatch), then logs
    what they were trained on (``self.provenance``; a warning for synthetic data, :mod:`smart_nets.provenance`).

    To resume training, call :meth:`restore` on the trainer before ``trainer.run()`` rather than attaching the
    loader: attached, it restores on ``Events.STARTED`` after the handlers registered before it (the validation at
    the start among them), which would then see the network as first built.

    Raises:
        FileNotFoundError: for a missing checkpoint.
        ValueError: for a truncated or foreign file, a checkpoint refused by ``weights_only`` loading, or one that
            does not fit the objects (another architecture or other network sizes).
    """

    def restore(self, engine: Engine) -> None:
        """Restore ``load_dict`` (the trainer ``engine`` among it) now, before ``engine.run()``.

        ``run()`` then continues from the saved epoch and iteration (ignite resumes an engine whose state is not
        done; the ``max_epochs`` the engine was built with is kept, as on ``STARTED``), and every handler, from the
        first ``STARTED`` one on, sees the restored weights.

        Raises:
            ValueError: when the checkpoint has already completed the engine's ``max_epochs`` (ignite would start a
                new run from epoch 0 on the trained weights, schedules and optimizer state), or has completed more;
                and as the loader's ``__call__``.
        """
        if self._name is None:
            self.logger = engine.logger
        max_epochs = engine.state.max_epochs
        self(engine)
        if max_epochs is not None and engine.state.epoch >= max_epochs:
            raise ValueError(
                f"{self.load_path} has completed all {engine.state.epoch} epochs of max_epochs {max_epochs}: nothing "
                "is left to resume. Give a larger max_epochs to train on from it, or leave resume off to start a new "
                "run (which overwrites its files)."
            )

    def __call__(self, engine: Engine) -> None:
        check_checkpoint_file(self.load_path)
        module = next(iter(self.load_dict.values())) if len(self.load_dict) == 1 else None
        one_network = isinstance(module, torch.nn.Module)
        if one_network:  # the file's record, read once: compared before loading, logged after
            try:
                record = provenance.from_file(self.load_path)
            except (ValueError, RuntimeError):
                record = None  # the load below reports the file in its own words
            provenance.check_encoder(
                record, module if hasattr(module, "arch") else getattr(module, "encoder", None), self.load_path
            )
        try:
            super().__call__(engine)
            if one_network:
                self.provenance = record
                provenance.warn_if_synthetic(record, self.load_path)
        except pickle.UnpicklingError as e:
            raise refused(self.load_path, e) from e
        except (RuntimeError, KeyError, ValueError) as e:
            detail = " ".join(str(e).split())
            raise ValueError(
                f"{self.load_path} does not fit {', '.join(self.load_dict)}: {detail[:500]}"
                f"{'...' if len(detail) > 500 else ''} - is it a checkpoint of this bundle's network, built with the "
                "same sizes (feature_size, depths, num_heads)?"
            ) from e
