"""The stages under their former module name; they live in :mod:`gemminer.stages` (one
module per stage). Kept for scripts (benchmarks/) that import ``gemminer.pipeline``."""

from .stages import (
    architecture,
    build_model,
    density_shortfall,
    eval_loaders,
    eval_run,
    finetune_run,
    load_data,
    prune_run,
    train_loader,
)

__all__ = [
    "architecture",
    "build_model",
    "density_shortfall",
    "eval_loaders",
    "eval_run",
    "finetune_run",
    "load_data",
    "prune_run",
    "train_loader",
]
