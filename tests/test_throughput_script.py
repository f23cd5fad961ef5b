"""benchmarks/throughput.py runs end to end (on a tiny model) and prints its ratios."""

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "throughput.py"


def test_throughput_script_reports_both_ratios(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "tp.md"
        last = module.main(
            ["--model", "conv4", "--batch-size", "8", "--steps", "2", "--images", "32"]
            + ["--repeats", "1", "--out", str(out)]
        )
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert re.fullmatch(r"mining/dense=\d+\.\d{3} end_to_end/compute=\d+\.\d{3}", last)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == last
    text = out.read_text()
    for row in ("dense step", "mining step", "finetune step", "end-to-end epoch", "compute epoch"):
        assert f"| {row} |" in text
    assert last in text


def test_committed_results_name_no_folder_of_the_machine(monkeypatch):
    """Issue 28, 5: a result's command shows paths inside the repository relative to it and
    others by their name only."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import _common
    finally:
        sys.path.remove(str(SCRIPT.parent))
    inside = str(_common.REPO / "benchmarks" / "throughput.py")
    monkeypatch.setattr(sys, "argv", [inside, "--authors-code", "/work/pie", "--x", "rel/y"])
    assert _common.command_line() == (
        "python benchmarks/throughput.py --authors-code .../pie --x rel/y"
    )
