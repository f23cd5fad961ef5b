"""A run's data, model and batch loaders, built from its
:class:`~gemminer.settings.config.RunConfig`.

The loaders come from :func:`~gemminer.data.loader.training_batches` and
:func:`~gemminer.data.loader.eval_batches`, which the Python API (:mod:`gemminer.api`) uses
too, each seeded by one stream of :func:`~gemminer.seeds.derive_seed`: the same seed gives
the same batches either way.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import DataSplits, ImageArrays, load_dataset
from ..data.loader import BatchLoader, eval_batches, training_batches
from ..masking import init_weights
from ..models import create_model
from ..models.hub import resolve_weights
from ..models.pretrained import load_pretrained
from ..notices import notice
from ..seeds import derive_seed
from ..settings.config import RunConfig
from ..training.runtime import SINGLE, Runtime


def load_data(cfg: RunConfig) -> DataSplits:
    """The run's data set, split and subset as ``cfg`` says; a batch larger than the
    training set is told about (each epoch is then one step over every image)."""
    splits = load_dataset(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download,
        val_size=cfg.val_size,
        train_size=cfg.train_size,
        seed=cfg.seed,
        image_size=cfg.image_size,
        **cfg.data_args,
    )
    images = len(splits.train)
    for stage, batch in (
        ("pruning", cfg.prune.batch_size),
        ("finetuning", cfg.finetune.batch_size),
    ):
        if batch > images:
            notice(
                f"the {stage} batch size {batch} is larger than the {images} training images: "
                f"each epoch is one step of {images} images"
            )
    return splits


#: Images per evaluation batch: on a GPU a few large batches (the images held in memory,
#: i.e. not streamed from disk), elsewhere what fits a CPU's caches.
EVAL_BATCH = 500
EVAL_BATCH_GPU = 2000


def eval_batch_size(splits: DataSplits, device: torch.device | str) -> int:
    """:data:`EVAL_BATCH_GPU` on CUDA for data sets held in memory, else :data:`EVAL_BATCH`."""
    in_memory = isinstance(splits.test, ImageArrays)
    return EVAL_BATCH_GPU if torch.device(device).type == "cuda" and in_memory else EVAL_BATCH


def eval_loaders(
    splits: DataSplits,
    device: torch.device,
    batch_size: int | None = None,
    runtime: Runtime = SINGLE,
) -> dict[str, BatchLoader]:
    """In-order, unaugmented loaders for the test split (and the validation split, if any),
    of ``batch_size`` images (default :func:`eval_batch_size`); under torchrun each rank
    reads its share."""
    named = {"test": splits.test} | ({"val": splits.val} if splits.val is not None else {})
    return {
        name: eval_batches(
            data,
            batch_size=batch_size or eval_batch_size(splits, device),
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
    reads its slice of every batch of ``batch_size``. ``seed`` is one stream of
    :func:`~gemminer.seeds.derive_seed`."""
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
