"""The eval stage: re-evaluate a run's saved networks on the test split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..masking import apply_mask
from ..rundir.runs import RunDir
from ..training import evaluate, resolve_device
from .assemble import architecture, eval_loaders, load_data
from .ticket import model_shapes, ticket_model


def eval_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str | None = None
) -> dict:
    """Test accuracy of a run's ticket before finetuning (ticket.pt ⊙ mask.pt, with its saved
    BatchNorm statistics) and after (finetuned.pt; ``None`` when not finetuned), with the
    mask's density."""
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
