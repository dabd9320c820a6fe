"""Error rates of the experiment decision rule and the reach of interleaving,
measured with simulated readers against the real ranking server.

One model root serves `good` (a trained version), `good-twin` (the same files
under another name) and the worse models `firstNtrees` (the first N trees of
`good`, exported for real; N = 0 scores every candidate the same, so a page
keeps the candidates' random order). For every world seed the same readers
and page views (`NewsWorld.draw`) meet one server per experiment config:

- `aa`: control `good` against treatment `good-twin`, 50/50. Any ship or stop
  is a false decision; the report's 95 % interval of the true-NDCG@10
  difference should hold 0. Every page view is ranked by `good`.
- per worse model, `ab`: control the worse model against treatment `good`,
  50/50. Ship is the correct decision (power); the report's 95 % interval of
  the true-NDCG@10 difference should hold the true difference.
- per worse model, `alone`: every page view ranked by the worse model. With
  `aa` it gives the true difference on the very same page views: mean true
  NDCG@10 under `good` minus under the worse model.
- per worse model, `il`: every page view a team-draft interleaving of `good`
  (a) and the worse model (b).

The decisions are those of `ranker experiment report` (the same functions)
with its daily looks. For the page views each design needs, both are looked
at after every `--looks`-th share of the run's page views (in time order): A/B
needs the page views (both arms) up to the first look where the mSPRT
crosses, or (the rule interleaving gets) where the fixed-horizon 95 % interval
of the clicks-per-page-view difference excludes 0; interleaving the interleaved page views up
to the first look where the reader-level bootstrap interval of the preference
excludes 0. Fixed-horizon intervals read at every look find differences
sooner than they should (and false ones more often); the mSPRT does not.

`python -m benchmarks.live_error_rates --server BIN --model DIR --ort-lib LIB
[--seeds 20 --readers 600 --days 2 ...]` prints a Markdown table and writes it
to `--out` (`make bench-live`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.publish import add_publish_option, publish
from ranker.data.world import NewsWorld, WorldConfig
from ranker.experiments.analysis import Decision
from ranker.experiments.exposure import read_exposures
from ranker.experiments.interleaving import bootstrap_interval, page_view_outcomes, reader_outcomes
from ranker.experiments.report import PRIMARY, analyze, page_views
from ranker.export.version import export_first_trees, republish
from ranker.serving.process import ServerProcess
from ranker.simulation.run import SimulationResult, simulate
from ranker.simulation.truth import CUTOFF

NDCG = f"true_ndcg{CUTOFF}"
GOOD, TWIN = "good", "good-twin"
VERSION = "v1"


def worse_name(trees: int) -> str:
    return f"first{trees}trees"


def _experiment(name: str, variants: str) -> str:
    return f"experiment:\n  name: {name}\n  salt: {name}-salt\n  variants:\n{variants}"


# The A/A run's experiment config; see the module docstring.
AA = _experiment(
    "aa",
    f"    - {{name: control, model: {GOOD}, weight: 50}}\n"
    f"    - {{name: treatment, model: {TWIN}, weight: 50}}\n",
)


def pair_configs(worse: str) -> dict[str, str]:
    """The experiment config of each run against the model `worse`."""
    return {
        "ab": _experiment(
            "ab",
            f"    - {{name: control, model: {worse}, weight: 50}}\n"
            f"    - {{name: treatment, model: {GOOD}, weight: 50}}\n",
        ),
        "alone": _experiment("alone", f"    - {{name: control, model: {worse}, weight: 100}}\n"),
        "il": _experiment(
            "il",
            f"    - {{name: interleaved, interleave: {{a: {GOOD}, b: {worse}}}, weight: 100}}\n",
        ),
    }


@dataclass(frozen=True)
class PairOutcome:
    """`good` against one worse model on one seed."""

    ab_decision: str
    true_difference: float  # mean true NDCG@10 under good minus under worse, same page views
    ab_estimate: float  # the report's difference of true NDCG@10 at the last look
    ab_covered: bool  # the report's 95 % interval of it holds true_difference
    ab_lift: float  # the relative lift in clicks per page view of good over worse at the last look
    ab_needed: int | None  # page views to the first mSPRT crossing; None: not within the run
    # page views to the first look where the fixed-horizon 95 % interval of the
    # clicks-per-page-view difference excludes 0: the same rule as interleaving's
    ab_interval_needed: int | None
    il_needed: int | None  # page views to the first preference interval without 0
    il_delta: float  # the preference for good when found, else at the end of the run
    page_views: int  # of each run


@dataclass(frozen=True)
class SeedOutcome:
    seed: int
    page_views: int  # of the world, in every run
    aa_decision: str
    aa_covered: bool  # the A/A interval of the true-NDCG difference holds 0
    pairs: dict[int, PairOutcome]  # by trees of the worse model


def prefix_sizes(total: int, looks: int) -> list[int]:
    """The page views seen at each of `looks` equally spaced looks at `total`."""
    if total < 1 or looks < 1:
        raise ValueError(f"total {total} and looks {looks} must be positive")
    return sorted({math.ceil(total * i / looks) for i in range(1, looks + 1)})


def look_labels(count: int, sizes: Sequence[int]) -> list[str]:
    """For rows 0..count-1 in time order, the label of the first look that
    sees them: zero-padded so that labels sort as looks do."""
    width = len(str(len(sizes)))
    look = np.searchsorted(np.asarray(sizes), np.arange(1, count + 1), side="left")
    return [f"{i:0{width}d}" for i in look]


def median_needed(needed: Sequence[int | None]) -> float | None:
    """The median of page views needed over seeds, a seed that never
    detected counting as more than any that did; None when that median is
    itself a seed that never detected."""
    if not needed:
        raise ValueError("no seeds")
    ordered = sorted(needed, key=lambda n: math.inf if n is None else n)
    middle = len(ordered) // 2
    below, above = ordered[middle - 1 : middle] if len(ordered) % 2 == 0 else [], ordered[middle]
    if above is None or any(b is None for b in below):
        return None
    return statistics.mean([*(b for b in below if b is not None), above])


def publish_models(model: Path, root: Path, worse_trees: Sequence[int]) -> None:
    """`good`, `good-twin` and the worse models, from the version `model`."""
    republish(model, root, GOOD, VERSION)
    republish(model, root, TWIN, VERSION)
    for trees in worse_trees:
        export_first_trees(model, root, worse_name(trees), VERSION, trees)


def _serve(
    binary: Path, ort_lib: Path, root: Path, config: str, world: NewsWorld, work: Path
) -> tuple[pl.LazyFrame, SimulationResult]:
    """The world's readers against a server with `config`; the server's
    exposure log (read once it has stopped and flushed) and the simulation."""
    work.mkdir(parents=True)
    (work / "experiment.yaml").write_text(config)
    args = [f"--model-root={root}", f"--experiment-config={work / 'experiment.yaml'}"]
    args.append(f"--exposure-dir={work / 'exposures'}")
    with ServerProcess(binary, None, ort_lib=ort_lib, extra_args=args) as server:
        result = simulate(server.target, world, progress=False)
    return read_exposures(work / "exposures"), result


def _views(exposures: pl.LazyFrame, result: SimulationResult) -> pl.DataFrame:
    return page_views(exposures, result.clicks.lazy(), result.truth.lazy())[1]


def _decide(name: str, views: pl.DataFrame) -> tuple[str, float, float, float, float]:
    """The report's decision for the treatment, its last-look difference of
    true NDCG@10 from the control with the 95 % interval, and its lift in clicks per page view."""
    report = analyze(name, views, control="control")
    diff = report.differences.filter(
        (pl.col("day") == report.days[-1]) & (pl.col("metric") == NDCG)
    ).row(0, named=True)
    decision = report.decisions[0]
    return decision.decision.value, diff["value"], diff["low"], diff["high"], decision.lift


def _ab_needed(views: pl.DataFrame, looks: int) -> tuple[int | None, int | None]:
    """Page views (both arms) to the first mSPRT crossing, and to the first
    look whose 95 % interval of the clicks-per-page-view difference excludes 0."""
    sizes = prefix_sizes(views.height, looks)
    labelled = views.sort("time", "request_id").with_columns(
        day=pl.Series(look_labels(views.height, sizes))
    )
    report = analyze("ab", labelled, control="control")
    crossed = report.decisions[0].sequential.crossed_on
    excluded = report.differences.filter(
        (pl.col("metric") == PRIMARY) & ((pl.col("low") > 0) | (pl.col("high") < 0))
    )["day"].sort()
    return (
        None if crossed is None else sizes[int(crossed)],
        None if excluded.is_empty() else sizes[int(excluded[0])],
    )


def _il_needed(
    exposures: pl.LazyFrame, result: SimulationResult, looks: int
) -> tuple[int | None, float]:
    outcomes = page_view_outcomes(exposures, result.clicks.lazy()).sort("time", "request_id")
    delta = math.nan
    for size in prefix_sizes(outcomes.height, looks):
        readers = reader_outcomes(outcomes.head(size))
        counts = [readers[c].to_numpy() for c in ("wins_a", "wins_b", "ties")]
        if sum(int(c.sum()) for c in counts) == 0:
            continue
        delta, low, high = bootstrap_interval(*counts)
        if low > 0 or high < 0:
            return size, delta
    return None, delta


def run_seed(
    seed: int,
    readers: int,
    days: float,
    looks: int,
    worse_trees: Sequence[int],
    binary: Path,
    ort_lib: Path,
    root: Path,
    work: Path,
) -> SeedOutcome:
    world = NewsWorld.draw(WorldConfig.population(readers, days, seed))

    def serve(name: str, config: str) -> tuple[pl.LazyFrame, SimulationResult]:
        return _serve(binary, ort_lib, root, config, world, work / f"{seed}-{name}")

    aa = serve("aa", AA)
    aa_decision, _, aa_low, aa_high, _ = _decide("aa", _views(*aa))
    good_ndcg = float(aa[1].truth[NDCG].mean())  # type: ignore[arg-type]
    pairs = {}
    for trees in worse_trees:
        served = {
            name: serve(f"{name}-{trees}", config)
            for name, config in pair_configs(worse_name(trees)).items()
        }
        truth = good_ndcg - float(served["alone"][1].truth[NDCG].mean())  # type: ignore[arg-type]
        ab_views = _views(*served["ab"])
        decision, value, low, high, lift = _decide("ab", ab_views)
        il_needed, il_delta = _il_needed(*served["il"], looks)
        ab_needed, ab_interval_needed = _ab_needed(ab_views, looks)
        pairs[trees] = PairOutcome(
            ab_decision=decision,
            true_difference=truth,
            ab_estimate=value,
            ab_covered=low <= truth <= high,
            ab_lift=lift,
            ab_needed=ab_needed,
            ab_interval_needed=ab_interval_needed,
            il_needed=il_needed,
            il_delta=il_delta,
            page_views=len(world.page_views),
        )
    return SeedOutcome(seed, len(world.page_views), aa_decision, aa_low <= 0 <= aa_high, pairs)


def _share(hits: Sequence[bool]) -> str:
    n = len(hits)
    p = sum(hits) / n
    return f"{sum(hits)}/{n} = {p:.2f} (se {math.sqrt(p * (1 - p) / n):.2f})"


def _count(value: float | None, runs: Sequence[int | None]) -> str:
    found = f"{sum(n is not None for n in runs)}/{len(runs)}"
    if value is None:
        return f"more than the run's (found in {found})"
    return f"{value:,.0f} (found in {found})"


def table(outcomes: Sequence[SeedOutcome], readers: int, days: float, looks: int) -> str:
    """The measurement as Markdown: the A/A error rate, then per worse model
    the power, the interval coverage and the page views each design needed."""
    first, last = outcomes[0], outcomes[-1]
    aa_false = [o.aa_decision in (Decision.SHIP.value, Decision.STOP.value) for o in outcomes]
    trees = list(first.pairs)
    lines = [
        f"{len(outcomes)} world seeds ({first.seed}..{last.seed}); per run {readers:,} readers "
        f"over {days:g} days, {int(np.median([o.page_views for o in outcomes])):,} page views "
        f"(median); alpha 0.05, tau 0.1, daily looks for the decisions, {looks} looks for the "
        "page views needed",
        "",
        f"A/A (`good` against the same files as `good-twin`): false ship or stop "
        f"{_share(aa_false)}; the 95 % interval of the true-NDCG@10 difference holds 0 in "
        f"{_share([o.aa_covered for o in outcomes])}.",
        "",
        "| `good` against | " + " | ".join(_worse_label(t) for t in trees) + " |",
        "|---|" + "---|" * len(trees),
    ]

    def row(label: str, cell: Callable[[list[PairOutcome]], str]) -> None:
        cells = [cell([o.pairs[t] for o in outcomes]) for t in trees]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row(
        "true NDCG@10 difference (mean)",
        lambda ps: f"{statistics.mean(p.true_difference for p in ps):+.4f}",
    )
    row(
        "report's estimate of it (mean)",
        lambda ps: f"{statistics.mean(p.ab_estimate for p in ps):+.4f}",
    )
    row("95 % interval holds the true difference", lambda ps: _share([p.ab_covered for p in ps]))
    row(
        "lift in clicks per page view (mean)",
        lambda ps: f"{statistics.mean(p.ab_lift for p in ps):+.1%}",
    )
    row(
        "A/B ships `good` (power)",
        lambda ps: _share([p.ab_decision == Decision.SHIP.value for p in ps]),
    )
    row(
        "A/B stops `good` (wrong)",
        lambda ps: _share([p.ab_decision == Decision.STOP.value for p in ps]),
    )
    row(
        "A/B page views to the mSPRT crossing (median)",
        lambda ps: _count(median_needed([p.ab_needed for p in ps]), [p.ab_needed for p in ps]),
    )
    row(
        "A/B page views to a 95 % interval of the clicks-per-page-view difference "
        "without 0 (median)",
        lambda ps: _count(
            median_needed([p.ab_interval_needed for p in ps]), [p.ab_interval_needed for p in ps]
        ),
    )
    row(
        "interleaved page views to a preference interval without 0 (median)",
        lambda ps: _count(median_needed([p.il_needed for p in ps]), [p.il_needed for p in ps]),
    )
    row("A/B (mSPRT) / interleaving page views", lambda ps: _ratio(ps, "ab_needed"))
    row("A/B (interval) / interleaving page views", lambda ps: _ratio(ps, "ab_interval_needed"))
    return "\n".join(lines) + "\n"


def _worse_label(trees: int) -> str:
    return "constant scores (random order)" if trees == 0 else f"its first {trees} tree(s)"


def _ratio(pairs: Sequence[PairOutcome], needed: str) -> str:
    ab = median_needed([getattr(p, needed) for p in pairs])
    il = median_needed([p.il_needed for p in pairs])
    if il is None:
        return "n/a"
    if ab is None:
        # A/B did not decide within the run: the run's page views bound it below.
        return f"more than {statistics.median(p.page_views for p in pairs) / il:.1f}x"
    return f"{ab / il:.1f}x"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, required=True, help="the ranker-server binary")
    parser.add_argument("--model", type=Path, required=True, help="a trained model version")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--readers", type=int, default=600)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--looks", type=int, default=50)
    parser.add_argument(
        "--worse-trees",
        type=int,
        nargs="+",
        default=[0, 1],
        help="the worse models: the first N trees of --model; 0 scores every candidate the same",
    )
    parser.add_argument(
        "--ort-lib",
        type=Path,
        required=True,
        help="the onnxruntime library the server is given (`ranker ort-lib`)",
    )
    parser.add_argument("--out", type=Path, default=Path("live_error_rates.md"))
    add_publish_option(parser)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="live-rates-") as tmp:
        root = Path(tmp) / "models"
        publish_models(args.model, root, args.worse_trees)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            o = run_seed(
                seed,
                args.readers,
                args.days,
                args.looks,
                args.worse_trees,
                args.server,
                args.ort_lib,
                root,
                Path(tmp) / "runs",
            )
            outcomes.append(o)
            pairs = "; ".join(
                f"vs {worse_name(t)}: A/B {p.ab_decision} (true {p.true_difference:+.4f}, "
                f"estimate {p.ab_estimate:+.4f}, lift in clicks per page view "
                f"{p.ab_lift:+.1%}), needed A/B "
                f"{p.ab_needed} (interval {p.ab_interval_needed}), interleaving {p.il_needed}"
                for t, p in o.pairs.items()
            )
            print(f"seed {seed}: A/A {o.aa_decision}; {pairs}", flush=True)
            # What finished so far, should the run be cut short.
            args.out.write_text(table(outcomes, args.readers, args.days, args.looks))
    print("\n" + table(outcomes, args.readers, args.days, args.looks))
    print(f"wrote {args.out}")
    if args.publish:
        publish(args.publish, table(outcomes, args.readers, args.days, args.looks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
