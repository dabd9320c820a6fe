"""Off-policy estimates against the simulated truth, over many world seeds,
with the real server writing the log.

Per seed: a changing world of `--readers` readers over three days, served
by the base model with exploration (`--exploration` % of page views, top
`--depth` places shuffled, propensities logged). The served log's feature
table (what the server computed) gives:

- a candidate: lambdarank trained on days 1 and 2, early stopped;
- targets on day 3's logged page views: the candidate, the base model
  (the logger's own order), most popular, most recent;
- the examination curve from every explored page;
- for every estimator (`ranker.offpolicy`): each target's clicks per page
  view on day 3 with its 95 % interval, and candidate - base with its own.

The truth: the world's expected clicks of the very same page views in the
target's order (sum over slots of P(click) = examine(place) x
attractiveness(true utility)), which is what an experiment with unlimited
traffic on these page views would find. Coverage is the share of intervals
holding the truth; sign agreement is counted where the true difference is
larger than the interval's half-width.

`python -m benchmarks.offpolicy_live --server BIN --model DIR [--seeds
20 --readers 1500]` prints a Markdown table and writes it to `--out` (`make
bench-ope`).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.publish import add_publish_option, publish
from ranker.data.world import START, NewsWorld, WorldConfig, click_probability
from ranker.export.version import republish
from ranker.features.spec import FEATURE_NAMES
from ranker.offpolicy.estimators import (
    Estimate,
    Inputs,
    difference,
    estimate,
    logged_order_positions,
    positions_by,
)
from ranker.offpolicy.position_bias import estimate_position_bias
from ranker.offpolicy.reward import fit_reward_model
from ranker.serving.process import ServerProcess, ort_library_path
from ranker.simulation.readout import served_table
from ranker.simulation.run import simulate
from ranker.training.counterfactual import logged_rows
from ranker.training.dataset import time_split
from ranker.training.lambdarank import train

ESTIMATORS = ("pbm", "snips", "iips", "dr")
TARGETS = ("candidate", "base", "most popular", "most recent")
DAYS = 3


@dataclass(frozen=True)
class Row:
    seed: int
    estimator: str
    target: str  # a target, or "candidate - base"
    truth: float
    estimate: Estimate


def run_seed(
    seed: int, readers: int, share: float, depth: int, server: Path, model: Path, work: Path
) -> list[Row]:
    out = work / f"seed-{seed}"
    world = NewsWorld.draw(WorldConfig.population(readers, DAYS, seed, changing=True))
    republish(model, out / "models", "news", "v1")
    args = [
        f"--model-root={out / 'models'}",
        f"--exposure-dir={out / 'exposures'}",
        f"--exploration-share={share:g}",
        f"--exploration-depth={depth}",
    ]
    with ServerProcess(server, None, ort_lib=ort_library_path(), extra_args=args) as s:
        served = simulate(s.target, world, progress=False)
    table = served_table(
        world, out / "exposures", served.clicks.lazy(), served.articles, out / "served-log"
    )
    names = list(FEATURE_NAMES)
    cut = START + timedelta(days=DAYS - 1)
    before, held_out = table.filter(pl.col("time") < cut), table.filter(pl.col("time") >= cut)
    splits = time_split(before)
    candidate = train(splits[0].data, splits[1].data, names).naive_booster
    logged = logged_rows(held_out)
    features = held_out.select(names).to_numpy().astype(np.float32)
    # The base model's own order is the one the server logged (its scores):
    # features rebuilt offline differ from the server's on a few percent of
    # rows, where a page view was ranked before another reader's events of
    # the same simulated hour arrived (the simulator's workers run a step
    # in parallel), and a target that differs from the logger there has no
    # support under iips.
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(0.0, 1e-9, held_out.height)  # baselines tie: at random
    keys = {
        "candidate": candidate.predict(features),
        "most popular": held_out["article_clicks_24h"].to_numpy().astype(np.float64) + jitter,
        "most recent": -held_out["article_age_hours"].to_numpy().astype(np.float64) + jitter,
    }
    targets = {name: positions_by(logged, key) for name, key in keys.items()}
    targets["base"] = logged_order_positions(logged)
    utility = held_out["true_utility"].to_numpy().astype(np.float64)
    pages = held_out["request_id"].n_unique()
    truth = {
        name: float(click_probability(utility, place).sum() / pages)
        for name, place in targets.items()
    }
    curve = estimate_position_bias(logged_rows(table))
    inputs = Inputs(
        position_bias=curve, attractiveness=fit_reward_model(features, logged, curve, seed)
    )
    rows = []
    for estimator in ESTIMATORS:
        for name, place in targets.items():
            rows.append(
                Row(seed, estimator, name, truth[name], estimate(estimator, logged, place, inputs))
            )
        diff = difference(estimator, logged, targets["candidate"], targets["base"], inputs)
        rows.append(
            Row(seed, estimator, "candidate - base", truth["candidate"] - truth["base"], diff)
        )
    return rows


def table(rows: list[Row], readers: int, share: float, depth: int) -> str:
    seeds = len({r.seed for r in rows})
    lines = [
        f"{seeds} seeds; a changing world of {readers:,} readers over {DAYS} days served by "
        f"the base model, {share:g} % of page views explored (top {depth} places shuffled); "
        f"targets scored on day {DAYS}'s logged page views. Coverage: the share of 95 % "
        "intervals holding the world's expected clicks per page view; supported: the "
        "estimates the estimator did not refuse.",
        "",
        "| estimator | target | coverage | supported | mean estimate - truth | mean interval "
        "width | sign right (true difference > half-width) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for estimator in ESTIMATORS:
        for target in (*TARGETS, "candidate - base"):
            some = [r for r in rows if r.estimator == estimator and r.target == target]
            if not some:
                continue
            ok = [r for r in some if r.estimate.supported]
            covered = sum(r.estimate.low <= r.truth <= r.estimate.high for r in ok)
            bias = np.mean([r.estimate.value - r.truth for r in ok]) if ok else float("nan")
            width = np.mean([r.estimate.high - r.estimate.low for r in ok]) if ok else float("nan")
            sign = "-"
            if target == "candidate - base":
                clear = [r for r in ok if abs(r.truth) > (r.estimate.high - r.estimate.low) / 2]
                right = sum(np.sign(r.estimate.value) == np.sign(r.truth) for r in clear)
                sign = f"{right} of {len(clear)}"
            if not ok:
                lines.append(
                    f"| {estimator} | {target} | n/a | 0 of {len(some)} (refused: "
                    f"{some[0].estimate.reason}) | - | - | - |"
                )
                continue
            lines.append(
                f"| {estimator} | {target} | {covered / len(ok):.0%} ({covered} of {len(ok)}) "
                f"| {len(ok)} of {len(some)} | {bias:+.4f} | {width:.4f} | {sign} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, required=True, help="the ranker-server binary")
    parser.add_argument("--model", type=Path, required=True, help="the base model version dir")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=501)
    parser.add_argument("--readers", type=int, default=1500)
    parser.add_argument("--exploration", type=float, default=5.0, help="percent explored")
    parser.add_argument("--depth", type=int, default=4, help="top places shuffled")
    parser.add_argument("--out", type=Path, default=Path("offpolicy_live.md"))
    add_publish_option(parser)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ope-coverage-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            got = run_seed(
                seed, args.readers, args.exploration, args.depth, args.server, args.model, Path(tmp)
            )
            rows += got
            pbm = next(r for r in got if r.estimator == "pbm" and r.target == "candidate - base")
            e = pbm.estimate
            print(
                f"seed {seed}: pbm candidate - base {e.value:+.4f} [{e.low:+.4f}, {e.high:+.4f}], "
                f"truth {pbm.truth:+.4f}",
                flush=True,
            )
            args.out.write_text(table(rows, args.readers, args.exploration, args.depth))
    text = table(rows, args.readers, args.exploration, args.depth)
    print("\n" + text)
    print(f"wrote {args.out}")
    if args.publish:
        publish(args.publish, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
