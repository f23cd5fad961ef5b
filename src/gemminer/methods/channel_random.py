"""Random channel pruning at a multiply-add budget: U[0, 1) per channel, kept by the shared
channel thresholding (:mod:`.channel_scoring`).

One score per channel of every channel set, drawn set by set (in the sets' order) from one
generator seeded with ``ctx.seed``, on the CPU; no training is spent. With
``scope="layer"`` (the default) every set keeps the same fraction of its channels, at
random; ``scope="global"`` drops channels in one random order across the sets until the
multiply-add target is met. ``--density`` is the fraction of the multiply-adds kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PruneContext
from .channel_scoring import ChannelScores, ChannelThresholding, register_channel_scorer, sets_of


@dataclass(frozen=True)
class ChannelRandomSettings(ChannelThresholding):
    """Random channel pruning: every channel set keeps the same fraction of its channels
    (``scope="layer"``), or one random order across sets (``scope="global"``)."""


@register_channel_scorer(
    "channel-random",
    settings=ChannelRandomSettings,
    default_init="kaiming_normal",
    description="Random channel pruning: every layer keeps the same fraction of its "
    "channels, at random, to a target fraction of the multiply-adds (--density).",
)
def score_channels_at_random(ctx: PruneContext, settings: ChannelRandomSettings) -> ChannelScores:
    """U[0, 1) per channel of every channel set, seeded by ``ctx.seed``."""
    g = torch.Generator().manual_seed(ctx.seed)
    sets = sets_of(ctx, "channel-random", settings.streams)
    return ChannelScores({s.name: torch.rand(s.size, generator=g) for s in sets})
