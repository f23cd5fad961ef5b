"""Export the exact images gemminer trains on to .npz, to run another code base on them.

`gemminer ... --train-size N --seed S` trains on a seeded subset of the training set; this
writes that subset (and the test split) as uint8 arrays, height × width × channels like
torchvision's `CIFAR10.data`, with int64 labels, so that the paper authors' code (or any
other) can be run on the same pixels and the same images
(benchmarks/results/authors_code_resnet20_cifar10.md).

    .venv/bin/python benchmarks/export_subset.py --train-size 10000 --seeds 0,1 --out /tmp/subsets
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gemminer.data import load_dataset


def export(dataset: str, data_dir: str, train_size: int, seeds: list[int], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for n, seed in enumerate(seeds):
        splits = load_dataset(dataset, data_dir, download=False, train_size=train_size, seed=seed)
        parts = {f"train{train_size or len(splits.train)}_seed{seed}": splits.train}
        if n == 0:
            parts["test"] = splits.test
        for name, part in parts.items():
            images = part.images.permute(0, 2, 3, 1).contiguous().numpy()
            labels = part.labels.numpy().astype(np.int64)
            np.savez(out / f"{name}.npz", data=images, labels=labels)
            counts = np.bincount(labels).tolist()
            print(f"{out / name}.npz: {images.shape} {images.dtype}, per class {counts}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--train-size", type=int, default=10000, help="0: the whole training set")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (each its own subset)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    export(args.dataset, args.data_dir, args.train_size, seeds, args.out)


if __name__ == "__main__":
    main()
