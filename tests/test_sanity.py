"""Sanity checks change the ticket while keeping every layer's density."""

import json

import pytest
import torch

from gemminer.cli import main
from gemminer.masking import Mask
from gemminer.stages.sanity import SANITY_CHECKS, Remine, invert_mask, shuffle_mask

from .conftest import write_image_folder


def layer_counts(mask: Mask) -> dict[str, int]:
    return {name: int(m.sum()) for name, m in mask.items()}


def random_mask(seed: int = 0) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask(
        {
            "a.weight": torch.rand(20, 30, generator=g) < 0.1,
            "b.weight": torch.rand(10, 40, generator=g) < 0.3,
        }
    )


def test_shuffle_changes_the_mask_and_keeps_layer_densities():
    mask = random_mask()
    shuffled = shuffle_mask(mask, torch.Generator().manual_seed(1))
    assert layer_counts(shuffled) == layer_counts(mask)
    for name in mask:
        assert not torch.equal(shuffled[name], mask[name]), name


def test_invert_keeps_the_lowest_scores_at_the_same_layer_densities():
    g = torch.Generator().manual_seed(0)
    scores = {
        "a.weight": torch.rand(20, 30, generator=g),
        "b.weight": torch.rand(10, 40, generator=g),
    }
    mask = Mask({n: s >= s.flatten().kthvalue(s.numel() - 40).values for n, s in scores.items()})
    inverted = invert_mask(mask, scores)
    assert layer_counts(inverted) == layer_counts(mask)
    for name, s in scores.items():
        assert not (
            inverted[name] & mask[name]
        ).any()  # 40 of 600/400: lowest and highest are disjoint
        assert s[inverted[name]].max() < s[~inverted[name]].min()


@pytest.fixture(scope="module")
def mined_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    write_image_folder(root / "data", n_train=24, n_test=9)
    out = root / "run"
    args = [
        "mine",
        "--data-dir",
        str(root / "data"),
        "--no-download",
        "--density",
        "0.05",
        "--epochs",
        "2",
        "--batch-size",
        "12",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    return out


def load(run):
    mask = Mask.load(run / "mask.pt")
    ticket = torch.load(run / "ticket.pt", weights_only=True)
    return mask, ticket, json.loads((run / "summary.json").read_text())


#: What each registered sanity check changes; the rest of the ticket stays. ``mask``: a
#: new mask at the same per-layer density (a check that mines again: at the same target
#: density), on the same weights; ``weights``: new weights drawn like the originals, under
#: the same mask.
CHANGES = {"shuffle": "mask", "invert-posthoc": "mask", "invert": "mask", "reinit": "weights"}


@pytest.mark.parametrize("check", SANITY_CHECKS.names())
def test_every_sanity_check_changes_the_ticket_as_documented(mined_run, check):
    if check not in CHANGES:
        pytest.fail(f"sanity check {check!r} is registered but not in this test's CHANGES")
    remine = SANITY_CHECKS.get(check)
    remine = remine if isinstance(remine, Remine) else None
    assert main(["sanity", str(mined_run), "--check", check, "--no-progress"]) == 0
    new = mined_run.parent / f"run-{check}"
    mask, ticket, summary = load(mined_run)
    new_mask, new_ticket, new_summary = load(new)
    assert new_summary["sanity_check"] == check and new_summary["source_run"] == str(mined_run)
    assert new_summary["target_density"] == summary["target_density"]
    for key in ("num_classes", "class_names", "input_mean", "model_args"):  # for export
        assert new_summary[key] == summary[key]
    if remine is None:
        assert layer_counts(new_mask) == layer_counts(mask)
        assert new_summary["epochs_to_mask"] == summary["epochs_to_mask"]
        assert new_summary["density"] == summary["density"]
    else:  # mined again from the same initialization with the check's settings
        config = json.loads((new / "config.json").read_text())
        assert config["method"] == remine.method and config["sanity_check"] == check
        assert config["settings"].items() >= dict(remine.settings).items()
        assert abs(new_summary["density"] - summary["density"]) < 0.01
        scores = torch.load(mined_run / "scores.pt", weights_only=True)
        new_scores = torch.load(new / "scores.pt", weights_only=True)
        assert not all(torch.equal(scores[n], new_scores[n]) for n in scores)
    weights = [n for n in mask]
    if CHANGES[check] == "weights":
        assert all(torch.equal(new_mask[n], mask[n]) for n in weights)
        assert all(not torch.equal(new_ticket[n], ticket[n]) for n in weights)
        # same distribution: signed constant ±gain/sqrt(fan_in)
        assert all(torch.equal(new_ticket[n].abs(), ticket[n].abs()) for n in weights)
    else:
        assert any(not torch.equal(new_mask[n], mask[n]) for n in weights)
        assert all(torch.equal(new_ticket[n], ticket[n]) for n in weights)
    # the new ticket finetunes like any other
    assert main(["finetune", str(new), "--epochs", "1", "--no-progress"]) == 0
    assert json.loads((new / "summary.json").read_text())["post_finetune_acc"] is not None


def test_invert_needs_gem_miner(mined_run, tmp_path, capsys):
    data = mined_run.parent / "data"
    out = tmp_path / "rnd"
    base = ["--data-dir", str(data), "--no-download", "--no-progress", "--out", str(out)]
    assert main(["prune", "--method", "random", "--epochs", "0", *base]) == 0
    assert main(["sanity", str(out), "--check", "invert"]) == 2
    assert "invert-posthoc" in capsys.readouterr().err


def test_reinit_refuses_the_original_seed(mined_run, capsys):
    assert (
        main(
            [
                "sanity",
                str(mined_run),
                "--check",
                "reinit",
                "--seed",
                "0",
                "--out",
                str(mined_run.parent / "x"),
            ]
        )
        == 2
    )
    assert "seed of the original weights" in capsys.readouterr().err


def test_invert_needs_scores(mined_run, tmp_path, capsys):
    data = mined_run.parent / "data"
    out = tmp_path / "sr"
    assert (
        main(
            [
                "prune",
                "--method",
                "dense",
                "--data-dir",
                str(data),
                "--no-download",
                "--epochs",
                "0",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["sanity", str(out), "--check", "invert-posthoc"]) == 2
    assert "stores no scores" in capsys.readouterr().err
