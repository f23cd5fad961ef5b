"""The finetune stage: train a run's ticket (its weights, the mask fixed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..masking import format_density
from ..rundir.runs import RunDir
from ..rundir.summary import RunSummary, best_epoch
from ..seeds import derive_seed
from ..settings.config import FinetuneConfig, RunConfig
from ..settings.explain import epochs_text
from ..settings.resolve import finetune_overrides
from ..training import finetune, resolve_device
from ..training.checkpoint import Checkpoint, stop_on_signals
from ..training.runtime import SINGLE, Runtime
from .assemble import eval_loaders, load_data, train_loader
from .claim import FINETUNE_CHECKPOINT, mask_part, settings_key
from .describe import Log, diverged_hint, echo, metrics_writer, quiet, where
from .ticket import require_ticket, ticket_model


@dataclasses.dataclass(frozen=True)
class _FinetuneStart:
    """What finetuning keeps of the folder: its summary, the metrics of the other phases,
    and the epochs its checkpoint has done."""

    summary: RunSummary
    metrics: list[dict]
    resumed_epochs: int


def finetune_run(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    again: bool = False,
    progress: bool = True,
    log: Log = echo,
    tensorboard: bool = False,
    runtime: Runtime = SINGLE,
) -> RunSummary:
    """Finetune a run's ticket (its weights, the mask fixed); returns the summary.

    A run already finetuned with these settings (``epochs``, ``lr``, ``batch_size`` as
    given or the run's; its finetuned.pt there, no finetuning checkpoint left) is left as it
    is, unless ``again``: re-running ``mine --finetune`` or ``gemminer finetune`` never
    redoes hours of training by accident.

    Every file the stage needs is read and checked before it starts. The folder keeps its
    previous state (config, metrics, summary, finetuned weights) until the finetuning has
    finished; then finetuned.pt, metrics.jsonl, summary.json and config.json are replaced,
    each atomically, and the checkpoint (which resumes the stage if it is stopped, even
    between these writes) is removed last. Under torchrun (``runtime``) every rank runs
    this; rank 0 alone prints and writes.
    """
    run = RunDir(run_dir, writable=runtime.is_main)
    log = log if runtime.is_main else quiet
    cfg = run.read_config()
    require_ticket(run)
    summary = run.summary()
    kept = [r for r in run.read_metrics() if r.get("phase") != "finetune"]
    ft = finetune_overrides(
        cfg.finetune, {"finetune_epochs": epochs, "finetune_lr": lr, "batch_size": batch_size}
    )
    finished = (
        summary.post_finetune_acc is not None
        and run.file("finetuned.pt").is_file()
        and not run.file(FINETUNE_CHECKPOINT).is_file()  # else a finetuning to resume
    )
    if finished and ft == cfg.finetune and not again:
        log(
            f"{run.path}: already finetuned ({epochs_text(ft.epochs)}, post-finetune test "
            f"accuracy {100 * summary.post_finetune_acc:.2f} %); `gemminer finetune {run.path} "
            "--again` finetunes it again"
        )
        return summary
    cfg = dataclasses.replace(
        cfg, finetune=ft, data_dir=data_dir or cfg.data_dir, device=device or cfg.device
    )
    with stop_on_signals(runtime.deadline) as stop:
        checkpoint = Checkpoint(
            run.file(FINETUNE_CHECKPOINT),
            settings_key(mask_part(cfg).to_dict() | {"finetune": dataclasses.asdict(ft)}),
            stop,
            writable=runtime.is_main,
        )
        done = len(checkpoint.history())  # a damaged checkpoint fails here, before any work
        summary = _finetune(
            run,
            cfg,
            ft,
            checkpoint,
            _FinetuneStart(summary, kept, done),
            progress and runtime.is_main,
            log,
            tensorboard and runtime.is_main,
            runtime,
        )
    checkpoint.remove()
    runtime.barrier()
    return summary


def _finetune(
    run: RunDir,
    cfg: RunConfig,
    ft: FinetuneConfig,
    checkpoint: Checkpoint,
    start_state: _FinetuneStart,
    progress: bool,
    log: Log,
    tensorboard: bool,
    runtime: Runtime,
) -> RunSummary:
    """Load the data and the ticket, train it, then replace the previous finetuning's files."""
    dev = resolve_device(cfg.device)
    splits = load_data(cfg)
    # weight training starts from the ticket's BatchNorm statistics (re-estimated for its
    # mask), as the authors' finetune() continues from mining's (main_utils.py): statistics
    # reset to 0 and 1 made the first evaluations of a short epoch read one class
    model, mask = ticket_model(run, cfg, splits.num_classes)
    model.to(device=dev, memory_format=torch.channels_last)

    if start_state.resumed_epochs:
        log(
            f"{run.path}: resuming finetuning from its checkpoint "
            f"({start_state.resumed_epochs} epochs done)"
        )
    log(
        f"finetuning {run.path}: {format_density(mask.density)}, {epochs_text(ft.epochs)} on "
        f"{where(dev, runtime)}"
    )
    checkpoint.start_clock()  # a resumed run counts its earlier processes' seconds too
    history = diverged_hint(
        lambda: finetune(
            model,
            mask,
            train_loader(
                splits,
                ft.batch_size,
                dev,
                derive_seed(cfg.seed, "finetune-data"),
                runtime=runtime,
            ),
            ft,
            dev,
            eval_batches=eval_loaders(splits, dev, runtime=runtime),
            eval_every=cfg.eval_every,
            on_epoch=metrics_writer(run, log, tensorboard, append=False),
            progress=progress,
            checkpoint=checkpoint,
            runtime=runtime,
        ),
        checkpoint,
        "Lower the learning rate (--lr) and finetune again",
    )
    last = history[-1]
    seconds = checkpoint.elapsed()
    # the finetuning is done: replace the previous one's files (the checkpoint stays until
    # the caller removes it, so a stop between these writes resumes to the same result)
    run.save_tensors("finetuned.pt", model.state_dict())
    run.replace_metrics(start_state.metrics + history)
    mask_seconds = start_state.summary.seconds_mask
    best = best_epoch(history)
    summary = start_state.summary.updated(
        post_finetune_acc=last["test_acc"],
        post_finetune_val_acc=last.get("val_acc"),
        **(best.summary_values() if best is not None else {}),
        epochs_finetune=ft.epochs,
        seconds_finetune=seconds,
        seconds=(0.0 if mask_seconds is None else mask_seconds) + seconds,
    )
    run.write_summary(summary)
    run.write_config(cfg)
    log(
        f"finetuned {run.path}: post-finetune test accuracy {100 * last['test_acc']:.2f} % "
        f"(last epoch){'; ' + best.describe() if best is not None else ''}"
    )
    return summary
