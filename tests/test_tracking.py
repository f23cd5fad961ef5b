"""Optional TensorBoard logging: records become scalars; a missing package is a clear error."""

import builtins

import pytest

from gemminer.errors import ConfigError
from gemminer.rundir.tracking import TensorBoardSink


class FakeWriter:
    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.flushed = log_dir, [], 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed += 1

    def close(self):
        pass


def test_records_become_scalars_per_phase(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb", writer_class=FakeWriter)
    sink({"phase": "mine", "epoch": 3, "loss": 1.5, "density": 0.1, "guarded": {}, "x": "s"})
    sink({"phase": "finetune", "epoch": 1, "test_acc": 0.5, "loss": float("nan")})
    assert sink.writer.scalars == [
        ("mine/loss", 1.5, 3),
        ("mine/density", 0.1, 3),
        ("finetune/test_acc", 0.5, 1),
    ]
    assert sink.writer.flushed == 2 and sink.writer.log_dir == str(tmp_path / "tb")


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        TensorBoardSink(tmp_path)


def test_cli_flag_reaches_the_run(tmp_path, monkeypatch):
    from gemminer.cli import main
    from gemminer.rundir import tracking

    from .conftest import write_image_folder
    from .test_cli import mine_args

    writers = []

    def make(self, log_dir, writer_class=None):
        self.writer = FakeWriter(log_dir)
        writers.append(self.writer)

    monkeypatch.setattr(tracking.TensorBoardSink, "__init__", make)
    write_image_folder(tmp_path / "data", n_train=12, n_test=6, size=16)
    out = tmp_path / "run"
    assert main([*mine_args(tmp_path / "data", out), "--epochs", "1", "--tensorboard"]) == 0
    assert str(writers[0].log_dir) == str(out / "tensorboard")
    tags = {(tag, step) for tag, _, step in writers[0].scalars}
    assert {("mine/loss", 1), ("mine/train_acc", 1), ("mine/density", 1)} <= tags
