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

from .conftest import write_image_folder
from .test_cli import FAST, mine_args


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, n_train=24, n_test=9, size=16)
    return root


@pytest.fixture(scope="module")
def mined(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main([*mine_args(data_dir, out), "--epochs", "2"]) == 0
    return out


def fails(argv, capsys, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


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


def test_truncated_image_is_named_and_can_be_skipped(data_dir, tmp_path, capsys):
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    victim = sorted((bad / "train" / "dog").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    argv = ["mine", *FAST, "--dataset", "folder", "--data-dir", str(bad), "--epochs", "1"]
    fails([*argv, "--out", str(tmp_path / "a")], capsys, "cannot decode image", victim.name)
    with pytest.warns(UserWarning, match="1 unreadable"):
        assert main([*argv, "--data-arg", "skip_bad=true", "--out", str(tmp_path / "b")]) == 0


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
    fails(["finetune", str(run), "--epochs", "1", "--no-progress"], capsys, "lack conv1.weight")


def test_damaged_or_foreign_checkpoint_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [*mine_args(data_dir, out), "--epochs", "2"]
    assert main([*args, "--print-config"]) == 0
    capsys.readouterr()
    # a folder that holds this run's settings and a damaged checkpoint: say so, never guess
    out.mkdir()
    from gemminer.cli import build_parser, config_from_args
    from gemminer.runs import RunDir

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
    from gemminer.runs import RunDir

    out.mkdir()
    RunDir(out).write_config(config_from_args(build_parser().parse_args(args)))
    torch.save({"version": 1, "evil": Evil()}, out / "checkpoint-prune.pt")
    fails(args, capsys, "checkpoint-prune.pt is damaged")
    assert not marker.exists()
