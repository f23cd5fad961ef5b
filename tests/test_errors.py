"""User mistakes end in one clear line and exit status 2; nothing already computed is lost.

(Bad densities, λ, periods, unknown names, missing data folders, settings that differ from
an existing run folder and diverging losses are covered in test_cli, test_recipes and
test_resume; this file holds the remaining cases of the list.)
"""

import os
import shutil

import pytest
import torch

from gemminer.cli import main

from .conftest import fails, told
from .test_cli import FAST, mine_args


@pytest.fixture(scope="module")
def mined(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main([*mine_args(data_dir, out), "--epochs", "2"]) == 0
    return out


def test_empty_data_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fails(
        ["mine", *FAST, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r")],
        capsys,
        "no CIFAR-10 data in",
        "--data-dir",
    )


def test_train_and_test_classes_disagree(data_dir, tmp_path, capsys):
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    shutil.rmtree(bad / "test" / "ship")
    (bad / "test" / "plane").mkdir()
    shutil.copy(next((bad / "test" / "cat").iterdir()), bad / "test" / "plane" / "x.png")
    fails(
        ["mine", *FAST, "--data-dir", str(bad), "--out", str(tmp_path / "r")],
        capsys,
        "missing ['ship']",
        "unexpected ['plane']",
    )


def test_truncated_image_is_named_and_can_be_skipped(data_dir, tmp_path, capsys, caplog):
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    victim = sorted((bad / "train" / "dog").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    argv = ["mine", *FAST, "--dataset", "folder", "--data-dir", str(bad), "--epochs", "1"]
    fails([*argv, "--out", str(tmp_path / "a")], capsys, "cannot decode image", victim.name)
    assert main([*argv, "--data-arg", "skip_bad=true", "--out", str(tmp_path / "b")]) == 0
    assert sum("1 unreadable" in line for line in told(caplog)) == 1


def test_corrupt_ticket_is_a_clear_error_and_nothing_is_lost(mined, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(mined, run)
    (run / "ticket.pt").write_bytes(b"not a checkpoint")
    fails(["finetune", str(run), "--epochs", "1", "--no-progress"], capsys, "ticket.pt")
    assert (run / "mask.pt").is_file() and (run / "summary.json").is_file()


def test_ticket_of_another_model_is_a_clear_error(mined, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(mined, run)
    state = torch.load(run / "ticket.pt", weights_only=True)
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)  # wrong shape
    torch.save(state, run / "ticket.pt")
    fails(["finetune", str(run), "--epochs", "1", "--no-progress"], capsys, "conv1.weight")
    state.pop("conv1.weight")
    torch.save(state, run / "ticket.pt")
    fails(["finetune", str(run), "--epochs", "1", "--no-progress"], capsys, "missing conv1.weight")


def test_damaged_or_foreign_checkpoint_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [*mine_args(data_dir, out), "--epochs", "2"]
    assert main([*args, "--print-config"]) == 0
    capsys.readouterr()
    # a folder that holds this run's settings and a damaged checkpoint: say so, never guess
    out.mkdir()
    from gemminer.cli import build_parser, config_from_args
    from gemminer.rundir.runs import RunDir

    RunDir(out).write_config(config_from_args(build_parser().parse_args(args)))
    (out / "checkpoint-prune.pt").write_bytes(b"\x80\x04garbage")
    fails(args, capsys, "checkpoint-prune.pt is damaged", "delete it")


def test_checkpoint_that_would_run_code_is_refused(data_dir, tmp_path, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    out = tmp_path / "run"
    args = [*mine_args(data_dir, out), "--epochs", "2"]
    from gemminer.cli import build_parser, config_from_args
    from gemminer.rundir.runs import RunDir

    out.mkdir()
    RunDir(out).write_config(config_from_args(build_parser().parse_args(args)))
    torch.save({"version": 1, "evil": Evil()}, out / "checkpoint-prune.pt")
    fails(args, capsys, "checkpoint-prune.pt is damaged")
    assert not marker.exists()


# --------------------------------------------------------------------------- the Python API


def _tiny_loader(labels=None):
    from .conftest import separable_arrays

    arrays = separable_arrays(24)
    x = arrays.images.float() / 255
    y = arrays.labels if labels is None else labels
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]


API_MINE = {"epochs": 1, "period": 1, "batch_size": 8, "device": "cpu"}


@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, float("nan")])
def test_api_density_outside_0_1_names_the_value(user_net, density):
    import gemminer
    from gemminer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"density must lie in \(0, 1\].*got"):
        gemminer.mine(user_net, _tiny_loader(), density=density, **API_MINE)


@pytest.mark.parametrize("epochs", [0, -3])
def test_api_epochs_below_one_is_one_message(user_net, epochs):
    import gemminer
    from gemminer.errors import ConfigError

    with pytest.raises(ConfigError, match=f"epochs must be a whole number >= 1, got {epochs}"):
        gemminer.mine(user_net, _tiny_loader(), density=0.5, epochs=epochs, device="cpu")
    mask = gemminer.Mask.ones_like(user_net)
    with pytest.raises(ConfigError, match=f"epochs must be a whole number >= 1, got {epochs}"):
        gemminer.finetune(user_net, mask, _tiny_loader(), epochs=epochs, device="cpu")


def test_api_model_without_prunable_layers(tiny_data):
    from torch import nn

    import gemminer
    from gemminer.errors import ModelError

    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(3 * 8 * 8))
    with pytest.raises(ModelError, match=r"Sequential has no Conv2d or Linear layer"):
        gemminer.mine(model, tiny_data, density=0.5, **API_MINE)


def test_api_labels_outside_the_models_classes(tiny_data):
    import dataclasses

    import gemminer
    from gemminer.errors import DataError

    from .conftest import UserNet

    # 3-class data on a 2-output model: from arrays and from a batch iterable
    with pytest.raises(DataError, match=r"label 2 .*2 outputs"):
        gemminer.mine(UserNet(num_classes=2), tiny_data, density=0.5, **API_MINE)
    nine = _tiny_loader(torch.full((24,), 9))
    with pytest.raises(DataError, match=r"label 9 .*3 outputs"):
        gemminer.mine(UserNet(), nine, density=0.5, **API_MINE)
    net = UserNet()
    with pytest.raises(DataError, match=r"label 9 .*3 outputs"):
        gemminer.finetune(net, gemminer.Mask.ones_like(net), nine, epochs=1, device="cpu")
    negative = _tiny_loader(torch.full((24,), -1))
    with pytest.raises(DataError, match=r"label -1"):
        gemminer.mine(UserNet(), negative, density=0.5, **API_MINE)
    assert dataclasses.is_dataclass(tiny_data)


def test_api_one_shot_data_is_refused_up_front(user_net):
    import gemminer
    from gemminer.errors import DataError

    batches = _tiny_loader()
    with pytest.raises(DataError, match=r"generator.*list.*DataLoader"):
        gemminer.mine(user_net, (b for b in batches), density=0.5, **API_MINE)
    with pytest.raises(DataError, match=r"iterator.*list.*DataLoader"):
        gemminer.mine(user_net, iter(batches), density=0.5, **API_MINE)
    with pytest.raises(DataError, match=r"test_data.*generator"):
        gemminer.mine(user_net, batches, density=0.5, test_data=(b for b in batches), **API_MINE)
    mask = gemminer.Mask.ones_like(user_net)
    with pytest.raises(DataError, match=r"generator.*list.*DataLoader"):
        gemminer.finetune(user_net, mask, (b for b in batches), epochs=1, device="cpu")
    with pytest.raises(DataError, match=r"no batch"):
        gemminer.mine(user_net, [], density=0.5, **API_MINE)
    with pytest.raises(DataError, match=r"\(inputs, labels\)"):
        gemminer.mine(user_net, [torch.zeros(2, 3, 8, 8)], density=0.5, **API_MINE)
    gray = [(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64))]  # the net takes RGB
    with pytest.raises(DataError, match=r"cannot run on the inputs of train_data \(shape \(4, 1"):
        gemminer.mine(user_net, gray, density=0.5, **API_MINE)


def test_a_device_this_pytorch_cannot_use_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    """Issue 27, 4: CUDA asked of a PyTorch without it (the tests' CPU view), a GPU index
    past the visible ones, a device name PyTorch does not know: one line, exit 2, nothing
    written; the Python API raises a GemMinerError."""
    import gemminer
    from gemminer.errors import GemMinerError

    from .conftest import separable_arrays

    out = tmp_path / "r"
    base = [*mine_args(data_dir, out)]
    fails([*base, "--device", "cuda"], capsys, "device 'cuda'", "sees no CUDA GPU")
    fails([*base, "--device", "gpu0"], capsys, "unknown device 'gpu0'")
    assert not out.exists()
    with pytest.raises(GemMinerError, match="sees no CUDA GPU"):
        model = gemminer.create_model("conv4", num_classes=3)
        gemminer.mine(model, separable_arrays(8), density=0.5, epochs=1, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    fails([*base, "--device", "cuda:3"], capsys, "only 1 CUDA GPU(s) visible")


def test_inputs_that_used_to_pass_unnoticed(data_dir, tmp_path, capsys, caplog):
    """Issue 27, 9: float labels are refused with one line; a --train-size or batch size
    beyond the data is told about, and the run goes on."""
    import gemminer
    from gemminer.errors import DataError

    from .conftest import UserNet, separable_arrays

    arrays = separable_arrays(12)
    batches = [(arrays.images.float() / 255, arrays.labels.float())]  # (inputs, labels) pairs
    with pytest.raises(DataError, match="train_data's labels are float32: they must be integer"):
        gemminer.mine(UserNet(), batches, density=0.5, epochs=1)
    out = tmp_path / "r"
    argv = [*mine_args(data_dir, out), "--train-size", "500", "--batch-size", "64"]
    assert main([*argv, "--epochs", "1"]) == 0
    said = " | ".join(told(caplog)) + capsys.readouterr().err
    assert "--train-size 500 is more than the 24 training images: training uses all 24" in said
    assert "the pruning batch size 64 is larger than the 24 training images" in said
