"""Training loops: the shared epoch loop, evaluation, optimizers and ticket finetuning."""

from .finetune import MaskedWeights, finetune
from .loop import (
    EpochStats,
    TrainingDivergedError,
    evaluate,
    evaluation_due,
    recalibrate_batchnorm,
    resolve_device,
    train_epoch,
)
from .optim import build_optimizer, build_scheduler, milestone_epochs

__all__ = [
    "EpochStats",
    "MaskedWeights",
    "TrainingDivergedError",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluation_due",
    "finetune",
    "milestone_epochs",
    "recalibrate_batchnorm",
    "resolve_device",
    "train_epoch",
]
