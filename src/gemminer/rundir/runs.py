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
    summary.json       the figures of the run: a :class:`~gemminer.rundir.summary.RunSummary`

Every file is written atomically (temporary file + rename) and tensors are read back with
``torch.load(weights_only=True)``, which refuses to run code hidden in a pickle. Every read
of a run file is checked (:func:`load_run_file`, :meth:`RunDir.read_config`, ...): a damaged
file raises :class:`RunError` naming it and saying what is wrong, so that a stage can check
everything it needs before it changes anything in the folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import MaskError, RunError
from ..masking import Mask
from ..settings.config import RunConfig
from .files import atomic_torch_save, atomic_write_text, safe_torch_load
from .summary import RunSummary

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


#: At most this many names are listed in an error message.
_LISTED = 3


def _few(names: Sequence[str]) -> str:
    """``a, b, c and 4 more`` (or ``nothing``)."""
    if not names:
        return "nothing"
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


def check_keys(
    path: Path, tensors: Mapping[str, Any], expected: Iterable[str], *, extra_ok: bool = False
) -> None:
    """Raise :class:`RunError` naming ``path`` unless it holds exactly the ``expected`` keys
    (or more, with ``extra_ok``), listing a few missing and unexpected ones."""
    expected = list(expected)
    missing = [k for k in expected if k not in tensors]
    unexpected = [] if extra_ok else sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RunError(
            f"{path} does not fit the run's model (damaged, or from another run?): "
            f"missing {_few(missing)}; unexpected {_few(unexpected)}"
        )


def check_tensors(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int]],
    *,
    extra_ok: bool = False,
) -> None:
    """:func:`check_keys`, then the shape of every expected tensor."""
    check_keys(path, tensors, expected, extra_ok=extra_ok)
    wrong = [
        f"{k} has shape {tuple(tensors[k].shape)}, expected {tuple(shape)}"
        for k, shape in expected.items()
        if tuple(tensors[k].shape) != tuple(shape)
    ]
    if wrong:
        raise RunError(f"{path}: {_few(wrong)}")


def load_run_file(
    path: Path, expected: Mapping[str, Sequence[int]] | None = None, *, extra_ok: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors of a run file (``mask.pt``, ``ticket.pt``, ``scores.pt``,
    ``finetuned.pt``) by name, checked: :func:`safe_torch_load`, a dict of tensors, and,
    given ``expected`` (name → shape), exactly those names (or more, with ``extra_ok``)
    with those shapes. Anything else raises :class:`RunError` naming the file."""
    data = safe_torch_load(path)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise RunError(
            f"{path} does not hold tensors by name (a state dict): it holds a {type(data).__name__}"
        )
    if expected is not None:
        check_tensors(path, data, expected, extra_ok=extra_ok)
    return data


def load_mask(path: Path, expected: Mapping[str, Sequence[int]] | None = None) -> Mask:
    """A checked :class:`Mask` from ``path`` (see :func:`load_run_file`): binary, and with
    the ``expected`` names and shapes when given."""
    tensors = load_run_file(path, expected)
    try:
        return Mask(tensors)
    except MaskError as exc:
        raise RunError(f"{path} is not a valid mask: {exc}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise RunError(f"{path} is not text (damaged?)") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`RunError` naming it when it holds anything else."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON (truncated or damaged?): {exc}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object (damaged?)")
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON object on each line of ``path``; :class:`RunError` naming the file and line."""
    records = []
    for i, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}, line {i} is not valid JSON (damaged?): {exc}") from None
        if not isinstance(record, dict):
            raise RunError(f"{path}, line {i} does not hold a JSON object (damaged?)")
        records.append(record)
    return records


def parse_config(path: Path, data: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a run folder's ``config.json`` (read from ``path``)."""
    try:
        return RunConfig.from_dict(data)
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise RunError(f"{path} is not a valid run config (damaged?): {exc}") from None


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
        return parse_config(path, read_json_object(path))

    # metrics -------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        if not self.writable:
            return
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.file("metrics.jsonl")
        return read_jsonl(path) if path.is_file() else []

    def replace_metrics(self, records: list[dict]) -> None:
        """Rewrite ``metrics.jsonl`` to hold exactly ``records`` (atomically)."""
        if not self.writable:
            return
        atomic_write_text(
            self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
        )

    # summary -------------------------------------------------------------------------
    def summary(self) -> RunSummary:
        """The checked summary (every figure ``None`` when there is no summary.json yet)."""
        path = self.file("summary.json")
        return RunSummary.from_dict(self.read_summary(), path) if path.is_file() else RunSummary()

    def write_summary(self, summary: RunSummary) -> None:
        if self.writable:
            text = json.dumps(summary.to_dict(), indent=2) + "\n"
            atomic_write_text(self.file("summary.json"), text)

    def read_summary(self) -> dict[str, Any]:
        """summary.json as its plain JSON object (``{}`` when there is none), for scripts;
        gemminer itself reads :meth:`summary`."""
        path = self.file("summary.json")
        return read_json_object(path) if path.is_file() else {}

    def update_summary(self, **values: Any) -> RunSummary:
        """Set some figures of summary.json (others keep their values); for scripts that
        add their own keys."""
        summary = self.summary().updated(**values)
        self.write_summary(summary)
        return summary

    # tensors -------------------------------------------------------------------------
    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.writable:
            atomic_torch_save({k: v.detach().cpu() for k, v in tensors.items()}, self.file(name))

    def load_tensors(
        self,
        name: str,
        expected: Mapping[str, Sequence[int]] | None = None,
        *,
        extra_ok: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The checked tensors of run file ``name`` (see :func:`load_run_file`)."""
        return load_run_file(self.file(name), expected, extra_ok=extra_ok)

    def load_mask(self, expected: Mapping[str, Sequence[int]] | None = None) -> Mask:
        """The checked mask of ``mask.pt`` (see :func:`load_mask`)."""
        return load_mask(self.file("mask.pt"), expected)
