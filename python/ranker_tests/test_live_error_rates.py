"""The live error-rate benchmark's bookkeeping: where it looks, how it takes a
median over seeds that never detected, and the table it reports."""

from __future__ import annotations

import pytest

from benchmarks.live_error_rates import (
    PairOutcome,
    SeedOutcome,
    look_labels,
    median_needed,
    prefix_sizes,
    table,
)


@pytest.mark.parametrize(
    ("total", "looks", "want"),
    [
        (10, 3, [4, 7, 10]),
        (10, 1, [10]),
        (6, 6, [1, 2, 3, 4, 5, 6]),
        # Fewer page views than looks: each size once.
        (2, 5, [1, 2]),
    ],
)
def test_prefix_sizes_end_at_the_total(total: int, looks: int, want: list[int]) -> None:
    assert prefix_sizes(total, looks) == want


@pytest.mark.parametrize(("total", "looks"), [(0, 3), (10, 0)])
def test_prefix_sizes_refuse_nothing_to_look_at(total: int, looks: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        prefix_sizes(total, looks)


def test_each_row_is_labelled_with_the_first_look_that_sees_it() -> None:
    assert look_labels(5, [2, 4, 5]) == ["0", "0", "1", "1", "2"]


def test_look_labels_sort_as_the_looks_do() -> None:
    sizes = prefix_sizes(12, 12)
    labels = look_labels(12, sizes)
    assert labels[9:11] == ["09", "10"]
    assert sorted(labels) == labels


@pytest.mark.parametrize(
    ("needed", "want"),
    [
        ([300, 100, 200], 200),
        ([100, 200, 300, 400], 250),
        # A seed that never detected is above every one that did.
        ([100, None, 300], 300),
        ([100, 200, 300, None], 250),
        # The median itself never detected: unknown, not a number.
        ([100, None, None], None),
        ([100, 200, None, None], None),
    ],
)
def test_median_needed_counts_undetected_seeds_as_largest(
    needed: list[int | None], want: float | None
) -> None:
    assert median_needed(needed) == want


def test_median_needed_refuses_no_seeds() -> None:
    with pytest.raises(ValueError, match="no seeds"):
        median_needed([])


def _pair(decision: str, ab_needed: int | None, il_needed: int | None) -> PairOutcome:
    return PairOutcome(
        ab_decision=decision,
        true_difference=0.2,
        ab_estimate=0.1,
        ab_covered=decision == "ship",
        ab_lift=0.3,
        ab_needed=ab_needed,
        ab_interval_needed=None if ab_needed is None else ab_needed // 2,
        il_needed=il_needed,
        il_delta=0.5,
        page_views=1000,
    )


def test_table_reports_rates_and_the_ratio_of_page_views() -> None:
    outcomes = [
        SeedOutcome(
            1000,
            1000,
            "keep running",
            True,
            {0: _pair("ship", 400, 100), 1: _pair("keep running", None, 200)},
        ),
        SeedOutcome(
            1001,
            1000,
            "ship",
            False,
            {0: _pair("ship", 600, 100), 1: _pair("keep running", None, 200)},
        ),
    ]
    text = table(outcomes, readers=600, days=2, looks=50)
    assert "false ship or stop 1/2 = 0.50" in text
    assert "holds 0 in 1/2 = 0.50" in text
    rows = {
        line.split(" | ")[0]: line.split(" | ")[1:]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert rows["| A/B ships `good` (power)"][:2] == [
        "2/2 = 1.00 (se 0.00)",
        "0/2 = 0.00 (se 0.00) |",
    ]
    assert rows["| A/B page views to the mSPRT crossing (median)"][0] == "500 (found in 2/2)"
    # A/B never decided against the first tree: the run's page views bound the ratio.
    assert rows["| A/B (mSPRT) / interleaving page views"] == ["5.0x", "more than 5.0x |"]
    assert rows["| A/B (interval) / interleaving page views"] == ["2.5x", "more than 5.0x |"]
