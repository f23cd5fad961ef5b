"""Ticket export: a real (tiny) run folder exported, reloaded as a plain model, tampered with."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from gemminer.cli import main
from gemminer.errors import GemMinerError, MaskError, RunError, UnknownNameError
from gemminer.masking import prunable_weights
from gemminer.rundir.export import BITS, VALUES, export_run, load_exported, read_metadata
from gemminer.rundir.runs import RunDir
from gemminer.stages import eval_loaders, load_data
from gemminer.training import evaluate

from .conftest import write_image_folder

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`gemminer mine --finetune` of ResNet-20 on a tiny image folder at 5 % density."""
    data = tmp_path_factory.mktemp("export-data")
    write_image_folder(data)
    out = tmp_path_factory.mktemp("export-runs") / "run"
    args = [
        "mine",
        *("--model", "resnet20", "--dataset", "cifar10", "--no-download"),
        *("--batch-size", "16", "--no-progress", "--data-dir", str(data)),
        *("--density", "0.05", "--epochs", "3", "--finetune", "--finetune-epochs", "2"),
        *("--out", str(out)),
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def exported(run_dir):
    return export_run(run_dir)


def _accuracy(model: nn.Module, run_dir) -> float:
    cfg = RunDir(run_dir).read_config()
    test = eval_loaders(load_data(cfg), DEVICE)["test"]
    return evaluate(model, test, DEVICE).accuracy


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_export_writes_a_small_file_beside_the_run(run_dir, exported):
    assert exported.path == run_dir / "ticket.safetensors" and exported.path.is_file()
    finetuned = (run_dir / "finetuned.pt").stat().st_size
    assert exported.file_bytes == exported.path.stat().st_size
    assert exported.checkpoint_bytes == finetuned
    assert exported.ratio == exported.file_bytes / finetuned
    assert exported.file_bytes < finetuned / 4  # 5 % density: bitmask + kept values
    s = summary(run_dir)
    assert exported.num_kept == s["num_kept"] and exported.num_prunable == s["num_prunable"]
    assert exported.num_classes == 3 and exported.test_acc == s["post_finetune_acc"]
    assert str(exported.file_bytes) in exported.describe()


def test_reloaded_model_equals_finetuned_weights_and_reported_accuracy(run_dir, exported):
    model = load_exported(exported.path)
    assert not model.training
    reference = torch.load(run_dir / "finetuned.pt", weights_only=True)
    state = model.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    assert _accuracy(model, run_dir) == summary(run_dir)["post_finetune_acc"]


def test_reloaded_model_is_plain_with_the_mask_baked_in(run_dir, exported):
    model = load_exported(exported.path)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and {type(m) for m in layers} <= {nn.Conv2d, nn.Linear}
    assert not any(type(m).__module__.startswith("gemminer.masking") for m in model.modules())
    assert not any("score" in n or "flag" in n for n, _ in model.named_parameters())
    mask = torch.load(run_dir / "mask.pt", weights_only=True)
    for name, w in prunable_weights(model).items():
        assert torch.all(w[~mask[name]] == 0), name


def test_bitmask_and_values_follow_the_documented_layout(run_dir, exported):
    meta = read_metadata(exported.path)
    mask = torch.load(run_dir / "mask.pt", weights_only=True)
    weights = torch.load(run_dir / "finetuned.pt", weights_only=True)
    with safe_open(exported.path, framework="pt") as f:
        bits, values = f.get_tensor(BITS), f.get_tensor(VALUES)
    names = [name for name, _ in meta["layout"]]
    assert names == list(mask)  # definition order of the Conv2d/Linear layers
    flat = torch.cat([mask[n].flatten() for n in names])
    assert bits.dtype == torch.uint8 and bits.numel() == (flat.numel() + 7) // 8
    unpacked = np.unpackbits(bits.numpy(), bitorder="little")[: flat.numel()]
    assert np.array_equal(unpacked.astype(bool), flat.numpy())
    assert bits[0].item() == sum(int(b) << i for i, b in enumerate(flat[:8].tolist()))
    assert torch.equal(values, torch.cat([weights[n].flatten()[mask[n].flatten()] for n in names]))
    assert meta["format_version"] == 1 and meta["bit_order"] == "little"
    assert meta["model"] == "resnet20" and meta["num_classes"] == 3 and meta["model_args"] == {}
    assert meta["num_kept"] == int(flat.sum()) == values.numel()
    assert meta["test_acc"] == summary(run_dir)["post_finetune_acc"]
    # inputs are normalized as in training: the data set's per-channel statistics travel along
    assert meta["input_mean"] == summary(run_dir)["input_mean"] and len(meta["input_std"]) == 3


def test_ticket_variant_is_the_unfinetuned_masked_ticket(run_dir, tmp_path):
    info = export_run(run_dir, tmp_path / "t.safetensors", which="ticket")
    assert info.which == "ticket" and info.checkpoint.name == "ticket.pt"
    model = load_exported(info.path)
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    mask = torch.load(run_dir / "mask.pt", weights_only=True)
    for key, value in model.state_dict().items():
        expected = ticket[key] * mask[key] if key in mask else ticket[key]
        assert torch.equal(value, expected), key
    assert _accuracy(model, run_dir) == summary(run_dir)["pre_finetune_acc"]
    assert read_metadata(info.path)["test_acc"] == summary(run_dir)["pre_finetune_acc"]
    default = export_run(run_dir, which="ticket")
    assert default.path == run_dir / "ticket-unfinetuned.safetensors"


def _tamper(src, dst, edit) -> None:
    with safe_open(src, framework="pt") as f:
        meta = json.loads(f.metadata()["gemminer"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors, meta)
    save_file(tensors, dst, metadata={"gemminer": json.dumps(meta)})


def _set(key, value):
    return lambda t, m: m.__setitem__(key, value)


def _flip_first_bit(t, m):
    t[BITS] = t[BITS].clone()
    t[BITS][0] ^= 1


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda t, m: t.__setitem__(BITS, t[BITS][:-1]), MaskError, "the bitmask __mask_bits__"),
        (lambda t, m: t.__setitem__(VALUES, t[VALUES][:-1]), MaskError, "kept values for a"),
        (_set("num_kept", 7), MaskError, "metadata num_kept 7"),
        (_flip_first_bit, MaskError, "the bitmask keeps"),
        (lambda t, m: t.pop("layer1.0.bn1.running_mean"), RunError, "layer1.0.bn1.running_mean"),
        (lambda t, m: t.pop(BITS), RunError, "tensor __mask_bits__ is missing"),
        (lambda t, m: t.__setitem__("extra", torch.zeros(2)), RunError, "unexpected tensors"),
        (_set("format_version", 99), RunError, "format version 99"),
        (_set("model", "resnet99"), UnknownNameError, "unknown model 'resnet99'; valid models"),
        (lambda t, m: m.update(num_classes=5, class_names=None), MaskError, "fc.weight"),
        (_set("num_classes", 5), RunError, "class_names must be 5 strings"),
        (_set("layout", [["conv1.weight", [1]]]), MaskError, "the layout lists"),
        (_set("class_names", ["cat"]), RunError, "class_names must be 3 strings"),
        (
            lambda t, m: t.__setitem__(VALUES, t[VALUES].double()),
            MaskError,
            "must be a 1-D torch.float32",
        ),
    ],
)
def test_tampered_files_are_rejected_clearly(exported, tmp_path, edit, error, message):
    bad = tmp_path / "bad.safetensors"
    _tamper(exported.path, bad, edit)
    with pytest.raises(error) as info:
        load_exported(bad)
    assert message in str(info.value) and str(bad) in str(info.value)


def test_files_that_are_not_ticket_files_are_rejected_without_unpickling(run_dir, tmp_path):
    with pytest.raises(RunError, match="not a safetensors file"):
        load_exported(run_dir / "finetuned.pt")  # a pickle: never opened as one
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(RunError, match="no 'gemminer' entry"):
        load_exported(plain)
    with pytest.raises(RunError, match="does not exist"):
        load_exported(tmp_path / "missing.safetensors")


def test_export_refuses_incomplete_or_inconsistent_runs(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = torch.load(copy / "finetuned.pt", weights_only=True)
    mask = torch.load(copy / "mask.pt", weights_only=True)
    weights["conv1.weight"][~mask["conv1.weight"]] = 1.0
    torch.save(weights, copy / "finetuned.pt")
    with pytest.raises(RunError, match="conv1.weight has nonzero weights where mask.pt prunes"):
        export_run(copy)
    (copy / "finetuned.pt").unlink()
    with pytest.raises(RunError, match="no finetuned.pt.*--ticket"):
        export_run(copy)
    with pytest.raises(GemMinerError, match="unknown export 'best'"):
        export_run(copy, which="best")
    assert not (copy / "ticket.safetensors").exists()


def test_export_command(run_dir, tmp_path, capsys):
    from gemminer.cli import main

    out = tmp_path / "t.safetensors"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "% of finetuned.pt" in printed and out.is_file()
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_export_carries_the_class_names_and_the_recorded_class_count(run_dir, exported):
    s = summary(run_dir)
    assert s["num_classes"] == 3 and s["class_names"] == ["cat", "dog", "ship"]
    assert read_metadata(exported.path)["class_names"] == s["class_names"]
    assert load_exported(exported.path).class_names == tuple(s["class_names"])


def test_runs_without_recorded_classes_still_export(run_dir, tmp_path):
    """Runs pruned before num_classes/class_names were recorded: inferred, names null."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    data = json.loads((old / "summary.json").read_text())
    del data["num_classes"], data["class_names"]
    (old / "summary.json").write_text(json.dumps(data))
    info = export_run(old)
    assert info.num_classes == 3 and load_exported(info.path).class_names is None


def test_a_run_without_input_normalization_is_not_exported(tmp_path):
    """An exported ticket must say how to normalize inputs (issue 27, 3): a summary without
    input_mean/input_std is refused, nothing written."""
    import json

    from gemminer.errors import RunError
    from gemminer.rundir.export import export_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "snip"}))
    figures = {"method": "snip", "model": "resnet20", "dataset": "cifar10"}
    (run / "summary.json").write_text(json.dumps(figures | {"target_density": 0.1, "density": 0.1}))
    with pytest.raises(RunError, match="records no input normalization"):
        export_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "summary.json"]
