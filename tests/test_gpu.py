"""On a CUDA GPU: the fused mining step, no host synchronisation inside a step, a whole
run from the command line. Marked ``gpu``: skipped on machines without CUDA (every other
test runs on the CPU, also on a GPU machine)."""

import json

import pytest
import torch
from torch import nn

from gemminer import create_model
from gemminer.cli import main
from gemminer.config import MineConfig, OptimConfig
from gemminer.masking import init_weights, score_layers, to_score_model
from gemminer.methods.gem_miner import MiningStep, freeze_scores
from gemminer.training.runtime import Runtime, auto_precision

from .conftest import write_image_folder

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture
def deterministic():
    """cuDNN's deterministic algorithms, so that two equal computations give equal bits."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def _model(fused: bool) -> nn.Module:
    model = init_weights(create_model("resnet20"), "signed_constant", seed=0)
    model = to_score_model(model, torch.Generator().manual_seed(0))
    if not fused:
        model._forward_pre_hooks.clear()
        model._forward_hooks.clear()
    return model.to(device=CUDA, memory_format=torch.channels_last)


def _steps(model: nn.Module, precision: str, sync_check: bool = False) -> list[torch.Tensor]:
    cfg = MineConfig(density=0.1, epochs=1, period=1, lam=1e-3, optim=OptimConfig(lr=0.5))
    step = MiningStep(model, cfg)
    runtime = Runtime(precision=precision)
    g = torch.Generator(device=CUDA).manual_seed(0)
    losses = []
    for i in range(6):
        x = torch.randn(32, 3, 32, 32, device=CUDA, generator=g)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (32,), device=CUDA, generator=g)
        if sync_check and i > 0:  # the first step builds the plan
            torch.cuda.set_sync_debug_mode("error")
        try:
            with runtime.autocast(CUDA):
                loss = nn.functional.cross_entropy(model(x), y)
            step.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step.optimizer.step()
            step.after_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        losses.append(loss.detach())
        if i == 2:
            freeze_scores(model, 20_000)
    return losses


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_mining_on_cuda_equals_the_per_layer_steps(deterministic, precision):
    fused, alone = _model(True), _model(False)
    a, b = _steps(fused, precision), _steps(alone, precision)
    assert torch.equal(torch.stack(a), torch.stack(b))
    for (name, x), y in zip(score_layers(fused).items(), score_layers(alone).values()):
        assert torch.equal(x.scores, y.scores), name
        assert torch.equal(x.flags, y.flags), name


def test_a_mining_step_on_cuda_never_synchronizes_with_the_host():
    _steps(_model(True), "fp32", sync_check=True)  # raises on any synchronisation


def test_auto_picks_fp32_on_cuda_and_a_run_goes_through(tmp_path, capsys):
    assert auto_precision("cuda")[0] == "fp32"
    write_image_folder(tmp_path / "data", n_train=64, n_test=16, size=32)
    out = tmp_path / "run"
    argv = ["mine", "--data-dir", str(tmp_path / "data"), "--no-download", "--epochs", "2"]
    argv += ["--batch-size", "16", "--device", "cuda", "--finetune", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "fp32 (auto: measured faster than bf16 on CUDA)" in printed.out + printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "fp32" and summary["post_finetune_acc"] is not None
