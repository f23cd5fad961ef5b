"""SNIP, GraSP and SynFlow through the registry: hand-computed scores, masks, settings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gemminer.methods.grasp  # noqa: F401  (registers "grasp")
import gemminer.methods.snip  # noqa: F401  (registers "snip")
import gemminer.methods.synflow  # noqa: F401  (registers "synflow")
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError
from gemminer.masking import count_prunable
from gemminer.masking.threshold import global_mask
from gemminer.methods import METHODS
from gemminer.methods.base import PruneContext

CPU = torch.device("cpu")
SALIENCY = ("snip", "grasp", "synflow")

# A purely linear two-layer network f(x) = W2 W1 x with two classes, set by hand (float64,
# so the closed forms below can be compared tightly).
W1 = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
W2 = torch.tensor([[1.0, -0.4], [-0.7, 1.5]], dtype=torch.float64)
BATCH_A = (
    torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]], dtype=torch.float64),
    torch.tensor([0, 1, 1]),
)
BATCH_B = (
    torch.tensor([[0.2, -0.6], [1.5, 1.0]], dtype=torch.float64),
    torch.tensor([1, 0]),
)
NAMES = ("0.weight", "1.weight")


def linear_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(W1)
        net[1].weight.copy_(W2)
    return net


def run(name: str, model: nn.Module, data, density: float = 0.5, **settings):
    spec = METHODS.get(name)
    ctx = PruneContext(model=model, density=density, train_batches=data, device=CPU)
    return spec.run(ctx, spec.build_settings(settings))


def one_hot(y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, 2).double()


def loss_grads(x, y, t=1.0):
    """∂L/∂W1, ∂L/∂W2 of the mean cross-entropy of logits W2 W1 x / t, in closed form.

    With u = W2 W1 x / t, p = softmax(u), δ = (p − e_y)/N: ∂L/∂W2 = Σ (δ/t) hᵀ with h = W1 x,
    and ∂L/∂W1 = Σ W2ᵀ (δ/t) xᵀ.
    """
    h = x @ W1.T
    p = torch.softmax(h @ W2.T / t, dim=1)
    d = (p - one_hot(y)) / len(y) / t
    return (d @ W2).T @ x, d.T @ h


def hessian_times(x, y, v1, v2, t):
    """H·v of the same loss for the direction v = (v1, v2), by differentiating the closed form.

    du = (V2 h + W2 V1 x)/t, dδ = (diag p − p pᵀ) du / N, and
    d(∂L/∂W2) = Σ (dδ/t) hᵀ + (δ/t)(V1 x)ᵀ, d(∂L/∂W1) = Σ V2ᵀ(δ/t) xᵀ + W2ᵀ(dδ/t) xᵀ.
    """
    n = len(y)
    h = x @ W1.T
    p = torch.softmax(h @ W2.T / t, dim=1)
    d = (p - one_hot(y)) / n
    du = (h @ v2.T + x @ v1.T @ W2.T) / t
    dd = (p * du - p * (p * du).sum(1, keepdim=True)) / n
    hv1 = ((d / t) @ v2).T @ x + ((dd / t) @ W2).T @ x
    hv2 = (dd / t).T @ h + (d / t).T @ (x @ v1.T)
    return hv1, hv2


# --- hand-computed scores --------------------------------------------------------------------


@pytest.mark.parametrize("batches", [[BATCH_A], [BATCH_A, BATCH_B]])
def test_snip_scores_by_hand(batches):
    g1 = sum(loss_grads(*b)[0] for b in batches)
    g2 = sum(loss_grads(*b)[1] for b in batches)
    result = run("snip", linear_net(), batches, batches=len(batches))
    assert torch.allclose(result.scores["0.weight"], (g1 * W1).abs(), rtol=1e-9, atol=0)
    assert torch.allclose(result.scores["1.weight"], (g2 * W2).abs(), rtol=1e-9, atol=0)
    assert result.iterations_to_mask == len(batches)
    assert result.epochs_to_mask == pytest.approx(1.0)


@pytest.mark.parametrize("t", [1.0, 200.0])
@pytest.mark.parametrize("batches", [[BATCH_A], [BATCH_A, BATCH_B]])
def test_grasp_scores_by_hand(batches, t):
    g1 = sum(loss_grads(*b, t=t)[0] for b in batches)
    g2 = sum(loss_grads(*b, t=t)[1] for b in batches)
    hg1 = sum(hessian_times(*b, g1, g2, t)[0] for b in batches)
    hg2 = sum(hessian_times(*b, g1, g2, t)[1] for b in batches)
    result = run("grasp", linear_net(), batches, batches=len(batches), temperature=t)
    # stored: w ⊙ Hg = −(the paper's score −w ⊙ Hg), so that higher = keep
    assert torch.allclose(result.scores["0.weight"], W1 * hg1, rtol=1e-7, atol=0)
    assert torch.allclose(result.scores["1.weight"], W2 * hg2, rtol=1e-7, atol=0)
    assert (W1 * hg1).abs().min() > 0  # a test of the values, not of zeros


def test_grasp_removes_largest_paper_score():
    """The paper removes the largest −w ⊙ Hg: the kept weights have the smallest ones."""
    g1, g2 = loss_grads(*BATCH_A, t=200.0)
    hg1, hg2 = hessian_times(*BATCH_A, g1, g2, 200.0)
    paper = torch.cat([(-W1 * hg1).flatten(), (-W2 * hg2).flatten()])
    result = run("grasp", linear_net(), [BATCH_A], density=0.25)
    kept = torch.cat([result.mask[n].flatten() for n in NAMES])
    assert kept.sum() == 2
    assert set(torch.nonzero(kept).flatten().tolist()) == set(paper.argsort()[:2].tolist())


def synflow_scores(w1, w2, mask1, mask2):
    """|∂R/∂w ⊙ w| for R = 1ᵀ|W2||W1|1 with pruned weights zero (all-ones input).

    ∂R/∂|W2|ᵢⱼ = (|W1|1)ⱼ and ∂R/∂|W1|ⱼₖ = (1ᵀ|W2|)ⱼ.
    """
    a1, a2 = w1.abs() * mask1, w2.abs() * mask2
    s1 = a1 * a2.sum(0)[:, None]
    s2 = a2 * a1.sum(1)[None, :]
    return s1, s2


def test_synflow_one_round_scores_by_hand():
    s1, s2 = synflow_scores(W1, W2, torch.ones(2, 2), torch.ones(2, 2))
    top = max(s1.max(), s2.max())
    result = run("synflow", linear_net(), [BATCH_A], iterations=1)
    # scores are divided by their maximum before thresholding
    assert torch.allclose(result.scores["0.weight"].double(), s1 / top, rtol=1e-6, atol=0)
    assert torch.allclose(result.scores["1.weight"].double(), s2 / top, rtol=1e-6, atol=0)
    assert result.epochs_to_mask == 0 and result.iterations_to_mask == 1


def test_synflow_iterative_rounds_by_hand():
    """Two rounds to density 1/4 of 8 weights: keep 4 (density 1/2), then 2 among them.

    These weights make one-shot scoring keep two weights of the first layer and none of
    the second (layer collapse); the two rounds keep a connected path, as SynFlow intends.
    """
    w1 = torch.tensor([[-1.9, 0.4], [-0.3, -1.1]], dtype=torch.float64)
    w2 = torch.tensor([[0.6, 0.9], [0.7, 1.4]], dtype=torch.float64)
    mask1, mask2 = torch.ones(2, 2), torch.ones(2, 2)
    for keep in (4, 2):
        s1, s2 = synflow_scores(w1, w2, mask1, mask2)
        alive = torch.cat([mask1.flatten(), mask2.flatten()]).bool()
        flat = torch.where(alive, torch.cat([s1.flatten(), s2.flatten()]), -1.0)
        kept = torch.zeros(8, dtype=torch.bool)
        kept[flat.topk(keep).indices] = True
        mask1, mask2 = kept[:4].view(2, 2), kept[4:].view(2, 2)
    assert mask1.sum() == 1 and mask2.sum() == 1
    net = linear_net()
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[1].weight.copy_(w2)
    # with input_shape given, SynFlow needs no data at all
    result = run("synflow", net, [], density=0.25, iterations=2, input_shape=(2,))
    assert torch.equal(result.mask["0.weight"], mask1)
    assert torch.equal(result.mask["1.weight"], mask2)
    assert result.iterations_to_mask == 2
    one_shot = run("synflow", net, [], density=0.25, iterations=1, input_shape="2")
    assert one_shot.mask["1.weight"].sum() == 0


# --- BatchNorm mode (SNIP and GraSP score in eval mode, as Synaptic-Flow) --------------------

# Linear(2→2) → BatchNorm1d(2) → Linear(2→2), with non-trivial running statistics and affine
# parameters, so eval mode (running statistics) and train mode (batch statistics) differ.
BN_MEAN = torch.tensor([0.3, -0.2], dtype=torch.float64)
BN_VAR = torch.tensor([2.0, 0.5], dtype=torch.float64)
BN_GAMMA = torch.tensor([1.5, 0.8], dtype=torch.float64)
BN_BETA = torch.tensor([0.1, -0.3], dtype=torch.float64)
BN_NAMES = ("0.weight", "2.weight")


def bn_net() -> nn.Sequential:
    net = nn.Sequential(
        nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 2, bias=False)
    ).double()
    with torch.no_grad():
        net[0].weight.copy_(W1)
        net[1].running_mean.copy_(BN_MEAN)
        net[1].running_var.copy_(BN_VAR)
        net[1].weight.copy_(BN_GAMMA)
        net[1].bias.copy_(BN_BETA)
        net[2].weight.copy_(W2)
    return net


def eval_bn_affine() -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as z = a ⊙ h + c, from the running statistics."""
    a = BN_GAMMA / torch.sqrt(BN_VAR + 1e-5)
    return a, BN_BETA - a * BN_MEAN


def eval_snip_grads(x, y):
    """∂L/∂W1, ∂L/∂W2 of the mean cross-entropy of W2 (a ⊙ W1 x + c), in closed form.

    With z = a ⊙ h + c, h = W1 x, δ = (softmax(W2 z) − e_y)/N: ∂L/∂W2 = Σ δ zᵀ and
    ∂L/∂W1 = Σ (a ⊙ W2ᵀ δ) xᵀ.
    """
    a, c = eval_bn_affine()
    z = (x @ W1.T) * a + c
    d = (torch.softmax(z @ W2.T, dim=1) - one_hot(y)) / len(y)
    return ((d @ W2) * a).T @ x, d.T @ z


def eval_grasp_scores(batches, t):
    """w ⊙ Hg with BatchNorm replaced by its eval-mode affine map (a network without BN)."""
    a, c = eval_bn_affine()
    w1, w2 = W1.clone().requires_grad_(True), W2.clone().requires_grad_(True)

    def loss(x, y):
        return F.cross_entropy((((x @ w1.T) * a + c) @ w2.T) / t, y)

    g = [torch.zeros(2, 2, dtype=torch.float64) for _ in range(2)]
    for x, y in batches:
        for acc, gi in zip(g, torch.autograd.grad(loss(x, y), (w1, w2))):
            acc += gi
    hg = [torch.zeros(2, 2, dtype=torch.float64) for _ in range(2)]
    for x, y in batches:
        grads = torch.autograd.grad(loss(x, y), (w1, w2), create_graph=True)
        dot = sum((gs * gi).sum() for gs, gi in zip(g, grads))
        for acc, h in zip(hg, torch.autograd.grad(dot, (w1, w2))):
            acc += h
    return W1 * hg[0], W2 * hg[1]


def bn_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("batches", [[BATCH_A], [BATCH_A, BATCH_B]])
def test_snip_scores_with_batchnorm_in_eval_mode_by_hand(batches):
    g1 = sum(eval_snip_grads(*b)[0] for b in batches)
    g2 = sum(eval_snip_grads(*b)[1] for b in batches)
    net = bn_net()
    result = run("snip", net, batches, batches=len(batches))  # the default: eval mode
    assert torch.allclose(result.scores["0.weight"], (g1 * W1).abs(), rtol=1e-9, atol=0)
    assert torch.allclose(result.scores["2.weight"], (g2 * W2).abs(), rtol=1e-9, atol=0)
    explicit = run("snip", bn_net(), batches, batches=len(batches), bn_mode="eval")
    assert all(torch.equal(explicit.scores[n], result.scores[n]) for n in BN_NAMES)
    train = run("snip", bn_net(), batches, batches=len(batches), bn_mode="train")
    assert not torch.allclose(train.scores["0.weight"], result.scores["0.weight"])
    assert not torch.allclose(train.scores["2.weight"], result.scores["2.weight"])


@pytest.mark.parametrize("batches", [[BATCH_A], [BATCH_A, BATCH_B]])
def test_grasp_scores_with_batchnorm_in_eval_mode_by_hand(batches):
    s1, s2 = eval_grasp_scores(batches, 200.0)
    result = run("grasp", bn_net(), batches, batches=len(batches))  # the default: eval mode
    assert torch.allclose(result.scores["0.weight"], s1, rtol=1e-7, atol=0)
    assert torch.allclose(result.scores["2.weight"], s2, rtol=1e-7, atol=0)
    assert s1.abs().min() > 0 and s2.abs().min() > 0  # a test of the values, not of zeros
    train = run("grasp", bn_net(), batches, batches=len(batches), bn_mode="train")
    assert not torch.allclose(train.scores["0.weight"], result.scores["0.weight"])


def test_train_mode_scores_use_batch_statistics():
    """bn_mode="train" is the same network with BatchNorm normalizing by the batch."""
    x, y = BATCH_A
    net = bn_net().train()
    weights = (net[0].weight, net[2].weight)
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), weights)
    result = run("snip", bn_net(), [BATCH_A], bn_mode="train")
    for name, g, w in zip(BN_NAMES, grads, weights):
        assert torch.allclose(result.scores[name], (g * w).detach().abs(), rtol=1e-9, atol=0)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_scoring_leaves_mode_and_batchnorm_buffers_alone(name, training, bn_mode):
    net = bn_net().train(training)
    before = bn_state(net)
    run(name, net, [BATCH_A, BATCH_B], batches=2, bn_mode=bn_mode)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats included
    assert after["1.num_batches_tracked"] == 0
    assert all(m.training == training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_bn_mode_setting(name):
    spec = METHODS.get(name)
    assert spec.build_settings().bn_mode == "eval"
    assert spec.build_settings({"bn_mode": "train"}).bn_mode == "train"
    with pytest.raises(ConfigError, match="bn_mode 'batch'.*eval, train"):
        spec.build_settings({"bn_mode": "batch"})
    from gemminer.cli import parse_settings

    assert parse_settings(spec, ["bn_mode=train"]) == {"bn_mode": "train"}


# --- masks on a small conv net ---------------------------------------------------------------


def loader(data, seed: int = 0) -> BatchLoader:
    return BatchLoader(data, batch_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=seed)


@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("name", SALIENCY)
def test_mask_keeps_top_scores_at_density(name, density, user_net, tiny_data):
    settings = {"iterations": 20} if name == "synflow" else {}
    result = run(name, user_net, loader(tiny_data), density=density, **settings)
    result.mask.check(user_net)
    total = count_prunable(user_net)
    assert abs(result.mask.num_kept - density * total) <= 1
    assert set(result.scores) == set(result.mask)
    assert all(torch.isfinite(s).all() for s in result.scores.values())
    # the mask is the global top of the stored scores
    assert dict(global_mask(result.scores, density)).keys() == dict(result.mask).keys()
    for n, m in global_mask(result.scores, density).items():
        assert torch.equal(m, result.mask[n])
    kept = torch.cat([s[result.mask[n]] for n, s in result.scores.items()])
    pruned = torch.cat([s[~result.mask[n]] for n, s in result.scores.items()])
    assert kept.min() >= pruned.max()


@pytest.mark.parametrize("name", SALIENCY)
def test_model_and_loader_untouched(name, user_net, tiny_data):
    before = {k: v.clone() for k, v in user_net.state_dict().items()}
    flags = [p.requires_grad for p in user_net.parameters()]
    user_net.train()
    run(
        name,
        user_net,
        loader(tiny_data),
        density=0.1,
        **({"iterations": 5} if name == "synflow" else {}),
    )
    after = user_net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in user_net.parameters()] == flags
    assert user_net.training
    assert all(p.grad is None for p in user_net.parameters())


def test_synflow_peek_keeps_loader_order(user_net, tiny_data):
    used, fresh = loader(tiny_data, seed=3), loader(tiny_data, seed=3)
    run("synflow", user_net, used, density=0.1, iterations=2)
    for (xa, ya), (xb, yb) in zip(used, fresh):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_snip_epochs_to_mask(user_net, tiny_data):
    data = loader(tiny_data)  # 96 images / 32 = 3 batches an epoch
    result = run("snip", user_net, data, density=0.1, batches=2)
    assert result.epochs_to_mask == pytest.approx(2 / 3)
    assert result.iterations_to_mask == 2


def test_registered_with_published_defaults():
    for name in SALIENCY:
        assert METHODS.get(name).default_init == "kaiming_normal"
    assert METHODS.get("snip").build_settings().batches == 1
    grasp = METHODS.get("grasp").build_settings()
    assert (grasp.batches, grasp.temperature) == (1, 200.0)
    synflow = METHODS.get("synflow").build_settings()
    assert (synflow.iterations, synflow.input_shape, synflow.shape) == (100, "", None)
    for given in ("3,8,8", " 3x8x8 ", (3, 8, 8), [3, 8, 8]):
        shaped = METHODS.get("synflow").build_settings({"input_shape": given})
        assert (shaped.input_shape, shaped.shape) == ("3,8,8", (3, 8, 8))


# --- bad settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, values",
    [
        ("snip", {"batches": 0}),
        ("snip", {"batches": -2}),
        ("snip", {"batches": 1.5}),
        ("snip", {"batches": True}),
        ("grasp", {"batches": 0}),
        ("grasp", {"temperature": 0}),
        ("grasp", {"temperature": -1.0}),
        ("grasp", {"temperature": math.inf}),
        ("grasp", {"temperature": math.nan}),
        ("synflow", {"iterations": 0}),
        ("synflow", {"iterations": "100"}),
        ("synflow", {"input_shape": (3, 0, 8)}),
        ("synflow", {"input_shape": "3,eight,8"}),
        ("synflow", {"input_shape": "3,,8"}),
        ("synflow", {"input_shape": ()}),
        ("synflow", {"input_shape": 32}),
        ("snip", {"temperature": 1.0}),
        ("snip", {"bn_mode": "Eval"}),
        ("grasp", {"bn_mode": True}),
    ],
)
def test_bad_settings_raise_config_error(name, values):
    key = next(iter(values))
    with pytest.raises(ConfigError, match=key):
        METHODS.get(name).build_settings(values)


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_too_few_batches_is_config_error(name):
    with pytest.raises(ConfigError, match="batches=3"):
        run(name, linear_net(), [BATCH_A, BATCH_B], batches=3)


def test_synflow_without_data_or_shape_is_config_error():
    with pytest.raises(ConfigError, match="input shape"):
        run("synflow", linear_net(), [], iterations=1)


def test_settings_from_command_line_strings():
    from gemminer.cli import parse_settings

    values = parse_settings(METHODS.get("synflow"), ["iterations=5", "input_shape=3,8,8"])
    assert METHODS.get("synflow").build_settings(values).shape == (3, 8, 8)
    values = parse_settings(METHODS.get("grasp"), ["batches=2", "temperature=100"])
    assert METHODS.get("grasp").build_settings(values).temperature == 100.0
