"""Exceptions for user mistakes.

Every error a user can cause by their input (a bad flag, a missing data folder, an
unknown name) is a :class:`GemMinerError`. The command line prints its message and exits
with status 2, without a traceback; library callers can catch it like any ``ValueError``.
"""

from __future__ import annotations


class GemMinerError(ValueError):
    """Base class of all user-facing errors of gemminer."""


class ConfigError(GemMinerError):
    """A setting has a value outside its valid range."""


class UnknownNameError(GemMinerError):
    """A registry was asked for a name it does not hold."""


class DataError(GemMinerError):
    """A data set is missing, malformed, or cannot be downloaded."""


class ModelError(GemMinerError):
    """A model cannot be pruned as given (e.g. it has no Conv2d or Linear layer)."""


class MaskError(GemMinerError):
    """A mask does not fit the model it is applied to, or is not binary."""


class RunError(GemMinerError):
    """A run folder is missing, incomplete or inconsistent."""
