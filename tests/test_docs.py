"""The user-facing documents stay true: their links resolve, and every name they list exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gemminer.data import DATASETS
from gemminer.methods import METHODS
from gemminer.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "benchmarks" / "README.md",
    ROOT / "benchmarks" / "results" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            anchors.add(title.replace(" ", "-"))
    return anchors


def _local_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(path.read_text())
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    broken = []
    for target in _local_links(document):
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve()
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)}: broken links {broken}"


def test_the_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[here](missing.md) [there](page.md#title) [web](https://x.org)\n")
    assert _local_links(page) == ["missing.md", "page.md#title"]
    assert _anchors(page) == {"title"}


def test_readme_names_every_registered_method_model_and_data_set():
    readme = (ROOT / "README.md").read_text()
    missing = [
        name
        for registry in (METHODS, MODELS, DATASETS)
        for name in registry
        if f"`{name}`" not in readme
    ]
    assert not missing, f"README.md does not name {missing}"


def test_each_guide_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
