from __future__ import annotations

import json

import pytest

from ranker.evaluation.report import (
    LIFT_SEGMENTS,
    RANKER_LABELS,
    SEGMENT_BOUNDS,
    Ablation,
    Evaluation,
    evaluate,
    markdown,
)
from ranker.pipeline import ClickLogSource, TrainedVersion

# Every test here reads the full pipeline run on a small world (`trained`).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluation(trained: TrainedVersion) -> Evaluation:
    assert trained.evaluation is not None, "a click log gets the full evaluation"
    return trained.evaluation


def test_model_beats_the_baselines_on_held_out_time(evaluation: Evaluation) -> None:
    e = evaluation
    for baseline in ("random", "most_recent", "most_popular"):
        assert e.value("model", "ndcg@10") > e.value(baseline, "ndcg@10") + 0.05, baseline
    # The oracle ranks by the utility clicks were drawn from: a ceiling on utility.
    assert e.value("oracle", "utility_ndcg@10") == 1.0
    assert e.value("oracle", "ndcg@10") > e.value("random", "ndcg@10")


def test_position_debiasing_ranks_closer_to_true_utility(evaluation: Evaluation) -> None:
    e = evaluation
    assert e.value("model", "utility_ndcg@10") > e.value("model_naive", "utility_ndcg@10")


def test_intervals_bracket_the_means(evaluation: Evaluation) -> None:
    for row in evaluation.metrics:
        if row.ranker != "oracle" or row.metric != "utility_ndcg@10":
            assert row.low < row.mean < row.high, row
        assert row.queries > 0


def test_report_covers_every_ranker_segment_and_feature(trained: TrainedVersion) -> None:
    report = trained.export.directory / "report"
    text = (report / "evaluation.md").read_text()
    for ranker, label in RANKER_LABELS.items():
        # The ablated twin is only there when features were ablated.
        assert (label in text) == (ranker != "model_without"), label
    for segment, _, _ in SEGMENT_BOUNDS:
        assert segment in text
    data = json.loads((report / "evaluation.json").read_text())
    assert set(data["importance"]) == set(trained.result.booster.feature_name())
    assert abs(sum(data["importance"].values()) - 1.0) < 1e-6
    for name in ("metrics.png", "segments.png", "importance.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_ablation_that_drops_nothing_adds_exactly_nothing(trained: TrainedVersion) -> None:
    """The twin is the model itself: every paired difference is 0, so the
    lift and both ends of its interval are 0 in every segment."""
    # The fixture's click log, beside its model root (conftest.trained).
    split = ClickLogSource(trained.export.directory.parent.parent / "data").load().test_split
    assert split is not None
    ablation = Ablation(("nothing",), trained.result.booster, split.data.features)
    e = evaluate(split, trained.result.booster, None, ablation=ablation)
    assert {r.segment for r in e.lift} == set(LIFT_SEGMENTS)
    for row in e.lift:
        assert (row.mean, row.low, row.high) == (0.0, 0.0, 0.0), row
    assert "## What the ablated features add" in markdown(e, "t")
