"""gemminer: find sparse, trainable subnetworks at initialization (rare gems) with Gem-Miner.

Public API::

    gemminer.mine(model, data, density=..., epochs=...)   -> MiningResult (.mask, .history)
    gemminer.apply_mask(model, mask)                      -> model with pruned weights zeroed
    gemminer.finetune(model, mask, data, epochs=...)      -> per-epoch history
    gemminer.create_model("resnet20"), gemminer.init_weights(model, "signed_constant")
    gemminer.Mask, gemminer.to_score_model, gemminer.load_dataset
    gemminer.export_run(run_dir) -> ExportInfo; gemminer.load_exported(path) -> plain nn.Module
    gemminer.fold_batchnorm(model) -> the same network for inference, BatchNorm folded in
"""

from .api import finetune, mine
from .data import load_dataset
from .errors import GemMinerError
from .masking import (
    Mask,
    apply_mask,
    count_prunable,
    format_density,
    init_weights,
    prunable_weights,
    rounded_mask,
    to_score_model,
)
from .methods.gem_miner import FreezeSchedule, MineConfig, MiningResult
from .models import create_model, list_models
from .rundir.export import export_run, load_exported
from .rundir.fold import fold_batchnorm
from .rundir.interop import from_torch_prune, to_torch_prune
from .settings.config import FinetuneConfig, OptimConfig, RunConfig
from .version import __version__

__all__ = [
    "__version__",
    "FinetuneConfig",
    "FreezeSchedule",
    "GemMinerError",
    "Mask",
    "MineConfig",
    "MiningResult",
    "OptimConfig",
    "RunConfig",
    "apply_mask",
    "count_prunable",
    "create_model",
    "export_run",
    "finetune",
    "fold_batchnorm",
    "format_density",
    "from_torch_prune",
    "init_weights",
    "list_models",
    "load_exported",
    "load_dataset",
    "mine",
    "prunable_weights",
    "rounded_mask",
    "to_score_model",
    "to_torch_prune",
]
