"""Every relative link in the Markdown files points at a file (and heading) that exists."""
import re
import subprocess

import pytest

from conftest import REPO

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _markdown_files():
    listed = subprocess.run(["git", "ls-files", "*.md", "**/*.md"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return sorted({REPO / name for name in listed.stdout.split()})
    return sorted(p for p in REPO.rglob("*.md") if ".git" not in p.parts)


def _anchors(path):
    """GitHub's heading anchors of a Markdown file (outside code blocks)."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def _links(path):
    text, fenced, found = path.read_text(encoding="utf-8"), False, []
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            found += LINK.findall(line)
    return found


def test_the_docs_exist_and_the_readme_is_short():
    names = {p.relative_to(REPO).as_posix() for p in _markdown_files()}
    for doc in ("README.md", "docs/INSTALL.md", "docs/GETTING_STARTED.md", "docs/PREDICT.md", "docs/DESIGN.md",
                "docs/PERFORMANCE.md", "docs/ENGINES.md", "docs/CPU_DEMO.md"):
        assert doc in names
    assert len((REPO / "README.md").read_text().splitlines()) <= 160


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(path):
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"
