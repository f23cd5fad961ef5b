"""On a CUDA GPU: the fused mining step, no host synchronisation inside a step, a whole
run from the command line. Marked ``gpu``: skipped on machines without CUDA (every other
test runs on the CPU, also on a GPU machine)."""

import json

import pytest
import torch
from torch import nn

from gemminer import create_model
from gemminer.cli import main
from gemminer.masking import init_weights, to_score_model
from gemminer.training.runtime import auto_precision

from .conftest import write_image_folder
from .test_fused_step import _batches, assert_same_mining, mine_steps

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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_mining_on_cuda_equals_the_per_layer_steps(deterministic, precision):
    batches = _batches(6, size=32, device=CUDA)
    assert_same_mining(_model(True), _model(False), batches, precision, exact=False)


def test_a_mining_step_on_cuda_never_synchronizes_with_the_host():
    mine_steps(_model(True), _batches(4, size=32, device=CUDA), "fp32", check_sync=True)


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
