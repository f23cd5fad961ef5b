"""Progress display: tqdm bars on a terminal, a plain line every N seconds elsewhere, and
each epoch logged through ``logging.getLogger("gemminer")``."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
import torch

import gemminer
from gemminer import FinetuneConfig, Mask, OptimConfig, prunable_weights
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError
from gemminer.training import finetune, train_epoch
from gemminer.training.progress import (
    INTERVAL_ENV,
    EpochReporter,
    Stage,
    epoch_line,
    epoch_reporter,
    log_epoch,
    progress_interval,
    show_epochs,
)
from gemminer.training.runtime import Runtime


class FakeStream(io.StringIO):
    """A stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _loader(tiny_data) -> BatchLoader:
    return BatchLoader(tiny_data, batch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, train=True)


def _train(user_net, tiny_data, stream, monkeypatch, seconds: str = "0") -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv(INTERVAL_ENV, seconds)
    optimizer = torch.optim.SGD(user_net.parameters(), lr=0.01)
    batches = _loader(tiny_data)  # 96 images: 6 steps
    train_epoch(user_net, batches, optimizer, torch.device("cpu"), progress=Stage("mine", 2, 4))
    return stream.getvalue()


LINE = re.compile(
    r"^mine 2/4: step (\d)/6, \d+ img/s, loss \d+\.\d{4}, "
    r"epoch ETA \d+s, mine ETA \d+(m\d\d)?s$"
)


def test_plain_lines_when_stderr_is_not_a_terminal(user_net, tiny_data, monkeypatch):
    text = _train(user_net, tiny_data, FakeStream(tty=False), monkeypatch)
    lines = text.splitlines()
    assert lines, "no progress line off a terminal"
    assert "\r" not in text  # no bar
    for line in lines:
        assert LINE.match(line), line
    assert [int(LINE.match(line).group(1)) for line in lines] == list(range(1, 7))


def test_bars_and_no_plain_lines_on_a_terminal(user_net, tiny_data, monkeypatch):
    text = _train(user_net, tiny_data, FakeStream(tty=True), monkeypatch)
    assert "mine 2/4" in text and "\r" in text  # the tqdm bar
    assert "img/s" not in text and "ETA" not in text


def test_no_progress_no_output(user_net, tiny_data, monkeypatch):
    stream = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    optimizer = torch.optim.SGD(user_net.parameters(), lr=0.01)
    train_epoch(user_net, _loader(tiny_data), optimizer, torch.device("cpu"))
    assert stream.getvalue() == ""


def test_a_line_at_most_every_interval_and_the_loss_read_only_then():
    stream, clock = FakeStream(tty=False), Clock()
    reads = []

    def loss() -> float:
        reads.append(clock.now)
        return 2.0

    reporter = EpochReporter(
        Stage("finetune", 1, 3), 10, stream=stream, interval=30, clock=clock, world_size=2
    )
    for step in range(1, 11):
        clock.now += 10.0  # 10 s a step of 64 images on each of 2 ranks
        reporter.update(step, 64 * step, loss)
    lines = stream.getvalue().splitlines()
    assert reads == [30.0, 60.0, 90.0]  # the loss is read (a device sync) only for a line
    assert lines == [
        "finetune 1/3: step 3/10, 13 img/s, loss 2.0000, epoch ETA 1m10s, finetune ETA 4m30s",
        "finetune 1/3: step 6/10, 13 img/s, loss 2.0000, epoch ETA 40s, finetune ETA 4m00s",
        "finetune 1/3: step 9/10, 13 img/s, loss 2.0000, epoch ETA 10s, finetune ETA 3m30s",
    ]


def test_a_resumed_epoch_rates_only_the_steps_it_trained():
    stream, clock = FakeStream(tty=False), Clock()
    reporter = EpochReporter("mine 1", 100, stream=stream, interval=0, clock=clock, start=90)
    clock.now = 5.0
    reporter.update(95, 50, lambda: 1.0)
    assert stream.getvalue() == "mine 1: step 95/100, 10 img/s, loss 1.0000, epoch ETA 5s\n"


def test_only_rank_zero_reports():
    assert epoch_reporter("mine 1/2", 5, Runtime()) is not None
    assert epoch_reporter("mine 1/2", 5, Runtime(rank=1, world_size=2)) is None
    assert epoch_reporter(None, 5, Runtime()) is None


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert progress_interval() == 0.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=INTERVAL_ENV):
            progress_interval()


def test_epoch_line():
    record = {
        "phase": "mine",
        "epoch": 3,
        "loss": 1.23456,
        "train_acc": 0.5,
        "test_acc": 0.4567,
        "density": 0.05,
        "seconds": 12.34,
    }
    assert epoch_line(record, 10) == (
        "mine epoch 3/10: loss 1.2346, train 50.00 %, test 45.67 %, density 5.00 %, 12.3 s"
    )
    assert epoch_line({"phase": "finetune", "epoch": 1, "loss": 0.5}) == (
        "finetune epoch 1: loss 0.5000"
    )


def _finetune(user_net, tiny_data, progress: bool = False) -> None:
    mask = Mask(
        {n: torch.ones_like(w, dtype=torch.bool) for n, w in prunable_weights(user_net).items()}
    )
    cfg = FinetuneConfig(epochs=2, batch_size=16, optim=OptimConfig(lr=0.01, schedule="constant"))
    finetune(user_net, mask, _loader(tiny_data), cfg, torch.device("cpu"), progress=progress)


def test_epochs_are_logged_for_a_configured_logger(user_net, tiny_data, caplog):
    with caplog.at_level(logging.INFO, logger="gemminer"):
        _finetune(user_net, tiny_data)
    lines = [r.getMessage() for r in caplog.records if r.name == "gemminer"]
    assert [line.split(":")[0] for line in lines] == ["finetune epoch 1/2", "finetune epoch 2/2"]


def test_show_epochs_prints_them_where_logging_is_not_configured(user_net, tiny_data, monkeypatch):
    logger = logging.getLogger("gemminer")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # an unconfigured program
    handlers, level = list(logger.handlers), logger.level
    stream = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv(INTERVAL_ENV, "3600")
    with show_epochs(True):
        _finetune(user_net, tiny_data, progress=True)
    assert re.findall(r"^finetune epoch \d/2: loss", stream.getvalue(), re.M) == [
        "finetune epoch 1/2: loss",
        "finetune epoch 2/2: loss",
    ]
    assert logger.handlers == handlers and logger.level == level  # put back as it was
    with show_epochs(False):
        assert logger.handlers == handlers


def test_only_rank_zero_logs_epochs(caplog):
    record = {"phase": "mine", "epoch": 1, "loss": 1.0}
    with caplog.at_level(logging.INFO, logger="gemminer"):
        log_epoch(record, 2, Runtime(rank=1, world_size=2))
        assert not caplog.records
        log_epoch(record, 2, Runtime())
    assert [r.getMessage() for r in caplog.records] == ["mine epoch 1/2: loss 1.0000"]


def test_the_api_shows_mining_off_a_terminal_and_logs_its_epochs(
    user_net, tiny_data, monkeypatch, caplog
):
    stream = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    with caplog.at_level(logging.INFO, logger="gemminer"):
        gemminer.mine(
            user_net, tiny_data, density=0.5, epochs=2, batch_size=16, device="cpu", progress=True
        )
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("mine 1/2: step 1/6, ") and "mine ETA" in lines[0]
    assert lines[-1].startswith("mine 2/2: step 6/6, ")
    logged = [
        r.getMessage().split(":")[0]
        for r in caplog.records
        if r.name == "gemminer" and r.levelno == logging.INFO
    ]
    assert logged == ["mine epoch 1/2", "mine epoch 2/2"]
