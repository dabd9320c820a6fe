"""The docs as a newcomer meets them: a short front door, one README per
top-level folder, and no relative link or anchor that leads nowhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# The front door is read in five minutes; reference lives beside the code.
FRONT_DOOR_MAX_LINES = 300
FOLDERS = ("go", "python", "proto", "deploy", "tests")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"```.*?```", re.S)


def _tracked_markdown() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.md"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [REPO / name for name in listed.split("\0") if name]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to
    dashes, a repeated heading numbered from -1."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6}\s+(.*)$", line)
        if match is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(files: list[Path], root: Path = REPO) -> list[str]:
    broken = []
    for doc in files:
        for match in _LINK.finditer(_FENCE.sub("", doc.read_text())):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):
                continue  # a URL or mailto: not this test's business
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            where = doc.relative_to(root)
            if not dest.exists():
                broken.append(f"{where}: {target} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where}: {target} names no heading of {dest.name}")
    return broken


def test_front_door_is_short_and_each_folder_has_its_readme() -> None:
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= FRONT_DOOR_MAX_LINES, f"README.md has {lines} lines"
    for folder in FOLDERS:
        readme = REPO / folder / "README.md"
        assert readme.is_file(), f"{folder}/ has no README.md"
        assert "Where things live" in readme.read_text(), f"{readme} has no 'Where things live'"


def test_every_relative_link_and_anchor_resolves() -> None:
    files = _tracked_markdown()
    assert len(files) >= 1 + len(FOLDERS)
    assert broken_links(files) == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    # The checker itself: a missing file and a missing anchor are both caught.
    doc = tmp_path / "README.md"
    doc.write_text("# Title\n\n[ok](#title) [gone](missing.md) [no anchor](#nowhere)\n")
    assert broken_links([doc], root=tmp_path) == [
        "README.md: missing.md does not exist",
        "README.md: #nowhere names no heading of README.md",
    ]
