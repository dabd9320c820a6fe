from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.experiments.exposure import read_exposures, training_rows, variant_counts

T0 = datetime(2026, 11, 25, 8, tzinfo=UTC)


def _write(directory: Path) -> None:
    records = [
        ("r1", "u1", "control", "v1", ["a", "b", "c"]),
        ("r2", "u2", "treatment", "v2", ["b", "a"]),
        ("r3", "u1", "control", "v1", ["c", "a"]),
    ]
    lines = [
        json.dumps(
            {
                "time": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
                "request_id": rid,
                "user_id": uid,
                "experiment": "home",
                "variant": variant,
                "model": "demo",
                "model_version": version,
                "items": [
                    {"id": a, "position": p + 1, "score": 1.0 - p / 10} for p, a in enumerate(ids)
                ],
            }
        )
        for i, (rid, uid, variant, version, ids) in enumerate(records)
    ]
    (directory / "exposure-20261125T080000Z.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (directory / "exposure.jsonl").write_text(lines[2] + "\n")


def test_counts_per_variant_span_rotated_files(tmp_path: Path) -> None:
    _write(tmp_path)
    counts = variant_counts(read_exposures(tmp_path))
    control = counts.filter(pl.col("variant") == "control").row(0, named=True)
    assert (control["requests"], control["users"], control["candidates_shown"]) == (2, 1, 5)
    treatment = counts.filter(pl.col("variant") == "treatment").row(0, named=True)
    assert (treatment["requests"], treatment["candidates_shown"], treatment["model_version"]) == (
        1,
        2,
        "v2",
    )


def test_clicks_label_the_shown_candidates(tmp_path: Path) -> None:
    _write(tmp_path)
    clicks = pl.LazyFrame(
        {
            "request_id": ["r1", "r2", "r3"],
            "article_id": ["b", "a", "zzz"],
            "time": [
                T0 + timedelta(seconds=30),
                T0 + timedelta(minutes=1, seconds=5),
                T0 + timedelta(minutes=3),
            ],
        },
        schema={"request_id": pl.String, "article_id": pl.String, "time": pl.Datetime("us", "UTC")},
    )
    rows = training_rows(read_exposures(tmp_path), clicks)
    assert rows.height == 7  # every shown candidate once
    labelled = {
        (r["request_id"], r["article_id"]): r["clicked"] for r in rows.iter_rows(named=True)
    }
    assert labelled[("r1", "b")] == 1
    assert labelled[("r2", "a")] == 1
    assert sum(labelled.values()) == 2  # a click on something never shown labels nothing
    first = rows.filter(pl.col("request_id") == "r1").sort("position")
    assert first["article_id"].to_list() == ["a", "b", "c"]
    assert set(rows["variant"].unique()) == {"control", "treatment"}


def test_a_line_still_being_written_is_left_for_later(tmp_path: Path) -> None:
    _write(tmp_path)
    with (tmp_path / "exposure.jsonl").open("a") as f:
        f.write('{"time": "2026-11-25T09:00:00Z", "request_id": "r4", "us')
    counts = variant_counts(read_exposures(tmp_path))
    assert int(counts["requests"].sum()) == 3


@pytest.mark.slow
def test_exposures_and_reported_clicks_train_a_model_with_no_hand_made_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the server logged (one exposure record per Rank request) and what
    the frontend reported (clicks) become a click log that `ranker train`
    reads as it is."""
    world = generate(WorldConfig(seed=17).scaled(0.1))
    rows = world.impressions.sort("impression_id", "position")
    logs = tmp_path / "exposures"
    logs.mkdir()
    with (logs / "exposure.jsonl").open("w") as f:
        for (impression,), shown in rows.group_by("impression_id", maintain_order=True):
            first = shown.row(0, named=True)
            f.write(
                json.dumps(
                    {
                        "time": first["time"].isoformat() + "Z",
                        "request_id": f"r{impression}",
                        "user_id": str(first["user_id"]),
                        "device": str(first["device"]),
                        "experiment": "",
                        "variant": "",
                        "model": "news",
                        "model_version": "v1",
                        "items": [
                            {"id": str(a), "position": p + 1, "score": 0.0}
                            for a, p in zip(shown["article_id"], shown["position"], strict=True)
                        ],
                    }
                )
                + "\n"
            )
    clicks = rows.filter(pl.col("clicked") == 1).select(
        pl.concat_str(pl.lit("r"), pl.col("impression_id")).alias("request_id"),
        pl.col("article_id").cast(pl.String),
        (pl.col("time") + timedelta(seconds=5)).dt.replace_time_zone("UTC").alias("time"),
    )
    clicks.write_parquet(tmp_path / "clicks.parquet")
    world.articles.write_parquet(tmp_path / "articles.parquet")

    from ranker.cli import main

    argv = ["exposures", "--log", str(logs), "--clicks", str(tmp_path / "clicks.parquet")]
    argv += ["--articles", str(tmp_path / "articles.parquet"), "--click-log", str(tmp_path / "log")]
    assert main(argv) == 0
    assert "ranker train --data" in capsys.readouterr().out
    rebuilt = ClickLog.read(tmp_path / "log")
    assert rebuilt.impressions.height == rows.height
    assert int(rebuilt.impressions["clicked"].sum()) == int(rows["clicked"].sum())
    models = tmp_path / "models"
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "log"),
            "--models",
            str(models),
            "--name",
            "news",
            "--version",
            "v1",
            "--quiet",
            "--no-tracking",
        ]
    )
    assert code == 0
    assert (models / "news" / "v1" / "model.onnx").is_file()


def test_policy_explored_and_propensities_are_read_and_older_files_read_null(
    tmp_path: Path,
) -> None:
    _write(tmp_path)  # records written before exploration: no policy, explored or propensity
    explored = {
        "time": "2026-11-25T09:00:00Z",
        "request_id": "r4",
        "user_id": "u3",
        "experiment": "",
        "variant": "",
        "model": "demo",
        "model_version": "v1",
        "items": [
            {"id": "b", "position": 1, "score": 0.4, "propensity": 0.025},
            {"id": "a", "position": 2, "score": 0.9, "propensity": 0.025},
            {"id": "c", "position": 3, "score": 0.1, "propensity": 1},
        ],
        "policy": {"name": "shuffle-top", "share_percent": 5, "depth": 2},
        "explored": True,
    }
    disabled = explored | {
        "request_id": "r5",
        "items": [{"id": "a", "position": 1, "score": 0.9, "propensity": 1}],
        "policy": {
            "name": "deterministic",
            "share_percent": 0,
            "depth": 0,
            "disabled_by_request": True,
        },
        "explored": False,
    }
    with (tmp_path / "exposure.jsonl").open("a") as f:
        f.write(json.dumps(explored) + "\n" + json.dumps(disabled) + "\n")
    rows = read_exposures(tmp_path).collect()
    assert rows.schema["propensity"] == pl.Float64
    assert rows.schema["explored"] == pl.Boolean
    by_request = {rid: group.sort("position") for (rid,), group in rows.group_by("request_id")}
    r4 = by_request["r4"]
    assert r4["propensity"].to_list() == [0.025, 0.025, 1.0]
    assert r4["explored"].to_list() == [True] * 3
    assert r4["policy"][0] == {
        "name": "shuffle-top",
        "share_percent": 5.0,
        "depth": 2,
        "disabled_by_request": None,
    }
    r5 = by_request["r5"]
    assert r5["policy"][0]["name"] == "deterministic"
    assert r5["policy"][0]["disabled_by_request"] is True
    assert r5["explored"].to_list() == [False]
    for old in ("r1", "r2", "r3"):
        assert by_request[old]["propensity"].is_null().all()
        assert by_request[old]["explored"].is_null().all()
        assert by_request[old]["policy"].is_null().all()
