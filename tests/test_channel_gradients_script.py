"""benchmarks/channel_gradients.py: channel score gradients at initialization against λ."""

import argparse

import pytest
import torch

from gemminer.masking.channel_scores import weights_per_channel
from gemminer.masking.channels import channel_sets
from gemminer.models import create_model

from .conftest import benchmark_script


def test_summed_gradients_are_the_averaged_ones_times_the_weights_each_channel_gates():
    module = benchmark_script("channel_gradients")
    args = argparse.Namespace(density=0.25, epochs=8, train_size=10000)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=generator), torch.arange(8) % 10)]
    rows, line = module.measure(args, "resnet20", batches)
    net = create_model("resnet20", num_classes=10)
    sets = channel_sets(net, (3, 32, 32))
    assert [r[1] for r in rows] == [s.name for s in sets]
    for row, s in zip(rows, sets):
        averaged, summed = float(row[3]), float(row[4])
        assert summed / averaged == pytest.approx(weights_per_channel(net, s), rel=2e-2)
        assert 0 <= float(row[5]) <= 1
        assert row[6] == f"{2 * 4.949e-05 * 0.5:.2e}"  # SGD's λ raised for 79 steps an epoch
    assert "sgd LR 1.875, λ 4.949e-05" in line and "per-weight scores' mean" in line
