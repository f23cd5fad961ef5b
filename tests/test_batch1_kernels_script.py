"""benchmarks/batch1_kernels.py: every convolution of the dense and compact networks timed
per kernel, the kernels computing the same convolution, and its report."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from .conftest import benchmark_script


def test_each_kernel_computes_the_same_convolution():
    module = benchmark_script("batch1_kernels")
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1).eval()
    x = torch.randn(1, 6, 9, 9)
    with torch.inference_mode():
        ref = conv(x)
        for kernel in module.kernels():
            xin = x.contiguous(memory_format=torch.channels_last) if "NHWC" in kernel else x
            assert torch.allclose(module.Conv(conv, kernel)(xin), ref, atol=1e-5), kernel


def test_convolutions_are_found_by_shape_and_counted():
    module = benchmark_script("batch1_kernels")
    case = module.uniform_cases(["resnet20"], [0.25])[0]
    dense = module.convolutions(case.dense_folded, case.shape)
    # ResNet-20: the stem, 6 + 5 + 5 3×3 convolutions at 16/32/64 channels, 2 strided ones
    assert sum(n for _, _, n in dense.values()) == 19
    assert dense[(16, 16, 3, 1, 32)][2] == 6 and dense[(3, 16, 3, 1, 32)][2] == 1
    assert dense[(16, 32, 3, 2, 32)][2] == 1 and dense[(32, 64, 3, 2, 16)][2] == 1
    compact = module.convolutions(case.compact_folded, case.shape)
    assert sum(n for _, _, n in compact.values()) == 19
    assert all(k[0] <= 64 and k[1] < 64 for k in compact)


def test_the_script_reports_layers_sums_and_networks(tmp_path):
    module = benchmark_script("batch1_kernels")
    report = tmp_path / "kernels"
    argv = ["--fractions", "0.5", "--repeats", "1", "--warmup", "0", "--block", "1"]
    layers, sums, nets = module.main([*argv, "--report", str(report)])
    kernels = module.kernels()
    assert {r[4] for r in layers} == set(kernels)
    assert len(sums) == 2 * len(kernels)  # dense and the 50 % network, per kernel
    assert all(float(r[3]) > 0 for r in sums)
    assert [r[4] for r in sums if r[1] == "50 % target"][0].endswith("×")
    runtimes = [(r[1], r[2]) for r in nets]
    assert ("dense", "eager") in runtimes and ("50 % target", "eager") in runtimes
    assert ("50 % target", "TorchScript, frozen") in runtimes
    assert ("50 % target", "TorchScript, optimize_for_inference") in runtimes
    assert nets[-1][1] == "50 % target, fastest runtimes" and nets[-1][4].endswith("×")
    text = report.with_suffix(".md").read_text()
    assert "## Each network's convolutions summed" in text and "| 50 % target | F.conv2d |" in text
    with open(report.with_suffix(".csv"), newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == module.LAYER_HEADER and len(table) == 1 + len(layers)


def test_every_runtime_computes_what_the_eager_network_does():
    module = benchmark_script("batch1_kernels")
    case = module.uniform_cases(["resnet20"], [0.25])[0]
    x = torch.randn(1, *case.shape)
    nets = module.runtimes(case.compact_folded, x, compile_too=False)
    assert list(nets) == ["eager", "TorchScript, frozen", "TorchScript, optimize_for_inference"]
    with torch.inference_mode():
        y = torch.randn(2, *case.shape)  # a batch the trace never saw
        ref = case.compact_folded(y)
        for name, net in nets.items():
            assert torch.allclose(net(y), ref, rtol=1e-4, atol=1e-5), name
        # frozen: the weights are constants of the graph, not the module's parameters
        assert not list(nets["TorchScript, frozen"].parameters())


def test_bad_arguments_are_refused():
    module = benchmark_script("batch1_kernels")
    with pytest.raises(SystemExit):
        module.main(["--fractions", "0"])
    with pytest.raises(SystemExit):
        module.main(["--repeats", "0"])
