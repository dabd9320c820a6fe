"""A pytest plugin for both suites, loaded by the one pytest configuration in
python/pyproject.toml: it prints the largest difference each parity pair
showed in the run, with `--fail-on-skip` (what `make test` passes) turns
any skipped test into a failed run, so a missing dependency cannot pass as
green, and keeps what tests record in MLflow out of the user's store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

_LARGEST: dict[str, float] = {}


@pytest.fixture(scope="session", autouse=True)
def own_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs and registry versions a test records without naming a store go
    to one of the test session's, never to the user's (`ranker.tracking`)."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
        yield


def record_parity(pair: str, max_abs_diff: float) -> None:
    """Remember the largest |difference| seen between the scorers of `pair`."""
    _LARGEST[pair] = max(_LARGEST.get(pair, 0.0), max_abs_diff)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        help="fail the run if any test was skipped",
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    if _LARGEST:
        terminalreporter.section("parity: largest |difference| per pair")
        for pair, diff in sorted(_LARGEST.items()):
            terminalreporter.write_line(f"{pair:<55} {diff:.3g}")
    skipped = terminalreporter.stats.get("skipped", [])
    if config.getoption("--fail-on-skip") and skipped:
        terminalreporter.write_line(
            f"--fail-on-skip: {len(skipped)} test(s) skipped; every test must run here",
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if (
        session.config.getoption("--fail-on-skip")
        and reporter is not None
        and reporter.stats.get("skipped")
        and exitstatus == pytest.ExitCode.OK
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
