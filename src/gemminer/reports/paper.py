"""The paper's own numbers, typed in once, each with the table or figure that prints it.

Only numbers printed as numbers in the text or a table of the paper ("Rare Gems: Finding
Lottery Tickets at Initialization", Sreenivasan et al. 2022) are here; values read off a
plot are not. ``gemminer report`` puts them beside ours where a group of runs has the
entry's setting: the same model, data set, method and sanity check, a target density
within :data:`DENSITY_TOLERANCE` of the entry's (the paper's "1.4 %" is the 1.44 % row),
and the entry's ``where`` settings (flattened config keys such as ``settings.lam``). When
several entries of one figure match a group, those naming the most ``where`` settings are
kept (Long Gem-Miner's entry over Gem-Miner's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The figures an entry can give: post-finetune accuracy, accuracy before finetuning
#: (Gem-Miner: its rounded mask, the rare gem) and epochs to find the mask.
FIGURES = ("post_acc", "before_acc", "epochs_to_mask")
#: Relative difference of target densities still read as the paper's setting.
DENSITY_TOLERANCE = 0.05


@dataclass(frozen=True)
class PaperValue:
    """One number the paper prints, with where it prints it."""

    source: str  # "Table 4"
    model: str
    dataset: str
    method: str
    density: float  # the target, a fraction
    figure: str  # one of FIGURES
    value: float  # accuracies as fractions, epochs as epochs
    sanity_check: str = ""
    where: tuple[tuple[str, Any], ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if self.figure not in FIGURES:
            raise ValueError(f"unknown figure {self.figure!r}; valid: {', '.join(FIGURES)}")


def _r20(source: str, method: str, density: float, figure: str, value: float, **kw: Any):
    return PaperValue(source, "resnet20", "cifar10", method, density, figure, value, **kw)


_POST, _PRE, _EPOCHS = FIGURES[0], FIGURES[1], FIGURES[2]

PAPER_VALUES: tuple[PaperValue, ...] = (
    # Table 1: computation to reach 1.4 % on ResNet-20, CIFAR-10 (Smart Ratio: "O(1)")
    _r20("Table 1", "imp", 0.0144, _EPOCHS, 2850),
    _r20("Table 1", "snip", 0.0144, _EPOCHS, 1, note="one-shot: printed as 1 epoch"),
    _r20("Table 1", "grasp", 0.0144, _EPOCHS, 1, note="one-shot: printed as 1 epoch"),
    _r20("Table 1", "synflow", 0.0144, _EPOCHS, 1, note="one-shot: printed as 1 epoch"),
    _r20("Table 1", "edge-popup", 0.0144, _EPOCHS, 150),
    _r20("Table 1", "lr-rewinding", 0.0144, _EPOCHS, 3000),
    _r20("Table 1", "gem-miner", 0.0144, _EPOCHS, 150),
    # Table 2: ProsPr at 5 % vs Gem-Miner at 3.72 %, with two sanity checks
    _r20("Table 2", "prospr", 0.05, _POST, 0.8267, note="ProsPr finetuned 200 epochs"),
    _r20("Table 2", "prospr", 0.05, _POST, 0.8215, sanity_check="shuffle"),
    _r20("Table 2", "prospr", 0.05, _POST, 0.8164, sanity_check="reinit"),
    _r20("Table 2", "gem-miner", 0.0372, _POST, 0.834),
    _r20("Table 2", "gem-miner", 0.0372, _POST, 0.7873, sanity_check="shuffle"),
    _r20("Table 2", "gem-miner", 0.0372, _POST, 0.786, sanity_check="reinit"),
    # Table 3: Edge-Popup variants vs Gem-Miner at 0.59 %
    _r20("Table 3", "edge-popup", 0.0059, _PRE, 0.1957),
    _r20("Table 3", "edge-popup", 0.0059, _POST, 0.2447),
    _r20("Table 3", "edge-popup-global", 0.0059, _PRE, 0.2222),
    _r20("Table 3", "edge-popup-global", 0.0059, _POST, 0.3442),
    _r20("Table 3", "edge-popup-global-gradual", 0.0059, _PRE, 0.3156),
    _r20("Table 3", "edge-popup-global-gradual", 0.0059, _POST, 0.6354),
    _r20(
        "Table 3",
        "edge-popup-global-gradual",
        0.0059,
        _PRE,
        0.1967,
        where=(("settings.score_l2", 1e-4),),
        note="with L2 on the scores",
    ),
    _r20(
        "Table 3",
        "edge-popup-global-gradual",
        0.0059,
        _POST,
        0.6372,
        where=(("settings.score_l2", 1e-4),),
        note="with L2 on the scores",
    ),
    _r20("Table 3", "gem-miner", 0.0059, _PRE, 0.4530),
    _r20("Table 3", "gem-miner", 0.0059, _POST, 0.6615),
    # Table 4: 1.4 %, post-finetune accuracy and epochs (GM: 150 + 150 finetuning)
    _r20("Table 4", "gem-miner", 0.0144, _POST, 0.7789, note="GM (cold), 300 epochs in all"),
    _r20(
        "Table 4",
        "gem-miner",
        0.0144,
        _POST,
        0.7950,
        where=(("settings.period", 150),),
        note="Long GM (cold), 3000 epochs",
    ),
    _r20("Table 4", "gem-miner", 0.0144, _EPOCHS, 3000, where=(("settings.period", 150),)),
    _r20("Table 4", "imp", 0.0144, _POST, 0.7452, note="IMP (warm), 3000 epochs"),
    _r20("Table 4", "imp", 0.0144, _EPOCHS, 3000),
    _r20("Table 4", "lr-rewinding", 0.0144, _POST, 0.8021, note="Renda et al., 3000 epochs"),
    # Table 16: 1.44 % target; the variants' own densities in the notes
    _r20("Table 16", "gem-miner", 0.0144, _POST, 0.7789),
    _r20("Table 16", "smart-ratio", 0.0144, _POST, 0.6561, note="SR-v1"),
    _r20(
        "Table 16",
        "smart-ratio",
        0.0144,
        _POST,
        0.6859,
        where=(("settings.variant", "v2"),),
        note="SR-v2, at 1.47 %",
    ),
    _r20(
        "Table 16",
        "smart-ratio",
        0.0144,
        _POST,
        0.6978,
        where=(("settings.variant", "v3"),),
        note="SR-v3, at 1.75 %",
    ),
    _r20("Table 16", "smart-ratio-v3", 0.0144, _POST, 0.6978, note="SR-v3, at 1.75 %"),
    # Fig. 2 (caption): MobileNet-V2, λ = 1.5e-5, the gem before and after finetuning
    PaperValue(
        "Fig. 2",
        "mobilenetv2",
        "cifar10",
        "gem-miner",
        0.0144,
        _PRE,
        0.8462,
        where=(("settings.lam", 1.5e-5),),
        note="λ = 1.5e-5",
    ),
    PaperValue(
        "Fig. 2",
        "mobilenetv2",
        "cifar10",
        "gem-miner",
        0.0144,
        _POST,
        0.8737,
        where=(("settings.lam", 1.5e-5),),
        note="λ = 1.5e-5",
    ),
    # Fig. 5 (caption): IMP on MobileNet-V2 to 1.4 %: 20 rounds × 300 epochs
    PaperValue("Fig. 5", "mobilenetv2", "cifar10", "imp", 0.0144, _EPOCHS, 6000),
)


def _setting_matches(settings: Mapping[str, str], key: str, value: Any) -> bool:
    text = settings.get(key)
    if text is None:
        return False
    found = json.loads(text)
    if isinstance(value, float) and isinstance(found, (int, float)):
        return abs(found - value) <= 1e-9 * max(abs(value), 1e-30)
    return found == value


def _matches(
    entry: PaperValue,
    model: str,
    dataset: str,
    method: str,
    sanity_check: str,
    target: float,
    settings: Mapping[str, str],
) -> bool:
    return (
        (entry.model, entry.dataset, entry.method, entry.sanity_check)
        == (model, dataset, method, sanity_check)
        and abs(target - entry.density) <= DENSITY_TOLERANCE * entry.density
        and all(_setting_matches(settings, k, v) for k, v in entry.where)
    )


def paper_values(
    model: str,
    dataset: str,
    method: str,
    sanity_check: str,
    target: float,
    settings: Mapping[str, str],
    values: Sequence[PaperValue] = PAPER_VALUES,
) -> dict[str, list[PaperValue]]:
    """The paper's values for a group of runs with this setting, by figure: per figure the
    matching entries naming the most ``where`` settings (several where tables repeat a
    number, e.g. Gem-Miner's 77.89 % in Tables 4 and 16). ``settings``: the runs' flattened
    config values as JSON texts (:attr:`~gemminer.reports.collect.RunRecord.settings`)."""
    out: dict[str, list[PaperValue]] = {}
    for figure in FIGURES:
        found = [
            v
            for v in values
            if v.figure == figure
            and _matches(v, model, dataset, method, sanity_check, target, settings)
        ]
        if found:
            most = max(len(v.where) for v in found)
            out[figure] = [v for v in found if len(v.where) == most]
    return out
