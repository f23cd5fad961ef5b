"""Pruning methods registered by name (``gemminer list methods``)."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry

METHODS: Registry[Callable[..., object]] = Registry("method")

from . import gem_miner as _gem_miner  # noqa: E402,F401

__all__ = ["METHODS"]
