"""Logged feedback: one row per shown item with its propensity and click;
a log without propensities is refused in words, or its records dropped on request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ranker.experiments.feedback import FEEDBACK_SCHEMA, logged_feedback

T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)


def _exposures(
    propensity: list[float | None] | None = None, interleaved: list[bool] | None = None
) -> pl.LazyFrame:
    """What read_exposures gives, once the server logs propensities: two
    requests of two items each (the second explored)."""
    rows = {
        "time": [T0, T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1)],
        "request_id": ["r1", "r1", "r2", "r2"],
        "user_id": ["1", "1", "2", "2"],
        "device": ["mobile"] * 4,
        "experiment": ["home"] * 4,
        "variant": ["control"] * 4,
        "model": ["news"] * 4,
        "model_version": ["v1"] * 4,
        "explored": [False, False, True, True],
        "article_id": ["10", "11", "11", "10"],
        "position": pl.Series([1, 2, 1, 2], dtype=pl.Int32),
        "score": pl.Series([0.9, 0.5, 0.6, 0.8], dtype=pl.Float32),
        "team": [None] * 4,
        "interleaved": [
            {"a": {"model": "news", "version": "v1"}, "b": {"model": "news", "version": "v2"}}
            if flag
            else None
            for flag in (interleaved or [False] * 4)
        ],
    }
    frame = pl.DataFrame(rows)
    if propensity is not None:
        frame = frame.with_columns(pl.Series("propensity", propensity, pl.Float64))
    return frame.lazy()


CLICKS = pl.LazyFrame(
    {
        "request_id": ["r1", "r2", "r2"],
        "article_id": ["11", "10", "11"],
        "user_id": ["1", "2", "2"],
        # r2's click on 11 came before the page was shown: not its click.
        "time": [T0 + timedelta(seconds=5), T0 + timedelta(minutes=2), T0],
    }
)


def test_one_row_per_shown_item_with_propensity_and_click() -> None:
    rows = logged_feedback(_exposures([0.95, 1.0, 0.05, 1.0]), CLICKS)
    assert rows.columns == list(FEEDBACK_SCHEMA)
    assert rows["position"].to_list() == [0, 1, 0, 1]
    assert rows["clicked"].to_list() == [0, 1, 0, 1]
    assert rows["propensity"].to_list() == [0.95, 1.0, 0.05, 1.0]
    assert rows["explored"].to_list() == [False, False, True, True]
    assert rows.schema["clicked"] == pl.Int8


def test_a_log_written_before_exploration_is_refused_with_the_count() -> None:
    with pytest.raises(ValueError, match=r"2 of 2 records .* 2 have no item propensity"):
        logged_feedback(_exposures(None), CLICKS)


def test_records_without_propensity_can_be_dropped_explicitly() -> None:
    exposures = _exposures([None, None, 0.05, 1.0])
    with pytest.raises(ValueError, match=r"1 of 2 records.*drop_without_propensity=True"):
        logged_feedback(exposures, CLICKS)
    rows = logged_feedback(exposures, CLICKS, drop_without_propensity=True)
    assert rows["request_id"].unique().to_list() == ["r2"]


def test_interleaved_records_are_refused_as_such() -> None:
    exposures = _exposures([0.95, 1.0, 0.05, 1.0], interleaved=[True, True, False, False])
    with pytest.raises(ValueError, match="1 are interleaved rankings"):
        logged_feedback(exposures, CLICKS)
    kept = logged_feedback(exposures, CLICKS, drop_without_propensity=True)
    assert kept["request_id"].unique().to_list() == ["r2"]


def test_dropping_every_record_leaves_nothing_and_says_so() -> None:
    with pytest.raises(ValueError, match="no record is left"):
        logged_feedback(_exposures(None), CLICKS, drop_without_propensity=True)


def test_a_propensity_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1 items have a propensity outside \(0, 1\]"):
        logged_feedback(_exposures([0.95, 1.0, 0.0, 1.0]), CLICKS)
