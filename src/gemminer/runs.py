"""Run folders: resolved config, per-epoch metrics, mask, scores, weights and summary.

Layout of a run folder::

    config.json        the resolved RunConfig
    metrics.jsonl      one JSON line per epoch (phase "mine" or "finetune")
    mask.pt            the ticket's mask {weight name: bool tensor}
    scores.pt          scores and flags {"<weight>.scores", "<weight>.flags"}
    ticket.pt          the ticket: unmasked weights and re-estimated BatchNorm buffers
    checkpoint-*.pt    resumable training state while a stage runs (removed when it ends)
    finetuned.pt       state of the finetuned ticket (after ``gemminer finetune``)
    density.txt        per-layer density report of the mask
    summary.json       the figures of the run (see :data:`SUMMARY_KEYS`)

``density`` and ``pre_finetune_acc`` describe the ticket that is finetuned (``mask.pt``).
Gem-Miner also records its rounded mask r(p) ⊙ q — the "rare gem", judged without
finetuning — as ``gem_density``, ``gem_acc`` (BatchNorm statistics re-estimated for it)
and ``gem_acc_running_bn`` (the statistics left by mining: the authors' protocol), with
``finetune_mask`` saying which mask was finetuned (``flags`` or ``rounded``).

Every file is written atomically (temporary file + rename) and tensors are read back with
``torch.load(weights_only=True)``, which refuses to run code hidden in a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import RunError

SUMMARY_KEYS = (
    "method",
    "model",
    "dataset",
    "target_density",
    "density",
    "pre_finetune_acc",
    "post_finetune_acc",
    "epochs_mining",
    "epochs_finetune",
    "seconds",
)

#: Settings that do not change a run's results, left out of its hash.
_UNHASHED = ("data_dir", "device", "download")
#: Settings added after hashes were first published: hashed only when not at their
#: default, so every run folder name computed before they existed stays valid.
_HASHED_IF_SET = {
    "model_args": {},
    "pretrained": "",
    "image_size": 0,
    "data_args": {},
    "defaults_version": 1,
    "eval_every": 1,
}


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: Path) -> Any:
    """Load tensors without executing pickled code; a clear :class:`RunError` otherwise."""
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before failing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise RunError(f"cannot load {path} safely: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    """The gist of a loading error in one line (torch's weights_only errors span many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    gist = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), None)
    text = gist or (lines[0] if lines else type(exc).__name__)
    return text if len(text) <= 300 else text[:297] + "..."


def config_hash(cfg: RunConfig) -> str:
    """A stable 10-hex-digit hash of the settings that determine a run's results."""
    data = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in _UNHASHED and (k not in _HASHED_IF_SET or v != _HASHED_IF_SET[k])
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def default_run_name(cfg: RunConfig) -> str:
    return f"{cfg.method}-{cfg.model}-{cfg.dataset}-d{cfg.prune.density:g}-{config_hash(cfg)}"


class RunDir:
    """A run folder on disk.

    ``writable=False`` (torchrun ranks other than 0) reads the folder but skips every write,
    so that one process writes each file.
    """

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable

    def file(self, name: str) -> Path:
        return self.path / name

    # config --------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        if self.writable:
            atomic_write_text(self.file("config.json"), json.dumps(cfg.to_dict(), indent=2) + "\n")

    def read_config(self) -> RunConfig:
        path = self.file("config.json")
        if not path.is_file():
            raise RunError(f"{self.path} is not a gemminer run folder (no config.json)")
        try:
            return RunConfig.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise RunError(f"{path} is not valid JSON: {exc}") from exc

    # metrics -------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        if not self.writable:
            return
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.file("metrics.jsonl")
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def replace_metrics(self, records: list[dict]) -> None:
        """Rewrite ``metrics.jsonl`` to hold exactly ``records`` (atomically)."""
        if not self.writable:
            return
        atomic_write_text(
            self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
        )

    def drop_metrics(self, phase: str) -> None:
        """Remove the records of ``phase`` (before that phase is run again)."""
        kept = [r for r in self.read_metrics() if r.get("phase") != phase]
        if not self.writable:
            return
        atomic_write_text(self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in kept))

    # summary -------------------------------------------------------------------------
    def read_summary(self) -> dict:
        path = self.file("summary.json")
        return json.loads(path.read_text()) if path.is_file() else {}

    def update_summary(self, **values: Any) -> dict:
        summary = {**self.read_summary(), **values}
        if self.writable:
            atomic_write_text(self.file("summary.json"), json.dumps(summary, indent=2) + "\n")
        return summary

    # tensors -------------------------------------------------------------------------
    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.writable:
            atomic_torch_save({k: v.detach().cpu() for k, v in tensors.items()}, self.file(name))

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return safe_torch_load(self.file(name))
