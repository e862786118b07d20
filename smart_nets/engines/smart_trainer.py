"""SMARTTrainer: one SMART pretraining step per iteration, as a MONAI ``Trainer`` (docs/method.md section 4).

One iteration::

    teacher(noised views)  --class-attention map-->  attention-guided masks
    student(masked views)  -> SMARTLoss(student, teacher)  -> backward -> clip -> AdamW step -> EMA(teacher)

Learning rate, weight decay, EMA momentum and teacher temperatures come from a :class:`SMARTSchedule` evaluated at
the global iteration, so a run resumed from a checkpoint (which restores the iteration) continues every schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from ignite.engine import Engine, EventEnum, Events
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, PrepareBatch
from monai.utils import look_up_option
from torch.nn.utils import clip_grads_with_norm_

from smart_nets import runtime
from smart_nets.engines.ema import ema_update_
from smart_nets.engines.schedules import SMARTSchedule
from smart_nets.losses import SMARTLoss
from smart_nets.runtime import unwrap
from smart_nets.transforms.masking import attention_guided_mask, random_token_mask

__all__ = ["PrepareTwoViews", "SMARTTrainer"]

logger = logging.getLogger(__name__)
MASKINGS = ("attention", "random")


class PrepareTwoViews(PrepareBatch):
    """MONAI ``prepare_batch`` for SMART: the two views stacked along the batch, and the teacher's noise masks
    stacked likewise, on ``device``. One forward pass each for teacher and student (DDP needs a single forward per
    backward).

    Args:
        view_keys: batch keys of the two views (``RandTwoViewsd``'s outputs).
        noise_postfix: suffix of the teacher-noise mask keys (``RandTokenMaskd``'s outputs).

    Raises:
        ValueError: (when called) on a batch that lacks a view or a noise mask, naming the keys present.
    """

    def __init__(self, view_keys: Sequence[str] = ("view1", "view2"), noise_postfix: str = "_noise") -> None:
        self.view_keys = tuple(view_keys)
        self.noise_postfix = noise_postfix

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns: ``(views, noise)``, ``(2B, C, D, H, W)`` and ``(2B, d, h, w)``, view 1 first."""
        keys = [(k, f"{k}{self.noise_postfix}") for k in self.view_keys]
        missing = [k for k, n in keys if k not in batchdata or n not in batchdata]
        if missing:
            raise ValueError(f"batch lacks views or noise masks for {missing}; keys present: {sorted(batchdata)}")
        views = torch.cat([torch.as_tensor(batchdata[k]) for k, _ in keys])
        noise = torch.cat([torch.as_tensor(batchdata[n]) for _, n in keys])
        return (
            views.to(device, non_blocking=non_blocking, **kwargs),
            noise.to(device, non_blocking=non_blocking, **kwargs),
        )


class SMARTTrainer(Trainer):
    """SMART self-distillation pretraining.

    Args:
        device: where the networks run.
        max_epochs: number of epochs.
        train_data_loader: yields batches that ``prepare_batch`` turns into views and teacher-noise masks (by
            default dicts with ``view1``, ``view2``, ``view1_noise``, ``view2_noise``, as ``RandTwoViewsd`` and
            ``RandTokenMaskd`` write them).
        network: the student, a ``SMARTPretrainNet`` (possibly wrapped in DDP).
        teacher: its EMA copy (``smart_nets.engines.make_teacher``); never receives gradients.
        optimizer: optimizer of the student; its first group (``apply_weight_decay``) gets the scheduled weight
            decay, every group the scheduled learning rate.
        loss_function: a :class:`SMARTLoss`.
        schedule: a :class:`SMARTSchedule`.
        epoch_length: iterations per epoch (default: the loader's length).
        non_blocking: non-blocking host-to-device copies.
        masking: ``"attention"`` (SMART) or ``"random"`` (ablation: uniform random tokens).
        mask_ratio: share of tokens masked for the student (0.75).
        mask_probability: chance that a view is masked at all (1.0: every view, SMART); the others reach the
            student whole and add only to the global loss. iBOT and DINOv2 mask half the views (0.5), at ratios of
            0.1-0.5; with SMART's 0.75 on every view the student's global tokens see a quarter of the volume.
        hint_ratio: hint size as a share of the masked tokens (0.1); attention masking only.
        hint_pool: share of most-attended tokens the hint is drawn from (0.1).
        clip_grad: max gradient norm of the student (0.3); 0 disables clipping.
        freeze_last_layer_epochs: epochs during which the projection's last layer gets no update (1).
        prepare_batch: MONAI's ``prepare_batch`` interface, returning ``(views, noise)``: the two views stacked
            along the batch ``(2B, C, D, H, W)`` and the teacher-noise masks ``(2B, d, h, w)`` (default
            :class:`PrepareTwoViews`).
        seed: seed of the trainer's mask generator (offset by the process rank).
        max_teacher_init_share: at start-up the trainer logs the share of its random initial weights the EMA
            teacher will still hold at the end of the schedule (:func:`smart_nets.engines.teacher_init_share`) and
            warns when it is above this (0.05): the exported teacher would then be mostly untrained.
        train_handlers: ignite/MONAI handlers to attach.
        precision: ``"fp32"`` or ``"bf16"``: bfloat16 autocast of the teacher's and student's forward passes on CPU
            and GPU alike, with float32 weights, gradients, optimizer state, EMA, centres and loss
            (:func:`smart_nets.runtime.autocast_dtype`; on a CPU without native bf16 it warns and stays float32).
            About 2x faster on CPUs with AVX512-BF16 or AMX (``benchmarks/results/pretrain_cpu_precision.md``).
        keep_freed_memory: on a CPU, let glibc keep freed activations for reuse
            (:func:`smart_nets.runtime.keep_freed_memory`): faster, for a higher resident peak. Process-wide.
        amp: MONAI's CUDA mixed precision (float16 autocast with a gradient scaler, or ``amp_kwargs``); CUDA only
            (ignored with a warning on CPU). ``precision="bf16"`` is the device-independent choice.
        amp_kwargs: arguments of ``torch.autocast`` (e.g. ``{"dtype": torch.bfloat16}``).
        compile: ``torch.compile`` the student's and the teacher's forward passes, as MONAI's ``SupervisedTrainer``
            does, but in place (``Module.compile``) rather than wrapped, so that parameter names, the EMA pairing
            and checkpoints are those of the eager networks. The first step compiles (about 1.5 minutes for the demo
            encoder on 2 CPU cores, longer for the paper's); later steps took 0.207 s there against eager's
            0.252 with the same allocator and fused AdamW (``benchmarks/results/pretrain_cpu_modes_demo.md``), so
            it pays from a few thousand steps. Needs a C++ compiler on a CPU (inductor).
        compile_kwargs: arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``,
            ``{"backend": "eager"}`` for dynamo's tracing alone).
        iteration_update, event_names, event_to_attr: as in MONAI's ``Trainer``.

    Raises:
        ValueError: on an unknown ``masking`` or ``precision``, a loss that is not a ``SMARTLoss``, ``amp`` together
            with ``precision="bf16"``, or ratios outside [0, 1].
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader,
        network: torch.nn.Module,
        teacher: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: SMARTLoss,
        schedule: SMARTSchedule,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        masking: str = "attention",
        mask_ratio: float = 0.75,
        mask_probability: float = 1.0,
        hint_ratio: float = 0.1,
        hint_pool: float = 0.1,
        clip_grad: float = 0.3,
        freeze_last_layer_epochs: float = 1.0,
        prepare_batch: Callable = PrepareTwoViews(),
        seed: int = 0,
        max_teacher_init_share: float = 0.05,
        train_handlers: Sequence | None = None,
        precision: str = "fp32",
        keep_freed_memory: bool = False,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        iteration_update: Callable[[Engine, object], object] | None = None,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
    ) -> None:
        device = torch.device(device)
        self.autocast_dtype = runtime.autocast_dtype(precision, device)
        if amp and precision != "fp32":
            raise ValueError(f"amp=True and precision={precision!r}: choose one (precision works on CPU and GPU)")
        if keep_freed_memory and device.type == "cpu":
            runtime.keep_freed_memory()
        if amp and device.type != "cuda":
            logger.warning("amp=True needs CUDA; training in float32 on %s", device)
            amp = False
        if not isinstance(loss_function, SMARTLoss):
            raise ValueError(f"loss_function must be a SMARTLoss, got {type(loss_function).__name__}")
        for name, value in (
            ("mask_ratio", mask_ratio),
            ("mask_probability", mask_probability),
            ("hint_ratio", hint_ratio),
            ("hint_pool", hint_pool),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=False,
            amp_kwargs=amp_kwargs,
        )
        self.network = network
        self.teacher = teacher
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.schedule = schedule
        self.masking = look_up_option(masking, MASKINGS)
        self.mask_ratio, self.hint_ratio, self.hint_pool = mask_ratio, hint_ratio, hint_pool
        self.mask_probability = mask_probability
        self.clip_grad = clip_grad
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.generator = torch.Generator().manual_seed(seed + rank)
        self.max_teacher_init_share = max_teacher_init_share
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.compile = compile
        if compile:
            for module in (network, teacher):
                module.compile(**(compile_kwargs or {}))
        self.add_event_handler(Events.STARTED, self._check_teacher_schedule)

    def _check_teacher_schedule(self, engine: SMARTTrainer) -> None:
        """Log how much of its random start the teacher keeps over this schedule; warn when that is too much."""
        total = engine.state.max_epochs * engine.state.epoch_length
        share = engine.schedule.teacher_init_share(total)
        momentum = engine.schedule.momentum
        logger.info(
            "teacher EMA momentum %g over %d iterations keeps %.1f%% of its initial weights",
            momentum,
            total,
            100 * share,
        )
        if share > engine.max_teacher_init_share:
            logger.warning(
                "the EMA teacher will still hold %.0f%% of its random initial weights after %d iterations at base "
                "momentum %g (above %.0f%%): the exported teacher will be mostly untrained. For a run this short "
                "set teacher_momentum (schedule#momentum) to %g or lower, or train for longer",
                100 * share,
                total,
                momentum,
                100 * engine.max_teacher_init_share,
                engine.schedule.momentum_for(total, engine.max_teacher_init_share),
            )

    def step(self, batchdata: dict) -> dict:
        """One SMART step on ``batchdata`` outside ``run()``, for benchmarks, notebooks and custom loops.

        The iteration counter advances by one and the schedules are read there, over ``max_epochs * epoch_length``
        iterations (set ``epoch_length`` at construction to choose the schedule's length). No event handler runs.

        Returns:
            the step's output dict, as in :meth:`_iteration`.
        """
        self.state.iteration += 1
        return self._iteration(self, batchdata)[0]

    def _autocast(self, device_type: str) -> torch.autocast:
        """The forward passes' autocast: ``precision``'s dtype, else MONAI's CUDA ``amp``, else disabled."""
        if self.autocast_dtype is not None:
            return torch.autocast(device_type, dtype=self.autocast_dtype)
        return torch.autocast(device_type, enabled=self.amp, **(self.amp_kwargs or {}))

    def forward_losses(
        self,
        views: torch.Tensor,
        noise: torch.Tensor,
        teacher_temp: float,
        teacher_temp_patch: float,
        fire_events: bool = False,
    ) -> tuple[dict, torch.Tensor, dict]:
        """The forward half of a training step on prepared ``views`` and ``noise`` (see :class:`PrepareSMARTBatch`):
        the teacher's pass (no gradient), the student masks its attention guides, the student's pass and the loss.
        No optimizer step, no EMA, no schedule: what a step does before ``backward``, for diagnostics that need the
        loss terms of one batch with their graphs (``benchmarks/loss_gradients.py``). The caller sets the modes
        (``network.train()``, ``teacher.eval()``) and any autocast.

        Args:
            views, noise: a prepared batch.
            teacher_temp, teacher_temp_patch: the teacher temperatures of the [CLS]/pooled and patch targets.
            fire_events: fire ``FORWARD_COMPLETED`` and ``LOSS_COMPLETED`` as a training step does.

        Returns:
            ``(teacher_out, masks, losses)``: the teacher's output dict, the student's bool token masks and the
            output of ``loss_function`` (the terms keep their graphs).
        """
        with torch.no_grad():
            teacher_out = self.teacher(views, noise, reconstruct=False, shared_head=True)
        masks = self._student_masks(teacher_out["attn_map"].float(), noise.shape[1:])
        student_out = self.network(views, masks)
        if fire_events:
            self.fire_event(IterationEvents.FORWARD_COMPLETED)
        # in float32 whatever the autocast: SMARTLoss casts the logits
        losses = self.loss_function(student_out, teacher_out, views, masks, teacher_temp, teacher_temp_patch)
        if fire_events:
            self.fire_event(IterationEvents.LOSS_COMPLETED)
        return teacher_out, masks, losses

    def _student_masks(self, attn_map: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        b, n = attn_map.shape
        if self.masking == "attention":
            mask = attention_guided_mask(attn_map, self.mask_ratio, self.hint_ratio, self.hint_pool, self.generator)
        else:
            mask = random_token_mask(b, n, self.mask_ratio, self.generator, attn_map.device)
        if self.mask_probability < 1.0:
            masked = torch.rand(b, generator=self.generator) < self.mask_probability
            mask = mask & masked.to(mask.device)[:, None]
        return mask.view(b, *grid)

    def _apply_schedule(self, values: dict[str, float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = values["lr"]
            if group.get("apply_weight_decay", False):
                group["weight_decay"] = values["weight_decay"]

    def _optimizer_step(self, engine: SMARTTrainer, losses: dict[str, torch.Tensor]) -> float:
        """Backward of ``losses["loss"]``, the non-finite checks, clipping, the frozen last layer and the optimizer
        step; returns the student's gradient norm before clipping.

        The loss and the gradient norm are checked together, after the backward: one wait for the device per step
        instead of two (a check of the loss before the backward makes a GPU finish the forward before the backward
        can be queued).

        Raises:
            FloatingPointError: when the loss is not finite (naming its parts), or the gradient norm is not finite
                outside float16 AMP (whose scaler skips such steps by design). ``clip_grad_norm_`` would otherwise
                scale every gradient by ``clip_grad / inf = 0`` and the step would only decay the weights: training
                that silently does nothing.
        """
        loss = losses["loss"]
        engine.optimizer.zero_grad(set_to_none=True)
        scaler = engine.scaler if engine.amp else None  # created by run(); None in step() outside a run
        (scaler.scale(loss) if scaler is not None else loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if scaler is not None:
            scaler.unscale_(engine.optimizer)
        grads = [p.grad for p in engine.network.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        finite = torch.isfinite(
            torch.stack([loss.detach().float(), grad_norm.float().to(loss.device)])
        ).tolist()  # one sync
        if not finite[0]:
            parts = {k: float(v.detach()) for k, v in losses.items() if v.numel() == 1}
            raise FloatingPointError(f"non-finite SMART loss at iteration {engine.state.iteration}: {parts}")
        if scaler is None and not finite[1]:
            named = [(n, p.grad) for n, p in unwrap(engine.network).named_parameters() if p.grad is not None]
            largest = sorted(((float(g.double().norm()), n) for n, g in named), reverse=True)[:5]
            raise FloatingPointError(
                f"non-finite gradient norm at iteration {engine.state.iteration} (the loss was finite); the largest "
                f"per-tensor gradient norms: {', '.join(f'{n} {v:.3g}' for v, n in largest)}. Exactly-zero tokens "
                "in front of a LayerNorm do this (a zero mask_token, zero-initialised embeddings)."
            )
        if engine.clip_grad > 0:  # clip_grad_norm_ in two halves, the norm computed once
            clip_grads_with_norm_(engine.network.parameters(), engine.clip_grad, grad_norm)
        if engine.state.iteration <= engine.freeze_last_layer_epochs * engine.state.epoch_length:
            for name, p in engine.network.named_parameters():
                if "last_layer" in name:
                    p.grad = None  # DINO: keep the prototypes still while the backbone settles
        if scaler is not None:
            scaler.step(engine.optimizer)
            scaler.update()
        else:
            engine.optimizer.step()
        return float(grad_norm)

    def _iteration(self, engine: SMARTTrainer, batchdata: dict) -> list[dict]:
        """One SMART step.

        Returns:
            ``[output]``: one dict with the total loss (``loss``, a 0-d tensor), its parts (``loss_cls``,
            ``loss_patch``, ``loss_rec``, ``loss_koleo``), the scheduled values (``lr``, ``weight_decay``, ``momentum``,
            ``teacher_temp``, ``teacher_temp_patch``), ``masked_fraction`` and the DINO loss of each distilled global
            token (``loss_cls_<token>``), as floats. The one-item list is the
            layout of MONAI's decollated outputs, so ``StatsHandler``/``TensorBoardStatsHandler`` (default
            ``lambda x: x[0]``) log every scalar and ``from_engine(["loss"], first=True)`` (MLflow tracking) finds
            the loss.

        The step's teacher logits, the targets the loss made of them and the student masks are kept, detached, in
        ``engine.state.distillation`` (``teacher_global``, ``teacher_patch``, ``global_targets``,
        ``patch_targets``, ``masks``) for monitors such as :class:`smart_nets.handlers.CollapseMonitor`.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        views, noise = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        step = engine.state.iteration - 1
        values = engine.schedule(step, engine.state.max_epochs * engine.state.epoch_length)
        engine._apply_schedule(values)
        engine.network.train()
        engine.teacher.eval()
        with engine._autocast(views.device.type):
            teacher_out, masks, losses = engine.forward_losses(
                views, noise, values["teacher_temp"], values["teacher_temp_patch"], fire_events=True
            )
        grad_norm = engine._optimizer_step(engine, losses)
        ema_update_(engine.teacher, unwrap(engine.network), values["momentum"])
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.distillation = {
            "teacher_global": teacher_out["global"].detach(),
            "teacher_patch": teacher_out["patch"].detach(),
            "global_targets": losses["global_targets"],
            "patch_targets": losses["patch_targets"],
            "masks": masks,
        }
        output = {"loss": losses["loss"].detach()}
        output.update({f"loss_{k}": float(losses[k].detach()) for k in ("cls", "patch", "rec", "koleo")})
        tokens = engine.loss_function.global_tokens
        output.update({f"loss_cls_{t}": float(v) for t, v in zip(tokens, losses["cls_per_token"].detach())})
        output.update(values)
        output["masked_fraction"] = float(masks.float().mean())
        output["grad_norm"] = grad_norm  # before clipping
        return [output]
