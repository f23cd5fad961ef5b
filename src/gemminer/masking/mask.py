"""Masks and density, stated once.

Prunable tensors are the ``weight`` of every :class:`torch.nn.Conv2d` and
:class:`torch.nn.Linear` in a model, found by module type (first and last layers and 1×1
shortcut convolutions included). **Density** is the fraction of prunable weights kept:
``kept / prunable``. Biases, normalization parameters and any other parameter are never
pruned and not counted (:func:`count_dense`; a mask's report states how many values that
is). Every figure gemminer prints is computed here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import MaskError
from ..rundir.files import atomic_torch_save, safe_torch_load

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d/Linear module of ``model`` by its qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def weight_name(module_name: str) -> str:
    """The parameter name of a module's weight: ``"conv1"`` → ``"conv1.weight"``."""
    return f"{module_name}.weight" if module_name else "weight"


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The prunable weight tensors of ``model`` keyed by parameter name (``"conv1.weight"``)."""
    return {weight_name(name): m.weight for name, m in prunable_modules(model).items()}


def count_prunable(model: nn.Module) -> int:
    """The number of prunable weights: the denominator of every density."""
    return sum(w.numel() for w in prunable_weights(model).values())


def count_dense(model: nn.Module) -> int:
    """The number of parameter values gemminer never prunes (biases, normalization
    parameters and any other parameter but the prunable weights), not counted in any
    density. The ``scores`` of score-learning layers are optimization variables, not part
    of the network, and are not counted."""
    modules = prunable_modules(model).values()
    skip = {id(m.weight) for m in modules}
    skip |= {id(m.scores) for m in modules if isinstance(getattr(m, "scores", None), nn.Parameter)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def dense_line(values: int) -> str:
    """The report line of what stays dense."""
    return (
        f"biases and normalization parameters stay dense: {values} values "
        "(every parameter but the Conv2d/Linear weights; not counted in the density)"
    )


def format_density(density: float | None, *, label: bool = True) -> str:
    """``0.0144`` → ``"density 1.44 % (98.56 % pruned)"`` (``label=False``: without the word
    "density", for a table's column); ``None`` → ``"—"``."""
    if density is None:
        return "—"
    text = f"{100 * density:.2f} % ({100 * (1 - density):.2f} % pruned)"
    return f"density {text}" if label else text


@dataclass(frozen=True)
class LayerDensity:
    """One row of a mask's per-layer report."""

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int

    @property
    def density(self) -> float:
        return self.kept / self.total


class Mask(Mapping[str, torch.Tensor]):
    """A checked binary mask keyed by parameter name.

    Values are stored as ``torch.bool`` on the CPU. Construction rejects non-binary values;
    :meth:`check` rejects unknown keys, missing keys and wrong shapes against a model.
    ``dense_values`` (optional, set by the masks gemminer computes from a model) is the
    model's :func:`count_dense`, for :meth:`report`; it is not saved with the mask.
    """

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], *, dense_values: int | None = None
    ) -> None:
        checked: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise MaskError(f"mask entry {name!r} is a {type(t).__name__}, not a tensor")
            if t.dtype != torch.bool:
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise MaskError(f"mask entry {name!r} holds non-finite values")
                if not ((t == 0) | (t == 1)).all():
                    bad = t[(t != 0) & (t != 1)].flatten()[0].item()
                    raise MaskError(f"mask entry {name!r} is not binary: it holds {bad!r}")
            checked[name] = t.detach().to(device="cpu", dtype=torch.bool).clone()
        if not checked:
            raise MaskError("a mask needs at least one entry")
        self._tensors = checked
        self.dense_values = dense_values

    # Mapping protocol -------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    # Construction -----------------------------------------------------------------------
    @classmethod
    def ones_like(cls, model: nn.Module) -> Mask:
        """The dense mask of ``model``: every prunable weight kept."""
        return cls(
            {n: torch.ones_like(w, dtype=torch.bool) for n, w in prunable_weights(model).items()},
            dense_values=count_dense(model),
        )

    # Checks -----------------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        """Raise :class:`MaskError` unless keys and shapes match ``model``'s prunable weights."""
        weights = prunable_weights(model)
        unknown = sorted(set(self) - set(weights))
        missing = sorted(set(weights) - set(self))
        if unknown:
            raise MaskError(f"mask has keys the model does not prune: {', '.join(unknown)}")
        if missing:
            raise MaskError(f"mask lacks prunable weights of the model: {', '.join(missing)}")
        for name, w in weights.items():
            if tuple(self[name].shape) != tuple(w.shape):
                raise MaskError(
                    f"mask entry {name!r} has shape {tuple(self[name].shape)}, "
                    f"the model's weight has {tuple(w.shape)}"
                )

    # Accounting -------------------------------------------------------------------------
    @property
    def num_kept(self) -> int:
        return int(sum(int(t.sum()) for t in self._tensors.values()))

    @property
    def num_total(self) -> int:
        return int(sum(t.numel() for t in self._tensors.values()))

    @property
    def density(self) -> float:
        return self.num_kept / self.num_total

    def layers(self) -> list[LayerDensity]:
        return [
            LayerDensity(n, tuple(t.shape), int(t.sum()), t.numel())
            for n, t in self._tensors.items()
        ]

    def report(self, model: nn.Module | None = None) -> str:
        """A per-layer density table, ending with the global figure and, when the mask's
        model is known (``model``, or a mask gemminer computed), how many parameter values
        stay dense: biases and normalization parameters are not pruned and not counted."""
        width = max(len(n) for n in self)
        lines = [f"{'layer':<{width}}  {'shape':<18} {'kept':>9} {'total':>9} {'density':>8}"]
        for row in self.layers():
            shape = "×".join(map(str, row.shape))
            lines.append(
                f"{row.name:<{width}}  {shape:<18} {row.kept:>9} {row.total:>9} "
                f"{100 * row.density:>7.2f}%"
            )
        kept = f"total: {self.num_kept} of {self.num_total} weights kept"
        lines.append(f"{kept}, {format_density(self.density)}")
        dense = count_dense(model) if model is not None else self.dense_values
        if dense is not None:
            lines.append(dense_line(dense))
        return "\n".join(lines)

    # Persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:

        atomic_torch_save(dict(self._tensors), Path(path))

    @classmethod
    def load(cls, path: str | Path) -> Mask:

        return cls(safe_torch_load(Path(path)))


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> nn.Module:
    """Zero the pruned weights of ``model`` **in place** (after checking the mask fits) and
    return ``model`` itself, not a copy: its dense weights are gone afterwards. To keep
    them, apply the mask to a copy: ``apply_mask(copy.deepcopy(model), mask)``.
    Biases and normalization parameters are left as they are (they are never pruned)."""
    mask.check(model)
    for name, w in prunable_weights(model).items():
        w.mul_(mask[name].to(device=w.device, dtype=w.dtype))
    return model
