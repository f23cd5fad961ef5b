"""Every sweep file under sweeps/ resolves (no typo, no setting that does not apply) and
says which table or figure it reproduces and how long it takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gemminer.methods import METHODS
from gemminer.sweep import expand, load_sweep

REPO = Path(__file__).parents[1]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
#: The scaled-down sweeps whose results are committed under benchmarks/results/.
BENCHMARK_SWEEPS = sorted((REPO / "benchmarks" / "sweeps").glob("*.yaml"))
#: The paper's experiments and the sweep file reproducing each.
EXPERIMENTS = {
    "Fig. 2": "fig2-fig5-mobilenetv2-lambda",
    "Fig. 5": "fig2-fig5-mobilenetv2-lambda",
    "Fig. 3": "fig3-fig6-resnet20",
    "Fig. 6": "fig3-fig6-vgg16",
    "Fig. 4a": "fig4-cifar100-resnet32",
    "Fig. 4b": "fig4-tinyimagenet-resnet18",
    "Fig. 4c": "fig4-tinyimagenet-resnet50",
    "Fig. 4d": "fig4-caltech101-resnet50",
    "Fig. 7": "fig7-layerwise-resnet20",
    "Fig. 9": "fig9-vgg16-lr",
    "Fig. 10": "fig10-imp-short-long-resnet20",
    "Table 1": "table1-compute-resnet20",
    "Table 2": "table2-prospr-resnet20",
    "Table 3": "table3-ep-variants-resnet20",
    "Table 4": "table4-long-gem-miner-resnet20",
    "Table 16": "table16-smart-ratio-resnet20",
}


@pytest.mark.parametrize("path", SWEEPS + BENCHMARK_SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_file_resolves(path):
    sweep = load_sweep(path)
    methods = set(sweep.grid.get("method", [sweep.base.get("method")]))
    assert all(m in METHODS for m in methods if m is not None)
    points, _ = expand(sweep)
    assert points, path
    assert len({p.folder for p in points}) == len(points)


@pytest.mark.parametrize("experiment, name", EXPERIMENTS.items())
def test_each_experiment_has_a_sweep_file_naming_it_and_its_time(experiment, name):
    text = (SWEEPS[0].parent / f"{name}.yaml").read_text(encoding="utf-8")
    header = " ".join(
        line.removeprefix("#").strip() for line in text[: text.index("\nbase:")].split("\n")
    )
    assert experiment.rstrip("abcd") in header
    assert re.search(r"One H100-class GPU: ≈ [\d.]+ h", header), name
    assert re.search(r"This 2-core CPU: ≈ [\d.]+ days in bf16", header), name
    assert f"gemminer report runs/sweeps/{name}" in header


@pytest.mark.parametrize(
    "name",
    [p.stem for p in SWEEPS if p.stem.startswith(("fig3-", "fig4-")) and "imagenet-" not in p.stem],
)
def test_figures_with_a_sanity_row_run_gem_miners_checks(name):
    """Fig. 3 and Fig. 4 (bottom rows): shuffle, reinit and invert of every Gem-Miner run."""
    sweep = load_sweep(SWEEPS[0].parent / f"{name}.yaml")
    assert sweep.sanity == {"gem-miner": ("shuffle", "reinit", "invert")}


def test_table2_checks_both_methods():
    sweep = load_sweep(SWEEPS[0].parent / "table2-prospr-resnet20.yaml")
    assert sweep.sanity == {"prospr": ("shuffle", "reinit"), "gem-miner": ("shuffle", "reinit")}
