"""ProsPr against meta-gradients written out by hand on a tiny linear network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gemminer.errors import ConfigError
from gemminer.methods import METHODS
from gemminer.methods.base import PruneContext
from gemminer.methods.prospr import ProsprSettings, meta_gradient

CPU = torch.device("cpu")

# f(x) = B A x + b, two classes, float64 so closed forms compare tightly. The bias is not
# prunable but is trained in the inner loop, as every parameter is.
A0 = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
B0 = torch.tensor([[1.0, -0.4], [-0.7, 1.5]], dtype=torch.float64)
b0 = torch.tensor([0.2, -0.1], dtype=torch.float64)
BATCH_A = (
    torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]], dtype=torch.float64),
    torch.tensor([0, 1, 1]),
)
BATCH_B = (
    torch.tensor([[0.2, -0.6], [1.5, 1.0]], dtype=torch.float64),
    torch.tensor([1, 0]),
)
LR = 0.5


def net() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(A0)
        model[1].weight.copy_(B0)
        model[1].bias.copy_(b0)
    return model


def grad(z, batch):
    """∇L at z = (A, B, b) of the mean cross-entropy of U = X Aᵀ Bᵀ + b.

    With P = softmax(U), D = (P − Y)/N and H = X Aᵀ: ∂L/∂A = Bᵀ Dᵀ X, ∂L/∂B = Dᵀ H,
    ∂L/∂b = Σ_n D_n.
    """
    a, b_, c = z
    x, y = batch
    h = x @ a.T
    p = torch.softmax(h @ b_.T + c, dim=1)
    d = (p - nn.functional.one_hot(y, 2).double()) / len(y)
    return (b_.T @ d.T @ x, d.T @ h, d.sum(0))


def hess(z, batch, v):
    """H(z)·v for v = (V_A, V_B, v_b), by differentiating :func:`grad` along v.

    dU = X V_Aᵀ Bᵀ + H V_Bᵀ + v_b, dP_n = p_n ⊙ du_n − p_n (p_n · du_n), dD = dP/N;
    d∂L/∂A = V_Bᵀ Dᵀ X + Bᵀ dDᵀ X, d∂L/∂B = dDᵀ H + Dᵀ X V_Aᵀ, d∂L/∂b = Σ_n dD_n.
    """
    a, b_, c = z
    va, vb, vc = v
    x, y = batch
    n = len(y)
    h = x @ a.T
    p = torch.softmax(h @ b_.T + c, dim=1)
    d = (p - nn.functional.one_hot(y, 2).double()) / n
    du = x @ va.T @ b_.T + h @ vb.T + vc
    dd = (p * du - p * (p * du).sum(1, keepdim=True)) / n
    return (vb.T @ d.T @ x + b_.T @ dd.T @ x, dd.T @ h + d.T @ x @ va.T, dd.sum(0))


def axpy(z, alpha, v):
    return tuple(zi + alpha * vi for zi, vi in zip(z, v))


def as_mask_grads(v) -> dict[str, torch.Tensor]:
    """dθ₀/dc = diag(w) on the prunable weights (the bias has no mask)."""
    return {"0.weight": v[0] * A0, "1.weight": v[1] * B0}


def meta(steps: int, **settings) -> dict[str, torch.Tensor]:
    batches = settings.pop("batches", [BATCH_A])
    return meta_gradient(
        net().train(), batches, ProsprSettings(steps=steps, inner_lr=LR, **settings)
    )


def assert_close(found, expected):
    assert set(found) == set(expected)
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=1e-10, atol=1e-12)


Z0 = (A0, B0, b0)


def test_one_step_meta_gradient_by_hand():
    z1 = axpy(Z0, -LR, grad(Z0, BATCH_A))
    v = grad(z1, BATCH_A)
    u0 = axpy(v, -LR, hess(Z0, BATCH_A, v))  # (I − ηH₀) ∇L(θ₁)
    assert_close(meta(1), as_mask_grads(u0))


def test_two_step_meta_gradient_by_hand():
    z1 = axpy(Z0, -LR, grad(Z0, BATCH_A))
    z2 = axpy(z1, -LR, grad(z1, BATCH_A))
    v = grad(z2, BATCH_A)
    u1 = axpy(v, -LR, hess(z1, BATCH_A, v))
    u0 = axpy(u1, -LR, hess(Z0, BATCH_A, u1))  # (I − ηH₀)(I − ηH₁) ∇L(θ₂)
    assert_close(meta(2), as_mask_grads(u0))


def test_two_steps_with_momentum_by_hand():
    mu = 0.9
    g0 = grad(Z0, BATCH_A)
    z1 = axpy(Z0, -LR, g0)
    g1 = grad(z1, BATCH_A)
    z2 = axpy(z1, -LR, axpy(g1, mu, g0))  # θ₂ = θ₁ − η(g₁ + μ g₀)
    v = grad(z2, BATCH_A)
    # dθ₂/dθ₀ = (I − ηH₁)(I − ηH₀) − ημH₀, transposed onto v
    u1 = axpy(v, -LR, hess(z1, BATCH_A, v))
    u0 = axpy(axpy(u1, -LR, hess(Z0, BATCH_A, u1)), -LR * mu, hess(Z0, BATCH_A, v))
    assert_close(meta(2, inner_momentum=mu), as_mask_grads(u0))


def test_new_data_in_inner_reads_one_batch_per_step_and_one_for_the_meta_loss():
    z1 = axpy(Z0, -LR, grad(Z0, BATCH_A))
    v = grad(z1, BATCH_B)
    u0 = axpy(v, -LR, hess(Z0, BATCH_A, v))
    found = meta(1, new_data_in_inner=True, batches=[BATCH_A, BATCH_B])
    assert_close(found, as_mask_grads(u0))


@pytest.mark.parametrize("steps", [1, 2])
def test_first_order_is_the_gradient_at_theta_m_times_w(steps):
    z = Z0
    for _ in range(steps):
        z = axpy(z, -LR, grad(z, BATCH_A))
    expected = as_mask_grads(grad(z, BATCH_A))
    assert_close(meta(steps, meta_grads="first_order"), expected)


def test_zero_steps_is_snip_in_train_mode():
    """With M = 0 the score is |∂L/∂w ⊙ w| with batch statistics (SNIP, bn_mode=train)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).eval()
    data = [(torch.randn(5, 3, 6, 6), torch.tensor([0, 1, 2, 0, 1]))]
    before = copy.deepcopy(model.state_dict())
    ctx = PruneContext(model=model, density=0.3, train_batches=data, device=CPU)
    prospr = METHODS.get("prospr")
    snip = METHODS.get("snip")
    ours = prospr.run(ctx, prospr.build_settings({"steps": 0}))
    theirs = snip.run(ctx, snip.build_settings({"bn_mode": "train"}))
    for name in theirs.scores:
        torch.testing.assert_close(ours.scores[name], theirs.scores[name])
    assert not model.training  # the input's mode and buffers are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # with steps the scores differ from SNIP's
    stepped = prospr.run(ctx, prospr.build_settings({}))
    assert not torch.allclose(stepped.scores["0.weight"], theirs.scores["0.weight"])
    assert stepped.iterations_to_mask == 3 and stepped.epochs_to_mask == 1.0


def test_registered_method_keeps_the_global_top_k_of_the_absolute_meta_gradient():
    spec = METHODS.get("prospr")
    model = net()
    ctx = PruneContext(model=model, density=0.5, train_batches=[BATCH_A], device=CPU)
    result = spec.run(ctx, spec.build_settings({"steps": 2, "inner_lr": LR}))
    expected = {n: g.abs() for n, g in meta(2).items()}
    assert_close(result.scores, expected)
    flat = torch.cat([expected[n].flatten() for n in ("0.weight", "1.weight")])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(4).indices] = True
    got = torch.cat([result.mask[n].flatten() for n in ("0.weight", "1.weight")])
    assert torch.equal(got, keep)
    assert torch.equal(model[0].weight, A0) and torch.equal(model[1].bias, b0)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"inner_lr": 0}, "inner_lr"),
        ({"inner_momentum": 1.0}, "inner_momentum"),
        ({"meta_grads": "second"}, "meta_grads"),
        ({"new_data_in_inner": "yes"}, "new_data_in_inner"),
    ],
)
def test_bad_settings(settings, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.get("prospr").build_settings(settings)


def test_too_few_batches_is_an_error():
    spec = METHODS.get("prospr")
    ctx = PruneContext(model=net(), density=0.5, train_batches=[BATCH_A], device=CPU)
    with pytest.raises(ConfigError, match="batches"):
        spec.run(ctx, spec.build_settings({"new_data_in_inner": True}))
