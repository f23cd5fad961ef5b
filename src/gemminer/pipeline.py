"""Stages of a run on disk: mine a ticket, finetune it, evaluate it.

The command line is a thin layer over these functions; each reads and writes a run
folder (see :mod:`gemminer.runs`) and skips work that is already done.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import FinetuneConfig, RunConfig
from .data import DataSplits, load_dataset
from .data.loader import BatchLoader
from .errors import RunError
from .masking import Mask, format_density, init_weights, score_state, to_score_model
from .methods.gem_miner import mine_scores
from .models import create_model
from .runs import RunDir
from .training import evaluate, finetune, resolve_device

Log = Callable[[str], None]

#: Each source of randomness gets its own generator, derived from the run's seed.
_SEED_STREAMS = {"weights": 0, "scores": 1, "mine-data": 2, "finetune-data": 3, "calibration": 4}


def derive_seed(seed: int, stream: str) -> int:
    return seed * len(_SEED_STREAMS) + _SEED_STREAMS[stream]


def _echo(message: str) -> None:
    """Progress messages go to stderr (results go to stdout), between progress bars."""
    tqdm.write(message, file=sys.stderr)


def load_data(cfg: RunConfig) -> DataSplits:
    return load_dataset(
        cfg.dataset, cfg.data_dir, download=cfg.download, val_size=cfg.val_size, seed=cfg.seed
    )


def eval_loaders(
    splits: DataSplits, device: torch.device, batch_size: int = 500
) -> dict[str, BatchLoader]:
    """In-order, unaugmented loaders for the test split (and the validation split, if any)."""
    named = {"test": splits.test} | ({"val": splits.val} if splits.val is not None else {})
    return {
        name: BatchLoader(
            data, batch_size=batch_size, mean=splits.mean, std=splits.std, device=device
        )
        for name, data in named.items()
    }


def train_loader(
    splits: DataSplits, batch_size: int, device: torch.device, seed: int
) -> BatchLoader:
    return BatchLoader(
        splits.train,
        batch_size=batch_size,
        mean=splits.mean,
        std=splits.std,
        device=device,
        train=True,
        augment=splits.augment,
        seed=seed,
    )


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The run's model with its seeded original initialization."""
    model = create_model(cfg.model, num_classes=num_classes)
    return init_weights(model, cfg.weight_init, derive_seed(cfg.seed, "weights"))


def _describe_difference(old: RunConfig, new: RunConfig) -> str:
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys)


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _mining_part(cfg: RunConfig) -> RunConfig:
    """The settings that determine the mask (finetuning and paths left out)."""
    return dataclasses.replace(
        cfg, finetune=FinetuneConfig(), data_dir="", device="auto", download=True
    )


def _print_epoch(log: Log) -> Callable[[dict], None]:
    def show(r: dict) -> None:
        accs = " ".join(f"{k[:-4]} {100 * v:.2f}%" for k, v in r.items() if k.endswith("_acc"))
        extra = f" bound {100 * r['bound']:.2f}%" if "bound" in r else ""
        log(
            f"{r['phase']} epoch {r['epoch']}: loss {r['loss']:.4f} {accs} "
            f"{format_density(r['density'])}{extra} ({r['seconds']:.1f} s)"
        )

    return show


def mine_run(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Log = _echo,
) -> dict:
    """Mine a ticket with Gem-Miner into run folder ``out``; returns the summary.

    A folder that already holds a finished mining run with the same settings is left as
    it is; one with different settings is refused unless ``overwrite``.
    """
    run = RunDir(out)
    if run.file("config.json").is_file() and not overwrite:
        old = run.read_config()
        if _mining_part(old) != _mining_part(cfg):
            raise RunError(
                f"{run.path} holds a run with other settings ({_describe_difference(old, cfg)}); "
                "pass --overwrite to replace it or choose another --out"
            )
        if run.file("mined.pt").is_file() and "density" in run.read_summary():
            log(f"{run.path}: already mined, skipping (pass --overwrite to mine again)")
            return run.read_summary()
    run.path.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "summary.json", "finetuned.pt"):
        run.file(name).unlink(missing_ok=True)
    run.write_config(cfg)

    device = resolve_device(cfg.device)
    splits = load_data(cfg)
    model = build_model(cfg, splits.num_classes)
    to_score_model(model, torch.Generator().manual_seed(derive_seed(cfg.seed, "scores")))
    model.to(device=device, memory_format=torch.channels_last)
    calibration = BatchLoader(
        splits.train,
        batch_size=cfg.mine.batch_size,
        mean=splits.mean,
        std=splits.std,
        device=device,
        train=True,
        augment=False,
        seed=derive_seed(cfg.seed, "calibration"),
    )
    show = _print_epoch(log)

    def on_epoch(record: dict) -> None:
        run.append_metrics(record)
        show(record)

    log(f"mining {cfg.model} on {cfg.dataset} ({len(splits.train)} training images) on {device}")
    start = time.perf_counter()
    result = mine_scores(
        model,
        train_loader(splits, cfg.mine.batch_size, device, derive_seed(cfg.seed, "mine-data")),
        cfg.mine,
        device,
        eval_batches=eval_loaders(splits, device),
        calibration_batches=calibration,
        on_epoch=on_epoch,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    result.mask.save(run.file("mask.pt"))
    run.save_tensors("scores.pt", score_state(model))
    run.save_tensors("mined.pt", model.state_dict())
    (run.file("density.txt")).write_text(result.mask.report() + "\n")
    last = result.history[-1]
    summary = run.update_summary(
        method=cfg.method,
        model=cfg.model,
        dataset=cfg.dataset,
        target_density=cfg.mine.density,
        density=result.mask.density,
        flag_density=last["flag_density"],
        num_kept=result.mask.num_kept,
        num_prunable=result.mask.num_total,
        pre_finetune_acc=last["test_acc"],
        pre_finetune_val_acc=last.get("val_acc"),
        post_finetune_acc=None,
        epochs_mining=cfg.mine.epochs,
        epochs_finetune=0,
        seconds_mining=seconds,
        seconds=seconds,
        seed=cfg.seed,
        device=str(device),
        torch=torch.__version__,
    )
    log(
        f"mined {run.path}: {format_density(result.mask.density)}, "
        f"pre-finetune test accuracy {100 * last['test_acc']:.2f}%"
    )
    return summary


def _require_mined(run: RunDir) -> None:
    for name in ("mask.pt", "mined.pt"):
        if not run.file(name).is_file():
            raise RunError(f"{run.path} has no {name}: run `gemminer mine` into it first")


def ticket_model(run: RunDir, cfg: RunConfig, num_classes: int) -> tuple[nn.Module, Mask]:
    """The run's model with its original weights (from ``mined.pt``) and the mask."""
    _require_mined(run)
    model = create_model(cfg.model, num_classes=num_classes)
    mined = run.load_tensors("mined.pt")
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(mined))
    if missing:
        raise RunError(f"mined.pt of {run.path} lacks {', '.join(missing)}: wrong model?")
    with torch.no_grad():
        for name, p in params.items():
            if tuple(mined[name].shape) != tuple(p.shape):
                raise RunError(
                    f"mined.pt of {run.path}: {name} has shape {tuple(mined[name].shape)}, "
                    f"the model expects {tuple(p.shape)}"
                )
            p.copy_(mined[name])
    mask = Mask.load(run.file("mask.pt"))
    mask.check(model)
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
) -> dict:
    """Finetune the ticket of a mined run (original weights, fixed mask); returns the summary."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    _require_mined(run)
    ft = cfg.finetune
    if lr is not None:
        ft = dataclasses.replace(ft, optim=dataclasses.replace(ft.optim, lr=lr))
    ft = dataclasses.replace(ft, epochs=epochs or ft.epochs, batch_size=batch_size or ft.batch_size)
    cfg = dataclasses.replace(
        cfg, finetune=ft, data_dir=data_dir or cfg.data_dir, device=device or cfg.device
    )
    run.write_config(cfg)
    run.drop_metrics("finetune")

    dev = resolve_device(cfg.device)
    splits = load_data(cfg)
    model, mask = ticket_model(run, cfg, splits.num_classes)
    model.to(device=dev, memory_format=torch.channels_last)
    show = _print_epoch(log)

    def on_epoch(record: dict) -> None:
        run.append_metrics(record)
        show(record)

    log(f"finetuning {run.path}: {format_density(mask.density)}, {ft.epochs} epochs on {dev}")
    start = time.perf_counter()
    history = finetune(
        model,
        mask,
        train_loader(splits, ft.batch_size, dev, derive_seed(cfg.seed, "finetune-data")),
        ft,
        dev,
        eval_batches=eval_loaders(splits, dev),
        on_epoch=on_epoch,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    run.save_tensors("finetuned.pt", model.state_dict())
    summary = run.read_summary()
    last = history[-1]
    summary = run.update_summary(
        post_finetune_acc=last["test_acc"],
        post_finetune_val_acc=last.get("val_acc"),
        epochs_finetune=ft.epochs,
        seconds_finetune=seconds,
        seconds=summary.get("seconds_mining", 0.0) + seconds,
    )
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
    to_score_model(model)
    model.load_state_dict(run.load_tensors("mined.pt"))
    result = {
        "density": mask.density,
        "pre_finetune_acc": evaluate(model.to(dev), test, dev).accuracy,
        "post_finetune_acc": None,
    }
    if run.file("finetuned.pt").is_file():
        plain = create_model(cfg.model, num_classes=splits.num_classes)
        plain.load_state_dict(run.load_tensors("finetuned.pt"))
        result["post_finetune_acc"] = evaluate(plain.to(dev), test, dev).accuracy
    return result
