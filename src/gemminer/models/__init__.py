"""Models registered by name. Every model: no biases, non-affine BatchNorm (Appendix A.2)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

#: A model factory takes ``num_classes`` (and optional layer types) and returns a module.
ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(name: str, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``."""
    return MODELS.get(name)(num_classes=num_classes, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


from . import resnet_cifar as _resnet_cifar  # noqa: E402,F401

__all__ = ["MODELS", "create_model", "list_models"]
