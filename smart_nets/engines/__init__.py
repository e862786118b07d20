"""Engines: the SMART trainer, its EMA teacher and schedules."""

from smart_nets.engines.ema import ema_update_, make_teacher
from smart_nets.engines.finetune import encoder_layer_id, finetune_param_groups
from smart_nets.engines.optim import param_groups
from smart_nets.engines.schedules import SMARTSchedule, cosine_schedule, linear_warmup, teacher_init_share
from smart_nets.engines.smart_trainer import PrepareTwoViews, SMARTTrainer
from smart_nets.runtime import unwrap  # the configs' smart_nets.engines.unwrap

__all__ = [
    "PrepareTwoViews",
    "SMARTSchedule",
    "SMARTTrainer",
    "cosine_schedule",
    "ema_update_",
    "encoder_layer_id",
    "finetune_param_groups",
    "linear_warmup",
    "make_teacher",
    "param_groups",
    "teacher_init_share",
    "unwrap",
]
