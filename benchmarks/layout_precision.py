"""fp32 rounding of convolution and BatchNorm, NCHW against channels-last, beside float64.

Why two runs of one seed can part (benchmarks/results/authors_code_resnet20_cifar10.md):
the kernels of the two memory layouts round differently, and one score rounded the other way
at 0.5 changes a mask. Prints and writes the relative errors (‖y − y64‖ / ‖y64‖).

    .venv/bin/python benchmarks/layout_precision.py --out benchmarks/results/layout_precision.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import command_line, machine, markdown_table, today
from torch.nn import functional as F

LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}
#: BatchNorm inputs: (mean, std) of each channel; a small std against the mean is where the
#: variance loses digits.
BN_INPUTS = ((2.0, 0.5), (1.0, 1e-2), (1.0, 1e-3))


def _error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref).norm() / ref.norm())


def measure(seed: int = 0) -> list[list[str]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    x = torch.randn(128, 16, 32, 32, generator=g)
    w = torch.randn(16, 16, 3, 3, generator=g) / 12
    ref = F.conv2d(x.double(), w.double(), padding=1)
    rows.append(
        ["conv 3×3, 16 → 16 channels, N(0, 1) input"]
        + [
            f"{_error(F.conv2d(x.contiguous(memory_format=f), w.contiguous(memory_format=f), padding=1), ref):.1e}"  # noqa: E501
            for f in LAYOUTS.values()
        ]
    )
    for mean, std in BN_INPUTS:
        x = torch.randn(128, 16, 8, 8, generator=g) * std + mean
        ref = F.batch_norm(x.double(), None, None, training=True)
        rows.append(
            [f"BatchNorm (training), N({mean:g}, {std:g}) input"]
            + [
                f"{_error(F.batch_norm(x.contiguous(memory_format=f), None, None, training=True), ref):.1e}"  # noqa: E501
                for f in LAYOUTS.values()
            ]
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = measure()
    table = markdown_table(["fp32 operation", *(f"{k} error" for k in LAYOUTS)], rows)
    print(table)
    if args.out:
        args.out.write_text(
            f"# fp32 rounding by memory layout\n\n- date: {today()}\n- machine: {machine()}\n"
            f"- command: `{command_line()}`\n- relative error against float64 on the CPU\n\n"
            f"{table}\n"
        )


if __name__ == "__main__":
    main()
