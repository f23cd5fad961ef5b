"""Why a compact network is only ~2× faster at batch 1 on a CPU: its convolutions, kernel by kernel.

`structured_inference.py` finds a ResNet-20 at 25 % of the multiply-adds 4× faster than the
dense one at batch 256 but only ~2× at batch 1, most of a batch-1 pass inside PyTorch's
im2col convolution kernel. This asks whether another kernel or compiler closes the gap.

Layers: every distinct convolution of the BN-folded dense network and of each compact one
(uniform channel masks as in `structured_inference.py`, batch 1), timed alone in each of
PyTorch's CPU kernels — ``F.conv2d`` (PyTorch's own choice: the im2col kernel for a single
small image), oneDNN in NCHW and in NHWC (``aten.mkldnn_convolution``) — with its
multiply-adds a second; then each network's convolutions summed, count by count, per kernel.

Networks: the BN-folded dense and compact networks whole, run eagerly, as TorchScript
(traced and frozen: the same kernels without Python between them; and then
``torch.jit.optimize_for_inference``, which moves convolutions to oneDNN)
and, with ``--compile``, through ``torch.compile`` (Inductor; needs a C++ compiler, ~30 s).

    .venv/bin/python benchmarks/batch1_kernels.py --threads 1 --compile
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import command_line, machine, markdown_table, today
from structured_inference import batch_of, time_models, uniform_cases
from torch import nn

LAYER_HEADER = [
    "model", "convolution (in→out, k, stride, input)", "in networks", "multiply-adds",
    "kernel", "µs", "G multiply-adds/s",
]  # fmt: skip
NETWORK_HEADER = ["model", "network", "runtime", "ms", "speed-up against dense"]
SUM_HEADER = ["model", "network", "kernel", "convolutions summed µs", "speed-up of the sums"]


class Conv(nn.Module):
    """One convolution (weight, bias, stride, padding) run by one of the kernels."""

    def __init__(self, conv: nn.Conv2d, kernel: str) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = conv.weight.detach()
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        if kernel == "oneDNN, NHWC":
            self.weight = self.weight.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "F.conv2d":
            return F.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        return torch.ops.aten.mkldnn_convolution(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
        )


def kernels() -> list[str]:
    """The kernels this build of PyTorch has."""
    return ["F.conv2d"] + (
        ["oneDNN, NCHW", "oneDNN, NHWC"] if torch.backends.mkldnn.is_available() else []
    )


def convolutions(model: nn.Module, shape) -> dict[tuple, tuple[nn.Conv2d, torch.Size, int]]:
    """Each distinct convolution of ``model`` on one input of ``shape``, keyed by
    (in, out, kernel size, stride, input height×width): (a module, its input's shape, how
    many the network has)."""
    seen: dict[tuple, tuple[nn.Conv2d, torch.Size, int]] = {}

    def hook(module, inputs, _output):
        size = inputs[0].shape
        key = (
            module.in_channels,
            module.out_channels,
            module.kernel_size[0],
            module.stride[0],
            size[-1],
        )
        conv, _, n = seen.get(key, (module, size, 0))
        seen[key] = (conv, size, n + 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.randn(1, *shape))
    finally:
        for h in handles:
            h.remove()
    return seen


def layer_rows(
    cases, repeats: int, warmup: int, block: int
) -> tuple[list[list[str]], list[list[str]]]:
    """The per-convolution rows of one model's cases (its dense network and each compact
    one) and the sums per network."""
    case = cases[0]
    nets = {"dense": case.dense_folded, **{c.mask: c.compact_folded for c in cases}}
    found = {name: convolutions(net, case.shape) for name, net in nets.items()}
    keys = sorted(
        {k for convs in found.values() for k in convs}, key=lambda k: (-k[4], -k[0], -k[1], k)
    )
    names = kernels()
    micros: dict[tuple, dict[str, float]] = {}
    rows = []
    for key in keys:
        owner = next(convs for convs in found.values() if key in convs)
        conv, size, _ = owner[key]
        x = torch.randn(size)
        models = {}
        for kernel in names:
            xin = x.contiguous(memory_format=torch.channels_last) if kernel.endswith("NHWC") else x
            models[kernel] = (Conv(conv, kernel), xin)
        times = {
            k: 1e3 * time_models({k: m}, xin, repeats, warmup, block)[k]
            for k, (m, xin) in models.items()
        }
        micros[key] = times
        out_hw = (key[4] + 2 * conv.padding[0] - key[2]) // key[3] + 1
        macs = key[0] // conv.groups * key[1] * key[2] ** 2 * out_hw**2
        used = ", ".join(
            f"{name} ×{convs[key][2]}" for name, convs in found.items() if key in convs
        )
        for kernel in names:
            rows.append([
                case.model, f"{key[0]}→{key[1]}, {key[2]}×{key[2]}, /{key[3]}, {key[4]}×{key[4]}",
                used, f"{macs / 1e6:.2f} M", kernel, f"{times[kernel]:.1f}",
                f"{macs / times[kernel] / 1e3:.1f}",
            ])  # fmt: skip
    sums = []
    for kernel in names:
        total = {
            name: sum(micros[k][kernel] * n for k, (_, _, n) in convs.items())
            for name, convs in found.items()
        }
        for name in nets:
            ratio = "" if name == "dense" else f"{total['dense'] / total[name]:.2f}×"
            sums.append([case.model, name, kernel, f"{total[name]:.0f}", ratio])
    return rows, sums


def runtimes(model: nn.Module, x: torch.Tensor, compile_too: bool) -> dict[str, nn.Module]:
    """``model`` eager, as frozen TorchScript (PyTorch's kernels, the Python between them
    gone), the same moved to oneDNN by ``optimize_for_inference``, and (``compile_too``)
    compiled."""
    out = {"eager": model}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(model, x))
        frozen(x)
        # optimize_for_inference rewrites the module it is given: a trace of its own
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
        optimized(x)
    out["TorchScript, frozen"] = frozen
    out["TorchScript, optimize_for_inference"] = optimized
    if compile_too:
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(x)
        out["torch.compile"] = compiled
    return out


def network_rows(
    cases, repeats: int, warmup: int, block: int, compile_too: bool
) -> list[list[str]]:
    """Each network (dense once per model) under each runtime, at batch 1."""
    rows, done = [], set()
    for case in cases:
        x = batch_of(1, case.shape)
        nets = [] if case.model in done else [("dense", case.dense_folded)]
        done.add(case.model)
        models = {}
        for name, net in [*nets, (case.mask, case.compact_folded)]:
            for runtime, m in runtimes(net, x, compile_too).items():
                models[(name, runtime)] = m
        ms = time_models(models, x, repeats, warmup, block)
        for (name, runtime), value in ms.items():
            rows.append([case.model, name, runtime, f"{value:.3f}", (name, runtime)])
    dense = {(r[0], r[2]): float(r[3]) for r in rows if r[1] == "dense"}
    for r in rows:
        r[4] = "" if r[1] == "dense" else f"{dense[(r[0], r[2])] / float(r[3]):.2f}×"
    best = []
    for model in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == model]
        fastest_dense = min((r for r in mine if r[1] == "dense"), key=lambda r: float(r[3]))
        for name in dict.fromkeys(r[1] for r in mine if r[1] != "dense"):
            fastest = min((r for r in mine if r[1] == name), key=lambda r: float(r[3]))
            ratio = float(fastest_dense[3]) / float(fastest[3])
            best.append([
                model, name, f"{fastest[2]} against dense {fastest_dense[2]}",
                f"{fastest[3]} / {fastest_dense[3]}", f"{ratio:.2f}×",
            ])  # fmt: skip
    return rows + [[r[0], r[1] + ", fastest runtimes", *r[2:]] for r in best]


def main(argv: list[str] | None = None) -> tuple[list, list, list]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20"])
    p.add_argument(
        "--fractions", nargs="+", type=float, default=[0.25], help="of the multiply-adds"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--repeats", type=int, default=400, help="timed passes of each layer and network"
    )
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--block", type=int, default=20, help="passes in a row (see structured_inference.py)"
    )
    p.add_argument("--compile", action="store_true", help="also torch.compile the networks")
    p.add_argument("--report", default="benchmarks/results/batch1_kernels")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.block < 1 or any(not 0 < f <= 1 for f in args.fractions):
        p.error("--repeats and --block take whole numbers >= 1, --fractions values in (0, 1]")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        cases = uniform_cases(args.models, args.fractions)
        layers, sums = [], []
        for model in dict.fromkeys(c.model for c in cases):
            group = [c for c in cases if c.model == model]
            rows, summed = layer_rows(group, args.repeats, args.warmup, args.block)
            layers += rows
            sums += summed
        nets = network_rows(cases, args.repeats, args.warmup, args.block, args.compile)
    finally:
        torch.set_num_threads(threads)
    for row in sums + nets:
        print(" | ".join(map(str, row)), flush=True)

    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([LAYER_HEADER, *layers])
    text = f"""# Batch-1 convolutions: kernel by kernel, dense against compact

- date: {today()}
- machine: {machine(args.threads)}
- command: `{command_line()}`
- networks: BN-folded (`gemminer.fold_batchnorm`) dense and compact networks of uniform
  channel masks (`structured_inference.py`'s), random weights, one 3×32×32 input, eval mode,
  `torch.inference_mode()`; medians of {args.repeats} passes in blocks of {args.block}
  after {args.warmup} warm-up passes.
- kernels: `F.conv2d` is what a model runs (PyTorch picks its im2col kernel,
  `aten::_slow_conv2d_forward`, for one small image); oneDNN: `aten.mkldnn_convolution` on
  NCHW or NHWC tensors.

## Each network's convolutions summed (count × time alone), per kernel

{markdown_table(SUM_HEADER, sums)}

## The networks whole, per runtime

Speed-up: against the dense network in the same runtime; the "fastest runtimes" rows put
each compact network in its fastest runtime against the dense one in its fastest.

{markdown_table(NETWORK_HEADER, nets)}

## Every distinct convolution, per kernel

{markdown_table(LAYER_HEADER, layers)}
"""
    report.with_suffix(".md").write_text(text)
    print(f"wrote {report.with_suffix('.md')} and {report.with_suffix('.csv')}")
    return layers, sums, nets


if __name__ == "__main__":
    main()
