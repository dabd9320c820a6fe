"""Position bias by intervention harvesting, measured where the truth is known.

Each run draws the two-ranker world of the tests (ranker_tests.harvest_world:
readers assigned at random to ranker A or B, no exploration, clicks by
theta(place) * attractiveness with theta_k = (1 + k) ** -0.8), harvests the
curve with 95 % reader-bootstrap intervals, and records its largest absolute
error against the truth, how often each place's interval covers the truth,
and the naive curve's error (click rate by logged place over place 0).

`python -m benchmarks.harvest_position_bias [--seeds 20 --pages 4000 40000
--shares 0.5 0.8]` prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.publish import add_publish_option, publish
from ranker.data.world import examine_probability
from ranker.offpolicy.harvesting import harvest_position_bias
from ranker_tests.harvest_world import ITEMS, naive_curve, two_ranker_world


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--pages", type=int, nargs="+", default=[4_000, 40_000])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--bootstrap", type=int, default=200)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    lines: list[str] = []
    true = examine_probability(np.arange(ITEMS))
    true = true / true[0]
    lines.append(
        f"Intervention harvesting on the two-ranker world: {ITEMS} places, {args.seeds} seeds, "
        f"{args.bootstrap} bootstrap replicates over readers.\n"
    )
    lines.append(
        "| share on A | pages | max abs error (median, worst) | naive error (median) "
        "| coverage of places 1.. | runs with 2+ misses | s per fit |"
    )
    lines.append("|---:|---:|---|---:|---:|---:|---:|")
    for share in args.shares:
        for pages in args.pages:
            errors, naive, covered, seconds = [], [], [], []
            for seed in range(args.seeds):
                rng = np.random.default_rng(100 + seed)
                logged, a, b, by_a = two_ranker_world(rng, pages=pages, share_a=share)
                start = time.perf_counter()
                curve = harvest_position_bias(
                    logged, a, b, by_a, bootstrap=args.bootstrap, seed=seed
                )
                seconds.append(time.perf_counter() - start)
                errors.append(curve.error_against(examine_probability).max_abs_error)
                naive.append(float(np.max(np.abs(naive_curve(logged) - true))))
                covered.append(((curve.low <= true) & (true <= curve.high))[1:])
            hits = np.array(covered)
            lines.append(
                f"| {share:.0%} | {pages:,} | {np.median(errors):.4f}, {max(errors):.4f} "
                f"| {np.median(naive):.3f} | {hits.mean():.3f} "
                f"| {int((hits.sum(axis=1) <= hits.shape[1] - 2).sum())}/{args.seeds} "
                f"| {np.median(seconds):.2f} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.publish:
        publish(args.publish, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
