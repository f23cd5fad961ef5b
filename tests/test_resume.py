"""Resume after a kill: the final mask, scores, weights and metrics equal an uninterrupted run.

Gem-Miner, Edge-Popup and IMP are killed with SIGKILL after their first checkpoint (each
method trains through the same loop, :class:`gemminer.training.trainer.Trainer`);
tests/test_trainer.py stops every training method at chosen steps in-process.
"""

import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from gemminer.cli import main

from .conftest import child_env, write_image_folder

TIMING = {"seconds"}

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="the platform cannot kill a child with SIGKILL"
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, n_train=96, n_test=12, size=16)
    return root


def mine_cmd(data_dir, out, epochs=8):
    return [
        "mine", "--data-dir", str(data_dir), "--no-download", "--batch-size", "8",
        "--epochs", str(epochs), "--density", "0.05", "--out", str(out), "--no-progress",
    ]  # fmt: skip


def gemminer(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "gemminer", *args],
        env=child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        **kw,
    )


def start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "gemminer", *args],
        env=child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path, proc, timeout=120):
    """Block until ``path`` exists (the first epoch's checkpoint) while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"finished before its first checkpoint: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def metrics(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def spent_before(checkpoint, seconds):
    """Make ``checkpoint`` say its stage has already run ``seconds`` (as if the killed process
    had been slow); returns them."""
    state = torch.load(checkpoint, weights_only=True)
    assert state["seconds"] > 0  # the killed process saved its time
    torch.save({**state, "seconds": seconds}, checkpoint)
    return seconds


def tensors(path):
    return torch.load(path, weights_only=True)


def assert_same_files(a, b, names):
    for name in names:
        ta, tb = tensors(a / name), tensors(b / name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}: {k} differs"
    assert metrics(a) == metrics(b)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run: mined and finetuned."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert gemminer([*mine_cmd(data_dir, out), "--finetune"]).returncode == 0
    return out


def test_mining_killed_with_sigkill_resumes_to_the_same_result(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(mine_cmd(data_dir, out))
    wait_for(out / "checkpoint-prune.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # it really died in the middle
    done = torch.load(out / "checkpoint-prune.pt", weights_only=True)["epoch"]
    assert 1 <= done < 8
    earlier = spent_before(out / "checkpoint-prune.pt", 10_000.0)
    resumed = gemminer([*mine_cmd(data_dir, out), "--finetune"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from its checkpoint ({done} epochs done)" in resumed.stderr
    assert not (out / "checkpoint-prune.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert earlier < summary["seconds_mask"] < earlier + 600  # the killed process's time too
    assert_same_files(out, reference, ["mask.pt", "scores.pt", "ticket.pt", "finetuned.pt"])


def prune_cmd(data_dir, out, method, epochs, *settings):
    """A run of ``method`` that trains for ``epochs`` epochs (IMP: per round)."""
    sets = [arg for s in settings for arg in ("--set", s)]
    return [
        "prune", "--method", method, "--data-dir", str(data_dir), "--no-download",
        "--batch-size", "8", "--epochs", str(epochs), "--density", "0.2", "--out", str(out),
        "--no-progress", *sets,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "method, epochs, settings, total",
    [
        ("edge-popup", 6, [], 6),
        # warm rewinding: the rewind point (step 3 of round 1) travels in the checkpoint
        ("imp", 2, ["rounds=3", "rewind=3it"], 6),
    ],
)
def test_training_method_killed_with_sigkill_resumes_to_the_same_result(
    data_dir, tmp_path, method, epochs, settings, total
):
    reference = tmp_path / "reference"
    assert gemminer(prune_cmd(data_dir, reference, method, epochs, *settings)).returncode == 0
    out = tmp_path / "run"
    proc = start(prune_cmd(data_dir, out, method, epochs, *settings))
    wait_for(out / "checkpoint-prune.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # it really died in the middle
    done = len(torch.load(out / "checkpoint-prune.pt", weights_only=True)["history"])
    assert 1 <= done < total
    resumed = gemminer(prune_cmd(data_dir, out, method, epochs, *settings))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from its checkpoint ({done} epochs done)" in resumed.stderr
    assert not (out / "checkpoint-prune.pt").exists()
    assert_same_files(out, reference, ["mask.pt", "scores.pt", "ticket.pt"])


def test_sigterm_checkpoints_inside_the_epoch_and_resumes(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(mine_cmd(data_dir, out))
    wait_for(out / "checkpoint-prune.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: stopped in epoch" in err and "run the same command again" in err
    state = torch.load(out / "checkpoint-prune.pt", weights_only=True)
    assert state["progress"] is not None and state["progress"]["steps"] >= 1
    resumed = gemminer([*mine_cmd(data_dir, out), "--finetune"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_files(out, reference, ["mask.pt", "scores.pt", "ticket.pt", "finetuned.pt"])


def test_a_time_limit_checkpoints_inside_the_epoch_and_resumes(
    data_dir, tmp_path, monkeypatch, capsys
):
    """--time-limit stops like SIGTERM once it has passed: here the clock the stop flag
    reads jumps past the limit at its 31st reading (in epoch 3, 12 steps an epoch), so the
    command checkpoints inside epoch 3, exits 130 before finetuning, and the same command
    without the limit ends as an uninterrupted run in this process did."""
    from gemminer.training import checkpoint

    def flags(out):
        return [*mine_cmd(data_dir, out), "--finetune", "--threads", "1"]

    whole = tmp_path / "whole"
    assert main([*flags(whole), "--time-limit", "2h"]) == 0
    polls = itertools.count()
    late = types.SimpleNamespace(
        perf_counter=time.perf_counter,
        monotonic=lambda: time.monotonic() + (1e6 if next(polls) >= 30 else 0.0),
    )
    out = tmp_path / "run"
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "time", late)
        assert main([*flags(out), "--time-limit", "2h"]) == 130
    err = capsys.readouterr().err
    assert "the time limit passed: stopped in epoch 3 after 7 steps" in err, err
    assert not (out / "finetuned.pt").exists()
    assert torch.load(out / "checkpoint-prune.pt", weights_only=True)["progress"]["steps"] == 7
    assert main(flags(out)) == 0
    assert_same_files(out, whole, ["mask.pt", "scores.pt", "ticket.pt", "finetuned.pt"])


def test_the_stop_flag_reads_its_deadline_and_names_why_it_stopped():
    from gemminer.training.checkpoint import StopFlag

    assert not StopFlag()() and not StopFlag(time.monotonic() + 3600)()
    flag = StopFlag(time.monotonic() - 1)
    assert flag() and flag.reason == "time limit"


def test_finetuning_killed_resumes_to_the_same_weights(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "finetuned.pt").unlink()
    proc = start(["finetune", str(out), "--no-progress"])
    wait_for(out / "checkpoint-finetune.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "finetuned.pt").exists()
    earlier = spent_before(out / "checkpoint-finetune.pt", 20_000.0)
    resumed = gemminer(["finetune", str(out), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming finetuning from its checkpoint" in resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert earlier < summary["seconds_finetune"] < earlier + 600
    assert_same_files(out, reference, ["finetuned.pt"])


def test_same_seed_same_mask(data_dir, reference, tmp_path):
    again = tmp_path / "again"
    assert gemminer(mine_cmd(data_dir, again)).returncode == 0
    assert torch.equal(
        torch.cat([m.flatten() for m in tensors(again / "mask.pt").values()]),
        torch.cat([m.flatten() for m in tensors(reference / "mask.pt").values()]),
    )
    other = tmp_path / "other"
    assert gemminer([*mine_cmd(data_dir, other), "--seed", "1"]).returncode == 0
    assert any(
        not torch.equal(a, b)
        for a, b in zip(tensors(other / "mask.pt").values(), tensors(again / "mask.pt").values())
    )


def test_divergence_names_epoch_and_step_and_keeps_the_checkpoint(
    data_dir, reference, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    code = main(["finetune", str(out), "--lr", "1e30", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "NaN or infinite in finetuning epoch 1, step" in err
    assert "Lower the learning rate" in err
