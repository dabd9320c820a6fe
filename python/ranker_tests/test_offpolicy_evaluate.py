"""`ranker evaluate --off-policy` end to end on a served log with exploration
replayed in the small world: the world's editorial order serves, the top 3
are shuffled on a share of pages, clicks follow the world's click model at
the shown places, so the truth of any order is known."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.data.world import click_probability
from ranker.experiments.offpolicy import SERVING, offpolicy_evaluate
from ranker.pipeline import TrainedVersion

EPSILON, DEPTH = 0.2, 3


@dataclass(frozen=True)
class Served:
    exposures: pl.LazyFrame
    directory: Path
    clicks: Path
    articles: Path
    truth_of_serving: float


def _serve(log: ClickLog, directory: Path, seed: int = 5) -> Served:
    rng = np.random.default_rng(seed)
    imp = log.impressions.sort("impression_id", "position")
    pages = imp["impression_id"].n_unique()
    items = imp.height // pages
    det = imp["position"].to_numpy().astype(np.int64).reshape(pages, items)
    explored = rng.uniform(size=pages) < EPSILON
    place = det.copy()
    for i in np.flatnonzero(explored):
        top = det[i] < DEPTH
        place[i, top] = rng.permutation(DEPTH)[det[i, top]]
    propensity = np.where(det < DEPTH, (1 - EPSILON) * (place == det) + EPSILON / DEPTH, 1.0)
    utility = imp["true_utility"].to_numpy().astype(np.float64)
    clicked = rng.uniform(size=imp.height) < click_probability(utility, place.ravel())
    exposures = imp.select(
        pl.col("time").dt.replace_time_zone("UTC"),
        pl.col("impression_id").cast(pl.String).str.zfill(6).alias("request_id"),
        pl.col("user_id").cast(pl.String),
        pl.col("device").cast(pl.String),
        pl.lit("home").alias("experiment"),
        pl.lit("control").alias("variant"),
        pl.lit("news").alias("model"),
        pl.lit("v0").alias("model_version"),
        pl.col("article_id").cast(pl.String),
        pl.Series("position", place.ravel() + 1, pl.Int32),
        # The serving scores: the editorial order, highest first.
        pl.Series("score", -det.ravel().astype(np.float32)),
        pl.lit(None, pl.String).alias("team"),
        pl.lit(None, pl.Struct({"a": pl.String()})).alias("interleaved"),
        pl.Series("propensity", propensity.ravel()),
        pl.Series("explored", np.repeat(explored, items)),
    )
    clicks = exposures.filter(pl.Series(clicked)).select(
        "request_id",
        "article_id",
        "user_id",
        (pl.col("time") + pl.duration(seconds=5)).alias("time"),
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "exposures").mkdir()
    clicks.write_parquet(directory / "clicks.parquet")
    log.articles.write_parquet(directory / "articles.parquet")
    truth = float(click_probability(utility, det.ravel()).sum() / pages)
    return Served(
        exposures.lazy(),
        directory / "exposures",
        directory / "clicks.parquet",
        directory / "articles.parquet",
        truth,
    )


@pytest.fixture(scope="module")
def served(small_log: ClickLog, tmp_path_factory: pytest.TempPathFactory) -> Served:
    return _serve(small_log, tmp_path_factory.mktemp("served"))


@pytest.fixture
def exposures_read(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_exposures as it reads once the server logs propensities."""
    monkeypatch.setattr(
        "ranker.experiments.offpolicy.read_exposures", lambda directory: served.exposures
    )


@pytest.mark.usefixtures("exposures_read")
def test_every_estimator_reports_models_serving_and_baselines(
    served: Served, trained: TrainedVersion, tmp_path: Path
) -> None:
    since = served.exposures.select(pl.col("time").median()).collect().item()
    report = offpolicy_evaluate(
        [trained.export.directory], served.directory, served.clicks, served.articles, since
    )
    assert set(report.values) == {"iips", "snips", "pbm", "dr"}
    label = f"{trained.export.directory.parent.name}/{trained.export.directory.name}"
    for rows in report.values.values():
        assert {SERVING, label, "most_popular", "most_recent"} <= set(rows)
        assert any(name.startswith("feature ") for name in rows)
    pbm_serving = report.values["pbm"][SERVING]
    # Serving's own order is estimated near its truth (over all pages; the
    # held-out half differs from it only by sampling).
    assert abs(pbm_serving.value - served.truth_of_serving) < 4 * pbm_serving.standard_error + 0.05
    assert f"{label} - {SERVING}" in report.differences["pbm"]
    paths = report.write(tmp_path / "out")
    assert [p.name for p in paths] == ["offpolicy.md", "offpolicy.json", "position_bias.json"]
    text = paths[0].read_text()
    assert "## pbm" in text
    assert "## dr" in text
    assert since.astimezone(UTC) <= served.exposures.select(pl.col("time").max()).collect().item()


@pytest.mark.usefixtures("exposures_read")
def test_the_cli_writes_the_report(
    served: Served, trained: TrainedVersion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--off-policy",
            "--model",
            str(trained.export.directory),
            "--exposures",
            str(served.directory),
            "--clicks",
            str(served.clicks),
            "--articles",
            str(served.articles),
            "--estimator",
            "pbm",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (out / "offpolicy.json").is_file()
    assert "## pbm" in capsys.readouterr().out


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_a_bad_estimator_name_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = _cli_error(
        ["evaluate", "--off-policy", "--model", str(tmp_path), "--estimator", "ipw"], capsys
    )
    assert err.count("\n") == 1
    assert "invalid choice 'ipw'" in err


def test_a_missing_file_is_one_line_and_exit_2(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--off-policy", "--model", str(tmp_path), "--exposures"]
    argv += [str(served.directory), "--clicks", str(tmp_path / "nope.parquet")]
    argv += ["--articles", str(served.articles)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--clicks {tmp_path / 'nope.parquet'}: no such file" in err


def test_a_log_without_propensities_is_one_line_and_exit_2(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A log the server wrote before exploration: read by today's read_exposures.
    (served.directory / "exposure.jsonl").write_text(
        '{"time": "2026-01-20T08:00:00Z", "request_id": "r1", "user_id": "1", '
        '"device": "mobile", "items": [{"id": "1", "position": 1, "score": 0.5}]}\n'
    )
    try:
        argv = ["evaluate", "--off-policy", "--model", str(tmp_path), "--exposures"]
        argv += [str(served.directory), "--clicks", str(served.clicks)]
        argv += ["--articles", str(served.articles)]
        assert main(argv) == 2
    finally:
        (served.directory / "exposure.jsonl").unlink()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "1 of 1 records cannot be used" in err
    assert "no item propensity" in err


def test_exposures_writes_the_position_bias(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "ranker.experiments.exposure.read_exposures", lambda directory: served.exposures
    )
    out = tmp_path / "position_bias.json"
    argv = ["exposures", "--log", str(served.directory), "--clicks", str(served.clicks)]
    assert main([*argv, "--position-bias", str(out), "--out", str(tmp_path / "rows.parquet")]) == 0
    from ranker.offpolicy.position_bias import PositionBias

    curve = PositionBias.read(out)
    assert curve.curves["all"].extrapolated.tolist() == [False] * DEPTH + [True] * 9
    assert "Examination probability by place" in capsys.readouterr().out
