"""Training: the one epoch loop with hooks, evaluation, optimizers and ticket finetuning."""

from .finetune import MaskedTraining, MaskedWeights, finetune
from .loop import (
    EpochStats,
    TrainingDivergedError,
    evaluate,
    evaluate_splits,
    evaluation_due,
    recalibrate_batchnorm,
    train_epoch,
)
from .optim import build_optimizer, build_scheduler, milestone_epochs
from .runtime import resolve_device
from .trainer import Hooks, Trainer

__all__ = [
    "EpochStats",
    "Hooks",
    "MaskedTraining",
    "MaskedWeights",
    "Trainer",
    "TrainingDivergedError",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_splits",
    "evaluation_due",
    "finetune",
    "milestone_epochs",
    "recalibrate_batchnorm",
    "resolve_device",
    "train_epoch",
]
