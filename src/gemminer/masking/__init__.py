"""Masks, density accounting, score layers and weight initializations."""

from .init import WEIGHT_INITS, init_weights
from .mask import (
    LayerDensity,
    Mask,
    apply_mask,
    count_dense,
    count_prunable,
    format_density,
    prunable_modules,
    prunable_weights,
    weight_name,
)
from .scores import (
    ScoreConv2d,
    ScoreLayer,
    ScoreLinear,
    flag_counts,
    flag_mask,
    project_scores,
    rounded_mask,
    score_layers,
    to_score_model,
)

__all__ = [
    "WEIGHT_INITS",
    "LayerDensity",
    "Mask",
    "ScoreConv2d",
    "ScoreLayer",
    "ScoreLinear",
    "apply_mask",
    "count_dense",
    "count_prunable",
    "flag_counts",
    "flag_mask",
    "format_density",
    "init_weights",
    "project_scores",
    "prunable_modules",
    "prunable_weights",
    "rounded_mask",
    "score_layers",
    "to_score_model",
    "weight_name",
]
