"""The mining LR per optimizer and budget: SGD keeps the summed LR, Adam keeps its LR.

Another optimizer than the row's starts from its own default LR; ``--lr`` always wins;
``gemminer mine`` and :func:`gemminer.mine` resolve the same settings.
"""

import pytest
import torch
from torch import nn

import gemminer
import gemminer.api
from gemminer.cli import build_parser, config_from_args, resolve_run
from gemminer.errors import ConfigError
from gemminer.settings.config import (
    DEFAULT_LR,
    SGD_LAMBDA_PULL,
    budget_scaled_lambda,
    budget_scaled_lr,
    lambda_pull,
    mining_lr,
    sgd_pull_target,
)
from gemminer.settings.recipe import load_recipe


def run_cfg(recipe, *flags):
    return resolve_run([recipe, *flags])[1]


def mine_cfg(*flags):
    return config_from_args(build_parser().parse_args(["mine", *flags]))


def test_budget_rule_per_optimizer():
    assert budget_scaled_lr(0.1, 150, 10, "sgd") == pytest.approx(1.5)
    assert budget_scaled_lr(0.1, 150, 300, "sgd") == 0.1  # longer runs keep the LR
    assert budget_scaled_lr(0.01, 150, 10, "adam") == 0.01
    assert budget_scaled_lr(0.01, 150, 1, "adam") == 0.01
    assert budget_scaled_lr(0.1, 0, 10, "sgd") == 0.1  # no published budget
    with pytest.raises(ConfigError, match="unknown optimizer 'lbfgs'"):
        budget_scaled_lr(0.1, 150, 10, "lbfgs")


def test_another_optimizer_starts_from_its_own_default():
    assert DEFAULT_LR == {"sgd": 0.1, "adam": 0.01}
    assert mining_lr("adam", 10, tuned_lr=0.1, tuned_epochs=150) == 0.01
    assert mining_lr("sgd", 10, tuned_lr=0.02, tuned_optimizer="adam", tuned_epochs=150) == (
        pytest.approx(0.1 * 15)
    )
    assert mining_lr("adam", 10, tuned_lr=0.001, tuned_optimizer="adam", tuned_epochs=200) == 0.001


@pytest.mark.parametrize(
    "name, lr",
    [("resnet50-tinyimagenet-d1.4", 0.01), ("vgg16-cifar10-d1.4", 0.01),
     ("resnet18-tinyimagenet-d1.4", 0.001), ("resnet50-caltech101-d5", 0.001)],
)  # fmt: skip
def test_adam_recipe_keeps_its_lr_on_a_short_budget(name, lr):
    recipe = load_recipe(name)
    assert recipe.optimizer == "adam" and recipe.lr == lr
    for epochs in ("10", "1", str(2 * recipe.epochs)):
        cfg = run_cfg(name, "--epochs", epochs)
        assert (cfg.prune.optim.name, cfg.prune.optim.lr) == ("adam", lr)


def test_sgd_recipe_scales_its_lr_to_the_same_sum():
    cfg = run_cfg("resnet20-cifar10-d1.44", "--epochs", "10")
    assert cfg.prune.optim.name == "sgd" and cfg.prune.optim.lr == pytest.approx(0.1 * 150 / 10)
    cfg = run_cfg("mobilenetv2-cifar10-d5", "--epochs", "30")
    assert cfg.prune.optim.lr == pytest.approx(0.1 * 300 / 30)
    assert run_cfg("resnet20-cifar10-d1.44", "--epochs", "300").prune.optim.lr == 0.1


def test_short_budget_period_is_rounded_and_at_least_one_epoch():
    """T × E/budget rounded, clamped to [1, E]: not "as many freezes" below budget/T."""
    recipe = load_recipe("resnet20-cifar10-d1.44")  # T = 5 of 150 epochs
    assert [recipe.mining_at(e)[0] for e in (10, 29, 30, 45, 60, 150, 300)] == [
        1, 1, 1, 2, 2, 5, 10,
    ]  # fmt: skip
    assert recipe.mining_at(1)[0] == 1


def test_adam_scales_lambda_with_the_root_of_the_steps():
    """Adam cannot carry the budget in its LR, so a run of fewer optimizer steps scales λ
    by √(the row's steps / the run's): fewer epochs, a training subset and a larger batch
    all count; at or above the row's steps λ is the row's."""
    vgg = load_recipe("vgg16-cifar10-d1.4")  # Adam, λ 1e-6, 200 epochs of 391 steps
    assert vgg.steps_per_epoch == 391 and vgg.mining_steps(8, 79) == (78200, 632)
    assert [vgg.mining_at(e)[2] for e in (10, 50, 200, 400)] == [4.472e-6, 2e-6, 1e-6, 1e-6]
    assert vgg.mining_at(8, steps_per_epoch=79)[2] == 1.112e-5  # 8 epochs on 10,000 images
    assert vgg.mining_at(8)[1] == vgg.lr  # the LR itself is unscaled
    assert vgg.mining_at(8, "sgd")[2] == 1e-6  # an SGD run of the row scales its LR instead
    resnet = load_recipe("resnet20-cifar10-d1.44")  # SGD
    assert resnet.mining_at(10)[2] == resnet.lam == 1e-4
    assert resnet.mining_at(10, "adam")[2] == pytest.approx(1e-4 * (150 / 10) ** 0.5, rel=1e-3)
    assert run_cfg("vgg16-cifar10-d1.4", "--epochs", "8", "--train-size", "10000").settings[
        "lam"
    ] == 1.112e-5  # fmt: skip
    assert run_cfg("vgg16-cifar10-d1.4", "--batch-size", "512").settings["lam"] == 1.997e-6
    assert run_cfg("vgg16-cifar10-d1.4", "--val-size", "5000").settings["lam"] == 1.054e-6
    given = run_cfg("vgg16-cifar10-d1.4", "--epochs", "8", "--lambda", "1e-6")
    assert given.settings["lam"] == 1e-6
    caltech = load_recipe("resnet50-caltech101-d1.4")  # no fixed split: counted in epochs
    assert caltech.steps_per_epoch is None and caltech.mining_steps(5) == (50, 5)


def test_sgd_raises_lambda_to_a_floor_on_its_summed_pull_over_fewer_steps_per_epoch():
    """SGD's scaled LR keeps λ's summed pull 2λ·lr·steps over fewer epochs, not over fewer
    steps per epoch: there λ is raised to the row's own run's pull, at least a floor for
    its density (0.2 at 1.44 %), at most 0.2."""
    assert sgd_pull_target(0.35, 0.0144) == sgd_pull_target(1.17, 0.0144) == 0.2
    assert sgd_pull_target(0.117, 0.0144) == pytest.approx(0.2)  # WRN-28-2: raised to 0.2
    assert sgd_pull_target(0.117, 0.1374) == 0.117  # above the floor at 13.74 % (0.0728)
    assert sgd_pull_target(0.01, 0.1374) == pytest.approx(0.0728, abs=1e-4)
    assert sgd_pull_target(1e-4, 0.5) == 1e-4 and sgd_pull_target(0.0, 0.5) == 0.0
    assert sgd_pull_target(0.5, 0.001) == 0.2 and sgd_pull_target(0.05) == 0.05
    assert lambda_pull(1.5e-5, 3.75, 632) == pytest.approx(0.0711, abs=1e-4)
    mnv2 = load_recipe("mobilenetv2-cifar10-d1.44")  # SGD, λ 1.5e-5, 300 epochs of 391 steps
    # the full set at any budget: the same summed pull as the row's run (0.35 ≥ the floor)
    assert [mnv2.mining_at(e)[2] for e in (3, 8, 300, 600)] == [1.5e-5] * 4
    # 10,000 images: 79 steps an epoch, a pull of 0.0711 at any epochs → raised to 0.2
    raised = [mnv2.mining_at(e, steps_per_epoch=79)[2] for e in (3, 8, 30)]
    assert raised == [4.219e-5] * 3
    period, lr, lam = mnv2.mining_at(8, steps_per_epoch=79)
    assert lambda_pull(lam, lr, 8 * 79) == pytest.approx(SGD_LAMBDA_PULL, rel=1e-3)
    # at 20 %: to its own paper run's pull (0.07), above its density's floor (0.05), not to 0.2
    d20 = load_recipe("mobilenetv2-cifar10-d20")
    lam = d20.mining_at(8, steps_per_epoch=79)[2]
    published = lambda_pull(d20.lam, d20.lr, d20.epochs * 391)
    assert published < SGD_LAMBDA_PULL
    assert lambda_pull(lam, d20.lr * 300 / 8, 8 * 79) == pytest.approx(published, rel=1e-3)
    # WRN-28-2 at 1.44 %: its paper run pulled 0.117, below the 1.44 % floor → 0.2
    wrn = load_recipe("wrn28-2-cifar10-d1.44")
    assert wrn.mining_at(8, steps_per_epoch=79)[2] == 8.439e-5
    assert wrn.mining_at(8)[2] == 1e-5  # the full set: the paper run's pull, kept
    # ResNet-20 at 13.74 %: its paper run's 0.117 is above that density's floor → 0.117
    assert load_recipe("resnet20-cifar10-d13.74").mining_at(8, steps_per_epoch=79)[2] == 4.949e-5
    # ResNet-20 at 1.44 %: 0.237 on the subset already ≥ the floor → its own λ
    resnet = load_recipe("resnet20-cifar10-d1.44")
    assert resnet.mining_at(8, steps_per_epoch=79)[2] == 1e-4
    assert resnet.mining_at(150, steps_per_epoch=20)[2] > 1e-4  # batch ~2,500: raised
    # λ = 0 stays 0; another optimizer than the row's has no published SGD pull
    assert load_recipe("mobilenetv2-cifar10-d50").mining_at(8, steps_per_epoch=79)[2] == 0
    assert load_recipe("vgg16-cifar10-d1.4").mining_at(8, "sgd", steps_per_epoch=79)[2] == 1e-6
    # without both LRs the function leaves SGD's λ alone
    assert budget_scaled_lambda(1.5e-5, 117300, 632, "sgd") == 1.5e-5
    assert budget_scaled_lambda(1.5e-5, 117300, 632, "sgd", published_lr=0.1, lr=3.75) == 4.219e-5
    # through the command line, and a given λ always wins
    cfg = run_cfg("mobilenetv2-cifar10-d1.44", "--epochs", "8", "--train-size", "10000")
    assert cfg.settings["lam"] == 4.219e-5
    assert run_cfg("mobilenetv2-cifar10-d1.44", "--epochs", "8").settings["lam"] == 1.5e-5
    given = run_cfg(
        "mobilenetv2-cifar10-d1.44", "--epochs", "8", "--train-size", "10000", "--lambda", "2e-5"
    )
    assert given.settings["lam"] == 2e-5


def test_adam_flag_on_an_sgd_row_gets_adams_default_lr():
    for epochs in ("10", "150"):
        cfg = run_cfg("resnet20-cifar10-d1.44", "--optimizer", "adam", "--epochs", epochs)
        assert (cfg.prune.optim.name, cfg.prune.optim.lr) == ("adam", 0.01)
    cfg = mine_cfg("--model", "wrn28-2", "--density", "0.05", "--optimizer", "adam")
    assert (cfg.prune.optim.name, cfg.prune.optim.lr) == ("adam", 0.01)
    # naming the row's own optimizer changes nothing
    same = run_cfg("resnet20-cifar10-d1.44", "--optimizer", "sgd", "--epochs", "10")
    assert same == run_cfg("resnet20-cifar10-d1.44", "--epochs", "10")


def test_sgd_flag_on_an_adam_row_gets_sgds_default_lr_scaled():
    cfg = run_cfg("resnet50-tinyimagenet-d1.4", "--optimizer", "sgd", "--epochs", "10")
    assert (cfg.prune.optim.name, cfg.prune.optim.lr) == ("sgd", pytest.approx(0.1 * 150 / 10))


def test_other_methods_take_adams_default_too():
    cfg = config_from_args(
        build_parser().parse_args(["prune", "--method", "edge-popup", "--optimizer", "adam"])
    )
    assert cfg.prune.optim.lr == 0.01


@pytest.mark.parametrize(
    "flags",
    [
        ("resnet50-tinyimagenet-d1.4", "--epochs", "10"),
        ("resnet20-cifar10-d1.44", "--epochs", "10"),
        ("resnet20-cifar10-d1.44", "--optimizer", "adam", "--epochs", "10"),
        ("vgg16-cifar10-d1.4", "--optimizer", "sgd"),
    ],
)
def test_explicit_lr_always_wins(flags):
    assert run_cfg(*flags, "--lr", "0.37").prune.optim.lr == 0.37
    assert mine_cfg("--optimizer", "adam", "--epochs", "5", "--lr", "0.37").prune.optim.lr == 0.37


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "density, epochs, optimizer, lr, expected",
    [(0.0144, 10, "sgd", None, 1.5), (0.0144, 10, "adam", None, 0.01),
     (0.5, 30, "adam", None, 0.01), (0.5, 30, "sgd", None, 0.25), (0.0144, 10, "adam", 0.2, 0.2)],
)  # fmt: skip
def test_api_and_cli_resolve_the_same_mining_settings(
    monkeypatch, density, epochs, optimizer, lr, expected
):
    seen = {}

    def capture(model, train, cfg, device, **kwargs):
        seen["cfg"] = cfg
        raise _Stop

    monkeypatch.setattr(gemminer.api, "mine_scores", capture)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    batches = [(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(_Stop):
        gemminer.mine(
            net, batches, density=density, epochs=epochs, optimizer=optimizer, lr=lr, device="cpu"
        )
    api = seen["cfg"]
    flags = ["--density", str(density), "--epochs", str(epochs), "--optimizer", optimizer]
    cli = mine_cfg(*flags, *(["--lr", str(lr)] if lr is not None else []))
    assert (api.optim.name, api.optim.lr) == (cli.prune.optim.name, cli.prune.optim.lr)
    assert api.optim.lr == pytest.approx(expected)
    assert (api.period, api.lam) == (cli.settings["period"], cli.settings["lam"])
