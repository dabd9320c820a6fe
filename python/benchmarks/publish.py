"""A benchmark's figures, written where the docs read them: the results file
python/benchmarks/results/<name>.md, and every block of the repository's
tracked Markdown between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`.
Each copy starts with the command, the date (UTC), the commit and the
machine, so no figure in the docs is kept by hand or goes without its source.

The `make bench*` targets pass `--publish <target>` to their script; a run
by hand without it publishes nothing, so a quick run with fewer seeds never
replaces the figures of a full one.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import PYTHON_DIR, describe

REPO = PYTHON_DIR.parent
RESULTS_DIR = PYTHON_DIR / "benchmarks" / "results"
# A name is a make target's: it appears in a file name and in the markers.
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class MarkerError(ValueError):
    """A bench block in a Markdown file is not closed, or closed twice."""


def start_marker(name: str) -> str:
    return f"<!-- bench:{name} -->"


def end_marker(name: str) -> str:
    return f"<!-- /bench:{name} -->"


def command_line(argv: Sequence[str] | None = None) -> str:
    """How to run this script again: its module and arguments, paths inside
    the repository made relative to it."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    words = [f"python -m benchmarks.{script.stem}"]
    for arg in argv[1:]:
        path = Path(arg)
        if path.is_absolute() and path.is_relative_to(REPO):
            arg = str(path.relative_to(REPO)) or "."
        words.append(shlex.quote(arg))
    return " ".join(words)


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(
    name: str,
    command: str,
    machine: dict[str, Any],
    when: time.struct_time,
    commit: str,
    *,
    by_make: bool,
    load: float,
) -> str:
    """One line: what produced the figures below it, when, where, and how
    busy the machine was (timings on a shared machine are only as good as that)."""
    run = f"`make {name}` (`cd python && {command}`)" if by_make else f"`cd python && {command}`"
    flags = " ".join(machine["vector_flags"]) or "no vector flags"
    return (
        f"Written by {run} on {time.strftime('%Y-%m-%d %H:%M UTC', when)} at commit `{commit}`; "
        f"machine: {machine['cpu']}, {machine['cores']} cores ({flags}), "
        f"{machine['memory_gb']} GB, Python {machine['python']}; "
        f"load average {load:.1f} when written."
    )


def add_publish_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--publish",
        metavar="NAME",
        help="write results/NAME.md and the docs' NAME bench blocks (the make target passes "
        "its own name); without it nothing is published",
    )


def replace_blocks(text: str, name: str, block: str, where: Path) -> tuple[str, int]:
    """`text` with the content of every `name` block set to `block`; the
    markers and everything outside them stay as they were. Returns the new
    text and the number of blocks."""
    start, end = start_marker(name), end_marker(name)

    def fail(at: int, problem: str) -> MarkerError:
        return MarkerError(f"{where}:{text.count(chr(10), 0, at) + 1}: {problem}")

    out, count, kept = [], 0, 0  # text[kept:] is not yet in out
    scan = 0
    while (opened := text.find(start, scan)) >= 0:
        stray = text.find(end, scan, opened)
        if stray >= 0:
            raise fail(stray, f"{end} without {start} before it")
        body = opened + len(start)
        closed = text.find(end, body)
        if closed < 0:
            raise fail(opened, f"{start} has no {end} after it")
        nested = text.find(start, body, closed)
        if nested >= 0:
            raise fail(nested, f"{start} again before {end}")
        out += [text[kept:body], "\n", block, "\n"]
        kept, scan, count = closed, closed + len(end), count + 1
    stray = text.find(end, scan)
    if stray >= 0:
        raise fail(stray, f"{end} without {start} before it")
    out.append(text[kept:])
    return "".join(out), count


def tracked_markdown(repo: Path = REPO) -> list[Path]:
    """The repository's tracked Markdown files (none outside a git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "*.md"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [repo / name for name in listed.decode().split("\0") if name]


def publish(
    name: str,
    markdown: str,
    *,
    results_dir: Path = RESULTS_DIR,
    docs: Sequence[Path] | None = None,
    command: str | None = None,
    machine: dict[str, Any] | None = None,
) -> Path:
    """Write results/<name>.md (the header line, then `markdown`) and put
    the same into every `name` block of the tracked Markdown files (or of
    `docs`). Every file is checked before any is written: a block without
    its end marker raises MarkerError naming the file and line, and nothing
    changes. Returns the results file."""
    if not _NAME.match(name):
        raise ValueError(f"bench name {name!r}: lower-case letters, digits and dashes only")
    line = header(
        name,
        command or command_line(),
        machine or describe(),
        time.gmtime(),
        _commit(),
        by_make="MAKELEVEL" in os.environ,
        load=os.getloadavg()[0],
    )
    block = f"{line}\n\n{markdown.strip()}\n"
    files = tracked_markdown() if docs is None else list(docs)
    updated = {}
    for path in files:
        text = path.read_text()
        new, count = replace_blocks(text, name, block, path)
        if count and new != text:
            updated[path] = new
    results_dir.mkdir(parents=True, exist_ok=True)
    result = results_dir / f"{name}.md"
    result.write_text(block)
    for path, text in updated.items():
        path.write_text(text)
    shown = ", ".join(str(p.relative_to(REPO) if p.is_relative_to(REPO) else p) for p in updated)
    print(f"published {name}: {result}" + (f"; updated {shown}" if shown else ""))
    return result
