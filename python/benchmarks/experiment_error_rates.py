"""Error rates of the experiment decision rule, measured on synthetic readers.

Each run draws two arms of readers who arrive on a random day, then visit a
Poisson number of times a day at their own rate (gamma-distributed: a few heavy
readers, many light ones) and click a Poisson number of articles per page view
at their own propensity (gamma-distributed), times 1 + lift in the treatment.
The population clicks per page view is then the mean propensity, so the true difference is
lift x BASE_CTR and the true relative lift is `lift`. Each simulated day the
decision rule of `ranker experiment report` looks at the cumulative data (the
same functions), exactly as a team peeking daily would.

Measured over seeds: the A/A rate of any decision (ship or stop), the power
(ship) at a stated lift, the coverage of the fixed-horizon 95 % interval of
the clicks-per-page-view difference at the last look, and the coverage of the always-valid
interval of the lift at every look at once; and, for contrast, how often a
fixed-horizon z-test read at every look would have declared a difference.

`python -m benchmarks.experiment_error_rates [--seeds 1000 --readers 4000 ...]`
prints a Markdown table (`make bench-decision`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from benchmarks.publish import add_publish_option, publish
from ranker.experiments.analysis import (
    Look,
    always_valid_interval,
    difference,
    log_lift,
    ratio_estimate,
    sequential_test,
)
from ranker.experiments.report import DEFAULT_TAU

BASE_CTR = 0.25  # clicks per page view, on average over readers
VISITS_PER_DAY = 1.5  # mean page views a day of a reader who has arrived
HETEROGENEITY = 1.0  # gamma shape of activity and propensity: 1 is an exponential spread


@dataclass(frozen=True)
class Outcome:
    decision: str  # "ship", "stop" or "keep running"
    covered: bool  # the last look's 95 % interval holds the true clicks-per-page-view difference
    always_covered: bool  # every look's always-valid interval holds the true lift
    # What a fixed-horizon z-test (|z| > 1.96) read at every look would have
    # concluded: the error that peeking without a sequential test makes.
    naive_decided: bool


@dataclass(frozen=True)
class Rates:
    runs: int
    ship: float
    stop: float
    coverage: float
    always_valid_coverage: float
    naive_decided: float

    @property
    def decided(self) -> float:
        return self.ship + self.stop


def _arm(
    rng: np.random.Generator, readers: int, days: int, lift: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Cumulative page views and clicks, readers x days."""
    arrival = rng.integers(0, days, readers)
    activity = rng.gamma(HETEROGENEITY, VISITS_PER_DAY / HETEROGENEITY, readers)
    propensity = rng.gamma(HETEROGENEITY, BASE_CTR / HETEROGENEITY, readers) * (1 + lift)
    present = np.arange(days)[None, :] >= arrival[:, None]
    views = rng.poisson(activity[:, None] * present)
    clicks = rng.poisson(views * propensity[:, None])
    return np.cumsum(views, axis=1), np.cumsum(clicks, axis=1)


def run(seed: int, readers: int, days: int, lift: float, alpha: float, tau: float) -> Outcome:
    """One experiment with daily looks, `readers` per arm over `days` days."""
    rng = np.random.default_rng(seed)
    control_views, control_clicks = _arm(rng, readers, days, 0.0)
    views, clicks = _arm(rng, readers, days, lift)
    looks, always_covered, naive_decided = [], True, False
    true_lift = math.log1p(lift)
    for day in range(days):
        # Only readers who have had a page view by now are in the data.
        seen_c, seen_t = control_views[:, day] > 0, views[:, day] > 0
        ctr_c = ratio_estimate(control_clicks[seen_c, day], control_views[seen_c, day])
        ctr_t = ratio_estimate(clicks[seen_t, day], views[seen_t, day])
        estimate = log_lift(ctr_t, ctr_c)
        looks.append(Look(str(day), estimate.value, estimate.se**2))
        low, high = always_valid_interval(estimate.value, estimate.se**2, tau**2, alpha)
        always_covered &= low <= true_lift <= high
        naive_decided |= abs(estimate.value) > 1.959964 * estimate.se
    result = sequential_test(looks, tau**2, alpha)
    if result.crossed_on is None:
        decision = "keep running"
    else:
        decision = "ship" if result.lift_at_crossing > 0 else "stop"
    low, high = difference(ctr_t, ctr_c).interval()
    return Outcome(decision, low <= lift * BASE_CTR <= high, always_covered, naive_decided)


def rates(
    seeds: Sequence[int], readers: int, days: int, lift: float, alpha: float, tau: float
) -> Rates:
    outcomes = [run(seed, readers, days, lift, alpha, tau) for seed in seeds]
    n = len(outcomes)
    return Rates(
        n,
        sum(o.decision == "ship" for o in outcomes) / n,
        sum(o.decision == "stop" for o in outcomes) / n,
        sum(o.covered for o in outcomes) / n,
        sum(o.always_covered for o in outcomes) / n,
        sum(o.naive_decided for o in outcomes) / n,
    )


def binomial_se(rate: float, runs: int) -> float:
    return math.sqrt(rate * (1 - rate) / runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--first-seed", type=int, default=10_000)
    parser.add_argument("--readers", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--lift", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--tau", type=float, default=DEFAULT_TAU)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    lines = [
        f"{args.seeds} seeds, {args.days} daily looks, alpha {args.alpha}, tau {args.tau}, "
        f"base clicks per page view {BASE_CTR}, {VISITS_PER_DAY} visits/day, "
        f"gamma shape {HETEROGENEITY}",
        "",
        "| readers per arm | true lift | ship | stop | 95 % CI coverage | always-valid coverage "
        "| a z-test read daily decides |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for readers in args.readers:
        for lift in (0.0, args.lift):
            r = rates(seeds, readers, args.days, lift, args.alpha, args.tau)
            lines.append(
                f"| {readers:,} | {lift:+.0%} | {r.ship:.3f} | {r.stop:.3f} | "
                f"{r.coverage:.3f} | {r.always_valid_coverage:.3f} | {r.naive_decided:.3f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"Binomial standard error of a rate p over {args.seeds} seeds: sqrt(p(1-p)/n)."]
    print("\n".join(lines[-2:]))
    if args.publish:
        publish(args.publish, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
