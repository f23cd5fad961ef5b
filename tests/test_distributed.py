"""torchrun (PyTorch DDP) on the CPU with gloo: two processes spawned by the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError

from .conftest import child_env, separable_arrays, write_image_folder

WORKER = Path(__file__).with_name("ddp_worker.py")


def _can_spawn() -> str:
    if sys.platform in ("emscripten", "wasi"):
        return "this platform cannot start processes"
    if not dist.is_available() or not dist.is_gloo_available():
        return "this PyTorch build has no gloo backend"
    return ""


needs_processes = pytest.mark.skipif(bool(_can_spawn()), reason=_can_spawn() or "-")


def torchrun(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, *args],
        env=child_env(OMP_NUM_THREADS="1"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _worker(out: Path, kind: str, ranks: int) -> list[dict]:
    out.mkdir()
    if ranks == 1:
        subprocess.run(
            [sys.executable, str(WORKER), str(out), kind],
            env=child_env(OMP_NUM_THREADS="1"),
            check=True,
        )
    else:
        torchrun(str(WORKER), str(out), kind)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(ranks)]


def _without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@needs_processes
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    """Without BatchNorm, DDP's averaged gradient is the global batch's: the same mask,
    scores, finetuned weights and figures as one process (up to float summation order)."""
    (single,) = _worker(tmp_path / "one", "mlp", 1)
    rank0, rank1 = _worker(tmp_path / "two", "mlp", 2)
    assert rank0["world_size"] == rank1["world_size"] == 2 and single["world_size"] == 1
    for name, keep in single["mask"].items():
        assert torch.equal(rank0["mask"][name], keep)
        assert torch.equal(rank1["mask"][name], keep)
        assert torch.equal(rank0["scores"][name], rank1["scores"][name])
        torch.testing.assert_close(rank0["scores"][name], single["scores"][name], atol=1e-5, rtol=0)
    for name, w in single["weights"].items():
        assert torch.equal(rank0["weights"][name], rank1["weights"][name])
        torch.testing.assert_close(rank0["weights"][name], w, atol=1e-5, rtol=0)
    # metrics are reduced over ranks: the same epoch figures as one process
    for one, two in zip(
        _without_time(single["mining"] + single["finetune"]),
        _without_time(rank0["mining"] + rank0["finetune"]),
    ):
        assert one.keys() == two.keys()
        for key, value in one.items():
            if isinstance(value, str):
                assert two[key] == value
            else:
                assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert rank0["mining"][-1]["density"] <= 0.2
    assert _without_time(rank0["mining"]) == _without_time(rank1["mining"])


@needs_processes
def test_ranks_hold_the_same_mask_and_weights_with_batchnorm(tmp_path):
    """With BatchNorm each rank normalizes its own half batch (so one process differs), but
    the freezing and the projection still give every rank the same mask."""
    rank0, rank1 = _worker(tmp_path / "two", "bn", 2)
    for name, keep in rank0["mask"].items():
        assert torch.equal(rank1["mask"][name], keep)
        assert torch.equal(rank1["scores"][name], rank0["scores"][name])
    for name, w in rank0["weights"].items():
        assert torch.equal(rank1["weights"][name], w), name
    assert _without_time(rank0["finetune"]) == _without_time(rank1["finetune"])


@needs_processes
def test_torchrun_mine_and_finetune_from_the_command_line(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data, n_train=32, n_test=12)
    out = tmp_path / "run"
    done = torchrun(
        "-m",
        "gemminer",
        "mine",
        "--model",
        "resnet20",
        "--dataset",
        "folder",
        "--data-dir",
        str(data),
        "--batch-size",
        "16",
        "--density",
        "0.05",
        "--epochs",
        "2",
        "--finetune",
        "--finetune-epochs",
        "1",
        "--no-progress",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["post_finetune_acc"] is not None
    # one process printed and wrote: one summary line, one metrics record per epoch
    assert done.stdout.count(f"{out}:") == 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in records] == [
        ("mine", 1),
        ("mine", 2),
        ("finetune", 1),
    ]
    assert not (out / "checkpoint-prune.pt").exists()
    mask = torch.load(out / "mask.pt", weights_only=True)
    kept = sum(int(m.sum()) for m in mask.values())
    assert kept == summary["num_kept"]


def test_shards_of_a_training_batch_are_the_single_process_batch():
    data = separable_arrays(40)
    kwargs = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=4)
    whole = list(BatchLoader(data, **kwargs))
    shards = [list(BatchLoader(data, **kwargs, shard=(r, 2))) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 5
    for batch, a, b in zip(whole, *shards):
        assert torch.equal(torch.cat([a[0], b[0]]), batch[0])  # same crops and flips
        assert torch.equal(torch.cat([a[1], b[1]]), batch[1])


def test_evaluation_shards_cover_every_image_once():
    data = separable_arrays(11)
    kwargs = dict(batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    labels = [
        torch.cat([y for _, y in BatchLoader(data, **kwargs, shard=(r, 3))]) for r in range(3)
    ]
    assert sorted(len(x) for x in labels) == [3, 4, 4]
    assert torch.cat(labels).bincount().tolist() == data.labels.bincount().tolist()


def test_a_batch_that_the_processes_cannot_share_is_refused():
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        BatchLoader(
            separable_arrays(12),
            batch_size=8,
            mean=(0,) * 3,
            std=(1,) * 3,
            train=True,
            shard=(0, 3),
        )


@needs_processes
def test_torchrun_prints_each_notice_once_and_no_torch_warning(tmp_path):
    """A skipped image is told once (rank 0, though both ranks and both stages read the
    data); DDP's deprecated-argument FutureWarning and its "grad strides" warning (1x1
    convolutions of a channels_last model: wrn28-2's shortcuts) do not appear."""
    data = tmp_path / "data"
    write_image_folder(data, n_train=32, n_test=12)
    victim = sorted((data / "train").rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated
    done = torchrun(
        "-m",
        "gemminer",
        "mine",
        "--model",
        "wrn28-2",
        "--dataset",
        "folder",
        "--data-dir",
        str(data),
        "--data-arg",
        "skip_bad=true",
        "--batch-size",
        "16",
        "--density",
        "0.05",
        "--epochs",
        "1",
        "--finetune",
        "--finetune-epochs",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
    )
    err = done.stderr
    notices = [line for line in err.splitlines() if line.startswith("gemminer: warning: ")]
    assert len(notices) == len(set(notices)), err  # each told once, not once per rank
    assert sum("skipped 1 unreadable image(s) of 32" in n for n in notices) == 1, err
    for torch_warning in ("Warning:", "broadcast_buffers", "Grad strides", "bucket view"):
        assert torch_warning not in err, err


@needs_processes
def test_torchrun_user_errors_say_one_line_before_any_file(tmp_path):
    """Issue 27, 5: settings are checked before the process group, only rank 0 says what
    is wrong, every rank exits 2 (torchrun itself then reports the failed workers and exits
    1), and no file is written."""
    data = tmp_path / "data"
    write_image_folder(data, n_train=16, n_test=4, size=16)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    base = ["-m", "gemminer", "mine", "--dataset", "folder", "--data-dir", str(data)]
    base += ["--epochs", "1", "--device", "cpu", "--no-progress"]
    for flags, needle in (
        (["--batch-size", "127"], "the batch size 127 must be a multiple of the 2 processes"),
        (["--model", "nosuch"], "nosuch"),
    ):
        out = tmp_path / flags[1]
        done = subprocess.run(
            [*cmd, *base, *flags, "--out", str(out)],
            env=child_env(OMP_NUM_THREADS="1"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        said = [line for line in done.stderr.splitlines() if line.startswith("gemminer: error:")]
        assert len(said) == 1 and needle in said[0], done.stderr[-2000:]
        assert "exitcode  : 2" in done.stderr  # every rank ended as a user error
        assert not out.exists()
