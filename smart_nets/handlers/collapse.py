"""A collapse monitor for self-distillation: what the teacher's targets carry, while the run trains."""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from smart_nets.losses.smart_loss import GLOBAL_TOKENS

__all__ = ["CollapseMonitor", "target_information"]

logger = logging.getLogger(__name__)

REMEDIES = (
    "usual remedies: batch normalization in the projection head (network_def#head_use_bn: on a toy it was the one "
    "single change that kept every target informative), a lower learning rate (DINO scales 5e-4 by total batch / "
    "256), a lower teacher momentum for a short run (teacher_momentum; the trainer logs how much of its random start "
    "the teacher keeps), more iterations, and more varied training images"
)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of the probabilities ``p`` ``(..., K)``."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)


def target_information(logits: torch.Tensor, temperature: float) -> dict[str, float]:
    """The monitor's statistics for one set of teacher logits, centred by their own mean and sharpened.

    For comparing networks on fixed inputs (e.g. an untrained and a pretrained teacher), outside training.

    Args:
        logits: ``(R, K)`` raw teacher logits, one row per token.
        temperature: teacher temperature.

    Returns:
        ``entropy``, ``mean_entropy``, ``information`` (nats) and ``prototypes``, as :class:`CollapseMonitor`
        defines them.
    """
    p = torch.softmax((logits.float() - logits.float().mean(dim=0)) / temperature, dim=-1)
    entropy, mean_entropy = float(_entropy(p).mean()), float(_entropy(p.mean(dim=0)))
    return {
        "entropy": entropy,
        "mean_entropy": mean_entropy,
        "information": mean_entropy - entropy,
        "prototypes": float(torch.unique(p.argmax(dim=-1)).numel()),
    }


class _Window:
    """Sums over one interval of iterations, for one stream of targets; all-reduced once at the window's end."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()

    def reduced(self) -> dict[str, torch.Tensor]:
        if dist.is_available() and dist.is_initialized():
            names = sorted(self.sums)
            flat = torch.cat([self.sums[n].reshape(-1) for n in names])
            dist.all_reduce(flat)
            out, start = {}, 0
            for n in names:
                size = self.sums[n].numel()
                out[n] = flat[start : start + size].view_as(self.sums[n])
                start += size
            return out
        return dict(self.sums)


class CollapseMonitor:
    """Every ``interval`` iterations, measure whether the teacher's targets carry information, per token type.

    Self-distillation fails silently: a teacher that maps every input to the same distribution, or to a uniform
    one, gives targets the student can match while learning nothing, and the loss can still fall. For the [CLS]
    and pooled tokens (those the loss distils) and for the patch tokens, over the window's iterations and all
    processes (all-reduced), it computes from the teacher's centred, sharpened targets (``SMARTTrainer`` keeps them
    in ``engine.state.distillation``):

    - ``collapse/<token>_entropy``: mean entropy of a target; ``_mean_entropy``: entropy of the window's mean target;
      ``_information``: their difference, H(mean p) - mean H(p), in nats (0 for constant or uniform targets; at most
      ln K);
    - ``_prototypes``: how many prototypes are the argmax of some target in the window;
    - ``_logit_std``: standard deviation of the teacher's raw logits across the batch (volumes and views) for the
      [CLS] and pooled tokens (both, distilled or not), across positions for the patch tokens, averaged over
      prototypes and iterations;
    - ``_loss``: the student's cross-entropy for that token type, to read against ``collapse/ln_k`` (a loss at
      ln K with uniform targets means nothing is distilled).

    The values go to ``engine.state.metrics`` (so ``StatsHandler``, ``TensorBoardStatsHandler`` and MLflow show
    them at each epoch's end) and to one INFO line per window on rank 0. When the targets of a distilled token type
    carry less than ``min_information`` nats for ``patience`` windows in a row, rank 0 logs one WARNING naming the
    statistic, whether the targets are flat or stuck on few prototypes, and the usual remedies. Token types whose
    loss weight is 0 are skipped (e.g. SimMIM only). Attach it on every process: the statistics are all-reduced.
    Neither MONAI nor ignite has a monitor of self-distillation targets, hence this handler.

    Args:
        interval: iterations per window.
        patience: windows in a row below ``min_information`` before the warning.
        min_information: the least information (nats) healthy targets carry.
        prefix: metric name prefix.
    """

    def __init__(self, interval: int = 10, patience: int = 3, min_information: float = 0.05, prefix: str = "collapse"):
        if interval < 1 or patience < 1:
            raise ValueError(f"interval and patience must be >= 1, got {interval} and {patience}")
        self.interval, self.patience, self.min_information, self.prefix = interval, patience, min_information, prefix
        self.window = _Window()
        self.low_windows: dict[str, int] = defaultdict(int)
        self.warned: set[str] = set()
        self.history: list[dict[str, float]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    @staticmethod
    def _streams(engine: Engine) -> dict[str, tuple[int | None, bool]]:
        """``{token type: (index into the global targets or None for patches, distilled)}``."""
        loss = engine.loss_function
        streams = {t: (i, loss.w_cls > 0) for i, t in enumerate(loss.global_tokens)}
        streams["patch"] = (None, loss.w_patch > 0)
        return streams

    def _accumulate(self, engine: Engine) -> None:
        state = engine.state.distillation
        output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
        tokens = engine.loss_function.global_tokens
        for name, (index, _) in self._streams(engine).items():
            targets = state["patch_targets"].flatten(0, 1) if index is None else state["global_targets"][:, index]
            targets = targets.float()
            self.window.add(f"{name}/rows", torch.tensor(float(targets.shape[0])))
            self.window.add(f"{name}/entropy", _entropy(targets).sum())
            self.window.add(f"{name}/p_sum", targets.sum(dim=0))
            hits = torch.zeros(targets.shape[-1], dtype=torch.float64, device=targets.device)
            self.window.add(f"{name}/hits", hits.index_fill_(0, targets.argmax(dim=-1), 1.0))
            loss_key = "loss_patch" if index is None else f"loss_cls_{tokens[index]}"
            self.window.add(f"{name}/loss", torch.tensor(float(output.get(loss_key, float("nan")))))
        for i, name in enumerate(GLOBAL_TOKENS):  # both global tokens, distilled or not
            self.window.add(f"{name}/logit_std", state["teacher_global"][:, i].float().std(dim=0).mean())
        self.window.add("patch/logit_std", state["teacher_patch"].float().std(dim=1).mean())
        self.window.add("iterations", torch.tensor(1.0))

    def _summarise(self, engine: Engine) -> dict[str, float]:
        sums = self.window.reduced()
        self.window = _Window()
        steps = float(sums["iterations"])  # summed over processes, like every per-iteration value below
        k = engine.loss_function.center.shape[-1]
        metrics = {f"{self.prefix}/ln_k": math.log(k)}
        for name in self._streams(engine):
            rows = float(sums[f"{name}/rows"])
            entropy = float(sums[f"{name}/entropy"]) / rows
            mean_entropy = float(_entropy(sums[f"{name}/p_sum"] / rows))
            metrics[f"{self.prefix}/{name}_entropy"] = entropy
            metrics[f"{self.prefix}/{name}_mean_entropy"] = mean_entropy
            metrics[f"{self.prefix}/{name}_information"] = mean_entropy - entropy
            metrics[f"{self.prefix}/{name}_prototypes"] = float((sums[f"{name}/hits"] > 0).sum())
            metrics[f"{self.prefix}/{name}_loss"] = float(sums[f"{name}/loss"]) / steps
        for name in (*GLOBAL_TOKENS, "patch"):
            metrics[f"{self.prefix}/{name}_logit_std"] = float(sums[f"{name}/logit_std"]) / steps
        return metrics

    def _check(self, engine: Engine, metrics: dict[str, float], rank: int) -> None:
        k_log = metrics[f"{self.prefix}/ln_k"]
        for name, (_, distilled) in self._streams(engine).items():
            key = f"{self.prefix}/{name}_information"
            if not distilled:
                continue
            self.low_windows[name] = self.low_windows[name] + 1 if metrics[key] < self.min_information else 0
            if self.low_windows[name] < self.patience or name in self.warned:
                continue
            self.warned.add(name)
            entropy = metrics[f"{self.prefix}/{name}_entropy"]
            mode = (
                "flat: each target is close to uniform"
                if entropy > 0.5 * k_log
                else f"stuck: every input gets the same target, on {metrics[f'{self.prefix}/{name}_prototypes']:.0f} "
                "prototype(s)"
            )
            if rank == 0:
                logger.warning(
                    "collapse: the teacher's %s targets have carried no information for %d windows of %d iterations "
                    "(%s = %.3f nats < %.3f; ln K = %.2f), iteration %d; they are %s. The student learns nothing "
                    "from them. %s",
                    name,
                    self.low_windows[name],
                    self.interval,
                    key,
                    metrics[key],
                    self.min_information,
                    k_log,
                    engine.state.iteration,
                    mode,
                    REMEDIES,
                )

    def __call__(self, engine: Engine) -> None:
        self._accumulate(engine)
        if engine.state.iteration % self.interval:
            return
        metrics = self._summarise(engine)
        engine.state.metrics.update(metrics)
        self.history.append({"iteration": float(engine.state.iteration), **metrics})
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if rank == 0:
            logger.info(
                "collapse monitor, iteration %d: %s",
                engine.state.iteration,
                ", ".join(
                    f"{name} information {metrics[f'{self.prefix}/{name}_information']:.3f} nats "
                    f"({metrics[f'{self.prefix}/{name}_prototypes']:.0f} prototypes, "
                    f"logit std {metrics[f'{self.prefix}/{name}_logit_std']:.4f})"
                    for name in self._streams(engine)
                ),
            )
        self._check(engine, metrics, rank)
