from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.evaluation.metrics import bootstrap_interval, ndcg_at_k, per_query


def test_perfect_ranking_scores_one() -> None:
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    scores = np.array([0.1, 0.9, 0.2, 0.8])
    assert ndcg_at_k(labels, scores, np.array([4]), k=10) == pytest.approx(1.0)


def test_known_value_for_one_click_at_rank_three() -> None:
    labels = np.array([0.0, 0.0, 1.0])
    scores = np.array([3.0, 2.0, 1.0])
    # DCG = 1/log2(4), IDCG = 1/log2(2)
    assert ndcg_at_k(labels, scores, np.array([3]), k=3) == pytest.approx(1 / math.log2(4))
    per = per_query(labels, scores, np.array([3]))
    assert per["mrr"][0] == pytest.approx(1 / 3)
    assert per["auc"][0] == 0.0  # the clicked item is below both others


def test_cutoff_ignores_clicks_below_k() -> None:
    labels = np.array([0.0, 0.0, 1.0])
    scores = np.array([3.0, 2.0, 1.0])
    assert ndcg_at_k(labels, scores, np.array([3]), k=2) == 0.0


def test_groups_without_clicks_are_left_out_or_count_as_one() -> None:
    labels = np.array([0.0, 0.0, 1.0, 0.0])
    scores = np.array([1.0, 2.0, 1.0, 2.0])
    groups = np.array([2, 2])
    expected = 1 / math.log2(3)
    assert ndcg_at_k(labels, scores, groups, k=5) == pytest.approx(expected)
    lightgbm_style = ndcg_at_k(labels, scores, groups, k=5, queries_without_relevance=1.0)
    assert lightgbm_style == pytest.approx((1.0 + expected) / 2)


def test_ties_keep_input_order() -> None:
    labels = np.array([0.0, 1.0])
    scores = np.array([1.0, 1.0])
    assert ndcg_at_k(labels, scores, np.array([2]), k=2) == pytest.approx(1 / math.log2(3))
    assert per_query(labels, scores, np.array([2]))["auc"][0] == 0.5


def test_auc_is_undefined_when_every_item_is_relevant() -> None:
    per = per_query(np.array([1.0, 1.0]), np.array([0.2, 0.1]), np.array([2]))
    assert math.isnan(per["auc"][0])
    assert per["mrr"][0] == 1.0


def test_mismatched_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="group sizes"):
        ndcg_at_k(np.zeros(3), np.zeros(3), np.array([2]), k=5)


def test_no_clicks_anywhere_is_an_error() -> None:
    with pytest.raises(ValueError, match="undefined"):
        ndcg_at_k(np.zeros(3), np.zeros(3), np.array([3]), k=5)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_data() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(0.5, 0.1, 50)
    large = rng.normal(0.5, 0.1, 5000)
    mean, low, high = bootstrap_interval(small, samples=500)
    assert low < mean < high
    _, low_l, high_l = bootstrap_interval(large, samples=500)
    assert high_l - low_l < (high - low) / 5
    values = np.array([0.2, np.nan, 0.4])
    assert bootstrap_interval(values, samples=100)[0] == pytest.approx(0.3)
