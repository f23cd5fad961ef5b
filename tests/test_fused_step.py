"""The mining and finetune steps as a dense step plus a few multi-tensor kernels
(:class:`gemminer.masking.scores.FusedScores`, :class:`gemminer.training.MaskedWeights`)."""

import copy
from collections import Counter

import pytest
import torch
from torch import nn

from gemminer import create_model
from gemminer.masking import Mask, init_weights, prunable_weights, score_layers, to_score_model
from gemminer.masking.scores import FusedScores
from gemminer.methods.gem_miner import MineConfig, MiningStep, freeze_scores
from gemminer.settings.config import OptimConfig
from gemminer.training import MaskedWeights
from gemminer.training.runtime import Runtime

from .conftest import benchmark_script

CPU = torch.device("cpu")


def _resnet20(seed: int = 0) -> nn.Module:
    model = init_weights(create_model("resnet20"), "signed_constant", seed=seed)
    model = to_score_model(model, torch.Generator().manual_seed(seed))
    return model.to(memory_format=torch.channels_last)


def _unfused(model: nn.Module) -> nn.Module:
    """``model`` with its FusedScores hooks removed: every layer computes its own weight."""
    model._forward_pre_hooks.clear()
    model._forward_hooks.clear()
    return model


def _batches(n: int, size: int = 16, seed: int = 0, device: torch.device = CPU) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 3, size, size, generator=g)
            .to(device)
            .contiguous(memory_format=torch.channels_last),
            torch.randint(0, 10, (8,), generator=g).to(device),
        )
        for _ in range(n)
    ]


def mine_steps(
    model: nn.Module, batches: list, precision: str, check_sync: bool = False
) -> list[torch.Tensor]:
    """Gem-Miner's steps on ``batches`` with a freeze after the third; the losses.
    ``check_sync`` (CUDA): any host synchronisation in a step after the first raises."""
    cfg = MineConfig(density=0.1, epochs=1, period=1, lam=1e-3, optim=OptimConfig(lr=0.5))
    step = MiningStep(model, cfg)
    runtime, losses = Runtime(precision=precision), []
    for i, (x, y) in enumerate(batches):
        if check_sync and i > 0:  # the first step builds the fused plan
            torch.cuda.set_sync_debug_mode("error")
        try:
            with runtime.autocast(x.device):
                loss = nn.functional.cross_entropy(model(x), y)
            step.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step.optimizer.step()
            step.after_step()
        finally:
            if check_sync:
                torch.cuda.set_sync_debug_mode("default")
        if i == 2:  # a freeze between steps: w ⊙ q must follow
            freeze_scores(model, 20_000)
        losses.append(loss.detach())
    return losses


def assert_same_mining(
    fused: nn.Module, alone: nn.Module, batches: list, precision: str, exact: bool = True
):
    """The fused model and the per-layer one take bit-identical steps (``exact``), or, on a
    GPU, where the kernels a library picks may depend on where a weight lies in memory,
    steps equal to float tolerance with at most 0.1 % of the flags apart."""
    a, b = mine_steps(fused, batches, precision), mine_steps(alone, batches, precision)
    pairs = list(zip(score_layers(fused).items(), score_layers(alone).values()))
    if exact:
        assert torch.equal(torch.stack(a), torch.stack(b))
        for (name, x), y in pairs:
            assert torch.equal(x.scores, y.scores), name
            assert torch.equal(x.flags, y.flags), name
    else:
        assert torch.allclose(torch.stack(a), torch.stack(b), rtol=1e-3, atol=1e-4)
        apart = sum(int((x.flags != y.flags).sum()) for (_, x), y in pairs)
        assert apart <= 0.001 * sum(x.flags.numel() for (_, x), _ in pairs)
        for (name, x), y in pairs:
            both = (x.flags * y.flags).bool()
            assert torch.allclose(x.scores[both], y.scores[both], atol=1e-3), name
    assert any(int(m.flags.sum()) < m.flags.numel() for m in score_layers(fused).values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_mining_steps_equal_the_per_layer_ones_bit_for_bit(precision):
    assert_same_mining(_resnet20(), _unfused(_resnet20()), _batches(6), precision)


def test_layers_get_views_of_one_tensor_and_score_grads_share_one_buffer():
    model = _resnet20()
    seen = {}

    def record(module, args):
        seen[module] = module.current_weight()

    layers = score_layers(model)
    handles = [m.register_forward_pre_hook(record) for m in layers.values()]
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    for h in handles:
        h.remove()
    storages = {w.untyped_storage().data_ptr() for w in seen.values()}
    assert len(storages) == 1 and len(seen) == len(layers)
    for name, m in layers.items():  # same layout as the weight: no copy into the conv
        assert seen[m].stride() == m.weight.stride(), name
        assert m.scores.grad.stride() == m.scores.stride(), name
    assert len({m.scores.grad.untyped_storage().data_ptr() for m in layers.values()}) == 1
    # the views are dropped after the forward pass, so the model still copies
    assert all("_fused_weight" not in m.__dict__ for m in layers.values())
    copy.deepcopy(model)


def test_bf16_autocast_casts_all_weights_at_once():
    model = _resnet20()
    layer = score_layers(model)["conv1"]
    seen = []
    layer.register_forward_pre_hook(lambda m, a: seen.append(m.current_weight()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 16, 16))
    assert seen[0].dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(seen[0], layer.effective_weight().to(torch.bfloat16))


def test_a_failed_forward_leaves_no_views_behind():
    model = _resnet20()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 16, 16))  # wrong number of channels
    assert all("_fused_weight" not in m.__dict__ for m in score_layers(model).values())
    copy.deepcopy(model)


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).double())


def test_layers_of_different_dtypes_work_on_their_own():
    model = to_score_model(_Mixed())
    model.b.double()
    x = torch.randn(5, 4)
    out = model(x)
    assert FusedScores.attach(model).plan().masked is None
    a, b = model.a, model.b
    hidden = nn.functional.linear(x, a.effective_weight(), a.bias).double()
    assert torch.equal(out, nn.functional.linear(hidden, b.effective_weight(), b.bias))
    out.sum().backward()
    assert a.scores.grad is not None and b.scores.grad.dtype == torch.float64


def test_attach_is_idempotent_and_follows_new_layers():
    model = to_score_model(nn.Sequential(nn.Linear(4, 3)))
    to_score_model(model)
    assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
    model.append(nn.Linear(3, 2))
    to_score_model(model)
    fused = FusedScores.attach(model)
    assert len(fused.layers) == 2 and len(model._forward_pre_hooks) == 1


def _step_operators(model: nn.Module, params: list, before=None, after=None, precision="fp32"):
    """Operators of one step (an epoch of two steps less an epoch of one)."""
    throughput = benchmark_script("throughput")
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=2e-4, foreach=True)
    setup = throughput.Setup(model, optimizer, Runtime(precision=precision), CPU, before, after)
    batches = _batches(2)
    setup.epoch(batches)  # warm-up
    return throughput.operators_per_step(setup, batches)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_mining_step_is_a_dense_step_plus_a_few_operators(precision):
    """Mining adds a fixed handful of operators to the dense step, not a few per layer:
    the scores' concatenation, rounding and selection, the gradients' concatenation and
    straight-through product, and the projection's three multi-tensor operators."""
    dense = init_weights(create_model("resnet20"), "signed_constant", seed=0)
    dense.to(memory_format=torch.channels_last)
    mined = _resnet20()
    cfg = MineConfig(density=0.1, epochs=1, period=1, lam=1e-4, optim=OptimConfig(lr=0.1))
    step = MiningStep(mined, cfg)
    weights = [p for p in dense.parameters() if p.requires_grad]
    n_dense = _step_operators(dense, weights, precision=precision)
    n_mining = _step_operators(
        mined, step.scores, step.before_step, step.after_step, precision=precision
    )
    print(f"{precision}: operators per step: dense {n_dense}, mining {n_mining}")
    layers = len(score_layers(mined))
    assert layers == 20
    assert n_mining <= n_dense + 10 < n_dense + layers


def test_a_finetune_step_masks_with_two_multi_tensor_operators():
    model = init_weights(create_model("resnet20"), "signed_constant", seed=0)
    model.to(memory_format=torch.channels_last)
    plain = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    mask = Mask(
        {n: torch.rand(w.shape, generator=g) < 0.1 for n, w in prunable_weights(model).items()}
    )
    masked = MaskedWeights(model, mask)
    n_plain = _step_operators(plain, list(plain.parameters()))
    n_masked = _step_operators(
        model, list(model.parameters()), masked.mask_gradients, masked.enforce
    )
    print(f"operators per step: dense {n_plain}, finetune {n_masked}")
    assert n_masked == n_plain + 2
    for name, w in prunable_weights(model).items():
        assert not w[~mask[name]].any(), name


def test_masked_weights_keep_pruned_weights_and_their_momentum_at_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2))
    model.to(memory_format=torch.channels_last)
    mask = Mask({n: torch.rand(w.shape) < 0.5 for n, w in prunable_weights(model).items()})
    masked = MaskedWeights(model, mask)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).sum().backward()
        masked.mask_gradients()
        for name, w in prunable_weights(model).items():
            assert not w.grad[~mask[name]].any(), name
        opt.step()
        masked.enforce()
    for name, w in prunable_weights(model).items():
        assert not w[~mask[name]].any() and w[mask[name]].all(), name
        assert not opt.state[w]["momentum_buffer"][~mask[name]].any(), name


def test_training_works_after_an_evaluation_under_inference_mode():
    """The kept w ⊙ q (fused and per layer) made during an evaluation under
    torch.inference_mode is usable by training afterwards."""
    from gemminer.training.loop import evaluate

    for model in (_resnet20(), _unfused(_resnet20())):
        batches = _batches(2)
        stats = evaluate(model, batches, CPU)
        assert 0 <= stats.accuracy <= 1 and stats.samples == 16
        model.train()
        x, y = batches[0]
        nn.functional.cross_entropy(model(x), y).backward()
        assert all(m.scores.grad is not None for m in score_layers(model).values())


def _step_operator_names(setup, batches) -> Counter:
    throughput = benchmark_script("throughput")
    setup.epoch(batches)  # warm-up
    return throughput.operators(lambda: setup.epoch(batches[:2])) - throughput.operators(
        lambda: setup.epoch(batches[:1])
    )


def test_mining_and_finetune_steps_never_wait_for_the_host():
    """No operator inside a step reads a value back (.item(), bool(tensor)): on a GPU the
    host never waits for the device until the epoch ends."""
    throughput = benchmark_script("throughput")
    cfg = MineConfig(density=0.1, epochs=1, period=1, lam=1e-4, optim=OptimConfig(lr=0.1))
    setups = throughput.build(CPU, Runtime(), "conv4", cfg)
    reads = {"aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal"}
    for name, setup in setups.items():
        ops = _step_operator_names(setup, _batches(2, size=32))
        assert sum(ops.values()) > 20, name
        assert not reads & set(ops), (name, reads & set(ops))


def test_evaluation_batches_are_large_on_a_gpu():
    from gemminer.data import DataSplits
    from gemminer.stages.assemble import EVAL_BATCH, EVAL_BATCH_GPU, eval_batch_size

    from .conftest import separable_arrays

    arrays = separable_arrays(12)
    splits = DataSplits("tiny", arrays, arrays, (0.5,) * 3, (0.25,) * 3)
    assert eval_batch_size(splits, "cuda:1") == EVAL_BATCH_GPU == 2000
    assert eval_batch_size(splits, CPU) == EVAL_BATCH == 500
