"""What a stage tells as it runs: progress messages, one line per epoch (also appended to
metrics.jsonl and, with ``--tensorboard``, logged to TensorBoard), where it runs, and what
to do when training diverges."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from ..masking import format_density
from ..rundir.runs import RunDir
from ..rundir.tracking import TensorBoardSink
from ..training.checkpoint import Checkpoint
from ..training.loop import TrainingDivergedError
from ..training.runtime import Runtime

Log = Callable[[str], None]
T = TypeVar("T")


def echo(message: str) -> None:
    """Progress messages go to stderr (results go to stdout), between progress bars."""
    tqdm.write(message, file=sys.stderr)


def quiet(message: str) -> None:
    """The log of torchrun ranks other than 0."""


def epoch_line(record: dict) -> str:
    """One epoch's record as a line: loss, accuracies, density, the bound, seconds."""
    accs = " ".join(f"{k[:-4]} {100 * v:.2f} %" for k, v in record.items() if k.endswith("_acc"))
    bound = f" bound {100 * record['bound']:.2f} %" if "bound" in record else ""
    where = f"round {record['round']} " if "round" in record else ""
    kept = format_density(record["density"])
    if "flops" in record:  # channel pruning: the bound is on the multiply-adds
        kept = f"multiply-adds {100 * record['flops']:.2f} %, {kept}"
    return (
        f"{record['phase']} {where}epoch {record['epoch']}: loss {record['loss']:.4f} {accs} "
        f"{kept}{bound} ({record.get('seconds', 0):.1f} s)"
    )


def metrics_writer(
    run: RunDir, log: Log, tensorboard: bool = False, append: bool = True
) -> Callable[[dict], None]:
    """Show each epoch's record, log it to TensorBoard and (``append``) to metrics.jsonl."""
    sink = TensorBoardSink(run.file("tensorboard")) if tensorboard else None

    def on_epoch(record: dict) -> None:
        if append:
            run.append_metrics(record)
        if sink is not None:
            sink(record)
        log(epoch_line(record))

    return on_epoch


def where(device: torch.device, runtime: Runtime) -> str:
    """``cpu``, or e.g. ``cuda:0 × 4 processes, bf16``; a precision ``auto`` chose is
    named with the reason, e.g. ``cpu, bf16 (auto: this CPU has bf16 matrix instructions)``."""
    parts = [
        str(device)
        if not runtime.distributed
        else f"{device.type} × {runtime.world_size} processes"
    ]
    if runtime.precision_reason:
        parts.append(f"{runtime.precision} ({runtime.precision_reason})")
    elif runtime.precision != "fp32":
        parts.append(runtime.precision)
    if runtime.compile:
        parts.append("compiled")
    return ", ".join(parts)


def diverged_hint(stage: Callable[[], T], checkpoint: Checkpoint, advice: str) -> T:
    """Run ``stage``; if its loss diverges, say where the last good state is kept, then
    ``advice`` (what to run instead)."""
    try:
        return stage()
    except TrainingDivergedError as exc:
        state = checkpoint.load()
        kept = (
            f"the state after epoch {state['epoch']} is kept in {checkpoint.path}"
            if state
            else "no epoch finished, so nothing was kept"
        )
        raise TrainingDivergedError(f"{exc}; {kept}. {advice}") from None
