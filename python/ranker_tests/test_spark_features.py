"""The Spark feature engine against the polars pipeline, on a real standalone
Spark cluster: a master and two workers started from the pip-installed
PySpark's bin/spark-class on loopback, the driver in this process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ranker.cli import main
from ranker.data.schema import ARTICLES_FILE, IMPRESSIONS_FILE, ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.features.build import build_features
from ranker.features.compare import compare_tables
from ranker.features.spark import (
    SEMANTIC_UNSUPPORTED,
    SparkOptions,
    read_click_log,
    read_parts,
    spark_session,
    write_feature_table,
)
from ranker.features.spec import LABEL_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

WORKERS = 2
# JVMs start slowly on a busy two-core machine.
REGISTRATION_TIMEOUT_S = 120
# A second world, unlike the suite's small one (seed 11), small enough that
# the cluster builds it in seconds.
OTHER_WORLD = WorldConfig(seed=2027).scaled(0.08)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _master_state(ui_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        state: dict[str, Any] = json.load(response)
        return state


class Cluster:
    """A standalone master and its workers; `stop` ends every process they started."""

    def __init__(self, root: Path) -> None:
        import pyspark

        self.spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
        self.root = root
        self.env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_LOG_DIR": str(root),
        }
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.port = _free_port()
        self.ui_port = _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, *args: str) -> None:
        with (self.root / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(self.spark_class), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Its own process group: the executors a worker forks are
                # ended with it.
                start_new_session=True,
            )
        self.processes.append((name, process))

    def start(self) -> None:
        self._start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            f"{self.ui_port}",
        )
        for i in range(WORKERS):
            self._start(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--port",
                f"{_free_port()}",
                "--webui-port",
                f"{_free_port()}",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--work-dir",
                f"{self.root / f'work-{i}'}",
                self.url,
            )
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    log = (self.root / f"{name}.log").read_text(errors="replace")
                    pytest.fail(f"spark {name} exited with {process.returncode}:\n{log[-3000:]}")
            try:
                if _master_state(self.ui_port).get("aliveworkers", 0) >= WORKERS:
                    return
            except OSError:
                pass  # the master's web UI is not up yet
            time.sleep(1)
        pytest.fail(f"{WORKERS} workers did not register within {REGISTRATION_TIMEOUT_S} s")

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def spark(cluster: Cluster) -> Iterator[SparkSession]:
    options = SparkOptions(
        master=cluster.url,
        driver_memory="512m",
        conf=(
            # A small log: a few partitions per shuffle, not Spark's 200.
            ("spark.sql.shuffle.partitions", "4"),
            ("spark.executor.memory", "512m"),
            ("spark.driver.host", "127.0.0.1"),
            ("spark.driver.bindAddress", "127.0.0.1"),
            ("spark.ui.enabled", "false"),
        ),
    )
    with spark_session(options) as session:
        yield session


def _spark_table(spark: SparkSession, data: Path, out: Path) -> pl.DataFrame:
    write_feature_table(spark, data, out)
    return read_parts(out)


def _assert_same_table(expected: pl.DataFrame, got: pl.DataFrame) -> None:
    comparison = compare_tables(expected, got)
    assert comparison.passed, comparison.report()
    # Exact: every float is computed by the same correctly rounded
    # operations in the same order (ranker.features.spark says how).
    assert_frame_equal(expected.sort(LABEL_COLUMNS), got.sort(LABEL_COLUMNS), check_exact=True)


@pytest.mark.slow
def test_spark_cluster_builds_exactly_the_polars_table(
    spark: SparkSession,
    cluster: Cluster,
    small_log: ClickLog,
    small_table: pl.DataFrame,
    tmp_path: Path,
) -> None:
    small_log.write(tmp_path / "data")
    got = _spark_table(spark, tmp_path / "data", tmp_path / "features")
    _assert_same_table(small_table, got)
    assert got.height == small_log.impressions.height
    # The rows were built by the cluster's executors, one core per worker.
    apps = _master_state(cluster.ui_port)["activeapps"]
    assert [app["cores"] for app in apps] == [WORKERS]


# Whitespace Python's str.split() splits on and Java's regex \s does not
# (no-break, em and ideographic spaces, a file separator), besides ASCII.
ODD_WHITESPACE = ("\u00a0", "\t", "\u2003", "\x1c", "  ", "\u3000", "\n")


def _odd_titles(articles: pl.DataFrame) -> pl.DataFrame:
    """Every third title's words joined by unusual whitespace, with some at
    either end; one title empty."""
    titles = []
    for i, title in enumerate(articles["title"].to_list()):
        if i % 3 == 0:
            gap = ODD_WHITESPACE[i % len(ODD_WHITESPACE)]
            title = gap + gap.join(title.split()) + ODD_WHITESPACE[(i + 1) % len(ODD_WHITESPACE)]
        titles.append("" if i == 1 else title)
    return articles.with_columns(pl.Series("title", titles, pl.String))


@pytest.mark.slow
def test_spark_cluster_matches_polars_on_another_world(spark: SparkSession, tmp_path: Path) -> None:
    """Another seed, and titles that split only on Python's idea of whitespace."""
    world = generate(OTHER_WORLD)
    log = ClickLog(articles=_odd_titles(world.articles), impressions=world.impressions)
    log.write(tmp_path / "data")
    expected = build_features(log.impressions.lazy(), log.articles.lazy())
    _assert_same_table(expected, _spark_table(spark, tmp_path / "data", tmp_path / "features"))


def _garble(path: Path) -> None:
    path.write_bytes(b"PAR1 this is not a Parquet file")


def _drop_title(path: Path) -> None:
    pl.read_parquet(path).drop("title").write_parquet(path)


def _unknown_article(path: Path) -> None:
    pl.read_parquet(path).filter(pl.col("article_id") != pl.col("article_id").max()).write_parquet(
        path
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "name", "message"),
    [
        (lambda p: p.unlink(), IMPRESSIONS_FILE, "not a readable Parquet file"),
        (_garble, IMPRESSIONS_FILE, "not a readable Parquet file"),
        (_garble, ARTICLES_FILE, "not a readable Parquet file"),
        (_drop_title, ARTICLES_FILE, "column title (string) is missing"),
        (_unknown_article, ARTICLES_FILE, "article_id values are not in articles.parquet"),
    ],
    ids=["missing", "garbled-impressions", "garbled-articles", "no-title", "unknown-article"],
)
def test_spark_refuses_a_bad_click_log_naming_the_file(
    spark: SparkSession,
    small_log: ClickLog,
    tmp_path: Path,
    damage: Any,
    name: str,
    message: str,
) -> None:
    small_log.write(tmp_path)
    damage(tmp_path / name)
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        read_click_log(spark, tmp_path)
    # The unknown article is the impressions' fault; everything else the damaged file's.
    named = IMPRESSIONS_FILE if "article_id values" in message else name
    assert str(tmp_path / named) in str(refused.value)


def test_spark_engine_refuses_semantic_features(
    small_log: ClickLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_log.write(tmp_path / "data")
    argv = ["train", "--data", str(tmp_path / "data"), "--models", str(tmp_path / "models")]
    code = main([*argv, "--engine", "spark", "--semantic", "--no-tracking"])
    assert code == 2
    assert SEMANTIC_UNSUPPORTED in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_spark_options_need_the_spark_engine(
    small_log: ClickLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_log.write(tmp_path / "data")
    argv = ["features", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "f.parquet")]
    assert main([*argv, "--spark-master", "spark://127.0.0.1:7077"]) == 2
    assert "--spark-master and --spark-conf need --engine spark" in capsys.readouterr().err
    assert main([*argv, "--engine", "spark", "--spark-conf", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "f.parquet").exists()


def test_the_default_install_does_not_import_pyspark() -> None:
    """PySpark is an extra: the CLI and the engine's module load without it."""
    code = "import sys, ranker.cli, ranker.features.spark; sys.exit('pyspark' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_pyspark_the_spark_engine_names_the_extra(
    small_log: ClickLog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark raises ImportError
    small_log.write(tmp_path / "data")
    argv = ["features", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "f.parquet")]
    assert main([*argv, "--engine", "spark"]) == 2
    assert "pip install 'ranker[spark]'" in capsys.readouterr().err
    assert not (tmp_path / "f.parquet").exists()
