"""Inference of channel-pruned networks: the dense (masked) network against its compact form.

A channel mask zeroes whole channels; the masked network still runs every dense kernel at
full width, while its compact form (:func:`gemminer.rundir.compact.compact_model`, what
``gemminer export RUN --compact`` writes) is a narrower dense network computing the same
outputs. This times both, in eval mode under ``torch.inference_mode()``, each also with its
BatchNorm folded into the convolutions (:func:`gemminer.fold_batchnorm`: one operation fewer
per convolution, what matters at batch 1 on a CPU).

Masks: for each model (ResNet-20 and VGG-16 by default, CIFAR input 3×32×32, 10 classes,
random weights) and each target fraction of the dense multiply-adds (50, 25 and 10 %), the
same fraction of the channels of every channel set is kept (its first channels, rounded,
at least one per set; which ones does not change the time), the largest fraction whose
multiply-adds are at most the target
(:func:`gemminer.methods.channel_scoring.uniform_counts`). With ``--runs RUN ...`` the masks and
weights of finished run folders are used instead (exported into a temporary folder, never
into the run). The compact network's outputs are checked against the dense one's before
anything is timed. Latency: the median of ``--repeats`` forward passes after ``--warmup``
passes, the models taking turns ``--block`` passes at a time (a deployed model runs pass
after pass with its weights in the caches; ``--block 1`` interleaves single passes, which
times every pass with the caches taken by the other models). ``--profile PASSES`` adds where
a batch-1 pass of each network spends its time, operator by operator (``torch.profiler``).
``--channels-last`` runs every network and input in the NHWC memory format instead.

    .venv/bin/python benchmarks/structured_inference.py --threads 1 --profile 100
    .venv/bin/python benchmarks/structured_inference.py --threads 1 --channels-last \
        --report benchmarks/results/structured_inference_channels_last
    .venv/bin/python benchmarks/structured_inference.py --runs benchmarks/runs/RUN --threads 2
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import command_line, machine, markdown_table, today
from torch import nn

from gemminer.masking import apply_mask, count_prunable
from gemminer.masking.channels import channel_mask, cost_of
from gemminer.masking.flops import count_flops, format_flops
from gemminer.methods.channel_scoring import uniform_counts
from gemminer.models import create_model
from gemminer.rundir.compact import compact_model
from gemminer.rundir.export import export_run, load_exported, read_metadata
from gemminer.rundir.fold import fold_batchnorm

INPUT_SHAPE = (3, 32, 32)
FOLDED = ", BN folded"
NUM_CLASSES = 10
HEADER = [
    "model", "mask", "device", "batch", "multiply-adds", "weights kept",
    "dense ms", "compact ms", "speed-up",
    "dense, BN folded ms", "compact, BN folded ms", "speed-up, BN folded",
    "dense, BN folded G multiply-adds/s", "compact, BN folded G multiply-adds/s",
]  # fmt: skip
PROFILE_HEADER = [
    "model", "network", "operator", "calls a pass", "µs a pass (own time)", "share of the pass",
]  # fmt: skip


class Case:
    """One mask of one network: its dense (masked) and compact models and their figures;
    the cases of one ``group`` share the dense network's timing (the dense kernels do not
    skip zeros, so every mask of one architecture costs it the same)."""

    def __init__(
        self,
        model: str,
        mask: str,
        group: str,
        dense: nn.Module,
        compact: nn.Module,
        shape,
        figures,
    ) -> None:
        self.model, self.mask, self.group, self.shape = model, mask, group, tuple(shape)
        self.dense, self.compact = dense.eval(), compact.eval()
        self.dense_folded, self.compact_folded = fold_batchnorm(dense), fold_batchnorm(compact)
        self.dense_flops, self.compact_flops, self.dense_weights, self.compact_weights = figures

    def to_channels_last(self) -> None:
        """Keep the four networks' 4-D weights channels-last (NHWC), the layout oneDNN
        prefers; they then take channels-last inputs (:func:`batch_of`)."""
        for model in (self.dense, self.compact, self.dense_folded, self.compact_folded):
            model.to(memory_format=torch.channels_last)

    def flops_text(self) -> str:
        share = self.compact_flops / self.dense_flops
        return (
            f"{100 * share:.1f} % ({format_flops(self.compact_flops)} of "
            f"{format_flops(self.dense_flops)})"
        )

    def weights_text(self) -> str:
        share = self.compact_weights / self.dense_weights
        return f"{100 * share:.1f} % ({self.compact_weights:,} of {self.dense_weights:,})"


def uniform_cases(models: list[str], fractions: list[float]) -> list[Case]:
    """Each model at each target fraction, with uniform channel masks (see the docstring)."""
    cases = []
    for name in models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=NUM_CLASSES).eval()
        sets, cost = cost_of(model, INPUT_SHAPE)
        for target in fractions:
            counts = uniform_counts(cost, target)
            keep = {s.name: torch.arange(s.size) < k for s, k in zip(sets, counts)}
            mask = channel_mask(model, sets, keep)
            small = compact_model(model, mask, INPUT_SHAPE).model
            dense = apply_mask(copy.deepcopy(model), mask)
            figures = (
                cost.dense,
                count_flops(small, INPUT_SHAPE).dense,
                count_prunable(model),
                count_prunable(small),
            )
            label = f"{100 * target:g} % target"
            cases.append(Case(name, label, name, dense, small, INPUT_SHAPE, figures))
    return cases


def run_cases(runs: list[str]) -> list[Case]:
    """The finetuned ticket of each run folder, exported both ways into a temporary folder."""
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            dense_path = export_run(run, Path(tmp) / f"{i}.safetensors").path
            compact_path = export_run(run, Path(tmp) / f"{i}-c.safetensors", compact=True).path
            meta = read_metadata(compact_path)
            dense, small = load_exported(dense_path), load_exported(compact_path)
            figures = (
                meta["dense_flops"],
                meta["compact_flops"],
                count_prunable(dense),
                count_prunable(small),
            )
            label, shape = Path(run).name, meta["input_shape"]
            cases.append(Case(meta["model"], label, f"{i}", dense, small, shape, figures))
    return cases


def batch_of(size: int, shape, device: str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """A random input batch of ``size`` images of ``shape``, channels-last if asked."""
    x = torch.randn(size, *shape, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def check_outputs(case: Case) -> float:
    """The largest difference of the compact (and BatchNorm-folded) outputs from the dense
    ones, relative to the outputs' scale; a SystemExit when it is not float rounding."""
    x = torch.randn(8, *case.shape)
    worst = 0.0
    with torch.inference_mode():
        ref = case.dense(x)
        for name in ("compact", "dense_folded", "compact_folded"):
            out = getattr(case, name)(x)
            diff = float((out - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
            if diff > 1e-4:
                raise SystemExit(
                    f"{case.model} {case.mask}: {name.replace('_', ' ')} outputs differ from "
                    f"the dense ones by {diff:.1e} (relative)"
                )
            worst = max(worst, diff)
    return worst


def time_models(
    models: dict[str, nn.Module], x: torch.Tensor, repeats: int, warmup: int, block: int = 1
) -> dict[str, float]:
    """Median milliseconds per forward pass of each model. Each model first runs ``warmup``
    untimed passes; then the models take turns, ``block`` timed passes each (after one
    untimed pass that brings the model back into the caches), until each has ``repeats``:
    a block of passes of one model is how a deployed model runs, and the turns spread any
    drift of the machine over all of them. ``block`` 1 times single passes interleaved."""
    cuda = x.device.type == "cuda"
    times: dict[str, list[float]] = {name: [] for name in models}

    def one_pass(model: nn.Module) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        while any(len(t) < repeats for t in times.values()):
            for name, model in models.items():
                n = min(block, repeats - len(times[name]))
                if block > 1 and n > 0:
                    model(x)
                times[name] += [one_pass(model) for _ in range(n)]
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def operator_times(model: nn.Module, x: torch.Tensor, passes: int, top: int) -> list[tuple]:
    """The ``top`` operators by their own CPU time over ``passes`` forward passes of
    ``model`` (after one untimed pass), as (name, calls a pass, microseconds a pass, share
    of the total), from ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                model(x)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        (e.key, e.count / passes, e.self_cpu_time_total / passes, e.self_cpu_time_total / total)
        for e in events[:top]
    ]


def profile_cases(
    cases: list[Case], passes: int, top: int = 4, channels_last: bool = False
) -> list[list[str]]:
    """Where one batch-1 pass of each BN-folded network spends its CPU time: a row per
    network (the dense one once per architecture) and operator (:data:`PROFILE_HEADER`)."""
    rows, seen = [], set()
    for case in cases:
        x = batch_of(1, case.shape, channels_last=channels_last)
        nets = [] if case.group in seen else [("dense" + FOLDED, case.dense_folded)]
        seen.add(case.group)
        for net, model in [*nets, (case.mask + FOLDED, case.compact_folded)]:
            for name, calls, micros, share in operator_times(model.cpu(), x, passes, top):
                rows.append([
                    case.model, net, name, f"{calls:g}", f"{micros:.0f}", f"{100 * share:.1f} %"
                ])  # fmt: skip
    return rows


def rate(flops: float, ms: float) -> str:
    """Multiply-adds a second, in G, of a pass of ``flops`` multiply-adds taking ``ms``."""
    return f"{flops / ms / 1e6:.1f}"


def measure(
    cases: list[Case],
    devices: list[str],
    batches: list[int],
    repeats: list[int],
    warmup: int,
    block: int = 1,
    channels_last: bool = False,
) -> list[list[str]]:
    """A row per case, device and batch size (see :data:`HEADER`)."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    rows = []
    for device in devices:
        for group in groups.values():
            first = group[0]
            models = {"dense": first.dense.to(device), FOLDED: first.dense_folded.to(device)}
            for c in group:
                models[c.mask] = c.compact.to(device)
                models[c.mask + FOLDED] = c.compact_folded.to(device)
            for batch, n in zip(batches, repeats):
                x = batch_of(batch, first.shape, device, channels_last)
                ms = time_models(models, x, n, warmup, block)
                for c in group:
                    dense_ms, compact_ms = ms["dense"], ms[c.mask]
                    folded_ms, compact_folded_ms = ms[FOLDED], ms[c.mask + FOLDED]
                    rows.append([
                        c.model, c.mask, device, str(batch), c.flops_text(), c.weights_text(),
                        f"{dense_ms:.2f}", f"{compact_ms:.2f}", f"{dense_ms / compact_ms:.2f}×",
                        f"{folded_ms:.2f}", f"{compact_folded_ms:.2f}",
                        f"{folded_ms / compact_folded_ms:.2f}×",
                        rate(batch * c.dense_flops, folded_ms),
                        rate(batch * c.compact_flops, compact_folded_ms),
                    ])  # fmt: skip
                    print(" | ".join(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "vgg16"])
    p.add_argument(
        "--fractions", nargs="+", type=float, default=[0.5, 0.25, 0.1],
        help="target fractions of the dense multiply-adds",
    )  # fmt: skip
    p.add_argument("--runs", nargs="+", default=None, help="finished run folders (read only)")
    p.add_argument("--devices", nargs="+", default=["cpu"], choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    p.add_argument("--repeats", type=int, nargs="+", default=[50, 5], help="per batch size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--block", type=int, default=20,
        help="timed passes of one model in a row before the next takes its turn (1: single "
        "passes interleaved)",
    )  # fmt: skip
    p.add_argument(
        "--channels-last", action="store_true",
        help="run every network and input channels-last (NHWC) instead of PyTorch's default "
        "NCHW: oneDNN's layout, often faster for large batches on a CPU",
    )  # fmt: skip
    p.add_argument(
        "--profile", type=int, default=0, metavar="PASSES",
        help="also profile PASSES batch-1 passes of each BN-folded network on the CPU and "
        "report its costliest operators",
    )  # fmt: skip
    p.add_argument("--report", default="benchmarks/results/structured_inference")
    args = p.parse_args(argv)
    if len(args.repeats) == 1:
        args.repeats = args.repeats * len(args.batch_sizes)
    if len(args.repeats) != len(args.batch_sizes):
        p.error("give one --repeats value, or one per batch size")
    if args.block < 1 or args.profile < 0:
        p.error("--block takes a whole number >= 1 and --profile one >= 0")
    if any(not 0 < f <= 1 for f in args.fractions):
        p.error(f"--fractions must be in (0, 1], got {args.fractions}")
    devices = [d for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    skipped = [d for d in args.devices if d not in devices]
    if skipped:
        print("skipped (no CUDA device): cuda")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        cases = run_cases(args.runs) if args.runs else uniform_cases(args.models, args.fractions)
        worst = max(check_outputs(c) for c in cases)
        print(
            f"compact outputs agree with the dense ones (largest relative difference {worst:.1e})"
        )
        if args.channels_last:
            for case in cases:
                case.to_channels_last()
        rows = measure(
            cases,
            devices,
            args.batch_sizes,
            args.repeats,
            args.warmup,
            args.block,
            args.channels_last,
        )
        profiled = (
            profile_cases(cases, args.profile, channels_last=args.channels_last)
            if args.profile
            else []
        )
    finally:
        torch.set_num_threads(threads)  # as it was (the tests call main in their process)

    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    masks = (
        f"the finetuned tickets of {len(args.runs)} run folder(s)"
        if args.runs
        else "uniform channel masks (the same fraction of every channel set kept, its first "
        "channels, rounded, at least one per set; the largest fraction within the target: "
        "`gemminer.methods.channel_scoring.uniform_counts`), random weights"
    )
    passes = ", ".join(f"batch {b}: {n}" for b, n in zip(args.batch_sizes, args.repeats))
    layout = (
        "channels-last (NHWC) networks and inputs (`--channels-last`)"
        if args.channels_last
        else "PyTorch's default (NCHW)"
    )
    turns = (
        "dense and compact models interleaved pass by pass"
        if args.block == 1
        else f"the models taking turns, {args.block} timed passes in a row each (after one "
        "untimed pass)"
    )
    note = f"\n- skipped: {', '.join(skipped)} (no CUDA device)" if skipped else ""
    text = f"""# Structured inference: dense (masked) against compact networks

- date: {today()}
- machine: {machine(args.threads)}
- command: `{command_line()}`
- masks: {masks}; input {"×".join(map(str, cases[0].shape))}, {NUM_CLASSES} classes.
- dense: the masked network at full width (PyTorch's dense kernels, zero channels and all);
  compact: `gemminer.rundir.compact.compact_model`, the narrower dense network with the same
  outputs; "BN folded": each of them with every BatchNorm that reads a convolution alone
  folded into it (`gemminer.fold_batchnorm`), the speed-up then BN-folded compact against
  BN-folded dense (largest relative difference of any of them from the dense network on 8
  random inputs: {worst:.1e}).
- multiply-adds: of the compact network computed densely, against the dense network's
  (`gemminer.masking.flops`); weights kept: Conv2d/Linear weights of the compact network.
- memory format: {layout}.
- latency: median of the passes ({passes}) after {args.warmup} warm-up pass(es) of each model,
  {turns}, eval mode, `torch.inference_mode()`, `torch.set_num_threads({args.threads})`;
  G multiply-adds/s: the batch's multiply-adds over the BN-folded pass's median time.{note}

{markdown_table(HEADER, rows)}
{profile_text(profiled, args.profile)}"""
    report.with_suffix(".md").write_text(text)
    print(f"wrote {report.with_suffix('.md')} and {report.with_suffix('.csv')}")
    return rows


def profile_text(rows: list[list[str]], passes: int) -> str:
    """The report's section on where a batch-1 pass spends its time (empty without rows)."""
    if not rows:
        return ""
    return f"""
## Where a batch-1 pass spends its time

`torch.profiler` over {passes} batch-1 passes of each BN-folded network on the CPU (same
threads): the costliest operators by their own time (time inside the operators they call
excluded), a pass's share of all operators' own time.

{markdown_table(PROFILE_HEADER, rows)}
"""


if __name__ == "__main__":
    main()
