"""Checkpoints of the training loop (:class:`~gemminer.training.trainer.Trainer`): every
epoch, on SIGTERM/SIGINT and when ``--time-limit`` runs out.

A checkpoint holds everything the rest of a stage depends on: the model (scores, flags,
weights, BatchNorm buffers), optimizer and LR-scheduler state, the generators of the data
loaders (so the data order and augmentation continue exactly), the global RNG states
(CPU, CUDA, NumPy, Python), the epoch, the step inside the epoch with the running loss
and accuracy sums and its seconds so far, the records of the finished epochs, and the
seconds the stage has run so far (over every process that worked on it, see
:meth:`Checkpoint.start_clock`). It is written atomically (temporary file + rename) after
every epoch, and at the next step boundary when the process receives SIGTERM or SIGINT or
its time limit passes (:class:`StopFlag`); a run killed outright (SIGKILL, power loss)
loses at most the epoch in progress. Resumed on CPU, a stage ends with the same mask,
scores, weights and metrics as an uninterrupted one (tested).

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers
only, nothing that runs code.
"""

from __future__ import annotations

import random
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import GemMinerError, RunError

CHECKPOINT_VERSION = 1


class TrainingInterrupted(GemMinerError):
    """A stop signal arrived; the stage was checkpointed and can be resumed."""


@dataclass(frozen=True)
class EpochProgress:
    """How far an interrupted epoch got: steps done, the running sums of its statistics and
    the seconds it had run (0 in checkpoints from before they were saved)."""

    steps: int
    loss_sum: float
    correct: int
    samples: int
    seconds: float = 0.0


def rng_state() -> dict[str, Any]:
    """The global random states (CPU, CUDA, NumPy, Python) as tensors and plain values."""
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopFlag:
    """Set by SIGTERM/SIGINT inside :func:`stop_on_signals`, or once ``deadline`` (a
    ``time.monotonic()`` value: ``--time-limit``) has passed; loops poll it between steps.
    ``reason`` says which ("SIGTERM", "time limit")."""

    def __init__(self, deadline: float | None = None) -> None:
        self.requested = False
        self.deadline = deadline
        self.reason = ""

    def __call__(self) -> bool:
        if not self.requested and self.deadline is not None and time.monotonic() >= self.deadline:
            self.requested, self.reason = True, "time limit"
        return self.requested


@contextmanager
def stop_on_signals(deadline: float | None = None) -> Iterator[StopFlag]:
    """Turn the first SIGTERM/SIGINT into a stop request (checkpoint, then exit); a second
    SIGINT interrupts at once. Outside the main thread, signals are left alone. The flag
    also stops the stage once ``deadline`` (``time.monotonic()``) has passed."""
    flag = StopFlag(deadline)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: object) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        flag.reason = signal.Signals(signum).name

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _loader_state(batches: object) -> Any:
    return batches.state_dict() if hasattr(batches, "state_dict") else None


def _restore_loader(batches: object, state: Any) -> None:
    if state is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(state)


class Checkpoint:
    """The checkpoint file of one stage (``path``), tied to its ``settings`` (a dict).

    A checkpoint written under other settings is not resumed (it is replaced).
    ``should_stop`` is polled between steps (see :func:`stop_on_signals`).
    """

    def __init__(
        self,
        path: str | Path,
        settings: Mapping[str, Any] | None = None,
        should_stop: Callable[[], bool] | None = None,
        writable: bool = True,
    ) -> None:
        self.path = Path(path)
        self.settings = dict(settings or {})
        self.should_stop = should_stop or (lambda: False)
        self.writable = writable  # False on torchrun ranks other than 0: they only read
        self._origin: float | None = None
        # (file stamp, saved seconds or None for other settings) of the last load
        self._loaded: tuple[tuple[int, int], float | None] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size) if stat.S_ISREG(info.st_mode) else None

    def start_clock(self) -> None:
        """Start timing the stage. A stage resumed from this checkpoint goes on from the
        seconds its earlier processes spent (saved with every checkpoint; a checkpoint
        from before they were saved counts its finished epochs' seconds), so
        :meth:`elapsed` is the stage's whole time, not only this process's. The file is
        read only if it changed since this object last loaded it."""
        stamp = self._stamp()
        if stamp is None:
            before = None
        elif self._loaded is not None and self._loaded[0] == stamp:
            before = self._loaded[1]
        else:
            self.load()
            before = self._loaded[1] if self._loaded is not None else None
        self._origin = time.perf_counter() - (before or 0.0)

    def elapsed(self) -> float:
        """Seconds since :meth:`start_clock`, plus those of the processes before it."""
        if self._origin is None:
            raise RuntimeError("Checkpoint.elapsed() before start_clock()")
        return time.perf_counter() - self._origin

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` when there is none for these settings."""
        stamp = self._stamp()
        if stamp is None:
            return None
        from ..rundir.files import safe_torch_load

        try:
            state = safe_torch_load(self.path)
        except RunError as exc:
            raise RunError(
                f"the checkpoint {self.path} is damaged ({exc}); delete it to restart this stage"
            ) from None
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise RunError(f"{self.path} is not a gemminer checkpoint; delete it to restart")
        if state.get("settings") != self.settings:
            self._loaded = (stamp, None)
            return None
        epochs = sum(float(r.get("seconds", 0.0)) for r in state["history"])
        self._loaded = (stamp, float(state.get("seconds", epochs)))
        return state

    def history(self) -> list[dict]:
        state = self.load()
        return list(state["history"]) if state else []

    def save(self, state: dict[str, Any]) -> None:
        if not self.writable:
            return
        from ..rundir.files import atomic_torch_save

        timing = {} if self._origin is None else {"seconds": self.elapsed()}
        atomic_torch_save(
            {"version": CHECKPOINT_VERSION, "settings": self.settings, **timing, **state},
            self.path,
        )

    def remove(self) -> None:
        if self.writable:
            self.path.unlink(missing_ok=True)


class Resumable:
    """Checkpoint bookkeeping of an epoch loop over ``model``/``optimizer``/``scheduler``.

    ``loaders`` are the loop's data loaders by name ("train" first); their generator states
    are saved so the data order continues exactly. Without a checkpoint every method but
    :meth:`restore` is a cheap no-op, so the loop uses it unconditionally.
    """

    def __init__(
        self,
        checkpoint: Checkpoint | None,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loaders: Mapping[str, object],
    ) -> None:
        self.checkpoint = checkpoint
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loaders = {k: v for k, v in loaders.items() if v is not None}
        self._train_at_epoch_start: Any = None

    @property
    def should_stop(self) -> Callable[[], bool] | None:
        return self.checkpoint.should_stop if self.checkpoint else None

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a checkpoint's ``state`` (see :meth:`Checkpoint.load`) into the model,
        optimizer, scheduler, loaders and global RNGs; the caller reads its epoch,
        progress, history and extra state."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name, loader in self.loaders.items():
            _restore_loader(loader, state["loaders"].get(name))
        set_rng_state(state["rng"])

    def epoch_started(self) -> None:
        """Call before iterating the training loader (remembers where its epoch begins)."""
        if self.checkpoint:
            self._train_at_epoch_start = _loader_state(self.loaders.get("train"))

    def _save(self, epoch: int, progress: EpochProgress | None, history, extra) -> None:
        loaders = {name: _loader_state(loader) for name, loader in self.loaders.items()}
        if progress is not None:  # the train loader restarts its epoch and skips done steps
            loaders["train"] = self._train_at_epoch_start
        assert self.checkpoint is not None
        self.checkpoint.save(
            {
                "epoch": epoch,
                "progress": None if progress is None else progress.__dict__,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loaders": loaders,
                "rng": rng_state(),
                "history": list(history),
                "extra": dict(extra or {}),
            }
        )

    def epoch_done(self, epoch: int, history: list[dict], extra: dict | None = None) -> None:
        if self.checkpoint:
            self._save(epoch, None, history, extra)

    def interrupted(
        self, epoch: int, progress: EpochProgress, history: list[dict], extra: dict | None = None
    ) -> TrainingInterrupted:
        """Save the state inside ``epoch`` and return the error to raise."""
        assert self.checkpoint is not None
        self._save(epoch - 1, progress, history, extra)
        why = getattr(self.checkpoint.should_stop, "reason", "")
        return TrainingInterrupted(
            f"{'the time limit passed: ' if why == 'time limit' else ''}"
            f"stopped in epoch {epoch} after {progress.steps} steps; the state is saved in "
            f"{self.checkpoint.path}: run the same command again to continue"
        )
