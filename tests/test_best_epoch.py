"""The last and the best finetuning epoch, each named: summary.json, the closing line."""

import json

import pytest

from gemminer.cli import main
from gemminer.rundir.summary import BestEpoch, RunSummary, best_epoch

from .conftest import write_image_folder


def _records(test, val=None, phase="finetune"):
    return [
        {"phase": phase, "epoch": e, "test_acc": t} | ({"val_acc": val[e - 1]} if val else {})
        for e, t in enumerate(test, 1)
    ]


def test_best_epoch_is_the_highest_test_accuracy_earliest_first():
    records = _records([0.5, 0.7, 0.6, 0.7]) + _records([0.9], phase="mine")
    records.insert(2, {"phase": "finetune", "epoch": 9, "train_acc": 0.99})  # not evaluated
    assert best_epoch(records) == BestEpoch(0.7, 2, "test")
    assert best_epoch(records, "mine") == BestEpoch(0.9, 1, "test")
    assert best_epoch(_records([0.5], phase="mine")) is None


def test_a_validation_split_picks_the_epoch_and_the_test_accuracy_is_reported():
    records = _records([0.50, 0.70, 0.60], val=[0.55, 0.52, 0.58])
    assert best_epoch(records) == BestEpoch(0.60, 3, "val")
    assert best_epoch(records).describe() == (
        "best 60.00 % at epoch 3 (picked on the validation split)"
    )


def test_summary_round_trip_of_the_best_epoch():
    best = BestEpoch(0.7312, 141, "test")
    ticket = {"method": "gem-miner", "model": "resnet20", "dataset": "cifar10"}
    ticket |= {"target_density": 0.0144, "density": 0.0144}
    summary = RunSummary(**ticket, post_finetune_acc=0.7299).updated(**best.summary_values())
    data = summary.to_dict()
    assert data["best_post_finetune_acc"] == 0.7312 and data["best_post_finetune_epoch"] == 141
    assert BestEpoch.of(RunSummary.from_dict(data)) == best
    assert BestEpoch.of(RunSummary(post_finetune_acc=0.7)) is None


@pytest.mark.parametrize("val_size", [None, 6])
def test_a_finetuned_run_records_last_and_best(tmp_path, capsys, val_size):
    write_image_folder(tmp_path / "data", n_train=30, n_test=12, size=16)
    out = tmp_path / "run"
    argv = ["mine", "--data-dir", str(tmp_path / "data"), "--no-download", "--epochs", "4"]
    argv += ["--batch-size", "8", "--density", "0.2", "--finetune", "--out", str(out)]
    argv += ["--no-progress"] + (["--val-size", str(val_size)] if val_size else [])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tuned = [r for r in records if r["phase"] == "finetune"]
    assert summary["post_finetune_acc"] == tuned[-1]["test_acc"]
    split = "val" if val_size else "test"
    best = max(tuned, key=lambda r: (r[f"{split}_acc"], -r["epoch"]))
    assert summary["best_post_finetune_acc"] == best["test_acc"]
    assert summary["best_post_finetune_epoch"] == best["epoch"]
    assert summary["best_picked_on"] == split
    on = "the validation split" if val_size else "the test set"
    assert f"(last epoch), best {100 * best['test_acc']:.2f} % at epoch {best['epoch']} " in printed
    assert f"(picked on {on})" in printed
