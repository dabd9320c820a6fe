"""The command line's errors: one line on stderr and exit 2, a traceback only
with --debug; a mistyped flag or command is named with the closest real one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ranker.cli import main
from ranker.serving.process import free_port

RUN_CLI = "import sys; from ranker.cli import main; sys.exit(main(sys.argv[1:]))"


def _ranker(*args: str) -> subprocess.CompletedProcess[str]:
    """`ranker ARGS` in a process of its own, as a shell runs it."""
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args], capture_output=True, text=True, timeout=120
    )


def test_a_closed_port_is_one_line_and_exit_2() -> None:
    target = f"127.0.0.1:{free_port()}"  # bound and released: nothing listens
    run = _ranker("rank", "--target", target, "--user", "reader-1", "a1", "a2")
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(
        f"ranker rank: error: cannot reach the server at {target} (UNAVAILABLE: "
    )
    assert lines[0].endswith(")")
    assert run.stdout == ""


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_debug_shows_the_traceback_of_the_same_failure(where: str) -> None:
    target = f"127.0.0.1:{free_port()}"
    args = ["rank", "--target", target, "--user", "reader-1", "a1"]
    run = _ranker(*(["--debug", *args] if where == "before the command" else [*args, "--debug"]))
    assert "Traceback (most recent call last)" in run.stderr
    assert run.stderr.splitlines()[-1].startswith("ranker_client.errors.UnavailableError: ")
    assert run.returncode == 1  # Python's own exit for an uncaught exception


def _usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        # A required flag is missing too: the typo is named, not that.
        (
            ["train", "--modle", "x"],
            "ranker train: error: unrecognized argument --modle (did you mean --models?)",
        ),
        (
            ["train", "--data", "d", "--models", "m", "--nmae", "n"],
            "ranker train: error: unrecognized argument --nmae (did you mean --name?)",
        ),
        (
            ["rank", "--user", "u", "--devise", "mobile", "a1"],
            "ranker rank: error: unrecognized argument --devise (did you mean --device?)",
        ),
        (["trian"], "ranker: error: unknown command 'trian' (did you mean train?)"),
        (
            ["experiment", "reprot"],
            "ranker experiment: error: unknown command 'reprot' (did you mean report?)",
        ),
        (
            ["features", "--data", "d", "--out", "o", "--engine", "sprak"],
            "ranker features: error: argument --engine: "
            "invalid choice 'sprak' (did you mean spark?)",
        ),
        # Not mistakes of a name: said as argparse says them, and briefly.
        (
            ["rank", "--top-k", "-1", "a1"],
            "ranker rank: error: argument --top-k: -1 must be 0 or more",
        ),
        (["data", "--ou"], "ranker data: error: argument --out: expected one argument"),
        (
            ["train", "--data", "d", "--models", "m", "stray"],
            "ranker train: error: unrecognized argument 'stray'",
        ),
        ([], "ranker: error: the following arguments are required: command"),
    ],
)
def test_a_usage_error_is_one_line_and_a_pointer_to_the_help(
    capsys: pytest.CaptureFixture[str], args: list[str], first_line: str
) -> None:
    prog = first_line.split(": error:")[0]
    assert _usage_error(capsys, *args) == [f"{first_line}; see '{prog} --help'"]


def test_help_still_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["load", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ranker load")
    assert "exit status: 0 when the server accepted everything" in " ".join(out.split())
