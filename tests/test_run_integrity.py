"""A failed command never damages a run folder (issue 16).

Every stage checks the run files it reads before it writes anything: a damaged file ends
in one line naming it and exit status 2, and the folder is left byte for byte as it was.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import torch

from gemminer.cli import main
from gemminer.errors import RunError
from gemminer.rundir.runs import RunDir, load_run_file

from .conftest import fails, told

FAST = ["--no-download", "--batch-size", "8", "--no-progress"]


def mine_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "mine", *FAST, "--data-dir", str(data_dir), "--density", "0.05", "--epochs", "2",
        "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A mined and finetuned run (2 + 2 epochs), copied by every test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(mine_args(data_dir, out, "--finetune")) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# Damaged files × stages ----------------------------------------------------------------

RANDOM = bytes([177, 255]) + random.Random(0).randbytes(4000)  # no zip, no pickle, no UTF-8
#: JSON that parses but is not what the file should hold
WRONG_JSON = {
    "config.json": '{"bogus": 1}\n',
    "summary.json": "[1, 2, 3]\n",
    "metrics.jsonl": '{"phase": "mine", "epoch": 1}\n[1, 2]\n',
}


def corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(RANDOM)
    elif path.suffix == ".pt":  # a valid torch file holding the wrong keys
        torch.save({"bogus.weight": torch.zeros(3), "conv1.weight": torch.zeros(1)}, path)
    else:
        path.write_text(WRONG_JSON[path.name])


def stage_args(stage: str, run: Path) -> list[str]:
    return {
        "finetune": ["finetune", str(run), "--epochs", "1", "--no-progress"],
        "eval": ["eval", str(run)],
        "export": ["export", str(run)],
        "export-ticket": ["export", str(run), "--ticket"],
        "sanity": ["sanity", str(run), "--check", "shuffle", "--no-progress"],
        "sanity-invert": ["sanity", str(run), "--check", "invert-posthoc", "--no-progress"],
        "report": ["report", str(run), "--out", str(run.parent / "report")],
    }[stage]


#: The run files each stage reads (a damaged file it does not read does not stop it).
READS = {
    "finetune": ("config.json", "summary.json", "metrics.jsonl", "mask.pt", "ticket.pt"),
    "eval": ("config.json", "mask.pt", "ticket.pt", "finetuned.pt"),
    "export": ("config.json", "summary.json", "mask.pt", "finetuned.pt"),
    "export-ticket": ("ticket.pt",),
    "sanity": ("config.json", "summary.json", "mask.pt", "ticket.pt"),
    "sanity-invert": ("scores.pt",),
    "report": ("config.json", "summary.json", "metrics.jsonl", "mask.pt"),
}
CASES = [
    (stage, name, how)
    for stage, names in READS.items()
    for name in names
    for how in ("truncated", "random", "wrong-keys")
]


@pytest.mark.parametrize(("stage", "name", "how"), CASES)
def test_a_damaged_run_file_stops_the_stage_and_changes_nothing(
    finished, tmp_path, capsys, stage, name, how
):
    if stage == "report":
        pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    corrupt(run / name, how)
    before = snapshot(run)
    capsys.readouterr()
    fails(stage_args(stage, run), capsys, name)
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no sanity folder, no report


@pytest.mark.parametrize("how", ["truncated", "random", "wrong-keys"])
def test_a_damaged_finetuning_checkpoint_stops_finetuning_and_changes_nothing(
    finished, tmp_path, capsys, how
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    torch.save({"version": 1, "settings": {}, "history": []}, run / "checkpoint-finetune.pt")
    corrupt(run / "checkpoint-finetune.pt", how)
    before = snapshot(run)
    capsys.readouterr()
    fails(stage_args("finetune", run), capsys, "checkpoint-finetune.pt")
    assert snapshot(run) == before


def test_finetuning_that_fails_midway_keeps_the_previous_finetuning(finished, tmp_path, capsys):
    """Diverging finetuning leaves config, metrics, summary and weights of the last one."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    kept = {n: b for n, b in snapshot(run).items() if not n.startswith("checkpoint")}
    assert main(["finetune", str(run), "--epochs", "1", "--lr", "1e30", "--no-progress"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    after = {n: b for n, b in snapshot(run).items() if not n.startswith("checkpoint")}
    assert after == kept


def test_finetuning_again_replaces_config_metrics_and_summary_together(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert main(["finetune", str(run), "--epochs", "1", "--no-progress"]) == 0
    folder = RunDir(run)
    assert folder.read_config().finetune.epochs == 1
    assert [r["epoch"] for r in folder.read_metrics() if r["phase"] == "finetune"] == [1]
    assert [r["epoch"] for r in folder.read_metrics() if r["phase"] == "mine"] == [1, 2]
    assert folder.read_summary()["epochs_finetune"] == 1
    assert not (run / "checkpoint-finetune.pt").exists()


# The checked loader --------------------------------------------------------------------


def test_the_checked_loader_says_what_is_wrong(tmp_path):
    path = tmp_path / "ticket.pt"
    good = {f"w{i}": torch.zeros(2, 3) for i in range(6)}
    expected = {k: v.shape for k, v in good.items()}
    torch.save(good, path)
    assert load_run_file(path, expected).keys() == good.keys()
    torch.save(good, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RunError, match=r"ticket\.pt.*truncated"):
        load_run_file(path, expected)
    path.write_bytes(RANDOM)
    with pytest.raises(RunError, match=r"ticket\.pt is not a torch file"):
        load_run_file(path, expected)
    path.write_bytes(b"")
    with pytest.raises(RunError, match=r"ticket\.pt is empty"):
        load_run_file(path, expected)
    torch.save([1, 2], path)
    with pytest.raises(RunError, match=r"ticket\.pt does not hold tensors by name"):
        load_run_file(path, expected)
    torch.save({**{k: good[k] for k in list(good)[:1]}, "x1": torch.zeros(1)}, path)
    with pytest.raises(RunError, match=r"missing w1, w2, w3 and 2 more; unexpected x1") as exc:
        load_run_file(path, expected)
    assert "ticket.pt" in str(exc.value)
    torch.save({**good, "w4": torch.zeros(3, 2)}, path)
    with pytest.raises(RunError, match=r"ticket\.pt: w4 has shape \(3, 2\), expected \(2, 3\)"):
        load_run_file(path, expected)
    path.unlink()
    with pytest.raises(RunError, match=r"ticket\.pt does not exist"):
        load_run_file(path, expected)


def test_eval_of_finetuned_weights_with_wrong_keys_names_them(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = torch.load(run / "finetuned.pt", weights_only=True)
    state["extra.weight"] = state.pop("fc.weight")
    torch.save(state, run / "finetuned.pt")
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "finetuned.pt" in err and "missing fc.weight" in err and "unexpected extra.weight" in err


# A folder is claimed only when a stage starts work --------------------------------------


def test_a_run_that_fails_before_starting_leaves_no_folder_and_the_fix_runs(
    data_dir, tmp_path, capsys, caplog
):
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    victim = sorted((bad / "train" / "dog").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    out = tmp_path / "run"
    argv = [*mine_args(bad, out), "--dataset", "folder", "--epochs", "1"]
    assert main(argv) == 2
    assert "cannot decode image" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main([*argv, "--data-arg", "skip_bad=true"]) == 0
    assert sum("1 unreadable" in line for line in told(caplog)) == 1
    assert RunDir(out).read_config().data_args == {"skip_bad": True}


def test_a_folder_holding_only_a_config_is_reused(data_dir, tmp_path, capsys):
    """A config.json left by a failed start (older gemminer) holds nothing to keep."""
    out = tmp_path / "run"
    assert main([*mine_args(data_dir, out, "--epochs", "1"), "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    config["prune"]["density"] = 0.2  # other settings
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    (out / "metrics.jsonl").write_text("")
    assert main(mine_args(data_dir, out, "--epochs", "1")) == 0
    assert RunDir(out).read_config().prune.density == 0.05


def test_a_folder_with_a_checkpoint_of_other_settings_is_refused(
    data_dir, finished, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(finished / "config.json", out / "config.json")
    torch.save({"version": 1, "settings": {}}, out / "checkpoint-prune.pt")
    before = snapshot(out)
    assert main(mine_args(data_dir, out, "--density", "0.1")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert snapshot(out) == before


# Reports skip damaged runs -------------------------------------------------------------


def test_report_skips_a_damaged_run_with_one_warning(finished, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # logging not configured
    good, damaged, unfinished = tmp_path / "good", tmp_path / "damaged", tmp_path / "unfinished"
    for folder in (good, damaged, unfinished):
        shutil.copytree(finished, folder)
    (damaged / "summary.json").write_bytes(RANDOM)
    (unfinished / "summary.json").unlink()
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["report", str(good), str(damaged), str(unfinished), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gemminer: warning: skipped a run folder:"), err
    assert "damaged" in err[0] and "summary.json" in err[0], err
    text = (out / "report.md").read_text()
    assert "good" in text and "unfinished" in text


def test_report_fails_only_when_no_run_could_be_read(finished, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    runs = [tmp_path / "a", tmp_path / "b"]
    for folder in runs:
        shutil.copytree(finished, folder)
        (folder / "mask.pt").write_bytes(b"")
    capsys.readouterr()
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run could be read" in err[0], err
    assert "a/mask.pt" in err[0] and "b/mask.pt" in err[0]
