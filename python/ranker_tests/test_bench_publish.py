"""benchmarks.publish: a benchmark's table goes to its results file and to
every marked block of the docs, with its command, date and machine; nothing
else in the docs changes, and a broken block stops it before any write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.publish import (
    REPO,
    MarkerError,
    command_line,
    end_marker,
    publish,
    start_marker,
)

MACHINE = {
    "cpu": "Example CPU @ 2.0GHz",
    "cores": 2,
    "memory_gb": 7.8,
    "python": "3.11.7",
    "vector_flags": ["avx2", "fma"],
}
TABLE = "| rows | seconds |\n| --- | --- |\n| 1,000 | 2.5 |"


def _doc(body_a: str, body_b: str) -> str:
    return (
        "# Title\n\nIntro text stays.\n\n"
        f"{start_marker('bench-a')}\nold figures of a\n{end_marker('bench-a')}\n\n"
        "Between the blocks.\n\n"
        f"{start_marker('bench-b')}\n{body_b}\n{end_marker('bench-b')}\n\n"
        f"Again a:\n{start_marker('bench-a')}{body_a}{end_marker('bench-a')}\nThe end.\n"
    )


def test_every_block_of_the_name_gets_the_table_and_nothing_else_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(_doc("stale", "figures of b"))
    untouched = tmp_path / "other.md"
    untouched.write_text("no markers here\n")
    results = tmp_path / "results"

    written = publish(
        "bench-a",
        TABLE,
        results_dir=results,
        docs=[doc, untouched],
        command="python -m benchmarks.example --seeds 3",
        machine=MACHINE,
    )

    assert written == results / "bench-a.md"
    block = written.read_text()
    head, blank, *table = block.splitlines()
    assert blank == ""
    assert "\n".join(table) == TABLE
    assert "`cd python && python -m benchmarks.example --seeds 3`" in head
    assert re.search(r" on \d{4}-\d\d-\d\d \d\d:\d\d UTC at commit `[^`]+`", head), head
    assert "Example CPU @ 2.0GHz, 2 cores (avx2 fma), 7.8 GB, Python 3.11.7" in head
    assert re.search(r"; load average \d+\.\d when written\.$", head), head

    text = doc.read_text()
    assert text.count(block) == 2
    expected = _doc(f"\n{block}\n", "figures of b").replace(
        f"{start_marker('bench-a')}\nold figures of a\n", f"{start_marker('bench-a')}\n{block}\n"
    )
    assert text == expected
    assert untouched.read_text() == "no markers here\n"
    assert "updated" in capsys.readouterr().out

    # Published again, the same text comes out: the blocks do not grow.
    publish("bench-a", TABLE, results_dir=results, docs=[doc], command="c", machine=MACHINE)
    again = doc.read_text()
    assert again.count("old figures") == 0
    assert again.count(start_marker("bench-a")) == 2
    assert again.count(TABLE) == 2


def test_a_block_without_its_end_marker_names_the_file_and_writes_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.md"
    good.write_text(f"{start_marker('bench-a')}\nold\n{end_marker('bench-a')}\n")
    broken = tmp_path / "broken.md"
    broken.write_text(f"line one\n\n{start_marker('bench-a')}\nold\n{end_marker('bench-b')}\n")
    results = tmp_path / "results"

    named = rf"{re.escape(str(broken))}:3: .*has no .*/bench:bench-a"
    with pytest.raises(MarkerError, match=named):
        publish("bench-a", TABLE, results_dir=results, docs=[good, broken], machine=MACHINE)

    assert "old" in good.read_text()
    assert not results.exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{end_marker('bench-a')}\n{start_marker('bench-a')}\n", "without"),
        (
            f"{start_marker('bench-a')}\n{start_marker('bench-a')}\n{end_marker('bench-a')}\n",
            "again before",
        ),
    ],
)
def test_markers_out_of_order_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(MarkerError, match=problem):
        publish("bench-a", TABLE, results_dir=tmp_path / "r", docs=[doc], machine=MACHINE)
    assert doc.read_text() == text


def test_a_name_must_be_a_target_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        publish("../x", TABLE, results_dir=tmp_path, docs=[], machine=MACHINE)


def test_the_command_names_the_module_and_paths_inside_the_repository_relatively() -> None:
    argv = [str(REPO / "python/benchmarks/scale.py"), "--work", str(REPO / "data/bench"), "a b"]
    assert command_line(argv) == "python -m benchmarks.scale --work data/bench 'a b'"
    assert command_line(["/x/serving.py", "--out", "/elsewhere"]) == (
        "python -m benchmarks.serving --out /elsewhere"
    )
