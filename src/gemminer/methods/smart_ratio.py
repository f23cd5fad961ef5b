"""Smart Ratio (Su et al. 2020, "Sanity-checking pruning methods: random tickets can win
the jackpot") and the rare-gems paper's variants SR-v2 and SR-v3 (its Table 16).

Smart Ratio is random pruning at hand-set layer-wise densities. What is implemented, for
the L prunable layers (every Conv2d/Linear weight, in definition order, 1×1 shortcut
convolutions included) numbered l = 1 … L:

* **SR-v1** (``variant="v1"``, the published method). The last layer (the classifier)
  keeps ``round(last_layer_ratio · size)`` weights, ``last_layer_ratio = 0.3`` as in Su et
  al.'s code (``--linear_keep_ratio``, default 0.3) and its use in
  ksreenivasan/pruning_is_enough (``linear_keep_ratio: 0.3``), the code behind the
  rare-gems SR baseline. Every other layer gets density γ · w_l with
  w_l = (L − l + 1)² + (L − l + 1) (the ResNet rule) or
  w_l = ((L − l + 1)² + (L − l + 1)) / l² (the VGG rule, which both reference codes apply
  to VGG networks), γ solved so the total kept count is exactly
  ``round(density · total)``.
* **SR-v2** (``variant="v2"``): the first and last layers take the *densities* of the
  same layers of ``reference_mask`` (a ``mask.pt``, e.g. Gem-Miner's, loaded with
  :meth:`Mask.load`, which refuses unsafe pickles; it must fit the model), i.e. exactly
  its kept counts, and are drawn at random at those densities like every other layer:
  the reference's *positions* are not used. Layers 2 … L − 1 get γ · w_l as above (w_l
  still numbered over all L layers). Source: the paper's Appendix B ("p_l = p_l^GM for
  l ∈ {1, L}", a sparsity pattern from which "each layer randomly picks" its weights)
  and the authors' ``SmartRatio.py`` (``sr_version == 2`` overwrites only the first and
  last keep *ratios*, p_arr[0] and p_arr[-1], with Gem-Miner's ResNet-20 layer densities,
  hard-coded for 1.44 % and 3.72 %, then shuffles every layer's mask at random).
* **SR-v3** (``variant="v3"``): the first and last layers are dense; layers 2 … L − 1 get
  γ · w_l.

SR-v4, v5 and v6 (Table 16) are not implemented: the paper gives each only as a starting
point plus an unspecified search, and the authors' ``SmartRatio.py`` has no code for them
(``sr_version`` 2 is its only variant). SR-v4 "searches a few points around the sparsity
pattern of IMP" chosen "based on intuition": neither the points, nor the ball's radius, nor
what "best" was measured on is given. Its centre, every layer random at a cold-rewound IMP
ticket's layer densities, is ``gemminer sanity --check shuffle`` of an ``imp`` run. SR-v5
and v6 tune p_l "using SGD on Eq (1)", min_p Σ ℓ(f(w ⊙ Bern(p); x), y), from SR-v2's and
SR-v4's p: the gradient estimator through the Bernoulli draw, the learning rate, steps and
batches, and how the density was held near the target (Eq (1) has no density term; Table
16 reports 1.53 % and 1.47 % for a 1.44 % target) are not given.

Within each layer the kept weights are random: the scores are U[0, 1) per weight drawn
from ``ctx.seed``, in every layer and every variant, and each layer keeps its highest
scores — the ``random`` method's scores, kept by the shared thresholding
(:mod:`gemminer.methods.scoring`) at Smart Ratio's counts, so SR-v1 is also
``random`` with ``distribution="smart-ratio"`` (this module registers that distribution,
:mod:`gemminer.methods.distributions`). No training is spent (0 epochs, 0
iterations).

Clipping: when γ · w_l would exceed 1 (dense targets, or the first layers of a deep
network), the layer is made dense and γ solved again for the remaining layers, until no
density exceeds 1; real-valued counts are rounded by largest remainder, so the total is
exact and each layer is within one weight of its share (:mod:`gemminer.methods._ratios`).
When the fixed layers alone (v1: the last layer; v2/v3: the first and last) keep more
than the target, or the others cannot make up the rest even dense, :class:`ConfigError`
names the density that is out of reach.

Training the mask (the defaults, from the authors' Smart Ratio configs, ksreenivasan/
pruning_is_enough configs/sr/, which produced the paper's Smart Ratio figures — not Table
15, which is Gem-Miner's): the weights start from ``kaiming_normal_fan_half``, Kaiming
normal √2 wider (their ``scale_fan: True`` at the default ``prune_rate`` 0.5, see
:mod:`gemminer.masking.init`), and the finetuning follows :data:`AUTHORS_FINETUNE` where
a config exists for the model and data set, Table 15's row elsewhere. For ResNet-20 on
CIFAR-10 (``configs/sr/resnet20/resnet20_sr.yml``, run as ``--smart_ratio 0.9856`` for
1.44 % in ``cifar_exec_GD.sh``): SGD LR 0.1, momentum 0.9, weight decay 1e-4, batch 128,
160 epochs, LR × 0.1 after 80 and 120 (their ``get_scheduler`` for 160 epochs); Gem-Miner's
tickets there get LR 0.01 for 150 epochs. ``--finetune-lr``, ``--finetune-epochs``,
``--finetune-milestones`` and ``--weight-init`` override them.

Deviations from the reference code, and why:

* Which rule (ResNet or VGG) applies is chosen by ``depth_rule``; ``"auto"`` (the
  default) picks the VGG rule when the model's class name contains "vgg", as the
  reference picks it from the architecture's name.
* The fixed ratio goes to the *last* prunable layer. The reference gives it to the layers
  its per-architecture lists call "linear"; in every network of the paper (ResNet-20/18,
  VGG-16, MobileNet-V2) that is the classifier alone, which is the last layer.
* Excess from clipped layers is spread over the unclipped ones *in proportion to their
  ratios* (the ERK re-solve). The reference pours it into the next layers in order, which
  distorts the closed form; the two agree whenever nothing is clipped.
* Exact counts (largest remainder) instead of ``int()`` truncation, which undershoots the
  target by up to a weight per layer.
* SR-v2 reads the first and last layer densities from any mask file (any model, any
  density); the reference hard-codes Gem-Miner's ResNet-20 densities for two targets.
* SR-v2 and SR-v3 hit the target density: the middle layers absorb what the first and
  last layers take or give back. In the paper (Table 16) the middle layers kept their
  SR-v1 ratios and the totals drifted (1.47 % and 1.75 % for a 1.44 % target on
  ResNet-20); ``match_target=False`` reproduces that, and then the mask's density is
  whatever results, not the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, GemMinerError
from ..masking import Mask
from ..settings.recipe import FinetuneRecipe
from ._ratios import allocate_counts, target_count, weight_counts
from .distributions import register_distribution
from .random_pruning import score_at_random
from .scoring import register_scorer

VARIANTS = ("v1", "v2", "v3")
UNSPECIFIED = ("v4", "v5", "v6")  # Table 16 variants the paper does not specify
DEPTH_RULES = ("auto", "resnet", "vgg")


@dataclass(frozen=True)
class SmartRatioSettings:
    """Smart Ratio's settings; the defaults are the published method (SR-v1)."""

    variant: str = "v1"
    """"v1" (Su et al.), "v2" (first/last layer densities from ``reference_mask``) or
    "v3" (first/last layers dense); see the module docstring."""

    reference_mask: str = ""
    """Path of the mask file (``mask.pt``) whose first and last layer densities SR-v2
    takes (not its positions: those layers are drawn at random)."""

    last_layer_ratio: float = 0.3
    """SR-v1: the keep ratio of the last layer (the classifier)."""

    depth_rule: str = "auto"
    """"resnet": w_l = (L−l+1)² + (L−l+1); "vgg": that over l²; "auto": "vgg" when the
    model's class name contains "vgg", else "resnet"."""

    match_target: bool = True
    """SR-v2/v3: rescale the middle layers so the total hits the target; False keeps their
    SR-v1 ratios, as in the paper's Table 16 (the density then drifts from the target)."""

    def __post_init__(self) -> None:
        name = "smart-ratio"
        if self.variant in UNSPECIFIED:
            raise ConfigError(
                f"{name}: variant {self.variant!r} of Table 16 is not implemented: the paper "
                "does not specify its search (see the smart_ratio module docstring); "
                f"valid variants: {', '.join(VARIANTS)}"
            )
        if self.variant not in VARIANTS:
            raise ConfigError(
                f"{name}: unknown variant {self.variant!r}; valid variants: {', '.join(VARIANTS)}"
            )
        if self.depth_rule not in DEPTH_RULES:
            raise ConfigError(
                f"{name}: unknown depth_rule {self.depth_rule!r}; "
                f"valid rules: {', '.join(DEPTH_RULES)}"
            )
        ratio = self.last_layer_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ConfigError(f"{name}: last_layer_ratio must lie in (0, 1], got {ratio!r}")
        if not isinstance(self.reference_mask, str):
            raise ConfigError(f"{name}: reference_mask must be a path, got {self.reference_mask!r}")
        if self.variant == "v2" and not self.reference_mask:
            raise ConfigError(
                f"{name}: variant 'v2' takes the first and last layer densities from a "
                "mask file; "
                "set reference_mask to its path (e.g. a Gem-Miner run's mask.pt)"
            )
        if self.variant != "v2" and self.reference_mask:
            raise ConfigError(
                f"{name}: reference_mask is used only by variant 'v2', "
                f"not {self.variant!r}; remove it or set variant='v2'"
            )
        if not isinstance(self.match_target, bool):
            raise ConfigError(f"{name}: match_target must be true or false")

    def layer_counts(self, model: nn.Module, density: float, method: str) -> dict[str, int]:
        """Every layer's kept count (SR-v2 reads its reference mask here)."""
        reference = None
        if self.variant == "v2":
            reference = load_reference(self.reference_mask, model)
        return smart_ratio_counts(model, density, self, reference)


@dataclass(frozen=True)
class SmartRatioV3Settings(SmartRatioSettings):
    """SR-v3 by default: the first and last layers dense, Smart Ratio in between."""

    variant: str = "v3"


def depth_weights(num_layers: int, rule: str) -> list[float]:
    """Smart Ratio's relative keep ratios w_1 … w_L (before scaling and clipping)."""
    out = []
    for layer in range(1, num_layers + 1):
        k = num_layers - layer + 1
        w = float(k * k + k)
        out.append(w / (layer * layer) if rule == "vgg" else w)
    return out


def resolve_rule(model: nn.Module, rule: str) -> str:
    """``"auto"`` → ``"vgg"`` for a model whose class name contains "vgg", else ``"resnet"``."""
    if rule != "auto":
        return rule
    return "vgg" if "vgg" in type(model).__name__.lower() else "resnet"


def load_reference(path: str, model: nn.Module) -> Mask:
    """The SR-v2 reference mask, checked against ``model``; :class:`ConfigError` otherwise.

    Only its first and last layers' kept counts are used (:func:`reference_counts`).
    """
    try:
        mask = Mask.load(path)
        mask.check(model)
    except GemMinerError as exc:
        raise ConfigError(f"smart-ratio: reference_mask {path!r} is unusable: {exc}") from exc
    return mask


def reference_counts(reference: Mask, first: str, last: str) -> dict[str, int]:
    """SR-v2's fixed layers: the kept counts (= densities, the model's layers being the
    reference's) of the reference mask's first and last layers; positions are dropped."""
    return {name: int(reference[name].sum()) for name in (first, last)}


def smart_ratio_counts(
    model: nn.Module,
    density: float,
    settings: SmartRatioSettings,
    reference: Mask | None = None,
) -> dict[str, int]:
    """The kept count of every prunable layer of ``model`` (see the module docstring)."""
    sizes = weight_counts(model)
    names = list(sizes)
    need = 2 if settings.variant == "v1" else 3
    if len(names) < need:
        raise ConfigError(
            f"smart-ratio {settings.variant} needs at least {need} prunable layers, "
            f"the model has {len(names)}"
        )
    first, last = names[0], names[-1]
    ratios = dict(zip(names, depth_weights(len(names), resolve_rule(model, settings.depth_rule))))
    target = target_count("smart-ratio", density, sum(sizes.values()))
    last_count = min(sizes[last], round(settings.last_layer_ratio * sizes[last]))
    v1_fixed = {last: last_count}
    if settings.variant == "v1":
        return allocate_counts("smart-ratio", sizes, ratios, target, v1_fixed)
    if settings.variant == "v2":
        if reference is None:
            raise ConfigError("smart-ratio v2 needs the reference mask")
        ends = reference_counts(reference, first, last)
    else:
        ends = {first: sizes[first], last: sizes[last]}
    if settings.match_target:
        return allocate_counts(f"smart-ratio {settings.variant}", sizes, ratios, target, ends)
    counts = allocate_counts("smart-ratio", sizes, ratios, target, v1_fixed)
    counts.update(ends)
    return counts


@register_distribution("smart-ratio")
def smart_ratio_v1_counts(model: nn.Module, density: float, method: str) -> dict[str, int]:
    """SR-v1 with its published defaults, the ``"smart-ratio"`` distribution of every
    scorer (errors name "smart-ratio", not ``method``)."""
    return smart_ratio_counts(model, density, SmartRatioSettings())


#: How the authors finetuned their Smart Ratio masks, by (model, data set): their configs
#: configs/sr/resnet20/resnet20_sr.yml (also resnet20_srV2.yml, SR-v2/v3), vgg_sr.yml,
#: wideresnet_sr.yml, mobilenet_sr.yml and tiny_sr.yml (TinyResNet18) at commit 8c4c9e8;
#: milestones from their utils/schedulers.py for those epochs; weight decay their
#: ``fine_tune_wd`` (default 1e-4). Not here, so Table 15's row: cResNet18 on CIFAR-10
#: (cifar10_resnet18_sr.yml finetunes with a cosine schedule), ResNet-50 on TinyImageNet
#: (tiny_sr_resnet50.yml: Nesterov momentum), resnet32_double (not gemminer's ResNet-32).
AUTHORS_FINETUNE = {
    ("resnet20", "cifar10"): FinetuneRecipe(160, 128, 0.1, (80, 120)),
    ("vgg16", "cifar10"): FinetuneRecipe(200, 128, 0.1, (100, 150)),
    ("wrn28-2", "cifar10"): FinetuneRecipe(150, 128, 0.1, (80, 120)),
    ("mobilenetv2", "cifar10"): FinetuneRecipe(300, 128, 0.01, (150, 250)),
    ("resnet18", "tinyimagenet"): FinetuneRecipe(200, 256, 0.2, (100, 150)),
}

# Every layer random, SR-v2's first and last too: only their counts come from the reference
# (Appendix B; SmartRatio.py shuffles those layers like the others).
register_scorer(
    "smart-ratio",
    settings=SmartRatioSettings,
    default_init="kaiming_normal_fan_half",
    finetune_rows=AUTHORS_FINETUNE,
    description="Smart Ratio (Su et al. 2020): random pruning at quadratically decaying "
    "layer densities; variants v2/v3 of the paper's Table 16.",
)(score_at_random)
register_scorer(
    "smart-ratio-v3",
    settings=SmartRatioV3Settings,
    default_init="kaiming_normal_fan_half",
    finetune_rows=AUTHORS_FINETUNE,
    description="Smart Ratio v3 (Table 16): first and last layers dense, Smart Ratio between.",
)(score_at_random)
