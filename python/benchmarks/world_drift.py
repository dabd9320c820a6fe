"""How fast a frozen model decays, in the stationary world and in a changing
one (`WorldConfig.changing`): what nightly retraining is worth.

Per seed and world (changes off, then on), a world of the size `ranker live`
uses (`WorldConfig.population(--readers, --days, seed)`) writes its click
log as the editor ordered it; one feature table is built from all of it
(every row's features use only what happened before its page view). Two
models, both position-debiased lambdarank with the shipped parameters and
`--rounds` trees (a fixed count, so the two differ only in their data):

- frozen: trained on the page views of the first `--train-days` days;
- retrained: trained on every day before the day it ranks (the frozen
  model itself on the first day after its training days);
- recent: trained on the `--train-days` days before the day it ranks: as
  much data as the frozen model, only newer. In a stationary world it is
  as good as the frozen model; what it gains over it is the world's change
  alone, while `retrained` also gains from having more data.

Each ranks every later day's page views, scored by true NDCG@10 against the
world's true utility (`ranker.simulation.truth`, the evaluation report's
utility NDCG@10). The table gives the means over seeds per day, and the
gains over the frozen model with their spread over seeds. The last day is
the run's last full day (the few page views at its very end are left out).

`python -m benchmarks.world_drift [--seeds 1 2 3 --readers 2500 --days 6]`
prints a Markdown table (`make bench-drift` publishes it).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl

from benchmarks.publish import add_publish_option, publish
from ranker.data.world import START, NewsWorld, WorldConfig
from ranker.evaluation.metrics import per_query
from ranker.evaluation.report import utility_grades
from ranker.features.build import build_features
from ranker.features.spec import FEATURE_NAMES
from ranker.simulation.truth import CUTOFF
from ranker.training.dataset import TimeSplit
from ranker.training.lambdarank import DEFAULT_PARAMS, fit_position_debiased

ROUNDS = 200


@dataclass(frozen=True)
class DayScore:
    """Mean true NDCG@10 on one day's page views."""

    day: int
    frozen: float
    retrained: float
    recent: float


def _day_tables(world: NewsWorld) -> dict[int, pl.DataFrame]:
    """The feature table of the world's click log, by day of the run (0 first)."""
    log = world.click_log()
    table = build_features(log.impressions.lazy(), log.articles.lazy())
    day = ((pl.col("time") - pl.lit(START)).dt.total_seconds() // 86_400).cast(pl.Int64)
    table = table.with_columns(day.alias("_day"))
    return {
        int(key[0]): part.drop("_day")
        for key, part in table.partition_by("_day", as_dict=True, maintain_order=True).items()
    }


def _train(days: dict[int, pl.DataFrame], start: int, end: int, rounds: int) -> lgb.Booster:
    """The model trained on days [start, end)."""
    rows = pl.concat([days[d] for d in sorted(days) if start <= d < end])
    data = TimeSplit("train", rows).data
    return fit_position_debiased(data, rounds, list(FEATURE_NAMES), dict(DEFAULT_PARAMS))


def _true_ndcg(model: lgb.Booster, table: pl.DataFrame) -> float:
    split = TimeSplit("eval", table)
    scores = np.asarray(model.predict(split.data.features), dtype=np.float64)
    ndcg = per_query(utility_grades(table), scores, split.data.groups, ks=(CUTOFF,))
    return float(np.mean(ndcg[f"ndcg@{CUTOFF}"]))


def decay(config: WorldConfig, train_days: int, rounds: int) -> list[DayScore]:
    """Frozen and retrained models' true NDCG@10 per day after `train_days`."""
    days = _day_tables(NewsWorld.draw(config))
    frozen = _train(days, 0, train_days, rounds)
    scores = []
    for day in range(train_days, int(config.days)):
        first = day == train_days
        retrained = frozen if first else _train(days, 0, day, rounds)
        recent = frozen if first else _train(days, day - train_days, day, rounds)
        scores.append(
            DayScore(
                day,
                _true_ndcg(frozen, days[day]),
                _true_ndcg(retrained, days[day]),
                _true_ndcg(recent, days[day]),
            )
        )
    return scores


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.4f} ({spread:.4f})"


def _table(results: dict[bool, list[list[DayScore]]]) -> list[str]:
    lines = [
        "| world | day | frozen | retrained | recent | retrained - frozen (sd) "
        "| recent - frozen (sd) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def gain(day: list[DayScore], model: str) -> str:
        return _mean_sd([getattr(s, model) - s.frozen for s in day])

    for changing, per_seed in results.items():
        for i, first in enumerate(per_seed[0]):
            day = [scores[i] for scores in per_seed]
            lines.append(
                f"| {'changing' if changing else 'stationary'} | {first.day + 1} "
                f"| {statistics.mean(s.frozen for s in day):.4f} "
                f"| {statistics.mean(s.retrained for s in day):.4f} "
                f"| {statistics.mean(s.recent for s in day):.4f} "
                f"| {gain(day, 'retrained')} | {gain(day, 'recent')} |"
            )
    return lines


def _change_table(stationary: list[list[DayScore]], changing: list[list[DayScore]]) -> list[str]:
    """What the change alone costs the frozen model: per seed, its gap to a
    retrained model in the changing world minus the gap in the stationary
    world of the same seed (the same readers, articles and page views)."""
    lines = [
        "| day | extra gain of retrained (sd) | extra gain of recent (sd) |",
        "|---:|---:|---:|",
    ]

    def extra(i: int, model: str) -> str:
        return _mean_sd(
            [
                (getattr(c[i], model) - c[i].frozen) - (getattr(s[i], model) - s[i].frozen)
                for s, c in zip(stationary, changing, strict=True)
            ]
        )

    for i, first in enumerate(stationary[0]):
        lines.append(f"| {first.day + 1} | {extra(i, 'retrained')} | {extra(i, 'recent')} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--readers", type=int, default=2500)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--train-days", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--worlds",
        choices=["stationary", "changing"],
        nargs="+",
        default=["stationary", "changing"],
    )
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if not 0 < args.train_days < args.days:
        parser.error(f"--train-days {args.train_days}: must be between 0 and --days {args.days}")
    results: dict[bool, list[list[DayScore]]] = {world == "changing": [] for world in args.worlds}
    for changing in results:
        for seed in args.seeds:
            config = WorldConfig.population(args.readers, args.days, seed, changing=changing)
            scores = decay(config, args.train_days, args.rounds)
            results[changing].append(scores)
            print(
                f"changing={changing} seed={seed}: "
                + ", ".join(
                    f"day {s.day + 1} {s.frozen:.4f}/{s.retrained:.4f}/{s.recent:.4f}"
                    for s in scores
                ),
                flush=True,
            )
    seeds = " ".join(str(s) for s in args.seeds)
    lines = [
        f"True NDCG@10 per day of a model trained on days 1-{args.train_days} (frozen), one "
        f"retrained on every day before (retrained) and one on the {args.train_days} days "
        f"before (recent), {args.readers:,} readers over "
        f"{args.days} days, seeds {seeds} (means over seeds), {args.rounds} trees each:",
        "",
        *_table(results),
    ]
    if len(results) == 2:
        lines += [
            "",
            "Changing minus stationary, per seed (the part of the gain that the world's change "
            "alone accounts for; the rest comes from more data and warmer reader histories):",
            "",
            *_change_table(results[False], results[True]),
        ]
    print("\n".join(lines))
    if args.publish:
        publish(args.publish, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
