"""Stages of a run on disk: prune (any method), finetune, evaluate, sanity-check.

The command line is a thin layer over these functions; each reads and writes a run
folder (see :mod:`gemminer.runs`) and skips work that is already done. Every method's
ticket is evaluated and finetuned by the same code here.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import CALIBRATION_BATCHES, FinetuneConfig, RunConfig
from .data import DataSplits, load_dataset
from .data.loader import BatchLoader, training_batches
from .errors import RunError
from .explain import explain_settings
from .masking import Mask, apply_mask, format_density, init_weights, prunable_weights
from .methods import METHODS, MethodSpec, PruneContext
from .models import create_model
from .models.hub import resolve_weights
from .models.pretrained import load_pretrained
from .runs import RunDir
from .seeds import derive_seed
from .tracking import TensorBoardSink
from .training import evaluate, finetune, recalibrate_batchnorm, resolve_device
from .training.checkpoint import Checkpoint, stop_on_signals
from .training.loop import TrainingDivergedError
from .training.runtime import SINGLE, Runtime

Log = Callable[[str], None]
T = TypeVar("T")


def _echo(message: str) -> None:
    """Progress messages go to stderr (results go to stdout), between progress bars."""
    tqdm.write(message, file=sys.stderr)


def load_data(cfg: RunConfig) -> DataSplits:
    return load_dataset(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download,
        val_size=cfg.val_size,
        train_size=cfg.train_size,
        seed=cfg.seed,
        image_size=cfg.image_size,
        **cfg.data_args,
    )


def eval_loaders(
    splits: DataSplits,
    device: torch.device,
    batch_size: int = 500,
    runtime: Runtime = SINGLE,
) -> dict[str, BatchLoader]:
    """In-order, unaugmented loaders for the test split (and the validation split, if any);
    under torchrun each rank reads its share."""
    named = {"test": splits.test} | ({"val": splits.val} if splits.val is not None else {})
    return {
        name: BatchLoader(
            data,
            batch_size=batch_size,
            mean=splits.mean,
            std=splits.std,
            device=device,
            shard=(runtime.rank, runtime.world_size),
        )
        for name, data in named.items()
    }


def train_loader(
    splits: DataSplits,
    batch_size: int,
    device: torch.device,
    seed: int,
    augment: bool = True,
    runtime: Runtime = SINGLE,
) -> BatchLoader:
    """Shuffled training batches; ``augment=False`` for BatchNorm calibration (which every
    rank runs on whole batches, so BatchNorm statistics agree). Under torchrun each rank
    reads its slice of every batch of ``batch_size``."""
    return training_batches(
        splits.train,
        batch_size=batch_size,
        mean=splits.mean,
        std=splits.std,
        device=device,
        seed=seed,
        augmentation=splits.augmentation,
        calibration=not augment,
        shard=(runtime.rank, runtime.world_size),
    )


def architecture(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The run's model, freshly constructed (no initialization of ours, no weights loaded)."""
    return create_model(cfg.model, num_classes=num_classes, **cfg.model_args)


def build_model(cfg: RunConfig, num_classes: int, seed: int | None = None) -> nn.Module:
    """The run's model with its seeded original initialization."""
    model = architecture(cfg, num_classes)
    seed = derive_seed(cfg.seed, "weights") if seed is None else seed
    init_weights(model, cfg.weight_init, seed)
    if cfg.pretrained:
        load_pretrained(model, resolve_weights(cfg.pretrained, download=cfg.download))
    return model


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _describe_difference(old: RunConfig, new: RunConfig) -> str:
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys)


def _mask_part(cfg: RunConfig) -> RunConfig:
    """The settings that determine the mask (finetuning and paths left out)."""
    return dataclasses.replace(
        cfg, finetune=FinetuneConfig(), data_dir="", device="auto", download=True
    )


def _print_epoch(log: Log) -> Callable[[dict], None]:
    def show(r: dict) -> None:
        accs = " ".join(f"{k[:-4]} {100 * v:.2f}%" for k, v in r.items() if k.endswith("_acc"))
        extra = f" bound {100 * r['bound']:.2f}%" if "bound" in r else ""
        where = f"round {r['round']} " if "round" in r else ""
        log(
            f"{r['phase']} {where}epoch {r['epoch']}: loss {r['loss']:.4f} {accs} "
            f"{format_density(r['density'])}{extra} ({r.get('seconds', 0):.1f} s)"
        )

    return show


def _metrics_writer(
    run: RunDir, log: Log, tensorboard: bool = False, append: bool = True
) -> Callable[[dict], None]:
    """Show each epoch's record, log it to TensorBoard and (``append``) to metrics.jsonl."""
    show = _print_epoch(log)
    sink = TensorBoardSink(run.file("tensorboard")) if tensorboard else None

    def on_epoch(record: dict) -> None:
        if append:
            run.append_metrics(record)
        if sink is not None:
            sink(record)
        show(record)

    return on_epoch


PRUNE_CHECKPOINT = "checkpoint-prune.pt"
FINETUNE_CHECKPOINT = "checkpoint-finetune.pt"


def _settings_key(data: dict) -> dict:
    """``data`` as plain JSON values, as a checkpoint stores and compares it."""
    return json.loads(json.dumps(data))


#: Files that hold a finished or resumable stage: a folder with none of them holds nothing
#: worth keeping (e.g. only the config.json of a run that failed before it started).
_WORK_FILES = ("mask.pt", "ticket.pt", "summary.json", "finetuned.pt", "scores.pt")
#: What a fresh start removes (a resumed one keeps everything).
_STALE_FILES = (
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


def _holds_work(run: RunDir) -> bool:
    names = (*_WORK_FILES, PRUNE_CHECKPOINT, FINETUNE_CHECKPOINT)
    return any(run.file(name).is_file() for name in names)


@dataclasses.dataclass(frozen=True)
class _Claim:
    """How a stage takes a run folder: afresh, or resuming the checkpoint's ``history``."""

    resume: list[dict] | None = None


def _plan_folder(
    run: RunDir, cfg: RunConfig, overwrite: bool, log: Log, checkpoint: Checkpoint | None = None
) -> _Claim | None:
    """How pruning takes ``run``; None if it already holds this finished run. Writes nothing.

    A folder with the same settings and a checkpoint is resumed. A folder holding a
    finished or resumable stage with other settings is refused unless ``overwrite``; one
    holding neither (nothing, or only the config of a run that never started) is reused.
    """
    if overwrite or not run.file("config.json").is_file() or not _holds_work(run):
        return _Claim()
    old = run.read_config()
    if _mask_part(old) != _mask_part(cfg):
        raise RunError(
            f"{run.path} holds a run with other settings ({_describe_difference(old, cfg)}); "
            "pass --overwrite to replace it or choose another --out"
        )
    if run.file("ticket.pt").is_file() and "density" in run.read_summary():
        log(f"{run.path}: mask already found, skipping (pass --overwrite to prune again)")
        return None
    state = checkpoint.load() if checkpoint is not None else None
    return _Claim(list(state["history"]) if state is not None else None)


def _claim_folder(run: RunDir, cfg: RunConfig, claim: _Claim, log: Log) -> None:
    """Take ``run`` for pruning, once everything the stage needs has been loaded: cut the
    metrics back to a resumed checkpoint's epochs, or clear the folder and write the config."""
    if not run.writable:
        return
    if claim.resume is not None:
        run.replace_metrics(claim.resume)
        log(f"{run.path}: resuming from its checkpoint ({len(claim.resume)} epochs done)")
        return
    run.path.mkdir(parents=True, exist_ok=True)
    for name in _STALE_FILES:
        run.file(name).unlink(missing_ok=True)
    run.write_config(cfg)


def calibration_batches(cfg: RunConfig) -> int:
    """How many training batches re-estimate BatchNorm statistics of ``cfg``'s ticket: the
    method's ``bn_recalibration_batches`` setting where it has one (Gem-Miner), else
    :data:`~gemminer.config.CALIBRATION_BATCHES` — the same count as the method's own
    evaluations, so the reported pre-finetune accuracy matches them."""
    settings = METHODS.get(cfg.method).build_settings(cfg.settings)
    return int(getattr(settings, "bn_recalibration_batches", CALIBRATION_BATCHES))


def _ticket_accuracy(
    model: nn.Module,
    mask: Mask,
    splits: DataSplits,
    cfg: RunConfig,
    device: torch.device,
    runtime: Runtime = SINGLE,
) -> dict[str, float]:
    """Pre-finetune accuracy of ``model`` ⊙ ``mask``: BatchNorm statistics re-estimated for
    the ticket on :func:`calibration_batches` training batches, then evaluated on each
    split. ``model`` keeps the re-estimated statistics; its weights are masked in place."""
    apply_mask(model, mask)
    calibration = train_loader(
        splits, cfg.prune.batch_size, device, derive_seed(cfg.seed, "calibration"), augment=False
    )
    recalibrate_batchnorm(model, calibration, device, calibration_batches(cfg))
    return {
        f"{name}_acc": evaluate(model, loader, device, runtime).accuracy
        for name, loader in eval_loaders(splits, device, runtime=runtime).items()
    }


def _save_ticket(
    run: RunDir, model: nn.Module, weights: dict[str, torch.Tensor], mask: Mask
) -> None:
    """``ticket.pt``: the ticket's unmasked weights and its re-estimated BatchNorm buffers."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state.update({k: v.detach().cpu().clone() for k, v in weights.items()})
    run.save_tensors("ticket.pt", state)
    mask.save(run.file("mask.pt"))
    run.file("density.txt").write_text(mask.report() + "\n")


def prune_run(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Log = _echo,
    tensorboard: bool = False,
    runtime: Runtime = SINGLE,
) -> dict:
    """Find a ticket with ``cfg.method`` into run folder ``out``; returns the summary.

    A folder that already holds a finished run with the same settings is left as it
    is; one with other settings is refused unless ``overwrite``. Under torchrun
    (``runtime``) every rank runs this; rank 0 alone prints and writes.
    """
    spec = METHODS.get(cfg.method)
    settings = spec.build_settings(cfg.settings)
    run = RunDir(out, writable=runtime.is_main)
    log = log if runtime.is_main else _quiet
    with stop_on_signals() as stop:
        checkpoint = Checkpoint(
            run.file(PRUNE_CHECKPOINT),
            _settings_key(_mask_part(cfg).to_dict()),
            stop,
            writable=runtime.is_main,
        )
        claim = _plan_folder(run, cfg, overwrite, log, checkpoint) if runtime.is_main else None
        if not runtime.any(claim is not None):  # every rank learns rank 0's decision
            return run.read_summary()
        summary = _prune(
            run,
            cfg,
            spec,
            settings,
            claim or _Claim(),
            checkpoint,
            progress and runtime.is_main,
            log,
            tensorboard and runtime.is_main,
            runtime,
        )
    checkpoint.remove()
    runtime.barrier()  # every file is written before any rank reads it
    return summary


def _quiet(message: str) -> None:
    """The log of torchrun ranks other than 0."""


def _prune(
    run: RunDir,
    cfg: RunConfig,
    spec: MethodSpec,
    settings: object,
    claim: _Claim,
    checkpoint: Checkpoint,
    progress: bool,
    log: Log,
    tensorboard: bool,
    runtime: Runtime,
) -> dict:
    """Load the data and the model, then claim the folder (rank 0) and find the ticket."""
    device = resolve_device(cfg.device)
    splits = load_data(cfg)
    model = build_model(cfg, splits.num_classes).to(
        device=device, memory_format=torch.channels_last
    )
    _claim_folder(run, cfg, claim, log)
    runtime.barrier()  # the folder is claimed before any rank reads its checkpoint
    original = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    ctx = PruneContext(
        model=model,
        density=cfg.prune.density,
        train_batches=train_loader(
            splits,
            cfg.prune.batch_size,
            device,
            derive_seed(cfg.seed, "prune-data"),
            runtime=runtime,
        ),
        device=device,
        epochs=cfg.prune.epochs,
        batch_size=cfg.prune.batch_size,
        optim=cfg.prune.optim,
        seed=derive_seed(cfg.seed, "scores"),
        eval_batches=eval_loaders(splits, device, runtime=runtime),
        eval_every=cfg.epoch_eval_every,
        calibration_batches=train_loader(
            splits,
            cfg.prune.batch_size,
            device,
            derive_seed(cfg.seed, "calibration"),
            augment=False,
        ),
        on_epoch=_metrics_writer(run, log, tensorboard),
        progress=progress,
        checkpoint=checkpoint,
        runtime=runtime,
    )
    log(_describe_start(cfg, splits, device, runtime))
    for line in explain_settings(cfg):
        log(f"  {line}")
    start = time.perf_counter()
    result = _diverged_hint(lambda: spec.run(ctx, settings), checkpoint)
    seconds = time.perf_counter() - start
    result.mask.check(model)
    runtime.broadcast_(list(result.mask.values()))  # one mask on every rank: rank 0's

    weights = result.weights if result.weights is not None else original
    ticket = architecture(cfg, splits.num_classes)
    _load_parameters(ticket, weights, f"{cfg.method}'s ticket weights")
    ticket.to(device=device, memory_format=torch.channels_last)
    accs = _ticket_accuracy(ticket, result.mask, splits, cfg, device, runtime)
    if runtime.is_main:
        _save_ticket(run, ticket, {k: v for k, v in weights.items() if k in original}, result.mask)
    if result.scores is not None:
        run.save_tensors("scores.pt", result.scores)
    summary = run.update_summary(
        method=cfg.method,
        model=cfg.model,
        dataset=cfg.dataset,
        target_density=cfg.prune.density,
        density=result.mask.density,
        num_kept=result.mask.num_kept,
        num_prunable=result.mask.num_total,
        layer_density={row.name: row.density for row in result.mask.layers()},
        pre_finetune_acc=accs["test_acc"],
        pre_finetune_val_acc=accs.get("val_acc"),
        post_finetune_acc=None,
        epochs_to_mask=result.epochs_to_mask,
        iterations_to_mask=result.iterations_to_mask,
        epochs_mining=result.epochs_to_mask,
        epochs_finetune=0,
        seconds_mask=seconds,
        seconds=seconds,
        seed=cfg.seed,
        device=str(device),
        processes=runtime.world_size,
        precision=runtime.precision,
        torch=torch.__version__,
        input_mean=list(splits.mean),
        input_std=list(splits.std),
        num_classes=splits.num_classes,
        class_names=list(splits.train.classes),
        **result.extra,
    )
    log(
        f"{cfg.method} → {run.path}: {format_density(result.mask.density)} "
        f"(target {cfg.prune.density:.2%}), "
        f"pre-finetune test accuracy {100 * accs['test_acc']:.2f}%"
    )
    shortfall = density_shortfall(cfg, result.mask.density)
    if shortfall:
        log(shortfall)
    if summary.get("gem_density") is not None and summary.get("gem_acc") is not None:
        log(
            f"  rare gem (rounded mask, not finetuned): {format_density(summary['gem_density'])}, "
            f"test accuracy {100 * summary['gem_acc']:.2f}% (BatchNorm re-estimated), "
            f"{100 * summary.get('gem_acc_running_bn', float('nan')):.2f}% (mining's statistics); "
            f"finetuning the {summary.get('finetune_mask', 'rounded')} mask"
        )
    return summary


#: A ticket this far below its target density (relative) earns a warning.
SHORTFALL_WARNING = 0.10


def density_shortfall(cfg: RunConfig, density: float) -> str:
    """A warning when the ticket kept more than 10 % (relative) fewer weights than asked,
    naming the likely cause; empty otherwise."""
    target = cfg.prune.density
    if target >= 1 or density >= (1 - SHORTFALL_WARNING) * target:
        return ""
    text = (
        f"warning: the ticket kept {density:.2%} of the weights, {1 - density / target:.0%} "
        f"below the target {target:.2%}."
    )
    if cfg.method == "gem-miner":
        lam = cfg.settings.get("lam")
        text += (
            f" λ = {lam:g} pushed more scores below 0.5 than freezing removed: lower --lambda, "
            "or finetune the flags (--set finetune_mask=flags), which hold the target exactly."
        )
    return text


def _describe_start(
    cfg: RunConfig, splits: DataSplits, device: torch.device, runtime: Runtime
) -> str:
    """What runs where: model, data (images, classes, size), device, threads."""
    shape = tuple(splits.train.images.shape[1:])
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return (
        f"{cfg.method}: {cfg.model} on {cfg.dataset} ({len(splits.train)} training images, "
        f"{splits.num_classes} classes, {shape[-2]}×{shape[-1]}×{shape[0]}), "
        f"{_where(device, runtime)}{threads}"
    )


def _where(device: torch.device, runtime: Runtime) -> str:
    """``cpu``, or e.g. ``cuda:0 × 4 processes, bf16``."""
    parts = [
        str(device)
        if not runtime.distributed
        else f"{device.type} × {runtime.world_size} processes"
    ]
    if runtime.precision != "fp32":
        parts.append(runtime.precision)
    if runtime.compile:
        parts.append("compiled")
    return ", ".join(parts)


def _diverged_hint(stage: Callable[[], T], checkpoint: Checkpoint) -> T:
    """Run ``stage``; if its loss diverges, say where the last good state is kept."""
    try:
        return stage()
    except TrainingDivergedError as exc:
        state = checkpoint.load()
        kept = (
            f"the state after epoch {state['epoch']} is kept in {checkpoint.path}"
            if state
            else "no epoch finished, so nothing was kept"
        )
        raise TrainingDivergedError(
            f"{exc}; {kept}. Lower the learning rate (or λ) and run with --overwrite"
        ) from None


def _load_parameters(model: nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    if missing:
        raise RunError(f"{what} lack {', '.join(missing)}: wrong model?")
    with torch.no_grad():
        for name, p in params.items():
            if tuple(weights[name].shape) != tuple(p.shape):
                raise RunError(
                    f"{what}: {name} has shape {tuple(weights[name].shape)}, "
                    f"the model expects {tuple(p.shape)}"
                )
            p.copy_(weights[name])


def _require_ticket(run: RunDir) -> None:
    for name in ("mask.pt", "ticket.pt"):
        if not run.file(name).is_file():
            raise RunError(
                f"{run.path} has no {name}: run `gemminer prune` (or `mine`) into it first"
            )


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of ``model``'s state dict."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def mask_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The name and shape of every prunable weight of ``model`` (the keys of its mask)."""
    return {k: tuple(w.shape) for k, w in prunable_weights(model).items()}


def ticket_model(run: RunDir, cfg: RunConfig, num_classes: int) -> tuple[nn.Module, Mask]:
    """The run's model with its ticket weights (unmasked) and BatchNorm buffers, and the mask;
    both files checked against the model (a :class:`RunError` names a damaged one)."""
    _require_ticket(run)
    model = architecture(cfg, num_classes)
    state = run.load_tensors("ticket.pt", model_shapes(model))
    mask = run.load_mask(mask_shapes(model))
    model.load_state_dict(state)
    return model, mask


def finetune_run(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Log = _echo,
    tensorboard: bool = False,
    runtime: Runtime = SINGLE,
) -> dict:
    """Finetune a run's ticket (its weights, the mask fixed); returns the summary.

    Every file the stage needs is read and checked before it starts. The folder keeps its
    previous state (config, metrics, summary, finetuned weights) until the finetuning has
    finished; then finetuned.pt, metrics.jsonl, summary.json and config.json are replaced,
    each atomically, and the checkpoint (which resumes the stage if it is stopped, even
    between these writes) is removed last. Under torchrun (``runtime``) every rank runs
    this; rank 0 alone prints and writes.
    """
    run = RunDir(run_dir, writable=runtime.is_main)
    log = log if runtime.is_main else _quiet
    cfg = run.read_config()
    _require_ticket(run)
    summary = run.read_summary()
    kept = [r for r in run.read_metrics() if r.get("phase") != "finetune"]
    ft = cfg.finetune
    if lr is not None:
        ft = dataclasses.replace(ft, optim=dataclasses.replace(ft.optim, lr=lr))
    ft = dataclasses.replace(ft, epochs=epochs or ft.epochs, batch_size=batch_size or ft.batch_size)
    cfg = dataclasses.replace(
        cfg, finetune=ft, data_dir=data_dir or cfg.data_dir, device=device or cfg.device
    )
    with stop_on_signals() as stop:
        checkpoint = Checkpoint(
            run.file(FINETUNE_CHECKPOINT),
            _settings_key(_mask_part(cfg).to_dict() | {"finetune": dataclasses.asdict(ft)}),
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


@dataclasses.dataclass(frozen=True)
class _FinetuneStart:
    """What finetuning keeps of the folder: its summary, the metrics of the other phases,
    and the epochs its checkpoint has done."""

    summary: dict
    metrics: list[dict]
    resumed_epochs: int


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
) -> dict:

    dev = resolve_device(cfg.device)
    splits = load_data(cfg)
    model, mask = ticket_model(run, cfg, splits.num_classes)
    for module in model.modules():  # weight training starts with fresh BatchNorm statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    model.to(device=dev, memory_format=torch.channels_last)

    if start_state.resumed_epochs:
        log(
            f"{run.path}: resuming finetuning from its checkpoint "
            f"({start_state.resumed_epochs} epochs done)"
        )
    log(
        f"finetuning {run.path}: {format_density(mask.density)}, {ft.epochs} epochs on "
        f"{_where(dev, runtime)}"
    )
    start = time.perf_counter()
    history = _diverged_hint(
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
            eval_every=cfg.epoch_eval_every,
            on_epoch=_metrics_writer(run, log, tensorboard, append=False),
            progress=progress,
            checkpoint=checkpoint,
            runtime=runtime,
        ),
        checkpoint,
    )
    last = history[-1]
    seconds = time.perf_counter() - start
    # the finetuning is done: replace the previous one's files (the checkpoint stays until
    # the caller removes it, so a stop between these writes resumes to the same result)
    run.save_tensors("finetuned.pt", model.state_dict())
    run.replace_metrics(start_state.metrics + history)
    summary = run.update_summary(
        post_finetune_acc=last["test_acc"],
        post_finetune_val_acc=last.get("val_acc"),
        epochs_finetune=ft.epochs,
        seconds_finetune=seconds,
        seconds=start_state.summary.get("seconds_mask", 0.0) + seconds,
    )
    run.write_config(cfg)
    log(f"finetuned {run.path}: post-finetune test accuracy {100 * last['test_acc']:.2f}%")
    return summary


def eval_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str | None = None
) -> dict:
    """Re-evaluate a run's saved networks on the test split: pre- and post-finetune."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    cfg = dataclasses.replace(cfg, data_dir=data_dir or cfg.data_dir, device=device or cfg.device)
    dev = resolve_device(cfg.device)
    splits = load_data(cfg)
    test = eval_loaders(splits, dev)["test"]
    model, mask = ticket_model(run, cfg, splits.num_classes)
    finetuned = None
    if run.file("finetuned.pt").is_file():
        finetuned = architecture(cfg, splits.num_classes)
        finetuned.load_state_dict(run.load_tensors("finetuned.pt", model_shapes(finetuned)))
    apply_mask(model, mask)
    result = {
        "density": mask.density,
        "pre_finetune_acc": evaluate(model.to(dev), test, dev).accuracy,
        "post_finetune_acc": None,
    }
    if finetuned is not None:
        result["post_finetune_acc"] = evaluate(finetuned.to(dev), test, dev).accuracy
    return result
