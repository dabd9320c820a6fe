"""The statistics of the experiment decision: delta method, sample ratio
mismatch, the mSPRT and its always-valid interval, guardrails from /metrics,
and the decision rule's error rates over many synthetic experiments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from benchmarks.experiment_error_rates import binomial_se, rates
from ranker.experiments.analysis import (
    Estimate,
    GuardrailLimits,
    Guardrails,
    Look,
    always_valid_interval,
    guardrail_breaches,
    guardrails_from_json,
    guardrails_from_metrics,
    histogram_quantile,
    log_lift,
    msprt_log_statistic,
    ratio_estimate,
    sequential_test,
    srm_p_value,
)
from ranker.experiments.report import DEFAULT_TAU


def test_delta_method_by_hand() -> None:
    # Readers (views, clicks): (1, 0), (2, 1), (3, 2). R = 3 / 6 = 0.5; with
    # ddof 1: s_y^2 = 1, s_n^2 = 1, s_yn = 1, mean(n) = 2, so
    # Var(R) = (1 - 2 * 0.5 * 1 + 0.25 * 1) / (3 * 2^2) = 1 / 48.
    est = ratio_estimate(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert est.value == pytest.approx(0.5)
    assert est.se == pytest.approx(math.sqrt(1 / 48))
    low, high = est.interval()
    assert (low, high) == pytest.approx((0.5 - 1.959964 * est.se, 0.5 + 1.959964 * est.se))


def test_delta_method_with_equal_views_is_the_mean_of_rates() -> None:
    # With one page view per reader the ratio is a plain mean of clicks.
    clicks = np.array([0.0, 1.0, 1.0, 3.0])
    est = ratio_estimate(clicks, np.ones(4))
    assert est.value == pytest.approx(1.25)
    assert est.se == pytest.approx(clicks.std(ddof=1) / 2)


def test_delta_method_agrees_with_a_reader_bootstrap() -> None:
    rng = np.random.default_rng(7)
    views = rng.poisson(rng.gamma(1.0, 5.0, 3000)) + 1
    clicks = rng.poisson(views * rng.gamma(1.0, 0.3, 3000)).astype(np.float64)
    est = ratio_estimate(clicks, views.astype(np.float64))
    picks = rng.integers(0, 3000, (2000, 3000))
    boot = clicks[picks].sum(axis=1) / views[picks].sum(axis=1)
    # 2000 resamples estimate a standard deviation to about 1.6 %.
    assert est.se == pytest.approx(boot.std(ddof=1), rel=0.06)
    # ...and clustering matters: treating page views as independent understates it.
    per_view = math.sqrt(est.value / views.sum())  # Poisson, per-view independence
    assert est.se > 1.5 * per_view


def test_ratio_estimate_refuses_unequal_arrays() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        ratio_estimate(np.ones(3), np.ones(2))


def test_log_lift_by_hand() -> None:
    lift = log_lift(Estimate(0.3, 0.03), Estimate(0.2, 0.01))
    assert lift.value == pytest.approx(math.log(1.5))
    assert lift.se == pytest.approx(math.hypot(0.1, 0.05))


@pytest.mark.parametrize(
    ("observed", "weights", "chi2"),
    [
        # (480 - 500)^2 / 500 * 2
        ({"control": 480, "treatment": 520}, {"control": 1, "treatment": 1}, 1.6),
        # (100^2 / 500) * 2: a mismatch
        ({"control": 400, "treatment": 600}, {"control": 1, "treatment": 1}, 40.0),
        # 95/5 weights, 9,400 and 600 readers: 100^2/9500 + 100^2/500
        ({"control": 9400, "canary": 600}, {"control": 95, "canary": 5}, 10000 / 9500 + 20.0),
    ],
)
def test_srm_chi_square_by_hand(
    observed: dict[str, int], weights: dict[str, float], chi2: float
) -> None:
    assert srm_p_value(observed, weights) == pytest.approx(stats.chi2.sf(chi2, 1))


def test_srm_names_a_variant_without_weight() -> None:
    with pytest.raises(ValueError, match=r"no weight for variant.*canary"):
        srm_p_value({"control": 5, "canary": 5}, {"control": 1.0})


@pytest.mark.parametrize(
    ("estimate", "variance", "tau2"),
    [(0.0, 0.01, 0.01), (0.05, 0.0004, 0.01), (-0.2, 0.002, 0.0025), (0.01, 1e-5, 0.04)],
)
def test_msprt_matches_the_mixture_integral(estimate: float, variance: float, tau2: float) -> None:
    # Lambda = integral of N(est; theta, V) / N(est; 0, V) over theta ~ N(0, tau2).
    sd = math.sqrt(variance)

    def integrand(theta: float) -> float:
        ratio = stats.norm.pdf(estimate, theta, sd) / stats.norm.pdf(estimate, 0, sd)
        return float(ratio * stats.norm.pdf(theta, 0, math.sqrt(tau2)))

    numeric, _ = integrate.quad(integrand, -1, 1, points=[0, estimate], limit=200)
    assert msprt_log_statistic(estimate, variance, tau2) == pytest.approx(
        math.log(numeric), rel=1e-6, abs=1e-9
    )


def test_msprt_without_variance_is_no_evidence() -> None:
    assert msprt_log_statistic(0.3, 0.0, 0.01) == 0.0
    assert msprt_log_statistic(math.nan, 0.01, 0.01) == 0.0


def test_the_always_valid_interval_ends_where_the_test_rejects() -> None:
    estimate, variance, tau2, alpha = 0.04, 0.0003, 0.01, 0.05
    low, high = always_valid_interval(estimate, variance, tau2, alpha)
    for end in (low, high):
        # Testing theta = end is testing 0 on the shifted estimate.
        assert msprt_log_statistic(estimate - end, variance, tau2) == pytest.approx(
            math.log(1 / alpha)
        )
    assert low < estimate < high
    # Wider than the fixed-horizon interval: it pays for looking at every step.
    assert high - estimate > 1.96 * math.sqrt(variance)


@pytest.mark.parametrize(
    ("estimates", "crossed_on"),
    [
        # log(1/0.05) = 3.0; with V = 1e-4, tau2 = 0.01 an estimate of 0.035
        # gives log Lambda = 0.5 log(1/101) + 0.01 * 0.035^2 / (2e-4 * 0.0101) = 3.76.
        ([0.0, 0.035, 0.0], "1"),  # a later dip does not undo the crossing
        ([0.0, 0.02, 0.025], None),  # 0.025: log Lambda = 0.79
        ([-0.04, 0.04], "0"),  # harm crosses too
    ],
)
def test_sequential_test_stops_at_the_first_crossing(
    estimates: list[float], crossed_on: str | None
) -> None:
    looks = [Look(str(i), e, 1e-4) for i, e in enumerate(estimates)]
    result = sequential_test(looks, tau2=0.01, alpha=0.05)
    assert result.crossed_on == crossed_on
    assert result.threshold == pytest.approx(math.log(20))
    assert len(result.log_statistics) == len(estimates)
    if crossed_on is not None:
        assert result.lift_at_crossing == estimates[int(crossed_on)]


SCRAPE = """\
# HELP ranker_requests_total gRPC requests by method, status code, model and experiment variant.
# TYPE ranker_requests_total counter
ranker_requests_total{code="OK",method="Rank",model="news",variant="control"} 9990
ranker_requests_total{code="Internal",method="Rank",model="news",variant="control"} 10
ranker_requests_total{code="InvalidArgument",method="Rank",model="news",variant="control"} 50
ranker_requests_total{code="OK",method="Rank",model="news-canary",variant="canary"} 960
ranker_requests_total{code="Unavailable",method="Rank",model="news-canary",variant="canary"} 40
ranker_requests_total{code="OK",method="GetModelInfo",model="news",variant=""} 3
ranker_request_duration_seconds_bucket{method="Rank",le="0.001"} 500
ranker_request_duration_seconds_bucket{method="Rank",le="0.002"} 900
ranker_request_duration_seconds_bucket{method="Rank",le="0.004"} 1000
ranker_request_duration_seconds_bucket{method="Rank",le="+Inf"} 1000
ranker_request_duration_seconds_bucket{method="GetModelInfo",le="+Inf"} 3
"""


def test_guardrails_from_a_metrics_scrape() -> None:
    g = guardrails_from_metrics(SCRAPE)
    # A caller's bad request is not the variant's error.
    assert g.requests == {"control": 10050, "canary": 1000}
    assert g.errors == {"control": 10, "canary": 40}
    # Rank 990 of 1000 falls in (2 ms, 4 ms], 90 of its 100: 2 + 2 * 0.9 = 3.8 ms.
    assert g.latency_p99_ms == {"*": pytest.approx(3.8)}


def test_a_scrape_without_variants_is_refused() -> None:
    with pytest.raises(ValueError, match="no ranker_requests_total"):
        guardrails_from_metrics("process_cpu_seconds_total 3\n")


def test_histogram_quantile_in_the_open_bucket() -> None:
    assert histogram_quantile(0.99, {0.1: 10.0, math.inf: 100.0}) == 0.1
    assert histogram_quantile(0.5, {1.0: 0.0, 2.0: 10.0, math.inf: 10.0}) == pytest.approx(1.5)
    assert math.isnan(histogram_quantile(0.5, {}))


@pytest.mark.parametrize(
    ("guardrails", "breach"),
    [
        (guardrails_from_metrics(SCRAPE), "error rate 4.000% vs control 0.100%"),
        (Guardrails({"control": 1000, "canary": 1000}, {"control": 2, "canary": 3}, {}), None),
        (Guardrails({}, {}, {"control": 10.0, "canary": 13.0}), "p99 latency 13.0 ms > 1.2 x"),
        (Guardrails({}, {}, {"control": 10.0, "canary": 11.0}), None),
        (Guardrails({}, {}, {"*": 150.0}), "p99 latency (server-wide) 150.0 ms > SLO 100 ms"),
    ],
)
def test_guardrail_breaches(guardrails: Guardrails, breach: str | None) -> None:
    found = guardrail_breaches(guardrails, "canary", "control", GuardrailLimits())
    if breach is None:
        assert found == []
    else:
        assert len(found) == 1
        assert breach in found[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object with a 'variants' object"),
        ({"variants": {"a": {"requests": -1}}}, r"variants\.a\.requests must be a number >= 0"),
        ({"variants": {"a": {"latency": 3}}}, r"variants\.a\.latency is not a guardrail field"),
        ({"variants": {}, "latency_p99_ms": "fast"}, "latency_p99_ms must be a number"),
    ],
)
def test_guardrail_json_names_the_bad_field(data: object, message: str) -> None:
    with pytest.raises(ValueError, match="g.json: " + message):
        guardrails_from_json(data, "g.json")


def test_guardrail_json() -> None:
    g = guardrails_from_json(
        {
            "variants": {"control": {"requests": 10, "errors": 1, "latency_p99_ms": 8}},
            "latency_p99_ms": 9.5,
        },
        "g.json",
    )
    assert g == Guardrails({"control": 10}, {"control": 1}, {"control": 8.0, "*": 9.5})


# The decision rule's error rates with daily looks, on seeds the benchmark's
# numbers in python/README.md do not use (they start at 10,000). With 200 runs a rate p has
# a binomial standard error sqrt(p (1 - p) / 200); each bound allows 3 of them.
SEEDS = range(200)
DAYS = 14
ALPHA = 0.05


def test_aa_runs_rarely_decide() -> None:
    r = rates(SEEDS, readers=1000, days=DAYS, lift=0.0, alpha=ALPHA, tau=DEFAULT_TAU)
    assert r.decided <= ALPHA + 3 * binomial_se(ALPHA, r.runs)  # 0.096
    # The 95 % interval of the last look covers the true difference (zero).
    assert abs(r.coverage - 0.95) <= 3 * binomial_se(0.95, r.runs)  # 0.046
    # The always-valid interval covers it at all 14 looks at once.
    assert r.always_valid_coverage >= 1 - ALPHA - 3 * binomial_se(ALPHA, r.runs)
    # The reason for the sequential test: a fixed-horizon test read at every
    # one of the 14 looks declares a difference far more often than alpha.
    assert r.naive_decided > ALPHA + 3 * binomial_se(ALPHA, r.runs)


def test_a_clear_lift_ships() -> None:
    # A 40 % lift in clicks per page view, 2,000 readers per arm: power 1.00 on these seeds; at
    # 0.98 its standard error would be 0.01, so 0.95 is 3 of them below.
    r = rates(SEEDS, readers=2000, days=DAYS, lift=0.4, alpha=ALPHA, tau=DEFAULT_TAU)
    assert r.ship >= 0.95
    assert r.stop == 0.0  # never stopped for harm when it helps
    assert abs(r.coverage - 0.95) <= 3 * binomial_se(0.95, r.runs)


def test_harm_stops() -> None:
    r = rates(SEEDS[:100], readers=2000, days=DAYS, lift=-0.4, alpha=ALPHA, tau=DEFAULT_TAU)
    assert r.ship == 0.0
    assert r.stop >= 0.95
