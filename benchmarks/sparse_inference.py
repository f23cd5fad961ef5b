"""CPU inference of an exported sparse ticket: dense kernels vs torch.sparse CSR kernels.

Exports a run's finetuned ticket (``gemminer.rundir.export``) into a temporary folder (never into
the run folder), reloads it as a plain model (dense ``nn.Conv2d`` / ``nn.Linear`` with the
pruned weights 0) and builds sparse twins: every convolution in im2col form times a CSR
weight ``(out, in·k·k) @ columns`` (columns from ``F.unfold``, or only the needed rows
gathered; see :class:`SparseConv2d`), the linear layer a CSR matmul; BatchNorm, ReLU and
the residual additions are unchanged. The twins' outputs are checked against the dense
model before anything is timed. Latency is the median of N forward passes (after a
warm-up), all models interleaved, under ``torch.inference_mode``.

    .venv/bin/python benchmarks/sparse_inference.py            # full run, idle CPU
    .venv/bin/python benchmarks/sparse_inference.py --quick    # a few passes, to check it works
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import command_line, machine, markdown_table, pct, today
from safetensors.torch import save as save_safetensors
from torch import nn

from gemminer.rundir.export import export_run, load_exported
from gemminer.rundir.runs import RunDir
from gemminer.stages import eval_loaders, load_data
from gemminer.training import evaluate

RUN = "benchmarks/runs/r20-d0.0144-e10-s0-default"
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class SparseConv2d(nn.Module):
    """A convolution as im2col + CSR matmul: ``W (out, in·k·k) @ columns``.

    ``im2col="unfold"`` builds every column row with ``F.unfold``. ``im2col="gather"``
    builds only the rows that some kept weight reads (a row of the column matrix is one
    input channel at one kernel offset) with one ``index_select`` from the input laid out
    as (channel, row, column, sample) plus a zero row for the padding, and drops the
    all-zero weight columns.
    """

    def __init__(self, conv: nn.Conv2d, im2col: str = "gather") -> None:
        super().__init__()
        if conv.groups != 1 or not isinstance(conv.padding, tuple):
            raise ValueError(f"SparseConv2d supports groups=1 and numeric padding, got {conv}")
        if im2col not in ("unfold", "gather"):
            raise ValueError(f"im2col must be 'unfold' or 'gather', got {im2col!r}")
        self.im2col = im2col
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        weight = conv.weight.detach().reshape(conv.out_channels, -1)
        self.rows = torch.arange(weight.shape[1])
        if im2col == "gather":
            self.rows = weight.ne(0).any(0).nonzero().flatten()
            weight = weight[:, self.rows]
        self.register_buffer("weight", weight.contiguous().to_sparse_csr())
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}

    def _out_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel_size, self.stride, self.padding, self.dilation
        )  # fmt: skip
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (
            w + 2 * pw - dw * (kw - 1) - 1
        ) // sw + 1

    def _gather_offsets(self, h: int, w: int) -> torch.Tensor:
        """Flat (channel, row, column) offsets into the input, one per used row and output
        position (shape: used rows · h_out · w_out); padding points at the index
        ``channels · h · w``, where the input gets a row of zeros appended."""
        if (h, w) not in self._offsets:
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
                self.kernel_size, self.stride, self.padding, self.dilation
            )  # fmt: skip
            h_out, w_out = self._out_size(h, w)
            c, i, j = self.rows // (kh * kw), (self.rows // kw) % kh, self.rows % kw
            top = (i * dh - ph)[:, None, None] + sh * torch.arange(h_out)[None, :, None]
            left = (j * dw - pw)[:, None, None] + sw * torch.arange(w_out)[None, None, :]
            inside = (top >= 0) & (top < h) & (left >= 0) & (left < w)
            flat = c[:, None, None] * h * w + top * w + left
            zero = self.in_channels * h * w
            self._offsets[(h, w)] = torch.where(inside, flat, zero).flatten()
        return self._offsets[(h, w)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        h_out, w_out = self._out_size(h, w)
        if self.im2col == "gather":
            # (c·h·w + 1, n): the input as (channel, row, column, sample) and a zero row
            flat = torch.cat([x.permute(1, 2, 3, 0).reshape(-1, n), x.new_zeros(1, n)])
            cols = flat.index_select(0, self._gather_offsets(h, w))
            cols = cols.view(len(self.rows), h_out * w_out * n)
            out = (self.weight @ cols).view(self.out_channels, h_out, w_out, n)
            out = out.permute(3, 0, 1, 2).contiguous()
        else:
            cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
            if n == 1:
                out = (self.weight @ cols[0]).view(1, self.out_channels, h_out, w_out)
            else:  # (n, in·k·k, L) → (in·k·k, n·L): one matmul for the whole batch
                cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)
                out = (self.weight @ cols).view(self.out_channels, n, h_out, w_out)
                out = out.transpose(0, 1).contiguous()
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class SparseLinear(nn.Module):
    """``x @ W.T`` as the CSR matmul ``(W @ x.T).T``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.weight @ x.t()).t()
        return out if self.bias is None else out + self.bias


def sparsify(model: nn.Module, im2col: str = "gather") -> nn.Module:
    """A copy of ``model`` with every Conv2d/Linear replaced by its CSR version."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            if isinstance(module, nn.Conv2d):
                setattr(parent, child, SparseConv2d(module, im2col))
            else:
                setattr(parent, child, SparseLinear(module))
    return model.eval()


def csr_bytes(model: nn.Module) -> int:
    """In-memory bytes of the sparse twin's CSR weights (values + int64 indices)."""
    total = 0
    for m in model.modules():
        if isinstance(m, (SparseConv2d, SparseLinear)):
            w = m.weight
            for t in (w.crow_indices(), w.col_indices(), w.values()):
                total += t.numel() * t.element_size()
    return total


def time_models(
    models: dict[str, nn.Module], x: torch.Tensor, repeats: int, warmup: int
) -> dict[str, float]:
    """Median milliseconds per forward pass of each model, passes interleaved."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=RUN, help="finished run folder (read only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 128])
    p.add_argument("--repeats", type=int, nargs="+", default=[200, 20], help="per batch size")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--im2col",
        nargs="+",
        choices=("gather", "unfold"),
        default=["gather", "unfold"],
        help="sparse convolution variants to time (see SparseConv2d)",
    )
    p.add_argument("--quick", action="store_true", help="3 passes per batch size, 1 warm-up")
    p.add_argument(
        "--accuracy",
        action="store_true",
        help="also evaluate every model on the run's test set (reads the run's data)",
    )
    p.add_argument("--report", default="benchmarks/results/sparse_inference.md")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.warmup = [3], 1
    if len(args.repeats) == 1:
        args.repeats = args.repeats * len(args.batch_sizes)
    if len(args.repeats) != len(args.batch_sizes):
        p.error("give one --repeats value, or one per batch size")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    run = Path(args.run)
    with tempfile.TemporaryDirectory() as tmp:  # never written into the run folder
        info = export_run(run, Path(tmp) / "ticket.safetensors")
        dense = load_exported(info.path)
    models = {"dense": dense} | {f"sparse-{v}": sparsify(dense, v) for v in args.im2col}

    x = torch.randn(16, 3, 32, 32)
    diffs = {}
    with torch.inference_mode():
        ref = dense(x)
        for name, model in list(models.items())[1:]:
            out = model(x)
            diffs[name] = (out - ref).abs().max().item()
            if not torch.allclose(out, ref, rtol=1e-4, atol=1e-5):
                raise SystemExit(f"{name}'s outputs differ from the dense ones by {diffs[name]}")
    agree = ", ".join(f"{name} {d:.1e}" for name, d in diffs.items())
    print(f"outputs agree with the dense model (max abs difference): {agree}")

    accuracy_lines = ""
    if args.accuracy:
        cpu = torch.device("cpu")
        test = eval_loaders(load_data(RunDir(run).read_config()), cpu)["test"]
        with torch.inference_mode():
            stats = {name: evaluate(m, test, cpu) for name, m in models.items()}
        accs = ", ".join(f"{name} {pct(st.accuracy)}" for name, st in stats.items())
        samples = stats["dense"].samples
        accuracy_lines = (
            f"- test accuracy ({samples} images): {accs}; the run's summary: {pct(info.test_acc)}\n"
        )
        print(accuracy_lines.strip())

    rows = []
    for batch, repeats in zip(args.batch_sizes, args.repeats):
        ms = time_models(models, torch.randn(batch, 3, 32, 32), repeats, args.warmup)
        ratios = [f"{ms[name] / ms['dense']:.2f}" for name in list(models)[1:]]
        rows.append([batch, repeats, *(f"{t:.2f}" for t in ms.values()), *ratios])
        print(f"batch {batch}: " + ", ".join(f"{name} {t:.2f} ms" for name, t in ms.items()))

    state = dense.state_dict()
    raw = sum(t.numel() * t.element_size() for t in state.values())
    dense_st = len(save_safetensors({k: v.contiguous() for k, v in state.items()}))
    sizes = [
        ["exported ticket (bitmask + kept values + BN buffers, safetensors)", info.file_bytes],
        ["finetuned.pt (dense torch.save checkpoint)", info.checkpoint_bytes],
        ["dense fp32 state dict as safetensors", dense_st],
        ["dense state dict, raw tensor bytes", raw],
    ]
    size_rows = [[sizes[0][0], f"{info.file_bytes:,}", "—"]]
    size_rows += [[name, f"{b:,}", f"{info.file_bytes / b:.3f}"] for name, b in sizes[1:]]
    bits, values = (info.num_prunable + 7) // 8, 4 * info.num_kept
    others = raw - 4 * info.num_prunable
    sparse_names = list(models)[1:]
    header = [
        "batch",
        "passes",
        *(f"{name} ms" for name in models),
        *(f"{name} / dense" for name in sparse_names),
    ]
    csr = max(csr_bytes(models[name]) for name in sparse_names)
    quick = "\n**--quick: 3 passes per batch size, indicative only.**\n" if args.quick else ""
    text = f"""# Sparse inference of an exported ResNet-20 ticket on the CPU
{quick}
- date: {today()}
- machine: {machine()}
- command: `{command_line()}`
- run: `{run}` ({info.model}, {info.num_kept:,} of {info.num_prunable:,} weights kept,
  density {100 * info.density:.2f} %)
- dense: the exported file loaded with `gemminer.rundir.export.load_exported` (plain `nn.Conv2d` /
  `nn.Linear`, pruned weights 0, PyTorch's dense kernels).
- sparse: every convolution in im2col form times a CSR weight (`torch.sparse_csr`, int64
  indices), the linear layer as a CSR matmul; BatchNorm, ReLU and residuals unchanged.
  `sparse-unfold` builds the whole column matrix with `F.unfold` and multiplies the
  (out, in·k·k) CSR weight; `sparse-gather` builds only the column rows some kept weight
  reads (one `index_select`) and multiplies the CSR weight without its all-zero columns.
- outputs checked before timing (`allclose(rtol=1e-4, atol=1e-5)`), max abs difference
  to dense on 16 random inputs: {agree}
- latency: median of the passes after {args.warmup} warm-up pass(es), all models
  interleaved, `torch.set_num_threads({args.threads})`, `torch.inference_mode()`, random
  3×32×32 inputs.
{accuracy_lines}
## Latency (ms per forward pass)

{markdown_table(header, rows)}

## Size

The exported file against the dense forms of the same network.

{markdown_table(["file", "bytes", "exported / this"], size_rows)}

The exported file holds the bitmask ({bits:,} bytes), the kept fp32 values ({values:,}),
the BatchNorm buffers ({others:,}) and the safetensors header with the JSON metadata (the
rest). In memory, the sparse models' CSR weights take {csr:,} bytes (fp32 values plus int64
row and column indices).
"""
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
