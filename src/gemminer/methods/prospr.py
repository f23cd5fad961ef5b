"""ProsPr: prospect pruning by meta-gradients (Alizadeh et al., ICLR 2022).

A mask c = 1 multiplies every prunable weight of the dense, freshly initialized network,
θ₀ = w ⊙ c (biases and normalization parameters enter θ₀ unmasked). M steps of SGD train
*all* of θ on the cross-entropy, θ_{k+1} = θ_k − η·b_k (b_k the momentum buffer, b_k = g_k
without momentum), and the score of a weight is |∂L(θ_M)/∂c| at c = 1: the meta-gradient
through all M steps (``create_graph``), so a weight scores high when removing it would
change the loss *after a few steps of training*, not only at initialization. With M = 0
this is SNIP's |∂L/∂w ⊙ w| (in train mode). The highest scores are kept by one global
top-k (the shared thresholding, :mod:`gemminer.methods.scoring`; ``scope="layer"`` with a
``distribution`` is available as for every scorer); the ticket is then finetuned from the
original initialization like any other.

``meta_grads="first_order"`` drops the second-order terms (the inner gradients are
constants), so ∂θ_M/∂θ₀ = I and the score is |∇L(θ_M) ⊙ w|.

Settings and their source, the authors' code (mil-ad/prospr, commit a921779):

* ``steps`` = 3: ``--inner-steps`` (``cli.py``, default 3); the paper's M.
* ``inner_lr`` = 0.1 and ``inner_momentum`` = 0: ``--inner-lr`` / ``--inner-momentum``
  (``cli.py`` defaults). The package usage example in its README passes 0.5 and 0.9;
  the command line, which produced the paper's runs, uses 0.1 and 0.
* No weight decay, dampening or Nesterov in the inner loop: ``prune()`` calls its
  ``functional_sgd`` without them (``prospr/prospr.py``).
* Batches: the first batch of the training loader (``--meta-batch-size`` 128, the
  training augmentation) serves every inner step *and* the meta-loss
  (``--new-data-in-inner`` defaults to False and ``train.py`` passes it on; the package
  function ``prune()`` alone defaults to True). ``new_data_in_inner=True`` takes a fresh
  batch for each step and for the meta-loss (M + 1 batches), as that flag does. Here the
  batches are ``ctx.train_batches`` (``--batch-size``, 128 by default).
* Train mode: ``prune()`` calls ``net.train()`` on its copy, so BatchNorm normalizes with
  batch statistics in every step and in the meta-loss (the copy's running buffers move;
  the input network's do not).
* ``meta_grads`` = ``"full"`` (``--meta-grads-mode``, choices full / first_order).
* Prunable: every Conv2d and Linear weight (its ``pruning_filter_factory``, unstructured),
  as gemminer's :func:`~gemminer.masking.prunable_weights`; all ``named_parameters()``
  are trained in the inner loop.
* Initialization: Kaiming normal (its ResNet-20 applies ``kaiming_normal_`` to every
  Conv2d/Linear), gemminer's ``kaiming_normal``.

Deviations: the kept count is ``round(density · total)`` (shared thresholding) instead of
its ``ceil``; with momentum the first buffer stays in the graph (the reference detaches
it, ``torch.clone(grad).detach()``, which drops the first step's second-order term when
``inner_momentum`` > 0; at the default 0 the two agree); the data loader is not cycled
when it runs out of batches (an error names the count instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..errors import ConfigError
from ..masking import prunable_weights
from ._saliency import (
    Batch,
    check_positive_float,
    epochs_for,
    grads_or_zeros,
    scoring_copy,
    take_batches,
)
from .base import PruneContext
from .scoring import Scores, Thresholding, register_scorer

META_GRADS = ("full", "first_order")


@dataclass(frozen=True)
class ProsprSettings(Thresholding):
    """ProsPr's settings; the defaults are the authors' command line (mil-ad/prospr)."""

    steps: int = 3
    """Inner SGD steps M before the meta-loss (``--inner-steps``); 0 gives SNIP's score."""
    inner_lr: float = 0.1
    """Learning rate of the inner SGD steps (``--inner-lr``)."""
    inner_momentum: float = 0.0
    """Momentum of the inner SGD steps (``--inner-momentum``), in [0, 1)."""
    meta_grads: str = "full"
    """"full": differentiate through every inner step; "first_order": treat the inner
    gradients as constants, giving |∇L(θ_M) ⊙ w| (``--meta-grads-mode``)."""
    new_data_in_inner: bool = False
    """False: one batch for every inner step and the meta-loss (the reference default);
    True: a new batch for each step and for the meta-loss (M + 1 batches)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        name = "prospr"
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"{name}: steps must be an integer >= 0, got {steps!r}")
        check_positive_float(name, "inner_lr", self.inner_lr)
        mom = self.inner_momentum
        if isinstance(mom, bool) or not isinstance(mom, (int, float)) or not 0 <= mom < 1:
            raise ConfigError(f"{name}: inner_momentum must lie in [0, 1), got {mom!r}")
        if self.meta_grads not in META_GRADS:
            raise ConfigError(
                f"{name}: unknown meta_grads {self.meta_grads!r}; "
                f"valid modes: {', '.join(META_GRADS)}"
            )
        if not isinstance(self.new_data_in_inner, bool):
            raise ConfigError(f"{name}: new_data_in_inner must be true or false")

    @property
    def batches(self) -> int:
        """Training batches the score reads."""
        return self.steps + 1 if self.new_data_in_inner else 1


def meta_gradient(
    model: nn.Module, batches: Sequence[Batch], settings: ProsprSettings
) -> dict[str, torch.Tensor]:
    """∂L(θ_M)/∂c at c = 1 for every prunable weight of ``model``, signed, on the model's
    device. θ is kept outside ``model``: its parameters are never changed.

    ``batches``: one batch (used for every step and the meta-loss) or M + 1 (step k reads
    batch k, the meta-loss the last). ``model`` should be a copy: in train mode its
    BatchNorm running buffers move.
    """
    m = settings.steps
    if len(batches) not in (1, m + 1):
        raise ConfigError(f"prospr: needs 1 or {m + 1} batches, got {len(batches)}")
    first_order = settings.meta_grads == "first_order"
    weights = prunable_weights(model)
    masks = {n: torch.ones_like(w, requires_grad=True) for n, w in weights.items()}
    theta: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        base = p.detach()
        theta[name] = base * masks[name] if name in masks else base.clone().requires_grad_(True)
    names = list(theta)
    buffers: list[torch.Tensor | None] = [None] * len(names)

    def loss_at(params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    for k in range(m):
        current = [theta[n] for n in names]
        grads = torch.autograd.grad(
            loss_at(theta, batches[k if len(batches) > 1 else 0]),
            current,
            create_graph=not first_order,
            allow_unused=True,
        )
        grads = grads_or_zeros(grads, current)
        for i, g in enumerate(grads):
            if settings.inner_momentum:
                prev = buffers[i]
                buffers[i] = g if prev is None else prev * settings.inner_momentum + g
                g = buffers[i]
            theta[names[i]] = current[i] - settings.inner_lr * g

    meta = torch.autograd.grad(loss_at(theta, batches[-1]), list(masks.values()), allow_unused=True)
    return dict(zip(masks, grads_or_zeros(meta, list(masks.values()))))


@register_scorer(
    "prospr",
    settings=ProsprSettings,
    default_init="kaiming_normal",
    description="ProsPr (Alizadeh et al. 2022): keep the largest |∂L(θ_M)/∂c|, the "
    "meta-gradient through M = 3 SGD steps, one shot, global.",
)
def prospr(ctx: PruneContext, settings: ProsprSettings) -> Scores:
    """Score every prunable weight by |∂L(θ_M)/∂c| at c = 1."""
    model, _ = scoring_copy(ctx.model, ctx.device, mode="train")
    data = take_batches(ctx.train_batches, settings.batches, ctx.device, "prospr")
    grads = meta_gradient(model, data, settings)
    scores = {name: g.detach().abs().cpu() for name, g in grads.items()}
    return Scores(scores, epochs_for(ctx, settings.batches), settings.steps)
