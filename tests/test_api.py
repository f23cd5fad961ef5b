"""The Python API on a user's own nn.Module."""

import torch
from torch.utils.data import DataLoader, TensorDataset

import gemminer
from gemminer.masking import prunable_weights

from .conftest import UserNet


def test_mine_and_finetune_a_user_model_from_arrays(user_net, tiny_data):
    before = {n: p.detach().clone() for n, p in user_net.named_parameters()}
    result = gemminer.mine(
        user_net,
        tiny_data,
        density=0.2,
        epochs=4,
        period=2,
        batch_size=16,
        device="cpu",
        test_data=tiny_data,
    )
    # the user's model is untouched; the mask is keyed by its weight names
    assert all(torch.equal(p, before[n]) for n, p in user_net.named_parameters())
    assert list(result.mask) == list(prunable_weights(user_net))
    result.mask.check(user_net)
    assert 0.2 - 0.01 <= result.density <= 0.2  # the flags: the authors' ceiling counts
    assert list(result.gem) == list(result.mask)
    assert result.gem.num_kept <= result.mask.num_kept  # the rounded mask within the flags
    assert len(result.history) == 4 and "test_acc" in result.history[-1]
    assert "test_acc_running_bn" in result.history[-1]

    ticket = gemminer.apply_mask(user_net, result.mask)
    history = gemminer.finetune(
        ticket, result.mask, tiny_data, epochs=2, batch_size=16, device="cpu", lr=0.05
    )
    assert len(history) == 2
    for name, w in prunable_weights(ticket).items():
        assert torch.all(w[~result.mask[name]] == 0)


def test_mine_accepts_any_batch_iterable(tiny_data):
    x = tiny_data.images.float() / 255
    loader = DataLoader(TensorDataset(x, tiny_data.labels), batch_size=32, shuffle=True)
    torch.manual_seed(0)
    result = gemminer.mine(
        UserNet(), loader, density=0.3, epochs=2, period=1, lam=0.0, device="cpu"
    )
    assert 0 < result.density <= 0.3 + 1 / result.mask.num_total


def test_same_seed_gives_the_same_mask(tiny_data):
    def run() -> gemminer.Mask:
        torch.manual_seed(0)
        net = gemminer.init_weights(UserNet(), seed=0)
        return gemminer.mine(
            net, tiny_data, density=0.2, epochs=3, period=1, batch_size=16, device="cpu", seed=7
        ).mask

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mine_can_finetune_the_rounded_mask_on_algorithm1s_schedule(tiny_data):
    torch.manual_seed(0)
    result = gemminer.mine(
        UserNet(),
        tiny_data,
        density=0.2,
        epochs=3,
        period=1,
        batch_size=16,
        device="cpu",
        freeze_schedule="algorithm1",
        finetune_mask="rounded",
    )
    assert all(torch.equal(result.mask[n], result.gem[n]) for n in result.mask)
    assert [r["frozen"] > 0 for r in result.history] == [True, True, True]


def _dense_values(net) -> int:
    """Biases and normalization parameters: every parameter but the Conv2d/Linear weights."""
    pruned = set(prunable_weights(net).values())
    return sum(p.numel() for p in net.parameters() if p not in pruned)


def test_the_report_says_biases_and_normalization_stay_dense(user_net, tiny_data):
    dense = _dense_values(user_net)
    assert dense == 8 + 2 * 8 + 3  # conv bias, BatchNorm weight and bias, head bias
    line = f"biases and normalization parameters stay dense: {dense} values"
    mask = gemminer.Mask.ones_like(user_net)
    assert line in mask.report()
    assert line in gemminer.Mask(dict(mask)).report(user_net)  # a bare mask, given its model
    assert "stay dense" not in gemminer.Mask(dict(mask)).report()  # nothing to say without it
    result = gemminer.mine(
        user_net, tiny_data, density=0.5, epochs=1, period=1, batch_size=16, device="cpu"
    )
    assert line in result.mask.report() and line in result.gem.report()
    doc = " ".join(gemminer.mine.__doc__.split())
    assert "biases and normalization parameters" in doc and "are not pruned" in doc


def test_apply_mask_changes_the_model_in_place_and_says_so(user_net):
    mask = gemminer.Mask({n: torch.zeros_like(w) for n, w in prunable_weights(user_net).items()})
    assert gemminer.apply_mask(user_net, mask) is user_net
    assert all(torch.all(w == 0) for w in prunable_weights(user_net).values())
    doc = " ".join(gemminer.apply_mask.__doc__.split())
    assert "in place" in doc and "not a copy" in doc


def test_checking_the_data_first_leaves_its_shuffling_alone(tiny_data):
    """mine/finetune look at a first batch (labels vs the model's outputs) up front; the
    batches training sees afterwards are those it would have seen without the look."""
    from gemminer.api import _check_data

    net = UserNet()
    dataset = TensorDataset(tiny_data.images.float() / 255, tiny_data.labels)
    for generator in (None, torch.Generator()):
        loader = DataLoader(dataset, batch_size=16, shuffle=True, generator=generator)
        if generator is not None:
            generator.manual_seed(3)
        torch.manual_seed(0)
        expected = [y for _, y in loader]
        if generator is not None:
            generator.manual_seed(3)
        torch.manual_seed(0)
        _check_data(net, loader, "train_data")
        assert all(torch.equal(a, b) for a, b in zip([y for _, y in loader], expected))


def test_the_api_and_the_command_line_mine_the_same_mask_from_one_seed(tmp_path):
    """Issue 13: `gemminer.mine(seed=s)` derives its scores, batch order, augmentation and
    calibration seeds as `gemminer mine --seed s` does (gemminer.seeds.derive_seed), so on
    the same data and initialization both find the same mask."""
    from gemminer import stages
    from gemminer.seeds import derive_seed
    from gemminer.settings.config import OptimConfig, PruneConfig, RunConfig

    from .conftest import write_image_folder

    write_image_folder(tmp_path / "data")
    seed, prune = 3, PruneConfig(0.2, 2, 8, OptimConfig(lr=0.1, schedule="cosine"))
    cfg = RunConfig(
        data_dir=str(tmp_path / "data"),
        download=False,
        model_args={"width": 4},
        seed=seed,
        device="cpu",
        prune=prune,
        settings={"period": 1, "lam": 1e-4},
    )
    stages.prune_run(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    splits = stages.load_data(cfg)
    model = stages.build_model(cfg, splits.num_classes)  # init from derive_seed(s, "weights")

    # the training batches: one construction, one seed stream
    api = gemminer.api._batches(
        splits.train,
        batch_size=8,
        device=torch.device("cpu"),
        train=True,
        seed=derive_seed(seed, "prune-data"),
        mean=splits.mean,
        std=splits.std,
    )
    cli = stages.train_loader(splits, 8, torch.device("cpu"), derive_seed(seed, "prune-data"))
    for (x, y), (x_cli, y_cli) in zip(api, cli, strict=True):
        assert torch.equal(x, x_cli) and torch.equal(y, y_cli)

    result = gemminer.mine(
        model,
        splits.train,
        density=0.2,
        epochs=2,
        period=1,
        lam=1e-4,
        lr=0.1,
        batch_size=8,
        mean=splits.mean,
        std=splits.std,
        device="cpu",
        seed=seed,
    )
    mask = gemminer.Mask.load(tmp_path / "run" / "mask.pt")
    assert set(result.mask) == set(mask)
    assert all(torch.equal(result.mask[k], mask[k]) for k in mask)
    assert result.mask.num_kept == mask.num_kept < mask.num_total
