"""How a stage takes a run folder: resumed, skipped as finished, refused (other settings)
or cleared and started afresh.

A folder is claimed only once everything the stage needs has been loaded and checked, so
a stage that fails before it starts leaves the folder as it was.
"""

from __future__ import annotations

import dataclasses
import json

from ..errors import RunError
from ..reports.format import flatten
from ..rundir.runs import RunDir
from ..settings.config import FinetuneConfig, RunConfig
from ..training.checkpoint import Checkpoint
from .describe import Log

PRUNE_CHECKPOINT = "checkpoint-prune.pt"
FINETUNE_CHECKPOINT = "checkpoint-finetune.pt"
#: Files that hold a finished or resumable stage: a folder with none of them holds nothing
#: worth keeping (e.g. only the config.json of a run that failed before it started).
WORK_FILES = (
    "mask.pt",
    "ticket.pt",
    "summary.json",
    "finetuned.pt",
    "scores.pt",
    PRUNE_CHECKPOINT,
    FINETUNE_CHECKPOINT,
)
#: What a fresh start removes (a resumed one keeps everything).
STALE_FILES = (
    "metrics.jsonl",
    "summary.json",
    "finetuned.pt",
    "scores.pt",
    "mask.pt",
    "ticket.pt",
    "density.txt",
    PRUNE_CHECKPOINT,
    FINETUNE_CHECKPOINT,
)


def holds_work(run: RunDir) -> bool:
    """Whether ``run`` holds a finished or resumable stage (:data:`WORK_FILES`)."""
    return any(run.file(name).is_file() for name in WORK_FILES)


def mask_part(cfg: RunConfig) -> RunConfig:
    """The settings that determine the mask (finetuning and paths left out)."""
    return dataclasses.replace(
        cfg, finetune=FinetuneConfig(), data_dir="", device="auto", download=True
    )


def settings_key(data: dict) -> dict:
    """``data`` as plain JSON values, as a checkpoint stores and compares it."""
    return json.loads(json.dumps(data))


def describe_difference(old: RunConfig, new: RunConfig) -> str:
    """``prune.epochs: 10 → 20, seed: 0 → 1``: the settings that differ."""
    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys)


@dataclasses.dataclass(frozen=True)
class Claim:
    """How a stage takes a run folder: afresh, or resuming the checkpoint's ``history``."""

    resume: list[dict] | None = None


def plan_folder(
    run: RunDir, cfg: RunConfig, overwrite: bool, log: Log, checkpoint: Checkpoint | None = None
) -> Claim | None:
    """How pruning takes ``run``; None if it already holds this finished run. Writes nothing.

    A folder with the same settings and a checkpoint is resumed. A folder holding a
    finished or resumable stage with other settings is refused unless ``overwrite``; one
    holding neither (nothing, or only the config of a run that never started) is reused.
    """
    if overwrite or not run.file("config.json").is_file() or not holds_work(run):
        return Claim()
    old = run.read_config()
    if mask_part(old) != mask_part(cfg):
        raise RunError(
            f"{run.path} holds a run with other settings ({describe_difference(old, cfg)}); "
            "pass --overwrite to replace it or choose another --out"
        )
    if run.file("ticket.pt").is_file() and run.summary().finished:
        log(f"{run.path}: mask already found, skipping (pass --overwrite to prune again)")
        return None
    state = checkpoint.load() if checkpoint is not None else None
    return Claim(list(state["history"]) if state is not None else None)


def claim_folder(run: RunDir, cfg: RunConfig, claim: Claim, log: Log) -> None:
    """Take ``run`` for pruning, once everything the stage needs has been loaded: cut the
    metrics back to a resumed checkpoint's epochs, or clear the folder and write the config."""
    if not run.writable:
        return
    if claim.resume is not None:
        run.replace_metrics(claim.resume)
        log(f"{run.path}: resuming from its checkpoint ({len(claim.resume)} epochs done)")
        return
    run.path.mkdir(parents=True, exist_ok=True)
    for name in STALE_FILES:
        run.file(name).unlink(missing_ok=True)
    run.write_config(cfg)
