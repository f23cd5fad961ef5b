"""Shared thresholding: turn per-weight scores into a mask. Methods only score.

Every function keeps *exactly* the requested number of weights (ties broken by
position), so a mask hits its target density within one weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import MaskError
from .mask import Mask


def _check_density(density: float) -> None:
    if not 0 < density <= 1:
        raise MaskError(f"density must lie in (0, 1], got {density}")


def _top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """A boolean vector marking the ``k`` largest entries (stable: earlier wins ties)."""
    keep = torch.zeros(values.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.sort(values.flatten().float().cpu(), descending=True, stable=True).indices
        keep[order[:k]] = True
    return keep


def keep_count(total: int, density: float) -> int:
    """Weights kept for ``density`` of ``total``: the nearest integer, at least one."""
    return max(1, min(total, round(density * total)))


def global_mask(scores: Mapping[str, torch.Tensor], density: float) -> Mask:
    """Keep the highest scores across all layers together."""
    _check_density(density)
    flat = torch.cat([s.detach().flatten().float().cpu() for s in scores.values()])
    keep = _top_k(flat, keep_count(flat.numel(), density))
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = keep[offset : offset + s.numel()].view(s.shape)
        offset += s.numel()
    return Mask(out)


def layerwise_mask(scores: Mapping[str, torch.Tensor], densities: Mapping[str, float]) -> Mask:
    """Keep the highest scores within each layer, at each layer's own density."""
    missing = sorted(set(scores) - set(densities))
    if missing:
        raise MaskError(f"no density given for {', '.join(missing)}")
    out = {}
    for name, s in scores.items():
        d = densities[name]
        if not 0 <= d <= 1:
            raise MaskError(f"density of {name} must lie in [0, 1], got {d}")
        k = round(d * s.numel())
        out[name] = _top_k(s.detach(), k).view(s.shape)
    return Mask(out)
