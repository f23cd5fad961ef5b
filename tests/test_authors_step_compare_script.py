"""benchmarks/authors_step_compare.py: how two mining states are compared (the authors' code
itself is not needed for these)."""

import pytest
import torch

from .conftest import benchmark_script


def _module():
    return benchmark_script("authors_step_compare")


def _state(scores, flags):
    return {"a.weight": (torch.tensor(scores), torch.tensor(flags))}


def test_identical_states_and_their_unclamped_scores_compare_equal():
    ours = _state([0.0, 0.7, 1.0, 0.2], [1.0, 1.0, 1.0, 0.0])
    # the authors' scores are clamped only by their next step; a frozen entry keeps its score
    theirs = _state([-0.3, 0.7, 1.4, 0.9], [1.0, 1.0, 1.0, 0.0])
    row = _module().compare(theirs, ours)
    assert row["max score difference"] == "0.00e+00"
    assert row["flags differing"] == 0 and row["rounded differing"] == 0
    assert row["flag density (theirs / ours)"] == "75.0000% / 75.0000%"
    assert row["rounded density (theirs / ours)"] == "50.0000% / 50.0000%"


def test_a_flag_or_a_rounding_apart_is_counted():
    ours = _state([0.49, 0.7, 0.1, 0.2], [1.0, 1.0, 1.0, 1.0])
    theirs = _state([0.51, 0.7, 0.1, 0.2], [1.0, 1.0, 0.0, 1.0])
    row = _module().compare(theirs, ours)
    assert row["flags differing"] == 1
    assert row["rounded differing"] == 1  # 0.51 rounds to 1, 0.49 to 0
    assert float(row["max score difference"]) == pytest.approx(0.02, abs=1e-6)


def test_the_loader_hands_the_authors_loop_contiguous_batches():
    x = torch.zeros(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    loader = _module()._Loader([(x, torch.zeros(2))], batch_size=2)
    assert len(loader) == 1 and loader.batch_size == 2
    ((batch, _),) = list(loader)
    assert batch.is_contiguous() and not batch.is_contiguous(memory_format=torch.channels_last)
