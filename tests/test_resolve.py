"""One resolver: every way into a run (the commands, a sweep, a mapping, the Python API)
resolves the same inputs to the same settings and run folder; the options table is the one
place a setting is declared."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import gemminer
import gemminer.api
from gemminer.cli import build_parser, config_from_args, main
from gemminer.errors import ConfigError
from gemminer.methods import METHODS
from gemminer.methods.gem_miner import mine_config
from gemminer.rundir.runs import default_run_name
from gemminer.settings import options as options_module
from gemminer.settings.config import RunConfig
from gemminer.settings.explain import explain_settings
from gemminer.settings.options import OPTIONS, RUNTIME, Option, options_for, sweep_options
from gemminer.settings.recipe import load_recipe, parse_recipe
from gemminer.settings.resolve import resolve
from gemminer.sweep import expand, load_sweep

SRC = Path(gemminer.__file__).parent

#: (command, its flags, the same options as a mapping of plain values).
CASES = [
    ("mine", [], {}),
    (
        "mine",
        ["--density", "0.05", "--epochs", "10", "--batch-size", "64"],
        {"density": 0.05, "epochs": 10, "batch_size": 64},
    ),
    (
        "mine",
        ["--epochs", "10", "--optimizer", "adam", "--lambda", "0", "--model", "vgg16",
         "--set", "collapse_guard=false", "--set", "min_layer_density=0.01"],
        {"epochs": 10, "optimizer": "adam", "lambda": 0.0, "model": "vgg16",
         "set": {"collapse_guard": False, "min_layer_density": 0.01}},
    ),
    (
        "prune",
        ["--method", "snip", "--epochs", "0", "--set", "batches=2", "--train-size", "500",
         "--val-size", "100", "--data-dir", "/data/c10", "--no-download"],
        {"method": "snip", "epochs": 0, "set": {"batches": 2}, "train_size": 500,
         "val_size": 100, "data_dir": "/data/c10", "no_download": True},
    ),
    (
        "prune",
        ["--method", "imp", "--epochs", "3", "--finetune-epochs", "4", "--lr", "0.05",
         "--eval-every", "2", "--model-arg", "width=8", "--data-arg", "skip_bad=true",
         "--weight-decay", "0.001", "--no-epoch-eval"],
        {"method": "imp", "epochs": 3, "finetune_epochs": 4, "lr": 0.05, "eval_every": 2,
         "model_arg": {"width": 8}, "data_arg": {"skip_bad": True}, "weight_decay": 0.001,
         "no_epoch_eval": True},
    ),
    (
        "prune",
        ["--method", "dense", "--density", "0.005", "--weight-init", "signed_constant",
         "--seed", "3", "--image-size", "64", "--finetune-lr", "0.02"],
        {"method": "dense", "density": 0.005, "weight_init": "signed_constant", "seed": 3,
         "image_size": 64, "finetune_lr": 0.02},
    ),
    ("run", ["resnet20-cifar10-d1.44"], {}),
    (
        "run",
        ["resnet20-cifar10-d1.44", "--epochs", "10", "--batch-size", "32"],
        {"epochs": 10, "batch_size": 32},
    ),
    (
        "run",
        ["vgg16-cifar10-d1.4", "--epochs", "8", "--optimizer", "sgd", "--period", "2"],
        {"epochs": 8, "optimizer": "sgd", "period": 2},
    ),
    ("run", ["resnet50-caltech101-d5", "--set", "lam=0"], {"set": {"lam": 0}}),
]  # fmt: skip


def _ids(case):
    return " ".join([case[0], *case[1]])


def cli_config(argv: list[str], capsys) -> RunConfig:
    """What `gemminer ARGV --print-config` prints."""
    assert main([*argv, "--print-config"]) == 0
    return RunConfig.from_dict(json.loads(capsys.readouterr().out))


def sweep_config(tmp_path: Path, base: dict) -> RunConfig:
    """The one point of a sweep whose base is ``base``."""
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": base}, sort_keys=False))
    (point,), notes = expand(load_sweep(path, out=tmp_path / "out"))
    assert notes == [] and point.folder.name == default_run_name(point.config)
    return point.config


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_every_way_in_resolves_the_same_run(case, tmp_path, capsys):
    """`gemminer mine|prune|run`, a sweep point and `resolve(mapping)` give equal configs,
    so equal run folders (named by the hash of the settings)."""
    command, flags, mapping = case
    recipe = flags[0] if command == "run" else None
    configs = {
        "command line": cli_config([command, *flags], capsys),
        "parsed flags": config_from_args(build_parser().parse_args([command, *flags])),
        "resolve": resolve(mapping, recipe),
    }
    if command == "run":
        configs["sweep"] = sweep_config(tmp_path, {"recipe": recipe, **mapping})
        configs["recipe object"] = resolve(mapping, load_recipe(recipe))
    else:
        configs["sweep"] = sweep_config(tmp_path, {"method": "gem-miner", **mapping})
        if command == "mine":  # `mine` is `prune --method gem-miner`
            configs["prune"] = cli_config(["prune", "--method", "gem-miner", *flags], capsys)
    expected = configs["resolve"]
    for way, cfg in configs.items():
        assert cfg.to_dict() == expected.to_dict(), way
        assert default_run_name(cfg) == default_run_name(expected), way


def test_pinned_run_folders_resolve_from_mappings():
    """Run folders of existing commands (tests/test_cli.py pins them for the commands)."""
    pinned = {
        "gem-miner-resnet20-cifar10-d0.0144-1588156296": ({}, None),
        "gem-miner-resnet20-cifar10-d0.05-f5d17eef25": (
            {"epochs": 10, "batch_size": 64, "density": 0.05},
            None,
        ),
        "snip-resnet20-cifar10-d0.0144-0c2bec6916": (
            {"method": "snip", "epochs": 0, "set": {"batches": 2}},
            None,
        ),
        "imp-resnet20-cifar10-d0.0144-5df30e0a26": (
            {"method": "imp", "epochs": 3, "finetune_epochs": 4},
            None,
        ),
        "gem-miner-resnet20-cifar10-d0.0144-b6dd2c3a83": (
            {"epochs": 10, "batch_size": 32},
            "resnet20-cifar10-d1.44",
        ),
        "gem-miner-resnet50-caltech101-d0.05-002bbb8cdd": ({}, "resnet50-caltech101-d5"),
    }
    for name, (mapping, recipe) in pinned.items():
        assert default_run_name(resolve(mapping, recipe)) == name


@pytest.mark.parametrize(
    "mapping",
    [
        {},
        {"density": 0.05, "epochs": 10, "batch_size": 64},
        {"epochs": 10, "optimizer": "adam", "lambda": 0.0},
        {"density": 0.5, "epochs": 30, "regularizer": "l1", "period": 3, "lr": 0.2},
        {"epochs": 5, "set": {"freeze_schedule": "algorithm1", "finetune_mask": "rounded"}},
    ],
)
def test_the_python_api_mines_with_the_resolved_settings(mapping, monkeypatch):
    """`gemminer.mine(...)` trains with the Gem-Miner settings `gemminer mine` resolves
    (the API has no model name: the paper's main table, the command line's default)."""
    seen = {}

    def capture(model, train, cfg, device, **kwargs):
        seen["cfg"] = cfg
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(gemminer.api, "mine_scores", capture)
    cfg = resolve(mapping)
    expected = mine_config(cfg.prune, METHODS.get("gem-miner").build_settings(cfg.settings))
    names = {"lambda": "lam"}
    kwargs = {names.get(k, k): v for k, v in mapping.items() if k not in ("set", "density")}
    kwargs.update(mapping.get("set", {}), density=cfg.prune.density, epochs=cfg.prune.epochs)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    batches = [(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(KeyboardInterrupt):
        gemminer.mine(net, batches, device="cpu", **kwargs)
    assert seen["cfg"] == expected


def test_the_apis_unset_arguments_are_left_to_the_resolver():
    """No default is chosen in the API's signature: what is not given is ``None`` and
    resolved as the command line resolves it; only run-time values have plain defaults."""
    mine = inspect.signature(gemminer.mine).parameters
    for key in ("lam", "period", "lr", "optimizer", "regularizer", "freeze_schedule"):
        assert mine[key].default is None, key
    assert mine["finetune_mask"].default is None
    assert (mine["batch_size"].default, mine["device"].default, mine["seed"].default) == (
        128,
        "auto",
        0,
    )
    assert mine["precision"].default == "auto"
    ft = inspect.signature(gemminer.finetune).parameters
    for key in ("lr", "optimizer", "weight_decay", "schedule", "milestones"):
        assert ft[key].default is None, key


@pytest.mark.parametrize("density, lr", [(0.0144, 0.01), (0.5, 0.1)])
def test_the_python_api_finetunes_with_table_15s_row_for_the_masks_density(
    density, lr, monkeypatch
):
    """`gemminer.finetune(...)` without an LR takes Table 15's row nearest to the mask's
    density (0.01 below 50 %, 0.1 at it), milestones at 80/150 and 120/150; a given
    value replaces only itself."""
    seen = []

    def capture(model, mask, train, cfg, device, **kwargs):
        seen.append(cfg)
        return []

    monkeypatch.setattr(gemminer.api, "_finetune", capture)
    net = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))
    kept = torch.zeros(1000)
    kept[: round(1000 * density)] = 1.0
    mask = gemminer.Mask({"1.weight": kept.view(10, 100)})
    batches = [(torch.zeros(2, 100), torch.zeros(2, dtype=torch.long))]
    gemminer.finetune(net, mask, batches, epochs=15, device="cpu")
    gemminer.finetune(net, mask, batches, epochs=15, device="cpu", lr=0.3, milestones=(0.5,))
    default, given = seen
    assert default.optim.lr == lr and default.optim.name == "sgd"
    assert default.optim.milestones == pytest.approx((80 / 150, 120 / 150))
    assert default.optim.weight_decay == 1e-4 and default.epochs == 15
    assert given.optim.lr == 0.3 and given.optim.milestones == (0.5,)
    assert given.optim.weight_decay == default.optim.weight_decay


def test_values_may_be_text_or_plain_values():
    """A mapping's values read as their flags do: ``"0.05"`` is 0.05, ``["lam=0"]`` is --set."""
    as_text = resolve({"density": "0.05", "epochs": "10", "set": ["lam=0"], "seed": "2"})
    plain = resolve({"density": 0.05, "epochs": 10, "set": {"lam": 0.0}, "seed": 2})
    assert as_text == plain and plain.settings["lam"] == 0.0
    assert resolve({"density": None, "no_download": False}) == resolve({})  # not given


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"batchsize": 8}, "unknown run setting 'batchsize' (did you mean 'batch_size'?)"),
        ({"out": "runs/x"}, "unknown run setting 'out'"),  # what a command does, not a setting
        ({"precision": "bf16"}, "unknown run setting 'precision'"),  # how a process trains
        ({"epochs": 0}, "argument --epochs: must be a whole number >= 1, got 0"),
        ({"method": "snip", "epochs": -1}, "argument --epochs: must be a whole number >= 0"),
        ({"epochs": 2.5}, "argument --epochs: must be a whole number, got 2.5"),
        ({"lr": "fast"}, "argument --lr: invalid float value: 'fast'"),
        ({"optimizer": "adamw"}, "invalid choice: 'adamw' (choose from 'sgd', 'adam'); did you"),
        ({"method": "snip", "lambda": 1e-4}, "--lambda only applies to gem-miner, not snip"),
        ({"set": ["lam"]}, "--set takes KEY=VALUE, got 'lam'"),
        ({"model_arg": ["=1"]}, "--model-arg takes KEY=VALUE, got '=1'"),
        ({"no_download": 1}, "argument --no-download: true or false, got 1"),
    ],
)
def test_mistakes_in_a_mapping_read_as_the_flags_do(mapping, message):
    with pytest.raises(ConfigError) as err:
        resolve(mapping)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_one_density_check_with_one_wording(tmp_path, capsys):
    """The command line, a mapping, a sweep, a recipe file and the API check a density in
    one place (gemminer.settings.config.check_density), so they say the same."""
    wording = "density must lie in (0, 1] (the fraction of weights kept), got 1.5"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["mine", "--density", "1.5"])
    assert f"argument --density: {wording}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"^argument --density: density must lie"):
        resolve({"density": 1.5})
    path = tmp_path / "s.yaml"
    path.write_text("base: {method: snip}\ngrid: {density: [1.5]}\n")
    with pytest.raises(ConfigError) as err:
        expand(load_sweep(path))
    assert f"argument --density: {wording}" in str(err.value)
    recipe = {"model": "resnet20", "dataset": "cifar10", "density": 1.5, "epochs": 5}
    with pytest.raises(ConfigError, match=r"bad\.yaml: density must lie in \(0, 1\] \(the"):
        parse_recipe(recipe, "bad.yaml")
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ConfigError) as err:
        gemminer.mine(net, [], density=1.5, epochs=1)
    assert str(err.value) == wording
    with pytest.raises(ConfigError, match=r"density must be a number, got 'x'"):
        resolve({"density": "x"})


# -- the options table ------------------------------------------------------------------------


def _long_flags(command: str) -> list[str]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # introspection: tests only
    flags = [a.option_strings[-1] for a in sub._actions if a.option_strings]
    return [f for f in flags if f != "--help"]


@pytest.mark.parametrize("command", ["mine", "prune", "run"])
def test_the_commands_flags_are_the_tables(command):
    assert _long_flags(command) == [o.flag for o in options_for(command)]
    for o in options_for(command):
        assert o.help.strip() and o.group in ("run", "runtime", "command"), o.key
    # a sweep takes the same options, less those it sets itself (each says what instead)
    sweep = sweep_options(command)
    assert [o.key for o in options_for(command) if o.key not in sweep] == [
        o.key for o in options_for(command) if o.sweep
    ]


def test_a_new_option_is_one_table_entry(monkeypatch, tmp_path):
    """Added to the table, a setting is a flag of the commands, a key of sweep files and
    an option of the resolver at once (and, not read by the resolver, changes nothing)."""
    extra = Option("warmup", "epochs of LR warm-up", options_module.whole_number(0))
    monkeypatch.setattr(options_module, "OPTIONS", (*OPTIONS, extra))
    args = build_parser().parse_args(["mine", "--warmup", "2"])
    assert args.warmup == 2 and options_module.given(args) == {"warmup": 2}
    assert config_from_args(args) == resolve({})
    assert "warmup" in sweep_options("prune")
    with pytest.raises(ConfigError, match="argument --warmup: must be a whole number >= 0"):
        resolve({"warmup": -1})
    threads = Option("io_threads", "reader threads", group=RUNTIME, commands=("mine",))
    monkeypatch.setattr(options_module, "OPTIONS", (*OPTIONS, threads))
    assert build_parser().parse_args(["mine", "--io-threads", "4"]).io_threads == "4"
    with pytest.raises(ConfigError, match="unknown run setting 'io_threads'"):
        resolve({"io_threads": 4})


# -- modules ------------------------------------------------------------------------------


# The whole package's import graph has no circle: tests/test_architecture.py.


def test_a_sweep_resolves_without_the_command_line():
    code = "import sys, gemminer.sweep; print('gemminer.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _finetune(**options):
    ft = resolve(options).finetune
    return ft.epochs, ft.optim.lr, ft.optim.milestones, ft.optim.weight_decay


def test_smart_ratio_defaults_are_its_authors_configs_not_table_15():
    """configs/sr/resnet20/resnet20_sr.yml: LR 0.1 for 160 epochs, × 0.1 after 80 and 120,
    Kaiming normal √2 wider; Gem-Miner's ticket gets Table 15's LR 0.01 for 150."""
    sr = {"method": "smart-ratio", "model": "resnet20", "density": 0.0144, "epochs": 0}
    assert _finetune(**sr) == (160, 0.1, (0.5, 0.75), 1e-4)
    assert resolve(sr).weight_init == "kaiming_normal_fan_half"
    assert "smart-ratio's authors' finetuning" in explain_settings(resolve(sr))[1]
    assert _finetune(**sr | {"epochs": 10}) == (11, 0.1, (0.5, 0.75), 1e-4)  # 160 × 10/150
    assert resolve(sr | {"method": "smart-ratio-v3"}).finetune.optim.lr == 0.1
    gm = {"model": "resnet20", "density": 0.0144, "epochs": 150}
    assert _finetune(**gm)[:3] == (150, 0.01, (80 / 150, 120 / 150))
    assert resolve(gm).weight_init == "signed_constant"
    # no config of theirs for ResNet-32: Table 15's row
    assert _finetune(**sr | {"model": "resnet32", "dataset": "cifar100"})[:2] == (150, 0.01)
    vgg = _finetune(**sr | {"model": "vgg16"})
    assert vgg[:3] == (200, 0.1, (0.5, 0.75))
    # a recipe of the method itself keeps its own finetuning row
    recipe = load_recipe("resnet20-cifar10-d1.44")
    own = parse_recipe(
        {**{k: getattr(recipe, k) for k in ("name", "paper", "model", "dataset", "density")},
         "method": "smart-ratio", "epochs": 150, "finetune": {"epochs": 150, "lr": 0.02}},
        "x.yaml",
    )  # fmt: skip
    assert resolve({}, own).finetune.optim.lr == 0.02


def test_finetune_milestones_and_the_old_smart_ratio_settings_name_the_same_folder():
    """Every finetuning setting can be given, so a run made under earlier defaults (Smart
    Ratio finetuned like Gem-Miner's ticket) is named, resumed and reported again."""
    old = {"method": "smart-ratio", "model": "resnet20", "density": 0.0144, "epochs": 0,
           "finetune_epochs": 150, "finetune_lr": 0.01, "finetune_milestones": "80,120",
           "weight_init": "kaiming_normal"}  # fmt: skip
    cfg = resolve(old)
    assert cfg.finetune.optim.milestones == (80 / 150, 120 / 150)
    gm_like = resolve({"model": "resnet20", "density": 0.0144, "epochs": 150}).finetune
    assert cfg.finetune == gm_like
    flags = ["prune", "--method", "smart-ratio", "--model", "resnet20", "--density", "0.0144",
             "--epochs", "0", "--finetune-epochs", "150", "--finetune-lr", "0.01",
             "--finetune-milestones", "80,120", "--weight-init", "kaiming_normal"]  # fmt: skip
    assert default_run_name(config_from_args(build_parser().parse_args(flags))) == (
        default_run_name(cfg)
    )
    assert resolve(old | {"finetune_milestones": [100]}).finetune.optim.milestones == (100 / 150,)
    for bad, message in [
        ("120,80", "must increase, got 120,80"),
        ("80,,120", "must be epochs like 80,120"),
        ("0,80", "must be a whole number >= 1, got 0"),
        ("80,200", "200 is past the 150 finetuning epochs"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve(old | {"finetune_milestones": bad})
