"""The README is short and links the documents that hold the detail: every relative link of the
committed markdown must reach a file, and every #anchor a heading of it, so that moving a paragraph
out of the README (or a heading inside a doc) cannot leave a dangling pointer behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mlflow_gitops.versions import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)


def committed_markdown() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in out.stdout.split() if (ROOT / name).exists()]


def prose(doc: Path) -> str:
    """The document without its fenced blocks (code, where `](` is not a link)."""
    return FENCE.sub("", doc.read_text())


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", prose(doc), flags=re.MULTILINE)}


def broken_links(doc: Path) -> list[str]:
    broken = []
    for link in LINK.findall(prose(doc)):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, fragment = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.name}")
    return broken


def test_the_anchor_is_githubs() -> None:
    assert anchor("What the cluster must already run") == "what-the-cluster-must-already-run"
    assert anchor("A real API server: `make apiserver`") == "a-real-api-server-make-apiserver"


def test_a_link_to_a_moved_section_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Kept\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[a](other.md#kept) [b](other.md#moved) [c](gone.md) [d](https://x.org/y)\n")
    assert broken_links(doc) == ["other.md#moved: no heading #moved in other.md", "gone.md: no such file"]


def test_every_relative_link_of_the_docs_resolves() -> None:
    docs = committed_markdown()
    assert ROOT / "README.md" in docs and len(docs) > 10
    broken = {str(doc.relative_to(ROOT)): found for doc in docs if (found := broken_links(doc))}
    assert not broken, broken
