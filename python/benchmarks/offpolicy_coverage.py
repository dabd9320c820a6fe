"""How well the off-policy estimators' 95 % intervals cover a known truth,
and whether a difference larger than its interval has the right sign.

Each replication draws a synthetic position-based world
(ranker_tests.offpolicy_world: attractiveness per item, examination
(1 + place) ** -0.8, a logger ordering by a noisy score that shuffles its top
3 on a share epsilon ~ U(0.05, 0.2) of pages), estimates the examination
curve from the explored pages, and estimates a target that reorders the
top 3 by a better score (iips, snips, pbm) and its difference from serving,
and the reversed top 3's difference (pbm). The truths are the population
values over 200,000 pages. Replications with too few explored pages for the
curve are counted as refused. Also: the curve's largest absolute error
(places 0-7, shuffled depth 4, 10 % explored) as the log grows.

`python -m benchmarks.offpolicy_coverage [--seeds 20 --replications 50 --pages 2500]`
prints a Markdown table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from benchmarks.publish import add_publish_option, publish
from ranker.offpolicy.estimators import (
    Inputs,
    difference,
    iips,
    logged_order_positions,
    pbm,
    snips,
)
from ranker.offpolicy.position_bias import TooLittleExploration, estimate_position_bias
from ranker_tests.offpolicy_world import rerank_top, reverse_top, simulate, theta, truth

DEPTH = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--replications", type=int, default=50, help="per seed")
    parser.add_argument("--pages", type=int, default=2500, help="page views per replication")
    add_publish_option(parser)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(12345)
    big = simulate(rng, pages=200_000, epsilon=0.1, depth=DEPTH)
    target_value = truth(big, rerank_top(big, DEPTH, rng, 0.5))
    serving_value = truth(big, big.deterministic)
    reversed_value = truth(big, reverse_top(big, DEPTH))
    covered = dict.fromkeys(("iips", "snips", "pbm", "pbm difference"), 0)
    runs = refused = 0
    width_cases = width_wrong = half_cases = half_wrong = 0
    for seed in range(1, args.seeds + 1):
        rng = np.random.default_rng(seed)
        for replication in range(args.replications):
            world = simulate(rng, pages=args.pages, epsilon=rng.uniform(0.05, 0.2), depth=DEPTH)
            target = rerank_top(world, DEPTH, rng, 0.5)
            try:
                curve = estimate_position_bias(world.logged, bootstrap=100, seed=replication)
            except TooLittleExploration:
                refused += 1
                continue
            runs += 1
            for name, e in (
                ("iips", iips(world.logged, target)),
                ("snips", snips(world.logged, target)),
                ("pbm", pbm(world.logged, target, curve, curve_from_same_log=True)),
            ):
                covered[name] += e.low <= target_value <= e.high
            serving = logged_order_positions(world.logged)
            inputs = Inputs(position_bias=curve, curve_from_same_log=True)
            for positions, true_gap in (
                (target, target_value - serving_value),
                (reverse_top(world, DEPTH), reversed_value - serving_value),
            ):
                gap = difference("pbm", world.logged, positions, serving, inputs)
                if positions is target:
                    covered["pbm difference"] += gap.low <= true_gap <= gap.high
                wrong = bool(np.sign(gap.value) != np.sign(true_gap))
                if abs(true_gap) > gap.high - gap.low:
                    width_cases += 1
                    width_wrong += wrong
                if abs(true_gap) > (gap.high - gap.low) / 2:
                    half_cases += 1
                    half_wrong += wrong
    lines = [
        f"Truth (clicks per page view): target {target_value:.4f}, serving "
        f"{serving_value:.4f}, reversed top {reversed_value:.4f}.\n",
        f"| estimate | coverage of the 95 % interval ({runs} runs, {refused} refused) |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {hits / max(runs, 1):.3f} |" for name, hits in covered.items()]
    lines.append(
        f"\nSign of a pbm difference: true difference larger than the interval's width "
        f"in {width_cases} cases, wrong sign in {width_wrong}; larger than half the width "
        f"in {half_cases} cases, wrong sign in {half_wrong}.\n"
    )
    lines.append("| explored pages (about) | curve's max abs error, mean of 5 seeds | worst |")
    lines.append("|---:|---:|---:|")
    for pages in (2_000, 8_000, 32_000):
        errors = [
            estimate_position_bias(
                simulate(np.random.default_rng(100 + s), pages=pages, epsilon=0.1, depth=4).logged,
                bootstrap=20,
            )
            .error_against(theta)
            .max_abs_error
            for s in range(5)
        ]
        lines.append(f"| {pages // 10:,} | {np.mean(errors):.4f} | {np.max(errors):.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.publish:
        publish(args.publish, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
