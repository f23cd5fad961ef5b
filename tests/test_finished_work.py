"""Finished work is never redone by accident (issue 27, 2): re-running `mine --finetune`
(so `make demo`) or `gemminer finetune` on a finished run leaves it as it is."""

import json

from gemminer.cli import main

from .conftest import write_image_folder


def _files(run):
    return {
        name: (run / name).read_bytes()
        for name in ("summary.json", "metrics.jsonl", "finetuned.pt", "config.json")
    }


def _printed(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_a_finished_run_is_not_finetuned_again(tmp_path, capsys):
    write_image_folder(tmp_path / "data", n_train=24, n_test=9, size=16)
    run = tmp_path / "run"
    argv = ["mine", "--data-dir", str(tmp_path / "data"), "--no-download", "--epochs", "2"]
    argv += ["--batch-size", "8", "--finetune", "--no-progress", "--out", str(run)]
    assert main(argv) == 0
    before = _files(run)
    capsys.readouterr()

    assert main(argv) == 0  # the same command again: mining and finetuning are skipped
    out = _printed(capsys)
    assert "already finetuned (2 epochs" in out and f"gemminer finetune {run} --again" in out
    assert _files(run) == before

    assert main(["finetune", str(run), "--no-progress"]) == 0
    assert "already finetuned" in _printed(capsys) and _files(run) == before

    # other settings are another finetuning, and --again redoes this one
    assert main(["finetune", str(run), "--epochs", "1", "--no-progress"]) == 0
    assert "already finetuned" not in _printed(capsys)
    assert json.loads((run / "summary.json").read_text())["epochs_finetune"] == 1
    assert main(["finetune", str(run), "--epochs", "1", "--again", "--no-progress"]) == 0
    printed = _printed(capsys)
    assert "already finetuned" not in printed and "post-finetune test accuracy" in printed


def test_finetuning_starts_from_the_tickets_batchnorm_statistics(tmp_path, capsys):
    """Issue 27, 8: with a few steps an epoch, statistics reset to 0 and 1 made the first
    evaluation read one class; the ticket's (re-estimated for its mask) carry it, as the
    authors' finetuning carries mining's. An LR too small to move a weight keeps the
    ticket's accuracy."""
    write_image_folder(tmp_path / "data", n_train=48, n_test=24, size=16)
    run = tmp_path / "run"
    argv = ["mine", "--data-dir", str(tmp_path / "data"), "--no-download", "--epochs", "3"]
    argv += ["--batch-size", "16", "--density", "0.3", "--no-progress", "--out", str(run)]
    assert main(argv) == 0
    assert main(["finetune", str(run), "--epochs", "1", "--lr", "1e-9", "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pre_finetune_acc"] > 0.5
    assert abs(summary["post_finetune_acc"] - summary["pre_finetune_acc"]) <= 1 / 24 + 1e-9
