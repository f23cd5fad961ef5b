"""Notices about a run for the person running it: skipped images, layer collapse, ….

Every notice goes through the ``gemminer`` logger at WARNING (:func:`notice`), from one
process only (rank 0 under torchrun), and each distinct message once per process, so a
data set read again by a later stage does not repeat it. Where :mod:`logging` is not
configured (no handler anywhere), a plain line is written to stderr instead, between
progress bars::

    gemminer: warning: skipped 1 unreadable image(s) of 32 under data: train/cat/0.png

Python's :mod:`warnings` are kept for misuse of the API by a program, not for the run.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import torch.distributed as dist
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .training.runtime import Runtime

LOGGER = logging.getLogger("gemminer")
#: What starts a notice's line on stderr.
PREFIX = "gemminer: warning: "

_shown: set[str] = set()


class StderrHandler(logging.Handler):
    """Writes ``gemminer`` records to the current ``sys.stderr`` between tqdm bars: INFO
    (the epoch lines) as they are, warnings and worse after :data:`PREFIX`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(plain_line(record), file=sys.stderr)
        except Exception:  # as logging.StreamHandler: never let a log line end the run
            self.handleError(record)


def plain_line(record: logging.LogRecord) -> str:
    message = record.getMessage()
    return PREFIX + message if record.levelno >= logging.WARNING else message


def is_main_process(runtime: Runtime | None = None) -> bool:
    """Rank 0: ``runtime``'s, else the process group's (once joined), else torchrun's
    ``RANK`` (before joining); True outside torchrun."""
    if runtime is not None:
        return runtime.is_main
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0").strip() in ("", "0")


def notice(message: str, runtime: Runtime | None = None) -> None:
    """Tell the person running gemminer ``message`` (one line, no prefix): a WARNING on the
    ``gemminer`` logger, or ``gemminer: warning: <message>`` on stderr where logging is not
    configured. Only rank 0 tells, and each message once per process."""
    if message in _shown or not is_main_process(runtime):
        return
    _shown.add(message)
    if not LOGGER.isEnabledFor(logging.WARNING):
        return
    if LOGGER.hasHandlers():
        LOGGER.warning(message)
    else:
        tqdm.write(PREFIX + message, file=sys.stderr)


def forget_notices() -> None:
    """Let every message be told again (tests, or a program that runs several times)."""
    _shown.clear()
