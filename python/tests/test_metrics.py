from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.metrics import ndcg_at_k


def test_perfect_ranking_scores_one() -> None:
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    scores = np.array([0.1, 0.9, 0.2, 0.8])
    assert ndcg_at_k(labels, scores, np.array([4]), k=10) == pytest.approx(1.0)


def test_known_value_for_one_click_at_rank_three() -> None:
    labels = np.array([0.0, 0.0, 1.0])
    scores = np.array([3.0, 2.0, 1.0])
    # DCG = 1/log2(4), IDCG = 1/log2(2)
    assert ndcg_at_k(labels, scores, np.array([3]), k=3) == pytest.approx(1 / math.log2(4))


def test_cutoff_ignores_clicks_below_k() -> None:
    labels = np.array([0.0, 0.0, 1.0])
    scores = np.array([3.0, 2.0, 1.0])
    assert ndcg_at_k(labels, scores, np.array([3]), k=2) == 0.0


def test_groups_without_clicks_are_left_out() -> None:
    labels = np.array([0.0, 0.0, 1.0, 0.0])
    scores = np.array([1.0, 2.0, 2.0, 1.0])
    assert ndcg_at_k(labels, scores, np.array([2, 2]), k=5) == pytest.approx(1.0)


def test_ties_keep_input_order() -> None:
    labels = np.array([0.0, 1.0])
    scores = np.array([1.0, 1.0])
    assert ndcg_at_k(labels, scores, np.array([2]), k=2) == pytest.approx(1 / math.log2(3))


def test_mismatched_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="group sizes"):
        ndcg_at_k(np.zeros(3), np.zeros(3), np.array([2]), k=5)


def test_no_clicks_anywhere_is_an_error() -> None:
    with pytest.raises(ValueError, match="undefined"):
        ndcg_at_k(np.zeros(3), np.zeros(3), np.array([3]), k=5)
