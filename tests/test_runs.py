"""Run folders: stable names, atomic files, safe loading."""

import dataclasses
import json
import os
import pickle

import pytest

from gemminer.errors import RunError
from gemminer.rundir.files import safe_torch_load
from gemminer.rundir.runs import RunDir, config_hash, default_run_name
from gemminer.settings.config import PruneConfig, RunConfig


def test_default_run_name_and_hash_are_pinned():
    cfg = RunConfig()
    assert default_run_name(cfg) == "gem-miner-resnet20-cifar10-d0.0144-002fb39fde"
    # the same settings under the first defaults (option-B ResNet, Algorithm 1's freezing)
    first = dataclasses.replace(cfg, defaults_version=1)
    assert default_run_name(first) == "gem-miner-resnet20-cifar10-d0.0144-edf4409b6b"
    # paths and devices do not change results, so they do not change the hash
    moved = dataclasses.replace(cfg, data_dir="/elsewhere", device="cuda", download=False)
    assert config_hash(moved) == config_hash(cfg)
    # any setting that changes the mask does
    other = dataclasses.replace(cfg, prune=PruneConfig(density=0.05))
    assert config_hash(other) != config_hash(cfg)
    assert default_run_name(other).startswith("gem-miner-resnet20-cifar10-d0.05-")
    # later options change the hash only when used
    for change in ({"image_size": 64}, {"model_args": {"width": 8}}, {"pretrained": "w.pth"}):
        assert config_hash(dataclasses.replace(cfg, **change)) != config_hash(cfg)


def test_config_round_trips_through_the_run_folder(tmp_path):
    cfg = dataclasses.replace(RunConfig(), method="snip", settings={"batches": 2}, train_size=500)
    run = RunDir(tmp_path)
    run.write_config(cfg)
    assert run.read_config() == cfg


def test_unsafe_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "mask.pt"
    path.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(RunError, match="cannot load"):
        safe_torch_load(path)
    assert not marker.exists()


def test_a_folder_of_the_first_defaults_is_not_taken_for_a_new_run(tmp_path):
    """config.json written before `defaults_version` existed reads as version 1, so the
    same command under today's defaults neither skips nor resumes it."""
    import json

    from gemminer.rundir.runs import RunDir
    from gemminer.settings.config import DEFAULTS_VERSION, RunConfig

    run = RunDir(tmp_path / "run")
    run.write_config(RunConfig())
    data = json.loads(run.file("config.json").read_text())
    assert data["defaults_version"] == DEFAULTS_VERSION == 2
    del data["defaults_version"]
    run.file("config.json").write_text(json.dumps(data))
    assert run.read_config().defaults_version == 1
    assert run.read_config() != RunConfig()


def test_the_typed_summary_reads_old_files_and_keeps_unknown_keys(tmp_path):
    """summary.json of an older run (no num_classes, model_args, ...) with keys this
    gemminer does not name: every missing figure reads None, and rewriting it keeps every
    key and value it had."""
    import json

    from gemminer.rundir.summary import SUMMARY_KEYS, RunSummary

    old = {
        "method": "gem-miner",
        "model": "resnet20",
        "dataset": "cifar10",
        "target_density": 0.05,
        "density": 0.049,
        "pre_finetune_acc": 0.3,
        "post_finetune_acc": None,
        "epochs_mining": 3,
        "epochs_finetune": 0,
        "seconds": 1.5,
        "finetune_mask": "flags",
        "flag_density": None,
        "command": "gemminer mine ...",  # written by a script
    }
    run = RunDir(tmp_path)
    run.file("summary.json").write_text(json.dumps(old))
    summary = run.summary()
    assert summary.num_classes is None and summary.model_args is None
    assert summary.epochs_mining == 3 and summary.finetune_mask == "flags"
    assert summary.extra == {"command": "gemminer mine ..."}
    run.write_summary(summary.updated(post_finetune_acc=0.6, seconds_finetune=2.0))
    new = json.loads(run.file("summary.json").read_text())
    assert {k: v for k, v in new.items() if k in old} == old | {"post_finetune_acc": 0.6}
    assert set(SUMMARY_KEYS) <= set(new) and new["post_finetune_val_acc"] is None
    # Gem-Miner's figures are written as a group; figures of no group only when known
    assert new["gem_density"] is None and "sanity_check" not in new
    assert RunSummary().to_dict() == dict.fromkeys(SUMMARY_KEYS)
    assert RunSummary.from_dict(new) == summary.updated(post_finetune_acc=0.6, seconds_finetune=2.0)


def test_a_summary_figure_of_the_wrong_type_names_the_file(tmp_path):
    run = RunDir(tmp_path)
    figures = {"method": "snip", "model": "resnet20", "dataset": "cifar10", "target_density": 0.5}
    run.file("summary.json").write_text(json.dumps(figures | {"density": "most", "seed": 0}))
    with pytest.raises(RunError, match=r"summary\.json: density is 'most', expected a number"):
        run.summary()
    assert run.read_summary()["density"] == "most"  # the plain object, for scripts


def test_a_summary_without_what_every_run_knows_is_refused(tmp_path):
    """Valid JSON without a finished run's figures (issue 27, 3) is refused by the one
    checked loader, naming the file and the missing keys."""
    run = RunDir(tmp_path)
    run.file("summary.json").write_text('{"foo": 1, "method": "snip", "density": null}')
    with pytest.raises(RunError, match=r"summary\.json: model, dataset, target_density, density"):
        run.summary()


def test_run_files_get_the_permissions_of_the_umask(tmp_path):
    """Issue 27, 7: atomically written files are not private (mkstemp's 0600) but what the
    umask allows, as a plain open would make them."""
    from gemminer.rundir.files import atomic_write_text

    before = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(before)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
