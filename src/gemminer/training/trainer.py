"""The one epoch loop of every method that trains; a method adds :class:`Hooks`.

:class:`Trainer` runs the epochs of one optimizer and learning-rate schedule through
:func:`~gemminer.training.loop.train_epoch` and owns what they all share: the learning rate
read before each epoch and the schedule's step after it, the epoch's timing, its log line
and the ``on_epoch`` callback, and checkpointing (:mod:`~gemminer.training.checkpoint`):
a checkpoint after every epoch and at the next step boundary after a stop signal, from
which the same command continues. Gem-Miner, Edge-Popup, every round of IMP and of
learning-rate rewinding, and finetuning run through it, so each of them resumes after a
kill.

A method says what is its own in :class:`Hooks`, called in this order every epoch::

    before_epoch(epoch)
    for each batch: forward, backward, before_step(), optimizer step, after_step()
    scheduler step
    record = after_epoch(epoch, stats, lr)      # + "seconds"; logged, checkpointed, on_epoch
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..settings.config import OptimConfig
from .checkpoint import Checkpoint, EpochProgress, Resumable
from .loop import Batches, EpochStats, evaluate_splits, evaluation_due, train_epoch
from .optim import build_scheduler
from .progress import Stage, log_epoch
from .runtime import SINGLE, Runtime

EpochCallback = Callable[[dict], None]


class Hooks:
    """What a method adds to the shared loop; every hook is optional.

    ``stage`` names the epochs in the progress display (``"mine"`` → ``mine 3/10``),
    ``where`` in error messages (``"mining"`` → ``mining epoch 3``) and ``phase`` in the
    epoch records (metrics.jsonl). ``before_step`` runs
    between ``backward`` and the optimizer step (e.g. a regularizer's gradient),
    ``after_step`` after it (projection, thresholds, mask enforcement); None skips them.
    :meth:`state` and :meth:`load_state` carry the hooks' own state (e.g. λ) through a
    checkpoint: tensors and plain values only.
    """

    stage: str = "train"
    where: str = "training"
    phase: str = "train"
    before_step: Callable[[], None] | None = None
    after_step: Callable[[], None] | None = None

    def before_epoch(self, epoch: int) -> None:
        """Set up ``epoch`` (also the epoch a resumed run continues inside)."""

    def after_epoch(self, epoch: int, stats: EpochStats, lr: float) -> dict:
        """The epoch's own work after the schedule step, and its record (``lr``: the
        learning rate it trained with). A method extends this record with its own."""
        return {
            "phase": self.phase,
            "epoch": epoch,
            "loss": stats.loss,
            "train_acc": stats.accuracy,
            "lr": lr,
        }

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep of the hooks."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class EvaluatingHooks(Hooks):
    """Hooks of a loop that evaluates ``model`` on ``eval_batches`` (e.g. ``{"test": ...}``)
    every ``eval_every`` of its ``epochs`` and after the last (0: only after the last)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        epochs: int,
        *,
        eval_batches: Mapping[str, Batches] | None = None,
        eval_every: int = 1,
        runtime: Runtime = SINGLE,
    ) -> None:
        self.model = model
        self.device = device
        self.epochs = epochs
        self.eval_batches = eval_batches
        self.eval_every = eval_every
        self.runtime = runtime

    def evaluating_after(self, epoch: int) -> bool:
        """Whether ``epoch`` (of this loop's ``epochs``) is evaluated."""
        return self.eval_batches is not None and evaluation_due(epoch, self.epochs, self.eval_every)

    def accuracies(self, suffix: str = "") -> dict[str, float]:
        """``<split><suffix>_acc`` of ``model`` on every split of ``eval_batches``."""
        batches = self.eval_batches or {}
        return evaluate_splits(self.model, batches, self.device, self.runtime, suffix)


@dataclass
class Trainer:
    """Trains ``model`` for ``epochs`` epochs with ``optimizer`` and ``scheduler``.

    ``model`` is the module whose state a checkpoint keeps (the loop calls the module of
    :meth:`Runtime.training_module`). ``loaders``: other data loaders whose position a
    checkpoint keeps, by name (e.g. ``"calibration"``; None entries are skipped).
    ``offset``: epochs counted before this run — a later round of an iterative method
    numbers its epochs on from the earlier rounds' — and ``total`` the number of epochs
    shown (default ``offset + epochs``). ``progress`` shows each epoch; every finished one is
    logged at INFO on the ``gemminer`` logger.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_batches: Batches
    device: torch.device
    epochs: int
    hooks: Hooks
    checkpoint: Checkpoint | None = None
    loaders: Mapping[str, Batches | None] = field(default_factory=dict)
    on_epoch: EpochCallback | None = None
    progress: bool = False
    runtime: Runtime = SINGLE
    offset: int = 0
    total: int | None = None

    @classmethod
    def scheduled(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        optim: OptimConfig,
        train_batches: Batches,
        device: torch.device,
        epochs: int,
        hooks: Hooks,
        **options: Any,
    ) -> Trainer:
        """A trainer whose LR schedule is ``optim``'s over ``epochs``
        (:func:`~gemminer.training.optim.build_scheduler`); ``options`` are the other
        fields (checkpoint, loaders, on_epoch, progress, runtime, offset, total)."""
        scheduler = build_scheduler(optimizer, optim, epochs)
        return cls(model, optimizer, scheduler, train_batches, device, epochs, hooks, **options)

    def fit(
        self, resume: bool | Mapping[str, Any] = True, history: Sequence[dict] = ()
    ) -> list[dict]:
        """Run the epochs not done yet; returns the records of every epoch.

        ``resume``: True continues from the checkpoint if it holds a state; False starts
        afresh (a later round of a method whose checkpoint belongs to an earlier one); a
        state already read from the checkpoint continues from it (a method that must first
        learn from it which round it was in). ``history``: the records before this run
        (earlier rounds), replaced by the checkpoint's when resuming.
        """
        net = self.runtime.training_module(self.model, self.device)
        state = Resumable(
            self.checkpoint,
            self.model,
            self.optimizer,
            self.scheduler,
            {"train": self.train_batches, **self.loaders},
        )
        saved = resume if isinstance(resume, Mapping) else None
        if resume is True and self.checkpoint is not None:
            saved = self.checkpoint.load()
        records = list(history)
        first, inside = self.offset + 1, None
        if saved is not None:
            state.restore(saved)
            first = saved["epoch"] + 1
            inside = EpochProgress(**saved["progress"]) if saved["progress"] else None
            records = list(saved["history"])
            self.hooks.load_state(saved["extra"])
        for epoch in range(first, self.offset + self.epochs + 1):
            self._epoch(net, state, epoch, inside, records)
            inside = None
        return records

    def _epoch(
        self,
        net: nn.Module,
        state: Resumable,
        epoch: int,
        inside: EpochProgress | None,
        records: list[dict],
    ) -> None:
        """Train ``epoch`` (continuing ``inside`` it after a resume) and append its record."""
        hooks = self.hooks
        total = self.total if self.total is not None else self.offset + self.epochs
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        state.epoch_started()
        hooks.before_epoch(epoch)
        stats = train_epoch(
            net,
            self.train_batches,
            self.optimizer,
            self.device,
            before_step=hooks.before_step,
            after_step=hooks.after_step,
            progress=Stage(hooks.stage, epoch, total) if self.progress else None,
            resume=inside,
            should_stop=state.should_stop,
            where=f"{hooks.where} epoch {epoch}",
            runtime=self.runtime,
        )
        before = inside.seconds if inside is not None else 0.0  # the interrupted part's
        if stats.stopped is not None:
            spent = before + time.perf_counter() - start
            stopped = dataclasses.replace(stats.stopped, seconds=spent)
            raise state.interrupted(epoch, stopped, records, hooks.state())
        with warnings.catch_warnings():
            # an epoch resumed after its last step steps the schedule with no optimizer step
            # in this process, which PyTorch mistakes for the wrong order
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step")
            self.scheduler.step()
        record = hooks.after_epoch(epoch, stats, lr)
        record["seconds"] = before + time.perf_counter() - start
        records.append(record)
        log_epoch(record, total, self.runtime)
        state.epoch_done(epoch, records, hooks.state())
        if self.on_epoch is not None:
            self.on_epoch(record)
