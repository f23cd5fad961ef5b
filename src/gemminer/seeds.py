"""One seed per source of randomness, all derived from a run's seed.

The command line (:mod:`gemminer.stages`) and the Python API (:mod:`gemminer.api`)
both draw their generators from :func:`derive_seed`, so the same ``seed`` gives the same
initialization, scores, batch order and augmentation either way.
"""

from __future__ import annotations

from .errors import ConfigError

#: Each source of randomness gets its own generator, derived from the run's seed.
SEED_STREAMS = {"weights": 0, "scores": 1, "prune-data": 2, "finetune-data": 3, "calibration": 4}


def derive_seed(seed: int, stream: str) -> int:
    """The seed of ``stream`` (one of :data:`SEED_STREAMS`) in a run seeded with ``seed``:
    distinct for every (seed, stream) pair, so no two generators share a sequence."""
    if stream not in SEED_STREAMS:
        raise ConfigError(
            f"unknown seed stream {stream!r}; valid streams: {', '.join(SEED_STREAMS)}"
        )
    return seed * len(SEED_STREAMS) + SEED_STREAMS[stream]
