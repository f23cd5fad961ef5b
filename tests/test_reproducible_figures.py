"""A run's reported accuracies are what `gemminer eval` and the exported model give, whatever
precision trained it (issue 27, 1)."""

import json

import torch

from gemminer.cli import main
from gemminer.data import load_dataset
from gemminer.data.loader import eval_batches
from gemminer.rundir.export import export_run, load_exported
from gemminer.stages.evaluate import eval_run
from gemminer.training import evaluate

from .conftest import write_image_folder


def test_a_bf16_run_reports_what_eval_and_the_export_give(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data, n_train=40, n_test=20, size=16)
    out = tmp_path / "run"
    argv = ["mine", "--data-dir", str(data), "--no-download", "--epochs", "3", "--batch-size"]
    argv += ["8", "--density", "0.2", "--precision", "bf16", "--finetune", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    again = eval_run(out)
    assert again["pre_finetune_acc"] == summary["pre_finetune_acc"]
    assert again["post_finetune_acc"] == summary["post_finetune_acc"]
    info = export_run(out, tmp_path / "ticket.gm")
    assert info.test_acc == summary["post_finetune_acc"]
    model = load_exported(info.path)
    splits = load_dataset("folder", str(data), download=False)
    test = eval_batches(splits.test, batch_size=500, mean=splits.mean, std=splits.std, device="cpu")
    assert evaluate(model, test, torch.device("cpu")).accuracy == info.test_acc


def test_evaluation_is_in_full_precision_under_a_bf16_runtime():
    from gemminer import create_model
    from gemminer.training.runtime import Runtime

    from .conftest import separable_arrays

    model = create_model("resnet20", num_classes=3)
    arrays = separable_arrays(64, size=16)
    batches = eval_batches(arrays, batch_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu")
    cpu = torch.device("cpu")
    full = evaluate(model, batches, cpu, Runtime(precision="fp32"))
    under_bf16 = evaluate(model, batches, cpu, Runtime(precision="bf16"))
    assert under_bf16 == full  # the loss too, to the last bit
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what bf16 evaluation would give
        out = model.eval()(next(iter(batches))[0])
    assert out.dtype == torch.bfloat16
