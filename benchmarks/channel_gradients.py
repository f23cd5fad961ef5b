"""Channel Gem-Miner's score gradients at initialization against λ's pull (issue 29).

For each model, channel Gem-Miner's short-budget configuration (the one `gemminer prune
--method gem-miner --set granularity=channel --density D --epochs E` resolves: optimizer,
λ) and both ways a channel's score gathers its weights' straight-through gradients (the
mean over the weights it gates, or their sum), the loss's gradient on every channel set's
scores is averaged over a few training batches at initialization: its mean magnitude, and
the share of channels whose gradient is positive (a descent step lowers those scores,
towards closing the channel). Beside them λ's pull 2λp at p = 0.5, and the mean magnitude
of the per-weight scores' gradients (Gem-Miner per weight, the same weights) as the scale
the recipe's λ was set for. Under Adam a score steps by about the LR in the direction of
its gradient plus 2λp, whatever their size, so where 2λp is larger every score falls.

    make data
    .venv/bin/python benchmarks/channel_gradients.py --models resnet20 vgg16 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from _common import command_line, machine, markdown_table, today

from gemminer import create_model, init_weights, load_dataset
from gemminer.data.loader import BatchLoader
from gemminer.masking import score_layers
from gemminer.masking.channel_scores import channel_gates
from gemminer.methods import METHODS
from gemminer.methods.gem_miner import MineConfig, mine_config, score_model
from gemminer.settings.resolve import resolve

HEADER = ["model", "channel set", "channels", "mean |∂L/∂p|, averaged", "mean |∂L/∂p|, summed",
          "share pointing down", "2λp at p = 0.5"]  # fmt: skip


def configuration(args: argparse.Namespace, model: str, gradient: str) -> MineConfig:
    """Channel Gem-Miner's configuration as the command line resolves it for ``args``'s
    budget (the training subset's steps per epoch set SGD's short-budget λ)."""
    run = resolve(
        {
            "method": "gem-miner",
            "model": model,
            "dataset": "cifar10",
            "train_size": args.train_size,
            "density": args.density,
            "epochs": args.epochs,
            "set": {"granularity": "channel", "channel_gradient": gradient},
        }
    )
    return mine_config(run.prune, METHODS.get("gem-miner").build_settings(run.settings))


def mean_gradients(scored: torch.nn.Module, scores: list[torch.Tensor], batches) -> list:
    """The loss's gradient on ``scores``, averaged over ``batches``."""
    total = [torch.zeros_like(p) for p in scores]
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(scored(x), y)
        for t, g in zip(total, torch.autograd.grad(loss, scores)):
            t += g
    return [t / len(batches) for t in total]


def measure(args: argparse.Namespace, model: str, batches: list) -> tuple[list[list[str]], str]:
    """The table's rows for ``model`` (one per channel set) and its line of settings."""
    net = init_weights(create_model(model, num_classes=10), "signed_constant", 0)
    shape = tuple(batches[0][0].shape[1:])

    def channel_scores(gradient: str) -> tuple[MineConfig, list, list[torch.Tensor]]:
        cfg = configuration(args, model, gradient)
        scored, _ = score_model(net, cfg, torch.Generator().manual_seed(0), shape)
        scored.train()
        gates = channel_gates(scored)
        return cfg, gates.sets, mean_gradients(scored, gates.scores, batches)

    cfg, sets, averaged = channel_scores("mean")
    _, _, summed = channel_scores("sum")
    pull = f"{2 * cfg.lam * 0.5:.2e}"
    rows = [
        [model, s.name, str(s.size), f"{a.abs().mean():.2e}", f"{b.abs().mean():.2e}",
         f"{float((a > 0).float().mean()):.2f}", pull]
        for s, a, b in zip(sets, averaged, summed)
    ]  # fmt: skip
    per_weight_cfg = dataclasses.replace(cfg, granularity="weight", channel_gradient="auto")
    weights, _ = score_model(net, per_weight_cfg, torch.Generator().manual_seed(0), shape)
    weights.train()
    per_weight = mean_gradients(
        weights, [m.scores for m in score_layers(weights).values()], batches
    )
    count = sum(g.numel() for g in per_weight)
    scale = sum(float(g.abs().sum()) for g in per_weight) / count
    line = (
        f"- {model}: {cfg.optim.name} LR {cfg.optim.lr:g}, λ {cfg.lam:.4g} "
        f"(resolved for {args.density:g} of the multiply-adds, {args.epochs} epochs on "
        f"{args.train_size} images); "
        f"per-weight scores' mean |∂L/∂p| {scale:.2e}"
    )
    return rows, line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "vgg16"])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--density", type=float, default=0.25, help="of the multiply-adds")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument(
        "--train-size", type=int, default=10000, help="the mining budget's training subset"
    )
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--report", default="benchmarks/results/channel_gradients")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("cifar10", args.data_dir, download=False, train_size=128 * args.batches)
    loader = BatchLoader(data.train, batch_size=128, mean=data.mean, std=data.std, train=True)
    batches = list(loader)[: args.batches]
    rows, lines = [], []
    for model in args.models:
        found, line = measure(args, model, batches)
        rows += found
        lines.append(line)
    Path(f"{args.report}.md").write_text(
        "\n".join(
            [
                "# Channel Gem-Miner's score gradients at initialization, against λ's pull",
                "",
                f"- Date: {today()}",
                f"- Machine: {machine()}",
                f"- Script: `{command_line()}`",
                f"- The loss's gradient on the channel scores (U[0, 1], seed 0; signed-constant "
                f"weights), averaged over {args.batches} training batches of 128 at "
                "initialization; 'share pointing down': channels whose averaged gradient is "
                "positive (a descent step lowers their score).",
                *lines,
                "",
                markdown_table(HEADER, rows),
                "",
            ]
        )
    )
    print(Path(f"{args.report}.md").read_text())


if __name__ == "__main__":
    main()
