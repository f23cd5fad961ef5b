"""``gemminer sweep FILE --jobs N``: runs as parallel processes, spread over GPUs,
stopped together, resumed by the same command."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from gemminer.masking import Mask
from gemminer.sweep.parallel import JobRunner, Task, slots

from . import test_sweep
from .conftest import child_env, write_image_folder
from .test_sweep import sweep_main

#: tests/test_sweep.py's fast flags, in fp32 on one thread, so that a run gives the same
#: figures in a process of its own as in the sweep's.
FAST = {**test_sweep.FAST, "precision": "fp32", "threads": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, n_train=24, n_test=9, size=16)
    return root


def _sweep(path, data_dir, grid, out, **top):
    data = {"base": {**FAST, "data_dir": str(data_dir)}, "grid": grid, "out": str(out), **top}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _summaries(out):
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted(out.glob("*/summary.json"))
        if p.parent.name != "logs"
    }


def test_two_jobs_give_the_runs_of_one_process(tmp_path, data_dir, capsys):
    grid = {"method": ["gem-miner", "snip"], "seed": [0, 1]}
    sanity = {"gem-miner": ["shuffle"]}
    parallel = _sweep(
        tmp_path / "p.yaml", data_dir, grid, tmp_path / "p", finetune=True, sanity=sanity
    )
    in_turn = _sweep(
        tmp_path / "s.yaml", data_dir, grid, tmp_path / "s", finetune=True, sanity=sanity
    )
    assert sweep_main([str(parallel), "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "6 runs to do, 2 at a time" in err
    for n in range(1, 7):
        assert f"[{n}/6] " in err and err.count(f"[{n}/6] ") >= 3  # started, lines, finished
    assert err.count(": finished") == 6
    assert sweep_main([str(in_turn)]) == 0
    ours, theirs = _summaries(tmp_path / "p"), _summaries(tmp_path / "s")
    assert sorted(ours) == sorted(theirs) and len(ours) == 6
    for name, summary in ours.items():
        for key in ("density", "pre_finetune_acc", "post_finetune_acc"):
            assert summary[key] == theirs[name][key], (name, key)
        mine, other = (Mask.load(tmp_path / d / name / "mask.pt") for d in ("p", "s"))
        assert list(mine) == list(other)
        assert all(torch.equal(mine[k], other[k]) for k in mine), name
        log = (tmp_path / "p" / "logs" / f"{name}.log").read_text()
        assert "post-finetune accuracy" in log
    assert (tmp_path / "p" / "results.md").is_file()
    # finished runs are skipped: nothing left to do
    assert sweep_main([str(parallel), "--jobs", "2"]) == 0
    assert "0 runs to do" in capsys.readouterr().err


def test_a_failed_run_stops_the_sweep_unless_keep_going(tmp_path, data_dir, capsys):
    # a validation split larger than the 24 training images fails once the data is read
    grid = {"method": ["gem-miner", "snip"], "val_size": [4, 30]}
    path = _sweep(
        tmp_path / "f.yaml", data_dir, grid, tmp_path / "f", sanity={"gem-miner": ["reinit"]}
    )
    assert sweep_main([str(path), "--jobs", "2", "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert err.count("failed with exit status 2") == 2
    assert "skipped, its run failed" in err  # the reinit check of the failed gem-miner run
    done = _summaries(tmp_path / "f")
    assert len(done) == 3 and all(s["pre_finetune_acc"] is not None for s in done.values())


def test_slots_spread_jobs_over_gpus_or_share_the_cores():
    four = slots(4, {"CUDA_VISIBLE_DEVICES": "2,5"})
    assert [s.gpu for s in four] == ["2", "5", "2", "5"]
    assert [s.environ["CUDA_VISIBLE_DEVICES"] for s in four] == ["2", "5", "2", "5"]
    cpu = slots(2, {"CUDA_VISIBLE_DEVICES": ""})
    assert all(s.gpu is None for s in cpu)
    assert {s.environ["OMP_NUM_THREADS"] for s in cpu} == {str(max(1, (os.cpu_count() or 1) // 2))}
    given = slots(3, {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "7"})
    assert [s.environ["OMP_NUM_THREADS"] for s in given] == ["7"] * 3


def test_a_check_waits_for_its_run_and_is_skipped_when_it_failed(tmp_path):
    """The scheduler on its own, with a stand-in for python that fails or succeeds."""
    fake = tmp_path / "fake-python"
    order = tmp_path / "order.txt"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$4" >> {order}\n'  # argv: -m gemminer TAG FOLDER
        'case "$3" in fail) exit 3;; slow) sleep 1;; esac\n'
        'echo "line of $3"\n'
    )
    fake.chmod(0o755)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    tasks = [
        Task("[1] a", a, ["slow", "a"]),
        Task("[2] a-check", tmp_path / "a-check", ["ok", "a-check"], after=a),
        Task("[3] b", b, ["fail", "b"]),
        Task("[4] b-check", tmp_path / "b-check", ["ok", "b-check"], after=b),
        Task("[5] c", c, ["ok", "c"]),
    ]
    lines = []
    outcome = JobRunner(
        tasks, 2, tmp_path / "logs", keep_going=True, log=lines.append, python=str(fake)
    ).run()
    started = order.read_text().split()
    assert started.index("a-check") > started.index("a") and "b-check" not in started
    assert sorted(p.name for p in outcome.done) == ["a", "a-check", "c"]
    assert len(outcome.failed) == 1 and "exit status 3" in outcome.failed[0]
    assert outcome.skipped == ["[4] b-check: skipped, its run failed"]
    assert "[1] a: line of slow" in lines
    assert (tmp_path / "logs" / "a.log").read_text() == "line of slow\n"


def test_jobs_must_be_a_positive_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        sweep_main([str(tmp_path / "x.yaml"), "--jobs", "0"])
    assert exit.value.code == 2 and "--jobs takes a whole number >= 1" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="no signals")
def test_ctrl_c_stops_every_job_checkpointed_and_the_same_command_resumes(tmp_path, data_dir):
    grid = {"method": ["gem-miner"], "seed": [0, 1]}
    path = _sweep(tmp_path / "i.yaml", data_dir, grid, tmp_path / "i")
    cfg = yaml.safe_load(path.read_text())
    cfg["base"]["epochs"] = 400  # long enough to be caught mid-run
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "gemminer", "sweep", str(path), "--jobs", "2"]
    sweep = subprocess.Popen(cmd, env=child_env(), stderr=subprocess.PIPE, text=True)
    logs = tmp_path / "i" / "logs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sweep.poll() is None:  # both runs are mining
        texts = [p.read_text() for p in logs.glob("*.log")] if logs.is_dir() else []
        if len(texts) == 2 and all("mining" in t or "gem-miner:" in t for t in texts):
            break
        time.sleep(0.2)
    time.sleep(2.0)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    assert "run the same command to resume" in err and err.count("stopped (checkpointed") == 2
    runs = [p for p in (tmp_path / "i").iterdir() if p.name.startswith("gem-miner")]
    assert len(runs) == 2 and all((r / "checkpoint-prune.pt").is_file() for r in runs)
    resumed = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stderr.count("resuming") >= 2
    assert all(json.loads((r / "summary.json").read_text())["epochs_mining"] == 400 for r in runs)
