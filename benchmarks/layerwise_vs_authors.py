"""A ticket's layer-wise densities beside the authors' own ticket at the same target.

The authors' repository (ksreenivasan/pruning_is_enough) keeps `resnet20_layerwise_sparsity.csv`,
written by their `log_layer_sparsities.py` from their ResNet-20 runs' `model_before_finetune.pth`
after `round_model(model, 'all_ones')`, i.e. the flags they finetune: one column per target
(`50`, `3_72`, `1_4`, `0_59`), one row per prunable layer in module order (19 convolutions,
then the classifier), densities in %. This script puts a gemminer run's per-layer densities
beside one column, with the overall densities both imply. Other files of theirs in the same
layout (e.g. `per_layer_sparsity_resnet20/smart_ratio.csv`, their Smart Ratio masks as
`log_layer_sparsities_sr.py` logged them) are named with `--authors-path` and described with
`--authors-what`.

    .venv/bin/python benchmarks/layerwise_vs_authors.py \\
        --run runs/gem-miner-resnet20-cifar10-d0.0144-1041721100 \\
        --authors-csv PATH/pruning_is_enough/resnet20_layerwise_sparsity.csv --column 1_4 \\
        --out benchmarks/results/layerwise_vs_authors_resnet20_d1.44.md
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from _common import command_line, markdown_table, today

from gemminer.rundir.files import safe_torch_load
from gemminer.rundir.runs import RunDir


def authors_column(path: Path, column: str) -> list[float]:
    """One column of the authors' CSV, as fractions."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        raise SystemExit(f"{path} has no column {column!r}")
    return [float(r[column]) / 100 for r in rows]


def compare(ours: dict[str, float], sizes: dict[str, int], theirs: list[float]) -> dict:
    """Per-layer rows and the totals; layers are matched by position (module order)."""
    if len(theirs) != len(ours):
        raise SystemExit(f"the run has {len(ours)} prunable layers, the column {len(theirs)}")
    names = list(ours)
    total = sum(sizes[n] for n in names)
    rows = [
        [n, sizes[n], f"{100 * ours[n]:.2f}", f"{100 * t:.2f}", f"{100 * (ours[n] - t):+.2f}"]
        for n, t in zip(names, theirs)
    ]
    diffs = [abs(ours[n] - t) for n, t in zip(names, theirs)]
    stages: dict[str, list[float]] = {}  # kept weights by the name's first part (layer1, fc)
    for n, t in zip(names, theirs):
        kept = stages.setdefault(n.split(".")[0], [0.0, 0.0])
        kept[0] += ours[n] * sizes[n]
        kept[1] += t * sizes[n]
    return {
        "rows": rows,
        "stages": [[name, f"{a:.0f}", f"{b:.0f}"] for name, (a, b) in stages.items()],
        "ours": sum(ours[n] * sizes[n] for n in names) / total,
        "theirs": sum(t * sizes[n] for n, t in zip(names, theirs)) / total,
        "mean_abs": sum(diffs) / len(diffs),
        "max_abs": max(diffs),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished gemminer run folder")
    p.add_argument("--authors-csv", required=True, type=Path)
    p.add_argument("--column", default="1_4", help="the authors' target column (default 1_4)")
    p.add_argument("--authors-commit", default="", help="the commit the CSV was read at")
    p.add_argument(
        "--authors-path",
        default="resnet20_layerwise_sparsity.csv",
        help="the CSV's path in their repository, for the report",
    )
    p.add_argument(
        "--authors-what",
        default="their run's flags before finetuning",
        help="what their CSV holds, for the report",
    )
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()

    summary = RunDir(args.run).summary()
    mask = safe_torch_load(Path(args.run) / "mask.pt")  # the mask it finetunes, per layer
    ours = {name: float(m.float().mean()) for name, m in mask.items()}
    sizes = {name: m.numel() for name, m in mask.items()}
    result = compare(ours, sizes, authors_column(args.authors_csv, args.column))
    header = ["layer", "weights", "gemminer %", "authors %", "difference (points)"]
    commit = f" at commit {args.authors_commit}" if args.authors_commit else ""
    args.out.write_text(
        f"""# Layer-wise densities: gemminer's ticket beside the authors' ({args.column})

- date: {today()}
- script: `{command_line()}`
- ours: `{args.run}` ({summary.method}, {summary.model}, {summary.dataset}, target
  {100 * (summary.target_density or 0):.2f} %), the mask it finetunes
- theirs: column `{args.column}` of ksreenivasan/pruning_is_enough's
  `{args.authors_path}`{commit} ({args.authors_what})

Overall density: gemminer {100 * result["ours"]:.4f} %, authors {100 * result["theirs"]:.4f} %
(their column weighted by our layer sizes). Per layer: mean |difference|
{100 * result["mean_abs"]:.2f} points, largest {100 * result["max_abs"]:.2f} points.

{markdown_table(header, result["rows"])}

Kept weights by stage:

{markdown_table(["stage", "gemminer", "authors"], result["stages"])}
"""
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
