"""The one training loop (:class:`Trainer`) and its hooks; every training method stopped at
chosen steps, or "killed" after chosen epochs, continues to the uninterrupted result."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch
from torch import nn

from gemminer import OptimConfig
from gemminer.data.loader import BatchLoader
from gemminer.errors import MaskError
from gemminer.masking import Mask, init_weights, prunable_weights
from gemminer.methods import METHODS, PruneContext
from gemminer.settings.config import FinetuneConfig
from gemminer.training import Hooks, Trainer, build_optimizer, build_scheduler, finetune
from gemminer.training.checkpoint import Checkpoint, TrainingInterrupted

from .conftest import UserNet, separable_arrays

CPU = torch.device("cpu")
NORM = {"mean": (0.5,) * 3, "std": (0.25,) * 3}


def train_loader() -> BatchLoader:
    return BatchLoader(separable_arrays(48), batch_size=16, train=True, seed=1, **NORM)


# The loop ---------------------------------------------------------------------------------
class Recorder(Hooks):
    stage = "test"
    phase = "test"
    where = "testing"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps = 0

    def before_epoch(self, epoch: int) -> None:
        self.calls.append(f"before_epoch {epoch}")

    def before_step(self) -> None:
        self.calls.append("before_step")

    def after_step(self) -> None:
        self.steps += 1
        self.calls.append("after_step")

    def after_epoch(self, epoch, stats, lr):
        self.calls.append(f"after_epoch {epoch}")
        return {**super().after_epoch(epoch, stats, lr), "steps": self.steps}

    def state(self):
        return {"steps": self.steps}

    def load_state(self, state):
        self.steps = state["steps"]


def trainer(model, hooks, epochs=2, **kw) -> Trainer:
    optim = OptimConfig(lr=0.1, momentum=0.9, schedule="cosine")
    optimizer = build_optimizer(model.parameters(), optim)
    scheduler = build_scheduler(optimizer, optim, epochs)
    return Trainer(model, optimizer, scheduler, train_loader(), CPU, epochs, hooks, **kw)


def test_hooks_run_in_order_and_each_epoch_is_recorded_and_checkpointed(user_net, tmp_path):
    hooks, seen = Recorder(), []
    checkpoint = Checkpoint(tmp_path / "ck.pt")
    history = trainer(user_net, hooks, checkpoint=checkpoint, on_epoch=seen.append).fit()
    per_epoch = ["before_step", "after_step"] * 3  # 48 images in batches of 16
    assert hooks.calls == [
        "before_epoch 1", *per_epoch, "after_epoch 1",
        "before_epoch 2", *per_epoch, "after_epoch 2",
    ]  # fmt: skip
    assert [r["epoch"] for r in history] == [1, 2] and seen == history
    assert history[0]["lr"] == 0.1 and history[1]["lr"] < 0.1  # read before the schedule step
    assert all(r["phase"] == "test" and r["seconds"] >= 0 for r in history)
    state = checkpoint.load()
    assert state["epoch"] == 2 and state["history"] == history and state["extra"] == {"steps": 6}


def test_offset_numbers_epochs_on_and_false_ignores_the_checkpoint(user_net, tmp_path):
    checkpoint = Checkpoint(tmp_path / "ck.pt")
    first = trainer(user_net, Recorder(), checkpoint=checkpoint).fit()
    hooks = Recorder()
    later = trainer(user_net, hooks, offset=2, total=4, checkpoint=checkpoint)
    history = later.fit(resume=False, history=first)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and hooks.steps == 6
    assert checkpoint.load()["epoch"] == 4


def test_a_resumed_stage_clock_counts_the_earlier_processes_seconds(tmp_path, monkeypatch):
    """The stage's seconds (a run's ``seconds_mask``/``seconds_finetune``) cover every
    process that worked on it, not only the one that finished it."""
    from gemminer.training import checkpoint as module

    now = [1000.0]
    monkeypatch.setattr(module.time, "perf_counter", lambda: now[0])
    first = Checkpoint(tmp_path / "ck.pt", {"a": 1})
    with pytest.raises(RuntimeError, match="start_clock"):
        first.elapsed()
    first.start_clock()  # no checkpoint yet: from zero
    now[0] += 30.0
    first.save({"history": [{"epoch": 1, "seconds": 25.0}]})
    assert first.load()["seconds"] == 30.0
    now[0] += 500.0  # the process dies; a later one resumes
    second = Checkpoint(tmp_path / "ck.pt", {"a": 1})
    second.start_clock()
    now[0] += 12.0
    assert second.elapsed() == 42.0
    other = Checkpoint(tmp_path / "ck.pt", {"a": 2})  # other settings: not resumed, from zero
    other.start_clock()
    assert other.elapsed() == 0.0
    # a checkpoint written before the seconds were saved counts its finished epochs
    Checkpoint(tmp_path / "old.pt").save({"history": [{"seconds": 7.0}, {"seconds": 8.0}]})
    old = Checkpoint(tmp_path / "old.pt")
    old.start_clock()
    assert old.elapsed() == 15.0


def test_a_stop_mid_epoch_continues_to_the_same_weights(tmp_path):
    def net():
        torch.manual_seed(0)
        return UserNet()

    reference = net()
    expected = trainer(reference, Recorder(), epochs=3).fit()
    polls = itertools.count(1)
    stopping = Checkpoint(tmp_path / "ck.pt", should_stop=lambda: next(polls) >= 5)
    with pytest.raises(TrainingInterrupted, match="stopped in epoch 2 after 2 steps"):
        trainer(net(), Recorder(), epochs=3, checkpoint=stopping).fit()
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert saved["progress"]["seconds"] > 0  # the part of epoch 2 before the stop
    # as if that part had been slow: the resumed epoch's seconds add it to its own
    saved["progress"]["seconds"] = 1000.0
    torch.save(saved, tmp_path / "ck.pt")
    hooks, model = Recorder(), net()
    torch.manual_seed(99)  # the checkpoint restores the global RNGs
    history = trainer(model, hooks, epochs=3, checkpoint=Checkpoint(tmp_path / "ck.pt")).fit()
    assert hooks.steps == 9 and hooks.calls[0] == "before_epoch 2"
    assert drop_seconds(history) == drop_seconds(expected)
    assert 1000.0 < history[1]["seconds"] < 1100.0 and history[2]["seconds"] < 100.0
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


# Every training method --------------------------------------------------------------------
def drop_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


#: name, settings, epochs (per round for IMP), steps in all (3 an epoch), stop points:
#: a stop after step n (mid-epoch, an epoch's last step, a later round) or a kill after
#: epoch k (the checkpoint as it was then; for IMP also at a round's end).
CASES = {
    "gem-miner": ({"period": 1, "auto_lambda": True}, 3, (2, 6), (1, 2)),
    "edge-popup": ({}, 3, (4,), (2,)),
    "edge-popup-global-gradual": ({"score_l2": 1e-3}, 3, (3, 8), (1,)),
    "imp": ({"rounds": 3, "rewind": "4it"}, 2, (2, 6, 13), (1, 2, 5)),
    "lr-rewinding": ({"rounds": 2}, 2, (7,), (2,)),
}


def context(name: str, epochs: int, checkpoint: Checkpoint | None = None) -> PruneContext:
    spec = METHODS.get(name)
    torch.manual_seed(0)
    model = init_weights(UserNet(), spec.default_init, seed=0)
    return PruneContext(
        model=model,
        density=0.2,
        train_batches=train_loader(),
        device=CPU,
        epochs=epochs,
        batch_size=16,
        optim=OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
        seed=3,
        eval_batches={"test": BatchLoader(separable_arrays(24, seed=5), batch_size=16, **NORM)},
        calibration_batches=BatchLoader(
            separable_arrays(48), batch_size=16, train=True, seed=2, augmentation="none", **NORM
        ),
        checkpoint=checkpoint,
    )


def run(name: str, ctx: PruneContext):
    spec = METHODS.get(name)
    return spec.run(ctx, spec.build_settings(CASES[name][0]))


def assert_same_result(a, b) -> None:
    assert a.mask.keys() == b.mask.keys()
    assert all(torch.equal(a.mask[k], b.mask[k]) for k in a.mask)
    for x, y in ((a.scores, b.scores), (a.weights, b.weights)):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert a.iterations_to_mask == b.iterations_to_mask
    assert drop_seconds(a.history) == drop_seconds(b.history)


@pytest.fixture(scope="module")
def uninterrupted():
    return {name: run(name, context(name, case[1])) for name, case in CASES.items()}


@pytest.mark.parametrize(
    "name, step", [(name, step) for name, case in CASES.items() for step in case[2]]
)
def test_stopped_training_continues_to_the_same_result(name, step, uninterrupted, tmp_path):
    epochs, path = CASES[name][1], tmp_path / "ck.pt"
    polls = itertools.count(1)
    stopping = Checkpoint(path, {"run": name}, should_stop=lambda: next(polls) >= step)
    with pytest.raises(TrainingInterrupted):
        run(name, context(name, epochs, stopping))
    assert torch.load(path, weights_only=True)["progress"]["steps"] == (step - 1) % 3 + 1
    torch.manual_seed(99)
    resumed = run(name, context(name, epochs, Checkpoint(path, {"run": name})))
    assert_same_result(resumed, uninterrupted[name])


@pytest.mark.parametrize(
    "name, epoch", [(name, epoch) for name, case in CASES.items() for epoch in case[3]]
)
def test_killed_training_continues_to_the_same_result(name, epoch, uninterrupted, tmp_path):
    """The checkpoint is copied as it was after ``epoch`` (what a SIGKILL right then leaves)."""
    epochs, path, killed = CASES[name][1], tmp_path / "ck.pt", tmp_path / "killed.pt"
    ctx = context(name, epochs, Checkpoint(path, {"run": name}))

    def copy_after(record: dict) -> None:
        if record["epoch"] == epoch:
            shutil.copy(path, killed)

    ctx.on_epoch = copy_after
    assert_same_result(run(name, ctx), uninterrupted[name])  # checkpointing changes nothing
    state = torch.load(killed, weights_only=True)
    assert len(state["history"]) == epoch and state["progress"] is None
    torch.manual_seed(99)
    resumed = run(name, context(name, epochs, Checkpoint(killed, {"run": name})))
    assert_same_result(resumed, uninterrupted[name])


def test_finetuning_stopped_mid_epoch_continues_to_the_same_weights(tmp_path):
    def model():
        torch.manual_seed(0)
        return UserNet()

    g = torch.Generator().manual_seed(1)
    mask = Mask(
        {n: torch.rand(w.shape, generator=g) < 0.3 for n, w in prunable_weights(model()).items()}
    )
    cfg = FinetuneConfig(epochs=2, batch_size=16, optim=OptimConfig(lr=0.05, momentum=0.9))
    reference = model()
    expected = finetune(reference, mask, train_loader(), cfg, CPU)
    polls = itertools.count(1)
    stopping = Checkpoint(tmp_path / "ck.pt", should_stop=lambda: next(polls) >= 4)
    with pytest.raises(TrainingInterrupted):
        finetune(model(), mask, train_loader(), cfg, CPU, checkpoint=stopping)
    resumed = model()
    history = finetune(
        resumed, mask, train_loader(), cfg, CPU, checkpoint=Checkpoint(tmp_path / "ck.pt")
    )
    assert drop_seconds(history) == drop_seconds(expected)
    for a, b in zip(resumed.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_a_model_without_prunable_layers_is_refused_before_training():
    ctx = context("edge-popup", 1)
    ctx.model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(3 * 8 * 8))
    with pytest.raises(MaskError, match="no Conv2d or Linear"):
        run("edge-popup", ctx)


def test_start_clock_reads_the_checkpoint_only_if_it_changed_since_it_was_loaded(
    tmp_path, monkeypatch
):
    """Planning a resumed stage loads the checkpoint already; starting its clock does not
    read the file again, unless it was rewritten since."""
    import gemminer.rundir.files as files_module

    path = tmp_path / "ck.pt"
    Checkpoint(path, {"a": 1}).save({"history": [{"seconds": 5.0}], "seconds": 9.0})
    real = files_module.safe_torch_load
    reads = []
    monkeypatch.setattr(files_module, "safe_torch_load", lambda p: reads.append(p) or real(p))
    ck = Checkpoint(path, {"a": 1})
    assert ck.load()["seconds"] == 9.0 and len(reads) == 1
    ck.start_clock()
    assert len(reads) == 1 and 9.0 <= ck.elapsed() < 60.0
    Checkpoint(path, {"a": 1}).save({"history": [], "seconds": 500.0})  # rewritten
    ck.start_clock()
    assert len(reads) == 2 and 500.0 <= ck.elapsed() < 560.0
    other = Checkpoint(path, {"a": 2})  # other settings: loaded once, counts from zero
    assert other.load() is None
    other.start_clock()
    assert len(reads) == 3 and other.elapsed() < 60.0
    path.unlink()
    ck.start_clock()  # the file is gone: from zero, nothing read
    assert len(reads) == 3 and ck.elapsed() < 60.0
