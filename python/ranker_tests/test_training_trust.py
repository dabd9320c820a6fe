"""Training an ML engineer can trust: the release gate refuses bad models,
a real click log (no true utility) trains, bad input ends in one line."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import polars as pl
import pytest

from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.export import artifact
from ranker.gate import Gate, GateFailed, run_gate
from ranker.pipeline import ClickLogSource, TrainedVersion, train_and_export
from ranker.training.lambdarank import Rounds

QUICK = Rounds(max=150)


@pytest.mark.slow
def test_a_model_trained_on_shuffled_clicks_is_refused(tmp_path: Path) -> None:
    log = generate(WorldConfig(seed=13).scaled(0.1))
    shuffled = log.impressions.with_columns(pl.col("clicked").shuffle(seed=1))
    ClickLog(log.articles, shuffled).write(tmp_path / "data")
    with pytest.raises(GateFailed, match="beats most popular") as failed:
        train_and_export(
            ClickLogSource(tmp_path / "data"),
            tmp_path / "models",
            "news",
            version="v1",
            rounds=QUICK,
        )
    assert not (tmp_path / "models" / "news").exists()  # nothing under the served name
    report = tmp_path / "models" / ".rejected" / "news" / "v1" / "report"
    assert failed.value.report_dir == report
    assert "FAILED" in (report / "gate.md").read_text()
    assert (report / "evaluation.md").is_file()


@pytest.mark.slow
def test_a_click_log_without_true_utility_trains_evaluates_and_exports(
    small_log: ClickLog, tmp_path: Path
) -> None:
    ClickLog(small_log.articles, small_log.impressions.drop("true_utility")).write(tmp_path / "d")
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    trained = train_and_export(
        ClickLogSource(tmp_path / "d"),
        tmp_path / "models",
        "real",
        version="v1",
        rounds=QUICK,
        tracking_uri=tracking,
    )
    assert trained.evaluation is not None
    assert {r.ranker for r in trained.evaluation.metrics} == {
        "model",
        "model_naive",
        "random",
        "most_recent",
        "most_popular",
    }
    assert not any(r.metric == "utility_ndcg@10" for r in trained.evaluation.metrics)
    text = (trained.export.directory / "report" / "evaluation.md").read_text()
    assert "n/a" in text
    meta = json.loads((trained.export.directory / artifact.METADATA_JSON).read_text())
    lineage = meta["training"]["lineage"]
    assert len(lineage["data_sha256"]) == 64
    assert lineage["code_commit"]
    assert meta["num_trees"] >= 20

    # The run is in MLflow, readable through its API.
    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("ranker")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["model_version"] == "v1"
    assert run.data.tags["release_gate"] == "passed"
    assert run.data.tags["data_sha256"] == lineage["data_sha256"]
    assert run.data.params["best_round"] == str(trained.result.best_iteration)
    curves = json.loads((trained.export.directory / "report" / "learning_curve.json").read_text())
    assert len(curves["train_ndcg@10"]) == len(curves["valid_ndcg@10"])
    assert curves["best_round"] == trained.result.best_iteration
    curve = client.get_metric_history(run.info.run_id, "valid_ndcg_at_10")
    assert len(curve) == len(trained.result.valid_curve)
    assert run.data.metrics["model_ndcg_at_10"] == trained.test_metrics["model_ndcg@10"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/gate.md" in artifacts


@pytest.mark.slow
def test_the_gate_compares_with_the_version_serving_on_the_same_split(
    trained: TrainedVersion, tmp_path: Path
) -> None:
    serving = trained.export.directory
    root = serving.parent.parent
    data = ClickLogSource(
        Path(json.loads((serving / artifact.METADATA_JSON).read_text())["training"]["data_dir"])
    ).load()
    # A candidate fit to noise: labels drawn independently of the features.
    rng = np.random.default_rng(3)
    noise = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "seed": 3, "num_threads": 2},
        lgb.Dataset(
            data.train.features,
            rng.integers(0, 2, data.train.labels.size),
            group=data.train.groups,
            feature_name=data.feature_names,
        ),
        num_boost_round=30,
    )
    report = run_gate(
        Gate(min_trees=1, min_gain_over_popular=-1.0, max_loss_vs_serving=0.0),
        noise,
        data.test,
        data.feature_names,
        None,
        root,
        serving.parent.name,
    )
    assert not report.passed
    assert [c["check"] for c in report.checks if not c["passed"]] == ["vs serving"]
    same = run_gate(
        Gate(),
        trained.result.booster,
        data.test,
        data.feature_names,
        None,
        root,
        serving.parent.name,
    )
    assert same.passed, same.failures()


def _fails_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str
) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err


def test_bad_inputs_end_in_one_line_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = str(tmp_path / "models")
    _fails_with_one_line(
        ["train", "--data", str(tmp_path / "nope"), "--models", models], capsys, "nope"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    pl.DataFrame({"impression_id": []}, schema={"impression_id": pl.Int64}).write_parquet(
        empty / "impressions.parquet"
    )
    _fails_with_one_line(
        ["train", "--data", str(empty), "--models", models],
        capsys,
        "articles.parquet is missing",
        "column user_id (integer) is missing",
    )
    bad = tmp_path / "train.txt"
    bad.write_text("1 qid:1 1:0.5\n0 qid:1 1:oops\n")
    _fails_with_one_line(
        ["train", "--data", str(bad), "--valid", str(bad), "--test", str(bad), "--models", models],
        capsys,
        f"{bad}:2",
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    log = tmp_path / "log"
    generate(WorldConfig(seed=2).scaled(0.02)).write(log)
    _fails_with_one_line(
        ["train", "--data", str(log), "--models", str(blocker / "models")], capsys, "not writable"
    )
    for argv in (
        ["data", "--out", str(tmp_path / "x"), "--scale", "-1"],
        ["data", "--out", str(tmp_path / "x"), "--scale", "0"],
        ["train", "--data", str(log), "--models", models, "--tune", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "must be" in capsys.readouterr().err


def test_evaluate_never_writes_into_a_version(
    trained: TrainedVersion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version = trained.export.directory
    before = sorted((p.relative_to(version), p.stat().st_mtime_ns) for p in version.rglob("*"))
    data = json.loads((version / artifact.METADATA_JSON).read_text())["training"]["data_dir"]
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(version), "--data", data, "--out", str(out)]) == 0
    assert (out / "evaluation.md").is_file()
    after = sorted((p.relative_to(version), p.stat().st_mtime_ns) for p in version.rglob("*"))
    assert after == before
    del capsys


def test_the_early_stopping_rule_never_keeps_fewer_rounds_than_its_minimum() -> None:
    rng = np.random.default_rng(0)
    from ranker.training.dataset import RankData
    from ranker.training.lambdarank import DEFAULT_PARAMS, fit

    def data(n: int) -> RankData:
        x = rng.normal(size=(n * 10, 4)).astype(np.float32)
        y = (rng.uniform(size=n * 10) < 0.2).astype(np.float64)  # labels unrelated to x
        return RankData(x, y, np.full(n, 10, np.int64))

    _, best, _ = fit(
        data(200), data(100), ["a", "b", "c", "d"], dict(DEFAULT_PARAMS), Rounds(max=200)
    )
    assert best >= Rounds().min
