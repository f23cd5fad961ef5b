"""Throughput of the training steps and of the data path, as ratios measured in one run.

Times, on one model, batch size and device:

* the **dense** training step (plain network, SGD on the weights, decayed by 2λ),
* the **mining** step (Gem-Miner: score layers, straight-through rounding, λ‖p‖², projection),
* the **finetune** step (a fixed mask: gradients and weights re-masked),

each on the same pre-loaded batches, and a Gem-Miner **end-to-end epoch** (uint8 images on
the device, batched crop + flip + normalization, the step, freezing and the epoch's
bookkeeping) against the **pure-compute epoch** (the same steps on batches prepared
beforehand). Measurements are interleaved and repeated; medians are reported, with the
operators each step dispatches (:func:`operators_per_step`: on a GPU, what launches kernels).
The last line is ``mining/dense=R1 end_to_end/compute=R2`` (goals: ≤ 1.03 and ≤ 1.10).

    python benchmarks/throughput.py --quick                  # < 1 min on a 2-core CPU
    python benchmarks/throughput.py --out benchmarks/results/throughput_cpu.md
    python benchmarks/throughput.py --device cuda --precision bf16 --images 50000

Images are random (speed does not depend on their content), 32×32 unless ``--image-size``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, markdown_table, today  # noqa: E402

from gemminer.data import ImageArrays  # noqa: E402
from gemminer.data.loader import BatchLoader  # noqa: E402
from gemminer.masking import Mask, init_weights, prunable_weights, to_score_model  # noqa: E402
from gemminer.methods.gem_miner import MineConfig, MiningStep, mine_scores  # noqa: E402
from gemminer.models import create_model  # noqa: E402
from gemminer.settings.config import OptimConfig  # noqa: E402
from gemminer.training import MaskedWeights, build_optimizer, resolve_device  # noqa: E402
from gemminer.training.loop import train_epoch  # noqa: E402
from gemminer.training.runtime import Runtime  # noqa: E402

DENSITY = 0.0144
LAMBDA = 1e-4
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


class Setup:
    """One way of training the network: the module to call, its optimizer and hooks."""

    def __init__(self, model, optimizer, runtime, device, before=None, after=None) -> None:
        self.model = model
        self.net = runtime.training_module(model, device)
        self.optimizer = optimizer
        self.before, self.after = before, after
        self.runtime, self.device = runtime, device

    def epoch(self, batches) -> None:
        train_epoch(
            self.net,
            batches,
            self.optimizer,
            self.device,
            before_step=self.before,
            after_step=self.after,
            runtime=self.runtime,
        )


def build(device: torch.device, runtime: Runtime, model: str, cfg: MineConfig) -> dict[str, Setup]:
    plain = create_model(model, num_classes=10)
    init_weights(plain, "kaiming_normal", seed=0)
    plain.to(device=device, memory_format=torch.channels_last)

    dense = copy.deepcopy(plain)
    scored = to_score_model(copy.deepcopy(plain), torch.Generator().manual_seed(1))
    scored.to(device=device, memory_format=torch.channels_last)
    ticket = copy.deepcopy(plain)
    g = torch.Generator().manual_seed(2)
    mask = Mask(
        {n: torch.rand(w.shape, generator=g) < DENSITY for n, w in prunable_weights(ticket).items()}
    )
    masked = MaskedWeights(ticket, mask)
    mining = MiningStep(scored, cfg)  # Gem-Miner's own optimizer and hooks
    # the weights' optimizer decays them as mining decays the scores (2λ), so that the
    # steps differ only in what the score layers add
    decayed = dataclasses.replace(cfg.optim, weight_decay=cfg.optim.weight_decay + 2 * cfg.lam)

    def sgd(net: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(net.parameters(), decayed)

    return {
        "dense": Setup(dense, sgd(dense), runtime, device),
        "mining": Setup(
            scored, mining.optimizer, runtime, device, mining.before_step, mining.after_step
        ),
        "finetune": Setup(
            ticket, sgd(ticket), runtime, device, masked.mask_gradients, masked.enforce
        ),
    }


#: Operators that only make views, allocate or read metadata: no kernel of their own.
_NO_KERNEL = {
    f"aten::{name}"
    for name in (
        "view _unsafe_view as_strided permute reshape _reshape_alias slice narrow split "
        "split_with_sizes expand detach detach_ t transpose unsqueeze squeeze alias empty "
        "empty_strided empty_like select unbind resolve_conj resolve_neg lift_fresh "
        "result_type flatten"
    ).split()
}


def operators(run: Callable[[], object]) -> Counter[str]:
    """The operators one call of ``run`` dispatches, by name: the top-level ATen operators
    (those no other operator called), views and allocations left out. A multi-tensor
    ``_foreach_`` operator counts once, as it launches once on a GPU. Backward operators
    count too (autograd calls them at the top level)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return Counter(
        e.name
        for e in prof.events()
        if e.name.startswith("aten::")
        and e.name not in _NO_KERNEL
        and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))
    )


def operators_per_step(setup: Setup, batches: list) -> int:
    """The operators one training step of ``setup`` dispatches: an epoch of two steps less
    an epoch of one (so the epoch's own bookkeeping cancels out)."""
    two = operators(lambda: setup.epoch(batches[:2]))
    one = operators(lambda: setup.epoch(batches[:1]))
    return sum(two.values()) - sum(one.values())


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="timed steps per step measurement")
    p.add_argument("--images", type=int, default=10240, help="images in the timed epoch")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--quick", action="store_true", help="8 steps, 1280-image epoch, 3 rounds")
    p.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.images, args.repeats = 8, 10 * args.batch_size, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    runtime = Runtime(precision=args.precision, compile=args.compile)

    g = torch.Generator().manual_seed(0)
    size = args.image_size
    images = torch.randint(0, 256, (args.images, 3, size, size), generator=g, dtype=torch.uint8)
    data = ImageArrays(
        images, torch.randint(0, 10, (args.images,), generator=g), tuple("0123456789")
    )
    loader = BatchLoader(
        data, batch_size=args.batch_size, mean=MEAN, std=STD, device=device, train=True, seed=0
    )
    fixed = list(loader)[: args.steps]
    cfg = MineConfig(
        density=DENSITY,
        epochs=1,
        period=1,
        lam=LAMBDA,
        batch_size=args.batch_size,
        optim=OptimConfig(lr=0.01),
        bn_recalibration_batches=0,
    )
    setups = build(device, runtime, args.model, cfg)
    mining = setups["mining"]

    def end_to_end() -> None:
        mine_scores(mining.model, loader, cfg, device, runtime=runtime)

    for setup in setups.values():  # warm-up (and compilation)
        setup.epoch(fixed[:2])
    end_to_end()
    ops = {name: operators_per_step(setup, fixed) for name, setup in setups.items()}

    steps: dict[str, list[float]] = {name: [] for name in setups}
    epochs: dict[str, list[float]] = {"end-to-end": [], "compute": []}
    for _ in range(args.repeats):
        for name, setup in setups.items():
            steps[name].append(timed(lambda s=setup: s.epoch(fixed), device) / len(fixed))
        prepared = list(loader)  # the same number of batches, made before the clock starts
        epochs["compute"].append(timed(lambda b=prepared: mining.epoch(b), device))
        del prepared
        epochs["end-to-end"].append(timed(end_to_end, device))

    step = {k: statistics.median(v) for k, v in steps.items()}
    epoch = {k: statistics.median(v) for k, v in epochs.items()}
    r1 = step["mining"] / step["dense"]
    r2 = epoch["end-to-end"] / epoch["compute"]
    rows = [
        [
            f"{name} step",
            f"{1000 * t:.1f} ms",
            f"{args.batch_size / t:.0f}",
            f"{t / step['dense']:.3f}",
            str(ops[name]),
        ]
        for name, t in step.items()
    ] + [
        [
            f"{name} epoch",
            f"{t:.2f} s",
            f"{args.images / t:.0f}",
            f"{t / epoch['compute']:.3f}",
            "",
        ]
        for name, t in epoch.items()
    ]
    table = markdown_table(["measurement", "time (median)", "images/s", "ratio", "operators"], rows)
    setting = (
        f"{args.model}, batch {args.batch_size}, {args.image_size}×{args.image_size} images, "
        f"{device}, {args.precision}{', compiled' if args.compile else ''}, "
        f"{torch.get_num_threads()} threads; {args.steps} steps per step measurement, "
        f"{args.images}-image epochs ({len(loader)} steps), median of {args.repeats} "
        "interleaved rounds"
    )
    last = f"mining/dense={r1:.3f} end_to_end/compute={r2:.3f}"
    print(setting)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"# Throughput: {args.model}, {device}\n\n"
            f"`{command_line()}` — {today()}\n\nMachine: {machine()}\n\n{setting}.\n\n"
            f"{table}\n\nRatios (goals ≤ 1.03 and ≤ 1.10): `{last}`\n"
        )
    print(last)
    return last


if __name__ == "__main__":
    main()
