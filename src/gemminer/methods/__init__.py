"""Pruning methods registered by name (``gemminer list methods``).

Each method is one module that registers a :class:`~gemminer.methods.base.MethodSpec`
with :func:`~gemminer.methods.base.register_method`.
"""

from __future__ import annotations

from ..registry import Registry
from .base import MethodSpec, NoSettings, PruneContext, PruneResult, register_method

METHODS: Registry[MethodSpec] = Registry("method")

# one module per method (or family); importing registers it (smart_ratio also registers
# its layer distribution, which Thresholding checks its names against)
from . import channel_random as _channel_random  # noqa: E402,F401
from . import dense as _dense  # noqa: E402,F401
from . import edge_popup as _edge_popup  # noqa: E402,F401
from . import gem_miner as _gem_miner  # noqa: E402,F401
from . import grasp as _grasp  # noqa: E402,F401
from . import imp as _imp  # noqa: E402,F401
from . import l1_filter as _l1_filter  # noqa: E402,F401
from . import lr_rewinding as _lr_rewinding  # noqa: E402,F401
from . import prospr as _prospr  # noqa: E402,F401
from . import random_pruning as _random_pruning  # noqa: E402,F401
from . import smart_ratio as _smart_ratio  # noqa: E402,F401
from . import snip as _snip  # noqa: E402,F401
from . import synflow as _synflow  # noqa: E402,F401


def targets_density(method: str) -> bool:
    """Whether ``method``'s masks follow the target density (False for one that ignores it,
    like dense training; an unknown name counts as targeting it)."""
    return method not in METHODS or METHODS.get(method).fixed_density is None


__all__ = [
    "METHODS",
    "MethodSpec",
    "NoSettings",
    "PruneContext",
    "PruneResult",
    "register_method",
    "targets_density",
]
