"""The figures of a run — its ``summary.json`` — as one typed record, :class:`RunSummary`.

Every stage writes it (prune, sanity, finetune) and every reader reads it through this
class: the report, export, the sweep tables and the command line's closing line.

``density`` and ``pre_finetune_acc`` describe the ticket that is finetuned (``mask.pt``).
Gem-Miner also records its rounded mask r(p) ⊙ q — the "rare gem", judged without
finetuning — as ``gem_density``, ``gem_acc`` (BatchNorm statistics re-estimated for it)
and ``gem_acc_running_bn`` (the statistics left by mining: the authors' protocol), with
``finetune_mask`` saying which mask was finetuned (``flags`` or ``rounded``).

``post_finetune_acc`` is the test accuracy after the *last* finetuning epoch.
``best_post_finetune_acc`` is the *best* epoch's (:func:`best_epoch`), at
``best_post_finetune_epoch``, picked on ``best_picked_on``: the validation split where the
run has one, else the test set itself — what the paper's "best model chosen based on the
validation accuracy" amounts to in the authors' full-data runs, whose validation set is the
test set (optimistic: a maximum over noisy epochs).

Compute spent and saved: ``epochs_to_mask`` (training epochs to find the mask),
``seconds_mask`` (wall-clock seconds to find it; a run resumed from its checkpoint adds
the seconds of the processes before, so it is the whole stage's time), ``seconds_finetune``
(likewise) and ``seconds`` (their sum), and ``dense_flops`` / ``ticket_flops`` (forward
multiply-adds per image of the dense network and of the ticket,
:mod:`gemminer.masking.flops`).

Which keys a ``summary.json`` holds: the core figures (:data:`SUMMARY_KEYS`) always, ``null``
where unknown (``post_finetune_acc`` before finetuning); a group of related figures
(finetuning's, Gem-Miner's) as a whole once one of them is known; any other figure only
when known. Keys this class does not name — another method's figures, keys written by
other gemminer versions or by scripts — are kept in :attr:`RunSummary.extra` and written
back unchanged, so reading and rewriting a summary never loses anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError

#: Written in every summary (``null`` where not known).
CORE = "core"


def _figure(kind: str, group: str | None = None) -> Any:
    """A field of :class:`RunSummary`: its JSON ``kind`` and its ``group`` (see the module
    docstring; ``None``: written when known)."""
    return field(default=None, metadata={"kind": kind, "group": group})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: What the value of each kind of field must be (or ``null``), and how to say it.
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "number": (_is_number, "a number"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "numbers": (
        lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v),
        "a list of numbers",
    ),
    "strs": (
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        "a list of strings",
    ),
    "densities": (
        lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
        "an object of numbers",
    ),
    "object": (lambda v: isinstance(v, dict), "an object"),
}


@dataclass(frozen=True)
class RunSummary:
    """A run's ``summary.json``; every figure ``None`` where the run does not know it.

    Built by the stages, read with :meth:`from_dict` (checked) and written with
    :meth:`to_dict`; :meth:`updated` returns a copy with some figures changed.
    """

    # what was pruned, and the ticket
    method: str | None = _figure("str", CORE)
    model: str | None = _figure("str", CORE)
    dataset: str | None = _figure("str", CORE)
    target_density: float | None = _figure("number", CORE)
    density: float | None = _figure("number", CORE)
    num_kept: int | None = _figure("int", CORE)
    num_prunable: int | None = _figure("int", CORE)
    layer_density: dict[str, float] | None = _figure("densities", CORE)
    # forward multiply-adds per image of Conv2d/Linear weights (gemminer.masking.flops):
    # the dense network's and the ticket's (kept weights only); absent in older summaries
    dense_flops: int | None = _figure("int")
    ticket_flops: int | None = _figure("int")
    # what target_density counts: "flops" for channel pruning (the fraction of the forward
    # multiply-adds kept); absent (None) for a target fraction of weights
    budget: str | None = _figure("str")
    pre_finetune_acc: float | None = _figure("number", CORE)
    pre_finetune_val_acc: float | None = _figure("number", CORE)
    post_finetune_acc: float | None = _figure("number", CORE)
    # the training spent
    epochs_to_mask: float | None = _figure("number", CORE)
    iterations_to_mask: int | None = _figure("number", CORE)
    epochs_mining: float | None = _figure("number", CORE)
    epochs_finetune: int | None = _figure("number", CORE)
    seconds_mask: float | None = _figure("number")
    seconds: float | None = _figure("number", CORE)
    # where and how it ran
    seed: int | None = _figure("int")
    device: str | None = _figure("str")
    processes: int | None = _figure("int")
    precision: str | None = _figure("str")
    torch: str | None = _figure("str")
    # the model and its data: what export needs to rebuild and describe the network
    input_mean: tuple[float, ...] | None = _figure("numbers")
    input_std: tuple[float, ...] | None = _figure("numbers")
    num_classes: int | None = _figure("int")
    # one input's shape (channels, height, width) the multiply-adds were counted for
    input_shape: tuple[int, ...] | None = _figure("numbers")
    class_names: tuple[str, ...] | None = _figure("strs")
    model_args: dict[str, Any] | None = _figure("object")
    # Gem-Miner's rounded mask, the "rare gem" (see the module docstring)
    finetune_mask: str | None = _figure("str", "gem")
    flag_density: float | None = _figure("number", "gem")
    gem_density: float | None = _figure("number", "gem")
    gem_acc: float | None = _figure("number", "gem")
    gem_acc_running_bn: float | None = _figure("number", "gem")
    gem_val_acc: float | None = _figure("number", "gem")
    gem_val_acc_running_bn: float | None = _figure("number", "gem")
    # finetuning: post_finetune_acc is the last epoch's test accuracy; the best epoch's
    # (picked on the validation split where there is one, else on the test set, as the
    # authors' full-data runs did) is apart, with its epoch (see best_epoch)
    post_finetune_val_acc: float | None = _figure("number", "finetune")
    seconds_finetune: float | None = _figure("number", "finetune")
    best_post_finetune_acc: float | None = _figure("number", "finetune")
    best_post_finetune_epoch: int | None = _figure("int", "finetune")
    best_picked_on: str | None = _figure("str", "finetune")
    # a sanity check's ticket
    sanity_check: str | None = _figure("str")
    source_run: str | None = _figure("str")
    #: every other key of summary.json, kept as read
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "summary.json") -> RunSummary:
        """The summary held by ``data`` (a ``summary.json`` object read from ``source``);
        a :class:`RunError` naming ``source`` when a figure has the wrong type or one of
        :data:`REQUIRED_KEYS` is missing or null."""
        missing = [k for k in REQUIRED_KEYS if data.get(k) is None]
        if missing:
            raise RunError(
                f"{source}: {', '.join(missing)} missing: not the summary of a finished "
                "gemminer run (damaged, or written by something else?)"
            )
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            f = _FIGURES.get(key)
            if f is None:
                extra[key] = value
                continue
            check, expected = _KINDS[f.metadata["kind"]]
            if value is not None and not check(value):
                raise RunError(f"{source}: {key} is {value!r}, expected {expected} (damaged?)")
            values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``summary.json`` (see the module docstring for which keys)."""
        values = {name: getattr(self, name) for name in _FIGURES}
        known = {CORE} | {_group(f) for f in _FIGURES.values() if values[f.name] is not None}
        out = {name: value for name, value in values.items() if _group(_FIGURES[name]) in known}
        return out | self.extra

    def updated(self, **values: Any) -> RunSummary:
        """A copy with ``values`` set; names that are no field go to :attr:`extra`."""
        known = {k: v for k, v in values.items() if k in _FIGURES}
        other = {k: v for k, v in values.items() if k not in _FIGURES}
        return dataclasses.replace(self, **known, extra=self.extra | other)

    @property
    def finished(self) -> bool:
        """Whether the summary describes a found ticket (pruning or a sanity check ended)."""
        return self.density is not None


def _group(f: dataclasses.Field) -> str:
    return f.metadata["group"] or f.name


_FIGURES = {f.name: f for f in dataclasses.fields(RunSummary) if f.name != "extra"}

#: The keys every summary.json holds (``null`` where not known).
SUMMARY_KEYS = tuple(name for name, f in _FIGURES.items() if f.metadata["group"] == CORE)
#: What every stage that writes a summary has known since the first gemminer (the ticket
#: it found): a summary.json without one of them, or with it null, is not a finished run's.
REQUIRED_KEYS = ("method", "model", "dataset", "target_density", "density")


@dataclass(frozen=True)
class BestEpoch:
    """The best evaluated epoch of a phase: its test accuracy, its number, and the split it
    was picked on (``"val"`` or ``"test"``)."""

    test_acc: float
    epoch: int
    picked_on: str

    def describe(self) -> str:
        """``"best 73.40 % at epoch 141 (picked on the test set)"``."""
        on = "the validation split" if self.picked_on == "val" else "the test set"
        return f"best {100 * self.test_acc:.2f} % at epoch {self.epoch} (picked on {on})"

    @classmethod
    def of(cls, summary: RunSummary) -> BestEpoch | None:
        """The best epoch a summary records, if it does."""
        if summary.best_post_finetune_acc is None or summary.best_post_finetune_epoch is None:
            return None
        return cls(
            summary.best_post_finetune_acc,
            summary.best_post_finetune_epoch,
            summary.best_picked_on or "test",
        )

    def summary_values(self) -> dict[str, Any]:
        """The summary's ``best_*`` figures."""
        return {
            "best_post_finetune_acc": self.test_acc,
            "best_post_finetune_epoch": self.epoch,
            "best_picked_on": self.picked_on,
        }


def best_epoch(records: Sequence[Mapping[str, Any]], phase: str = "finetune") -> BestEpoch | None:
    """The best of ``phase``'s epochs that were evaluated (``metrics.jsonl`` records): the
    highest validation accuracy where the records have one, else the highest test accuracy;
    the earliest of equal ones. None when no epoch of the phase was evaluated."""
    evaluated = [r for r in records if r.get("phase") == phase and r.get("test_acc") is not None]
    if not evaluated:
        return None
    split = "val" if all(r.get("val_acc") is not None for r in evaluated) else "test"
    best = max(evaluated, key=lambda r: (r[f"{split}_acc"], -r["epoch"]))
    return BestEpoch(float(best["test_acc"]), int(best["epoch"]), split)
