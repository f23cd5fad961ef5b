"""Read run folders into typed records and group them across seeds.

Only the files a run folder already holds are read (config.json, summary.json,
metrics.jsonl, mask.pt): no data set, no model evaluation. Each is checked; a folder with a
damaged file is skipped with a warning naming it.

Runs are grouped by method, sanity check, target density and every config setting except
the seeds and the settings that cannot change a result (:data:`IGNORED_SETTINGS`), so the
seeds of one experiment land in one :class:`Group` and are reported as mean ± standard
deviation. The groups of one method at several target densities form one curve
(:attr:`Group.series`); a setting that follows the target density — one value at each
target, not the same at all of them, as the paper's λ per density row — does not split it
(:func:`per_target_settings`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..methods import targets_density
from ..notices import PREFIX, notice
from ..rundir.runs import RunDir, check_keys, load_mask, parse_config, read_json_object, read_jsonl
from ..rundir.summary import BestEpoch, RunSummary, best_epoch
from .format import Stat, flatten, over_seeds
from .labels import distinguishing_labels, setting_text

#: Config settings left out of the grouping key: the seeds (averaged over) and the settings
#: that do not change a run's results (where data lives, the device, whether to download,
#: and whether the test set is also evaluated after every epoch). ``method``,
#: ``sanity_check`` and ``prune.density`` are grouped on explicitly.
IGNORED_SETTINGS = frozenset(
    {
        "seed",
        "sanity_seed",
        "data_dir",
        "device",
        "download",
        "eval_each_epoch",
        "eval_every",
        "method",
        "sanity_check",
        "prune.density",
    }
)
#: What a curve's key holds for a setting that follows the target density.
PER_TARGET = json.dumps("per target")


@dataclass(frozen=True)
class LayerCount:
    """One prunable layer of a mask: its weight name, size and kept weights."""

    name: str
    total: int
    kept: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class RunRecord:
    """What a finished run folder says about its run."""

    path: Path
    method: str
    model: str
    dataset: str
    sanity_check: str
    source_run: str
    seed: int
    target_density: float
    density: float
    pre_acc: float | None
    post_acc: float | None
    epochs_to_mask: float | None
    settings: tuple[tuple[str, str], ...]
    metrics: tuple[dict[str, Any], ...] = ()
    layers: tuple[LayerCount, ...] = ()
    gem_density: float | None = None
    gem_acc: float | None = None
    gem_acc_running_bn: float | None = None
    seconds_mask: float | None = None
    dense_flops: int | None = None
    ticket_flops: int | None = None
    #: the best finetuning epoch (:func:`gemminer.rundir.summary.best_epoch`); ``post_acc`` is the
    #: last epoch's
    best: BestEpoch | None = None

    @property
    def best_post_acc(self) -> float | None:
        return self.best.test_acc if self.best is not None else None

    @property
    def before_density(self) -> float:
        """Density of the network judged before finetuning: Gem-Miner's rounded mask (the
        rare gem) where the run has one, else the ticket's."""
        return self.gem_density if self.gem_density is not None else self.density

    @property
    def before_acc(self) -> float | None:
        """Accuracy before finetuning of :attr:`before_density`'s network."""
        return self.gem_acc if self.gem_acc is not None else self.pre_acc

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Group:
    """Runs of one experiment that differ only in their seeds.

    ``label`` names the series (method, sanity check, distinguishing settings); the groups
    of one series differ only in their target density. Figures are means ± standard
    deviations over the distinct seeds: runs repeating a seed are averaged first.
    """

    label: str
    runs: tuple[RunRecord, ...]
    #: What one curve is drawn over: method, sanity check, model, data set and settings,
    #: those that follow the target density as :data:`PER_TARGET`.
    series: tuple

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def sanity_check(self) -> str:
        return self.first.sanity_check

    @property
    def targeted(self) -> bool:
        """False for a method that ignores the target density (dense training)."""
        return targets_density(self.method)

    @property
    def target_density(self) -> float:
        """The target density; 1 (every weight) where :attr:`targeted` is False."""
        return self.first.target_density if self.targeted else 1.0

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def distinct_seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def repeats(self) -> int:
        """Runs that repeat the seed of another run of the group."""
        return len(self.runs) - len(self.distinct_seeds)

    def stat(self, field: str) -> Stat:
        """Mean ± std of a :class:`RunRecord` figure (e.g. ``"gem_acc"``) over the distinct
        seeds; the runs of one seed are averaged first
        (:func:`~gemminer.reports.format.over_seeds`)."""
        return over_seeds(self.runs, attrgetter(field), attrgetter("seed"))

    @property
    def density(self) -> Stat:
        return self.stat("density")

    @property
    def pre_acc(self) -> Stat:
        return self.stat("pre_acc")

    @property
    def post_acc(self) -> Stat:
        return self.stat("post_acc")

    @property
    def epochs_to_mask(self) -> Stat:
        return self.stat("epochs_to_mask")


@dataclass
class Collection:
    """The finished runs (grouped), the unfinished run folders (listed, not read) and the
    folders that could not be read."""

    groups: list[Group]
    unfinished: list[Path] = field(default_factory=list)
    #: run folders that could not be read, with the reason
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def runs(self) -> list[RunRecord]:
        return [r for g in self.groups for r in g.runs]

    def source_group(self, group: Group) -> Group | None:
        """The group holding the source run of the sanity-check ``group`` (if given)."""
        sources = [_find_run(self.runs, r.source_run) for r in group.runs]
        for g in self.groups:
            if not g.sanity_check and any(s is not None and s in g.runs for s in sources):
                return g
        return None


def _read_layers(path: Path, summary: RunSummary) -> tuple[LayerCount, ...]:
    """The per-layer counts of ``mask.pt``, checked against what ``summary`` says of it."""
    if not path.is_file():
        return ()
    mask = load_mask(path)
    if summary.layer_density is not None:
        check_keys(path, mask, summary.layer_density)
    if summary.num_prunable not in (None, mask.num_total):
        raise RunError(
            f"{path} holds {mask.num_total} weights, summary.json says "
            f"{summary.num_prunable} (damaged, or from another run?)"
        )
    return tuple(LayerCount(row.name, row.total, row.kept) for row in mask.layers())


def _known(value: Any, default: Any) -> Any:
    """``value``, or ``default`` where the summary does not know it."""
    return default if value is None else value


def read_run(path: str | Path, *, layers: bool = True) -> RunRecord | None:
    """One run folder as a record; None when it is unfinished (no summary.json yet).

    Raises :class:`RunError` naming ``path`` (and the file) when it is not a run folder
    or one of its files is damaged.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a run folder (no such directory)")
    if not (path / "config.json").is_file():
        raise RunError(
            f"{path} is not a gemminer run folder (no config.json); pass run folders, e.g. runs/*"
        )
    config = read_json_object(path / "config.json")
    cfg = parse_config(path / "config.json", config)  # a damaged config fails here
    if not (path / "summary.json").is_file():
        return None
    summary = RunDir(path).summary()
    target = _known(summary.target_density, cfg.prune.density)
    density = _known(summary.density, target)
    # the settings as written in config.json (a newer gemminer's defaults not filled in)
    settings = {
        k: json.dumps(v, sort_keys=True)
        for k, v in flatten(config).items()
        if k not in IGNORED_SETTINGS
    }
    metrics_file = path / "metrics.jsonl"
    metrics = tuple(read_jsonl(metrics_file)) if metrics_file.is_file() else ()
    # older runs' summaries lack the best epoch: their metrics hold it
    best = BestEpoch.of(summary) or (
        best_epoch(metrics) if summary.post_finetune_acc is not None else None
    )
    return RunRecord(
        path=path,
        method=_known(summary.method, cfg.method),
        model=_known(summary.model, cfg.model),
        dataset=_known(summary.dataset, cfg.dataset),
        sanity_check=summary.sanity_check or cfg.sanity_check,
        source_run=summary.source_run or "",
        seed=_known(summary.seed, cfg.seed),
        target_density=float(target),
        density=float(density),
        pre_acc=summary.pre_finetune_acc,
        post_acc=summary.post_finetune_acc,
        epochs_to_mask=summary.epochs_to_mask,
        settings=tuple(sorted(settings.items())),
        metrics=metrics,
        layers=_read_layers(path / "mask.pt", summary) if layers else (),
        gem_density=summary.gem_density,
        gem_acc=summary.gem_acc,
        gem_acc_running_bn=summary.gem_acc_running_bn,
        seconds_mask=summary.seconds_mask,
        dense_flops=summary.dense_flops,
        ticket_flops=summary.ticket_flops,
        best=best,
    )


def _find_run(runs: Sequence[RunRecord], source: str) -> RunRecord | None:
    """The run whose folder is ``source`` (as written when the sanity run was made)."""
    if not source:
        return None
    target = Path(source)
    for run in runs:
        if run.path.resolve() == target.resolve():
            return run
    parts = target.parts
    for run in runs:  # written relative to another working folder: match the path's tail
        if run.path.resolve().parts[-len(parts) :] == parts:
            return run
    return None


def _family(run: RunRecord) -> tuple:
    return (run.method, run.sanity_check, run.model, run.dataset)


def per_target_settings(runs: Sequence[RunRecord]) -> dict[tuple, frozenset[str]]:
    """The settings that follow the target density, per (method, sanity check, model, data
    set): those with one value at each target density of its runs and not the same one at
    all of them (e.g. λ from the paper's row for each density). A setting with two values
    at one target (a grid over it) is not among them."""
    families: dict[tuple, dict[float, list[dict[str, str]]]] = {}
    for run in runs:
        if targets_density(run.method):
            by_target = families.setdefault(_family(run), {})
            by_target.setdefault(run.target_density, []).append(dict(run.settings))
    out: dict[tuple, frozenset[str]] = {}
    for family, by_target in families.items():
        if len(by_target) < 2:
            continue
        names = {n for members in by_target.values() for s in members for n in s}
        values = {
            name: [{s.get(name) for s in members} for members in by_target.values()]
            for name in names
        }
        bound = frozenset(
            name
            for name, per in values.items()
            if all(len(v) == 1 for v in per) and len(set().union(*per)) > 1
        )
        if bound:
            out[family] = bound
    return out


def _series_key(run: RunRecord, bound: frozenset[str] = frozenset()) -> tuple:
    """What a curve is drawn over: runs sharing it differ only in seed and target (and in
    the settings ``bound`` to the target, held as :data:`PER_TARGET`)."""
    settings = tuple((n, PER_TARGET if n in bound else v) for n, v in run.settings)
    return (*_family(run), settings)


def _target_key(run: RunRecord) -> float | None:
    """The target density a run is grouped on; None where the method ignores it."""
    return run.target_density if targets_density(run.method) else None


def series_labels(series: Sequence[tuple]) -> dict[tuple, str]:
    """A label per series key (:attr:`Group.series`): method (+ sanity check), then what
    tells it apart from the other ``series`` given
    (:func:`~gemminer.reports.labels.distinguishing_labels`)."""
    keys = list(dict.fromkeys(series))
    named = [
        (
            f"{method} + {check}" if check else method,
            {**dict(settings), "model": json.dumps(model), "dataset": json.dumps(dataset)},
        )
        for method, check, model, dataset, settings in keys
    ]
    return dict(zip(keys, distinguishing_labels(named)))


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs differing only in seeds (and, for dense training, in the target it
    ignores); ordered by target density, then method order of first appearance, sanity
    checks after their methods."""
    bound = per_target_settings(runs)
    grouped: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        key = _series_key(run, bound.get(_family(run), frozenset()))
        grouped.setdefault((key, _target_key(run)), []).append(run)
    labels = series_labels([series for series, _ in grouped])
    groups = [
        Group(
            label=_group_label(labels[series], members[0], bound.get(_family(members[0]), ())),
            runs=tuple(sorted(members, key=lambda r: (r.seed, str(r.path)))),
            series=series,
        )
        for (series, _), members in grouped.items()
    ]
    order = {series: i for i, series in enumerate(labels)}
    return sorted(groups, key=lambda g: (-g.target_density, bool(g.sanity_check), order[g.series]))


def _group_label(series_label: str, run: RunRecord, bound: Iterable[str]) -> str:
    """The series label with the values its group holds of the settings that follow the
    target density (``gem-miner (lam=3e-05)``): a table row names them, a curve does not."""
    values = dict(run.settings)
    label = series_label
    for name in sorted(bound):
        text = setting_text(name, values.get(name))
        placeholder = setting_text(name, PER_TARGET)
        if placeholder in label:
            label = label.replace(placeholder, text)
        elif label.endswith(")"):
            label = f"{label[:-1]}, {text})"
        else:
            label = f"{label} ({text})"
    return label


def run_folders(path: Path) -> list[Path]:
    """``path`` itself, or for a sweep folder (no config.json, run folders inside: what
    ``gemminer sweep`` writes, sanity checks' folders included) the run folders in it."""
    if not path.is_dir() or (path / "config.json").is_file():
        return [path]
    inside = sorted(p for p in path.iterdir() if (p / "config.json").is_file())
    return inside or [path]


def collect_runs(
    paths: Iterable[str | Path],
    *,
    layers: bool = True,
    warn: Callable[[str], None] | None = None,
) -> Collection:
    """Read every run folder in ``paths`` (a sweep folder stands for the run folders in it);
    unfinished ones are listed, not read.

    A folder that cannot be read (not a run folder, or a damaged file) is skipped, with a
    one-line warning naming it and why (given to ``warn``; default: a notice,
    :func:`~gemminer.notices.notice`), and listed in :attr:`Collection.skipped`.
    :class:`RunError` when no folder could be read at all.
    """
    runs: list[RunRecord] = []
    unfinished: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for path in (folder for p in paths for folder in run_folders(Path(p))):
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            run = read_run(path, layers=layers)
        except RunError as exc:
            skipped.append((path, str(exc)))
            continue
        if run is None:
            unfinished.append(path)
        else:
            runs.append(run)
    if skipped and not runs and not unfinished:
        raise RunError(f"no run could be read: {'; '.join(why for _, why in skipped)}")
    for _, why in skipped:
        if warn is None:
            notice(f"skipped a run folder: {why}")
        else:
            warn(f"{PREFIX}skipped a run folder: {why}")
    return Collection(group_runs(runs), unfinished, skipped)
