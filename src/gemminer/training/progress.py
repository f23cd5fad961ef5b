"""What the training loops show while they run.

On a terminal (stderr is a TTY) each epoch draws a tqdm bar. Elsewhere (CI, ``nohup``, a
log file, a notebook) a bar shows nothing readable, so one plain line is written at most
every :func:`progress_interval` seconds (30; the environment variable
``GEMMINER_PROGRESS_SECONDS`` sets it)::

    mine 3/10: step 120/391, 412 img/s, loss 1.2345, epoch ETA 1m05s, mine ETA 13m20s

The loss is the running mean of the epoch so far, read from the device only when a line is
written. Under torchrun only rank 0 shows anything.

Each finished epoch is logged at INFO on the ``gemminer`` logger (:func:`log_epoch`), so a
program that configures :mod:`logging` sees the epochs; :func:`show_epochs` writes them to
stderr for the length of a call where logging is not configured.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO, TypeVar

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..notices import LOGGER, StderrHandler
from .runtime import SINGLE, Runtime

#: Seconds between two progress lines off a terminal.
INTERVAL_ENV = "GEMMINER_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """What an epoch belongs to: ``Stage("mine", 3, 10)`` reads ``mine 3/10``."""

    phase: str
    epoch: int
    epochs: int | None = None

    def __str__(self) -> str:
        total = f"/{self.epochs}" if self.epochs is not None else ""
        return f"{self.phase} {self.epoch}{total}"


def progress_interval() -> float:
    """Seconds between progress lines: ``GEMMINER_PROGRESS_SECONDS``, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{INTERVAL_ENV}={raw!r}: give a number of seconds >= 0, e.g. 30")
    return value


def format_duration(seconds: float) -> str:
    """``42`` → ``42s``, ``70`` → ``1m10s``, ``3720`` → ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class EpochReporter:
    """The progress display of one training epoch of ``steps`` steps (None: unknown).

    ``stream`` (default: stderr at construction) decides: a terminal gets a tqdm bar
    (:meth:`wrap`), anything else a line from :meth:`update` at most every ``interval``
    seconds (default :func:`progress_interval`). ``start``: steps of a resumed epoch
    already done (drawn again but not trained, so not counted in the rate).
    ``world_size``: ranks training on slices of each batch (images/s counts them all).
    """

    def __init__(
        self,
        stage: Stage | str,
        steps: int | None,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
        start: int = 0,
        world_size: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.steps = steps
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = _is_terminal(self.stream)
        self.interval = progress_interval() if interval is None else interval
        self.start = start
        self.world_size = world_size
        self.clock = clock
        self._began = self._last = clock()

    def wrap(self, batches: Iterable[T]) -> Iterable[T]:
        """``batches`` with a tqdm bar on a terminal, else as they are."""
        if not self.terminal:
            return batches
        return tqdm(
            batches,
            total=self.steps,
            desc=str(self.stage),
            leave=False,
            dynamic_ncols=True,
            file=self.stream,
        )

    def update(self, step: int, images: int, loss: Callable[[], float]) -> None:
        """After ``step`` (counted from 1, skipped steps included), with ``images`` trained
        on this rank since the start: a line if one is due. ``loss()`` (the running mean)
        is called only then, so the device is synchronized once a line at most."""
        if self.terminal:
            return
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self.stream.write(self.line(step, images, loss(), now - self._began) + "\n")
        self.stream.flush()

    def line(self, step: int, images: int, loss: float, elapsed: float) -> str:
        """``mine 3/10: step 120/391, 412 img/s, loss 1.2345, epoch ETA 1m05s, mine ETA …``."""
        elapsed = max(elapsed, 1e-9)
        parts = [
            f"step {step}/{self.steps}" if self.steps is not None else f"step {step}",
            f"{images * self.world_size / elapsed:.0f} img/s",
            f"loss {loss:.4f}",
        ]
        trained = step - self.start
        if self.steps is not None and trained > 0:
            per_step = elapsed / trained
            epoch_left = (self.steps - step) * per_step
            parts.append(f"epoch ETA {format_duration(epoch_left)}")
            stage = self.stage
            if isinstance(stage, Stage) and stage.epochs is not None:
                left = epoch_left + (stage.epochs - stage.epoch) * self.steps * per_step
                parts.append(f"{stage.phase} ETA {format_duration(left)}")
        return f"{self.stage}: {', '.join(parts)}"


def epoch_reporter(
    progress: Stage | str | None, steps: int | None, runtime: Runtime, start: int = 0
) -> EpochReporter | None:
    """The reporter of an epoch labelled ``progress``; None for no display (no label, or
    a torchrun rank other than 0)."""
    if progress is None or not runtime.is_main:
        return None
    return EpochReporter(progress, steps, start=start, world_size=runtime.world_size)


def epoch_line(record: dict, epochs: int | None = None) -> str:
    """A finished epoch's record in one line:
    ``mine epoch 3/10: loss 1.2346, train 50.00 %, test 45.67 %, density 5.00 %, 12.3 s``."""
    total = f"/{epochs}" if epochs is not None else ""
    parts = [f"loss {record['loss']:.4f}"] if "loss" in record else []
    parts += [
        f"{key.removesuffix('_acc')} {100 * value:.2f} %"
        for key, value in record.items()
        if key.endswith("_acc") and value is not None
    ]
    if "density" in record:
        parts.append(f"density {100 * record['density']:.2f} %")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.1f} s")
    where = f"round {record['round']} " if "round" in record else ""
    return f"{record['phase']} {where}epoch {record['epoch']}{total}: {', '.join(parts)}"


def log_epoch(record: dict, epochs: int | None = None, runtime: Runtime = SINGLE) -> None:
    """Log a finished epoch at INFO on the ``gemminer`` logger (see :func:`epoch_line`);
    under torchrun on rank 0 only."""
    if runtime.is_main and LOGGER.isEnabledFor(logging.INFO):
        LOGGER.info(epoch_line(record, epochs))


@contextlib.contextmanager
def show_epochs(progress: bool) -> Iterator[None]:
    """With ``progress``, make the ``gemminer`` logger's epochs visible while in the block:
    its level is lowered to INFO, and where logging is not configured (no handler at all)
    they go to stderr (between progress bars, with the run's notices,
    :mod:`gemminer.notices`). Everything is put back afterwards. For library entry points such as
    :func:`gemminer.mine`; the command line prints its own epoch lines."""
    if not progress:
        yield
        return
    level = LOGGER.level
    handler = None
    if not LOGGER.hasHandlers():
        handler = StderrHandler()
        LOGGER.addHandler(handler)
    if LOGGER.getEffectiveLevel() > logging.INFO:
        LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOGGER.setLevel(level)
        if handler is not None:
            LOGGER.removeHandler(handler)
