"""benchmarks/authors_ticket_finetune.py: the authors' stored ticket as a gemminer ticket."""

import pytest
import torch

from gemminer import create_model

from .conftest import benchmark_script


def _their_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named as their ResNet-20's: weights, scores, int flags, BatchNorm
    buffers, and the classifier as a 1×1 convolution."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in create_model("resnet20", num_classes=10).state_dict().items():
        if key == "fc.weight":
            value = value.reshape(10, 64, 1, 1)
        state[key] = torch.randn(value.shape, generator=g) if value.is_floating_point() else value
        if key.endswith(".weight") and not key.startswith("bn"):
            name = key[: -len(".weight")]
            state[f"{name}.scores"] = torch.rand(value.shape, generator=g)
            state[f"{name}.flag"] = (torch.rand(value.shape, generator=g) < 0.7).int()
    return state


def test_their_ticket_becomes_our_weights_and_their_rounding_our_mask():
    module = benchmark_script("authors_ticket_finetune")
    state = _their_state()
    state["conv1.scores"][0, 0, 0, 0] = 0.5  # exactly 0.5: their rounding drops it
    state["conv1.flag"][0, 0, 0, 0] = 1
    weights, mask = module.authors_ticket(state)
    assert torch.equal(weights["fc.weight"], state["fc.weight"].reshape(10, 64))
    assert torch.equal(weights["layer2.0.bn1.running_var"], state["layer2.0.bn1.running_var"])
    expected = (state["layer3.2.conv2.scores"] > 0.5) & (state["layer3.2.conv2.flag"] != 0)
    assert torch.equal(mask["layer3.2.conv2.weight"], expected)
    assert not mask["conv1.weight"][0, 0, 0, 0]
    assert mask["fc.weight"].shape == (10, 64)
    create_model("resnet20", num_classes=10).load_state_dict(weights)  # every key, every shape


def test_their_log_gives_the_finetuning_curve_from_the_rare_gem():
    module = benchmark_script("authors_ticket_finetune")
    rows = ["epoch,test_acc_before_rounding,test_acc,regularization_loss,model_sparsity"]
    rows += [f"{e},50.0,50.0,0.3,2.0" for e in range(150)]
    rows += ["149,-1.0,74.0,0.0,1.75", "150,-1.0,73.3,0.0,1.75", "151,-1.0,74.43,0.0,1.75"]
    curve = module.their_curve("\n".join(rows) + "\n")
    assert curve == pytest.approx({0: 0.74, 1: 0.733, 2: 0.7443})


def test_their_finetune_on_the_copy_is_read_off_the_tools_table():
    module = benchmark_script("authors_ticket_finetune")
    readme = """Some text.

| finetuning epoch | 0 | 1 | 15 |
|---|---|---|---|
| on the copy | 67.67 | 66.42 | 73.85 |
| their log (exact pixels) | 74.00 | 73.30 | 76.33 |
"""
    assert module.copy_curve(readme) == pytest.approx({0: 0.6767, 1: 0.6642, 15: 0.7385})
    assert module.copy_curve("no table here") == {}


def test_own_curves_keep_gem_miners_evaluated_finetuning_epochs():
    module = benchmark_script("authors_ticket_finetune")
    per_epoch = "\n".join([
        "method,phase,epoch,loss,train_acc,test_acc,density,bound,lr,seconds",
        "gem-miner,mine,5,1.0,0.5,0.4,0.1,0.1,0.1,50",
        "gem-miner,finetune,4,1.0,0.5,,0.1,,0.01,50",
        "gem-miner,finetune,5,1.0,0.5,0.7,0.1,,0.01,50",
        '"gem-miner, seed 1, bf16",finetune,5,1.0,0.5,0.71,0.1,,0.01,50',
        "smart-ratio,finetune,5,1.0,0.5,0.6,0.1,,0.01,50",
    ])  # fmt: skip
    curves = module.own_curves(per_epoch)
    assert curves == {"gem-miner": {5: 0.7}, "gem-miner, seed 1, bf16": {5: 0.71}}
    assert module.mean_difference({0: 0.5, 5: 0.7}, {0: 0.1, 5: 0.6, 6: 0.2}, [0, 5, 6]) == (
        "+10.00 points over 1 epochs"
    )


def test_the_unfinished_run_travels_with_its_record_of_their_ticket(tmp_path):
    module = benchmark_script("authors_ticket_finetune")
    run, carry = tmp_path / "runs" / "authors", tmp_path / "carry"
    run.mkdir(parents=True)
    for name in ("config.json", "checkpoint-finetune.pt", "authors_ticket.json", "big.log"):
        (run / name).write_text("x")
    module.main(["--authors-repo", "r", "--out", str(run), "--carry", str(carry), "--carry-out"])
    carried = sorted(p.name for p in (carry / "authors").iterdir())
    assert carried == ["authors_ticket.json", "checkpoint-finetune.pt", "config.json"]
