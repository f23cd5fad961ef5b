"""Notices about a run: one logger, rank 0 only, each message once, plain on stderr."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch import nn

from gemminer.notices import forget_notices, notice
from gemminer.training.progress import show_epochs
from gemminer.training.runtime import Runtime, _lay_out_grads_like_params

from .conftest import told


def unconfigure(monkeypatch) -> None:
    """Be a program that never configured :mod:`logging` (in the test's body: pytest adds
    its capturing handlers after the fixtures are set up)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


def test_a_notice_is_one_plain_line_on_stderr_where_logging_is_not_configured(monkeypatch, capsys):
    unconfigure(monkeypatch)
    notice("skipped 1 unreadable image(s)")
    notice("skipped 1 unreadable image(s)")  # a later stage reads the data again
    assert capsys.readouterr().err == "gemminer: warning: skipped 1 unreadable image(s)\n"
    forget_notices()
    notice("skipped 1 unreadable image(s)")
    assert capsys.readouterr().err.count("\n") == 1


def test_a_notice_is_a_warning_of_the_gemminer_logger_where_logging_is_configured(caplog, capsys):
    notice("layer collapse guard, mining epoch 3: ...")
    (record,) = [r for r in caplog.records if r.name == "gemminer"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "layer collapse guard, mining epoch 3: ..."
    assert capsys.readouterr().err == ""


def test_only_rank_zero_tells(capsys, monkeypatch):
    unconfigure(monkeypatch)
    notice("from rank 1", Runtime(rank=1, world_size=2))
    monkeypatch.setenv("RANK", "1")  # under torchrun, before the process group is joined
    notice("from rank 1 too")
    assert capsys.readouterr().err == ""
    notice("from rank 0", Runtime(rank=0, world_size=2))
    assert capsys.readouterr().err == "gemminer: warning: from rank 0\n"


def test_a_silenced_logger_silences_notices(monkeypatch, capsys):
    unconfigure(monkeypatch)
    logger = logging.getLogger("gemminer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        notice("not wanted")
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().err == ""


def test_notices_and_epochs_share_the_line_of_show_epochs(monkeypatch, capsys):
    unconfigure(monkeypatch)
    with show_epochs(True):
        logging.getLogger("gemminer").info("mine epoch 1/2: loss 1.0000")
        notice("layer collapse, mining epoch 1: ...")
    assert capsys.readouterr().err.splitlines() == [
        "mine epoch 1/2: loss 1.0000",
        "gemminer: warning: layer collapse, mining epoch 1: ...",
    ]


def test_told_reads_only_notices(caplog):
    logging.getLogger("gemminer").info("an epoch")
    notice("a notice")
    assert told(caplog) == ["a notice"]


# What DDP sees of a gradient ----------------------------------------------------------


def test_gradients_of_size_one_dimensions_take_the_parameters_strides():
    """A channels_last 1x1 convolution's scores-like parameter has strides (I, 1, I, I);
    an elementwise backward gives (I, 1, 1, 1), the same memory, which DDP warns about.
    The hook views the gradient with the parameter's strides, values unchanged."""
    param = nn.Parameter(torch.randn(4, 6, 1, 1).to(memory_format=torch.channels_last))
    depthwise = nn.Parameter(torch.randn(6, 1, 3, 3).to(memory_format=torch.channels_last))
    holder = nn.Module()
    holder.a, holder.b = param, depthwise
    factor_a, factor_b = torch.randn(4, 6, 1, 1), torch.randn(6, 1, 3, 3)

    def backward():
        holder.zero_grad(set_to_none=True)
        ((param * factor_a).sum() + (depthwise * factor_b).sum()).backward()

    backward()
    assert param.grad.stride() != param.stride()  # what DDP would warn about
    _lay_out_grads_like_params(holder)
    _lay_out_grads_like_params(holder)  # hooked once only
    backward()
    assert param.grad.stride() == param.stride() == (6, 1, 6, 6)
    assert depthwise.grad.stride() == depthwise.stride()
    assert torch.equal(param.grad, factor_a) and torch.equal(depthwise.grad, factor_b)
    assert len(param._backward_hooks) == 1


def test_a_real_layout_difference_is_left_to_autograd():
    param = nn.Parameter(torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last))
    holder = nn.Module()
    holder.p = param
    _lay_out_grads_like_params(holder)
    assert not param._backward_hooks  # no dimension of size 1: nothing to do
    column = nn.Parameter(torch.randn(5, 1))
    holder.c = column
    _lay_out_grads_like_params(holder)
    grad = torch.randn(1, 5).t()  # strides (1, 5): a transposed gradient, not a view of one
    column.backward(grad)
    assert torch.equal(column.grad, grad) and column.grad.stride() == column.stride()


@pytest.mark.skipif(sys.platform == "emscripten", reason="no processes")
def test_nothing_is_hooked_in_one_process():
    net = nn.Conv2d(4, 4, 1)
    Runtime().training_module(net, "cpu")
    assert not net.weight._backward_hooks
