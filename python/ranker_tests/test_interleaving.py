from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ranker.experiments.exposure import read_exposures
from ranker.experiments.interleaving import (
    bootstrap_interval,
    page_view_outcomes,
    preference,
    reader_outcomes,
)

T0 = datetime(2026, 11, 25, 8, tzinfo=UTC)
PAIR = {"a": {"model": "news", "version": "v2"}, "b": {"model": "news", "version": "v1"}}


def _record(
    minute: int, request_id: str, user: str, items: list[tuple[str, str | None]], **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "time": (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z"),
        "request_id": request_id,
        "user_id": user,
        "experiment": "home",
        "variant": "interleaved",
        "model": "news+news",
        "model_version": "v2+v1",
        "items": [
            {"id": article, "position": p + 1, "score": float(len(items) - p)}
            | ({"team": team} if team else {})
            for p, (article, team) in enumerate(items)
        ],
        "interleaved": PAIR,
    }
    return record | extra


def _clicks(*clicks: tuple[str, str, int]) -> pl.LazyFrame:
    """(request id, article, seconds after T0) per click."""
    return pl.LazyFrame(
        {
            "request_id": [c[0] for c in clicks],
            "article_id": [c[1] for c in clicks],
            "time": [T0 + timedelta(seconds=c[2]) for c in clicks],
        },
        schema={"request_id": pl.String, "article_id": pl.String, "time": pl.Datetime("us", "UTC")},
    )


def _write(directory: Path, records: list[dict[str, Any]]) -> pl.LazyFrame:
    (directory / "exposure.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_exposures(directory)


# Minute m of the log is second 60·m of the clicks.
RECORDS = [
    _record(0, "r1", "u1", [("a", "a"), ("b", "b"), ("c", "a")]),  # b clicked: B wins
    _record(1, "r2", "u1", [("x", "b"), ("y", "a")]),  # both clicked, y twice: tie
    _record(2, "r3", "u2", [("a", "a"), ("b", "b")]),  # a clicked, b before the page: A
    _record(3, "r4", "u2", [("a", "b"), ("c", "a")]),  # no click: no winner
    _record(4, "r5", "u3", [("a", "a"), ("b", "b")]),  # a click on an unshown article
    _record(5, "r6", "u3", [("d", None)], variant="control", model="news", interleaved=None),
    _record(6, "r7", "u3", [("a", "a"), ("e", "b")]),  # a clicked: A wins
]
CLICKS = _clicks(
    ("r1", "b", 10),
    ("r2", "y", 70),
    ("r2", "x", 75),
    ("r2", "y", 80),
    ("r3", "a", 130),
    ("r3", "b", 100),
    ("r5", "zzz", 250),
    ("r6", "d", 310),
    ("r7", "a", 370),
)


def test_old_and_new_records_read_together(tmp_path: Path) -> None:
    shown = _write(tmp_path, RECORDS).collect()
    teams = dict(zip(shown["request_id"] + "/" + shown["article_id"], shown["team"], strict=True))
    assert teams["r1/b"] == "b"
    assert teams["r1/c"] == "a"
    assert teams["r6/d"] is None  # a single-model ranking has no team
    control = shown.filter(pl.col("request_id") == "r6")
    assert control["interleaved"].to_list() == [None]


def test_clicks_are_credited_to_the_team_that_placed_the_article(tmp_path: Path) -> None:
    outcomes = page_view_outcomes(_write(tmp_path, RECORDS), CLICKS).sort("request_id")
    assert outcomes.select("request_id", "clicks_a", "clicks_b", "winner").rows() == [
        ("r1", 0, 1, "b"),
        ("r2", 1, 1, "tie"),
        ("r3", 1, 0, "a"),
        ("r4", 0, 0, None),
        ("r5", 0, 0, None),
        ("r7", 1, 0, "a"),
    ]
    assert set(outcomes["model_a"]) == {"news/v2"}
    assert set(outcomes["model_b"]) == {"news/v1"}
    readers = reader_outcomes(outcomes)
    assert readers.rows() == [("u1", 2, 0, 1, 1), ("u2", 2, 1, 0, 0), ("u3", 2, 1, 0, 0)]


def test_preference_of_a_small_log(tmp_path: Path) -> None:
    got = preference(_write(tmp_path, RECORDS), CLICKS, resamples=500)
    assert (got.wins_a, got.wins_b, got.ties) == (2, 1, 1)
    assert got.delta == pytest.approx(0.25)  # (2 - 1) / (2 + 1 + 1)
    assert (got.page_views, got.clicked_page_views, got.readers) == (6, 4, 3)
    assert (got.experiment, got.variant, got.model_a, got.model_b) == (
        "home",
        "interleaved",
        "news/v2",
        "news/v1",
    )
    assert got.low <= got.delta <= got.high
    # Resampling three readers: u1 alone gives (0 - 1) / 2, u2 or u3 alone +1.
    assert got.low >= -0.5
    assert got.high == 1.0
    assert "reader-level bootstrap" in got.method
    assert got.confidence == 0.95


def test_a_retried_request_is_one_page_view(tmp_path: Path) -> None:
    records = [*RECORDS, RECORDS[0]]
    got = preference(_write(tmp_path, records), CLICKS, resamples=100)
    assert (got.page_views, got.wins_b) == (6, 1)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    control_only = _write(tmp_path, [RECORDS[5]])
    with pytest.raises(ValueError, match="no interleaved page views"):
        preference(control_only, CLICKS)
    two_arms = [*RECORDS, _record(9, "r9", "u9", [("a", "a")], variant="other")]
    with pytest.raises(ValueError, match=r"several interleaved arms.*home/other"):
        preference(_write(tmp_path, two_arms), CLICKS)
    picked = preference(_write(tmp_path, two_arms), CLICKS, variant="interleaved", resamples=100)
    assert picked.page_views == 6
    with pytest.raises(ValueError, match="no page view has a click"):
        preference(_write(tmp_path, [RECORDS[3]]), CLICKS)


def test_unanimous_readers_give_a_point_interval() -> None:
    ones = np.ones(5, dtype=np.int64)
    zeros = np.zeros(5, dtype=np.int64)
    assert bootstrap_interval(ones, zeros, zeros, resamples=200) == (1.0, 1.0, 1.0)
    assert bootstrap_interval(zeros, ones, ones, resamples=200) == (-0.5, -0.5, -0.5)


def _synthetic_readers(
    rng: np.random.Generator, readers: int
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], ...]:
    """Readers of two kinds in equal shares, one preferring A (a clicked page
    view goes to A, B or a tie with 0.5, 0.3, 0.2), one B (0.3, 0.4, 0.3),
    each with 1 to 12 page views of which 40 % have a click. The true delta
    is E[p_a - p_b] / E[p_a + p_b + p_tie] = ((0.5 - 0.3) + (0.3 - 0.4)) / 2 = 0.05."""
    kinds = np.array([[0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    views = rng.integers(1, 13, size=readers)
    clicked = rng.binomial(views, 0.4)
    kind = rng.integers(0, 2, size=readers)
    counts = np.stack([rng.multinomial(c, kinds[k]) for c, k in zip(clicked, kind, strict=True)])
    return counts[:, 0], counts[:, 1], counts[:, 2]


TRUE_DELTA = 0.05


def test_interval_covers_the_true_preference_in_95_percent_of_seeds() -> None:
    seeds = 200
    covered = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        wins_a, wins_b, ties = _synthetic_readers(rng, readers=300)
        _, low, high = bootstrap_interval(wins_a, wins_b, ties, resamples=400, seed=seed)
        covered += low <= TRUE_DELTA <= high
    # Within three binomial standard errors of 95 % over the seeds.
    tolerance = 3 * math.sqrt(0.95 * 0.05 / seeds)
    assert abs(covered / seeds - 0.95) <= tolerance, f"covered {covered} of {seeds} seeds"
