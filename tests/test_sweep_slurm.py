"""``gemminer sweep --shard auto``: shards from a Slurm job array."""

from __future__ import annotations

import pytest

from gemminer.errors import ConfigError
from gemminer.sweep import expand, shard, slurm_shard

from .test_sweep import sweep_main, sweep_of

GRID = {"method": ["snip", "random"], "seed": [0, 1, 2, 3, 4]}  # 10 points


def _array(task: int, count: int, low: int = 0, step: int = 1) -> dict[str, str]:
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_MIN": str(low),
        "SLURM_ARRAY_TASK_STEP": str(step),
    }


@pytest.mark.parametrize(("low", "step"), [(0, 1), (1, 1), (0, 2)])
def test_array_tasks_partition_the_grid_exactly(tmp_path, low: int, step: int) -> None:
    points, _ = expand(sweep_of(tmp_path, GRID))
    assert len(points) == 10
    for n in (1, 2, 3, 4, 7, 10, 13):
        parts = [shard(points, slurm_shard(_array(low + i * step, n, low, step))) for i in range(n)]
        indices = [p.index for part in parts for p in part]
        assert sorted(indices) == list(range(10))  # every point once: disjoint and complete
        assert all(p.index % n == i for i, part in enumerate(parts) for p in part)


def test_plain_array_without_min_and_step() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert slurm_shard(env) == (2, 4)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({}, "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT is not set"),
        ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not set"),
        (_array(4, 4), "task 4 .* is not one of the 4 tasks"),
        (_array(3, 4, 0, 2), "task 3 .* is not one of the 4 tasks"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "not a number"),
    ],
)
def test_bad_or_missing_slurm_variables_are_clear(env: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        slurm_shard(env)


def test_cli_shard_auto(tmp_path, monkeypatch, capsys) -> None:
    sweep = sweep_of(tmp_path, GRID)
    for var in (
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_STEP",
    ):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="--shard auto .* Slurm job array"):
        sweep_main([str(sweep.path), "--list", "--shard", "auto"])
    seen = []
    out = ["--out", str(tmp_path / "out")]
    for task in range(3):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        assert sweep_main([str(sweep.path), "--list", "--shard", "auto", *out]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert sweep_main([str(sweep.path), "--list", "--shard", f"{task}/3", *out]) == 0
        assert capsys.readouterr().out.splitlines() == lines  # the same as explicit I/N
        seen += lines[:-1]  # minus the count line
    assert len(seen) == len(set(seen)) == 10
