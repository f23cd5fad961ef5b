"""Models registered by name. Every model: no biases, non-affine BatchNorm (Appendix A.2)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

#: A model factory takes ``num_classes`` (and its own keyword options) and returns a module.
ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(name: str, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` are its own options."""
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        if not kwargs:
            raise
        raise ConfigError(f"model {name} does not take the options {kwargs}: {exc}") from None


def list_models() -> list[str]:
    return MODELS.names()


from . import mobilenet as _mobilenet  # noqa: E402,F401
from . import resnet_cifar as _resnet_cifar  # noqa: E402,F401
from . import resnet_imagenet as _resnet_imagenet  # noqa: E402,F401
from . import small as _small  # noqa: E402,F401
from . import vgg as _vgg  # noqa: E402,F401
from . import wide_resnet as _wide_resnet  # noqa: E402,F401

__all__ = ["MODELS", "create_model", "list_models"]
