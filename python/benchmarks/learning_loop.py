"""The nightly loop (`ranker live`) over many world seeds: what it is worth
against a frozen model and a nightly oracle, whether each retrain from the
server's own logs is at least as good as what served, what exploration
costs, and how well the explored pages give the position bias.

Per seed, one `run_live` of the plan (a changing world unless
`--stationary`); its readout (`ranker.simulation.readout`) gives every
figure from the world's true utility:

- served, frozen, oracle: mean true NDCG@10 after the warm-up;
- gap closed: (served - frozen) / (oracle - frozen);
- first retrain shipped: whether the first nightly candidate was promoted;
- retrain - serving: each night's candidate against the version serving
  when it was trained, on the next day's page views (every night pooled);
- exploration: the true NDCG@10 given up on the explored page views and
  over all page views, paired on the same pages;
- position bias: the largest absolute error of the last night's curve
  (`ranker.offpolicy.position_bias`) against the world's, over all places.

The summary gives means over seeds with 95 % t-intervals.

`python -m benchmarks.learning_loop --server BIN --model DIR [--seeds 10
--readers 1200 --days 5]` prints a Markdown table and writes it to `--out`
(`make bench-loop`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import t as student_t

from benchmarks.publish import add_publish_option, publish
from ranker.data.world import examine_probability
from ranker.offpolicy.position_bias import PositionBias
from ranker.simulation.live import LivePlan, run_live, version_dir


@dataclass(frozen=True)
class Outcome:
    seed: int
    served: float
    frozen: float
    oracle: float
    gap_closed: float
    first_shipped: bool
    retrains: int
    retrains_not_worse: int
    retrain_minus_serving: float
    cost_explored: float
    cost_overall: float
    bias_error: float


def run_seed(seed: int, plan: LivePlan, server: Path, model: Path, work: Path) -> Outcome:
    out = work / f"seed-{seed}"
    result = run_live(server, model, out, plan, say=lambda _: None)
    readout = result.readout
    first = next((n for n in result.nights if n.canary is not None), None)
    shipped = bool(
        first is not None
        and first.canary == f"v{2}"
        and (first.canary_outcome or "").startswith("promoted")
    )
    diffs = (readout.retrains["candidate_ndcg"] - readout.retrains["serving_ndcg"]).to_list()
    return Outcome(
        seed,
        readout.served_after_warmup,
        readout.frozen_after_warmup,
        readout.oracle_after_warmup,
        readout.gap_closed,
        shipped,
        len(diffs),
        sum(d >= 0 for d in diffs),
        statistics.fmean(diffs) if diffs else math.nan,
        readout.exploration_cost_explored,
        readout.exploration_cost_overall,
        _bias_error(out, result.nights[-2].candidate if len(result.nights) > 1 else None),
    )


def _bias_error(out: Path, version: str | None) -> float:
    """The last candidate's examination curve against the world's (NaN when
    it has none, e.g. refused by the gate, which keeps no metadata)."""
    found = None if version is None else version_dir(out / "models", version)
    meta = None if found is None else found / "metadata.json"
    if meta is None or not meta.is_file():
        return math.nan
    curve = json.loads(meta.read_text()).get("training", {}).get("position_bias")
    if not curve or "curves" not in curve:
        return math.nan
    return PositionBias.from_json(curve).error_against(examine_probability).max_abs_error


def _mean_ci(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return f"{finite[0]:.4f}" if finite else "n/a"
    m = statistics.fmean(finite)
    half = (
        float(student_t.ppf(0.975, len(finite) - 1))
        * statistics.stdev(finite)
        / math.sqrt(len(finite))
    )
    return f"{m:.4f} [{m - half:.4f}, {m + half:.4f}]"


def table(outcomes: list[Outcome], plan: LivePlan) -> str:
    world = "changing" if plan.changing else "stationary"
    lines = [
        f"{len(outcomes)} seeds; a {world} world of {plan.readers:,} readers over {plan.days} "
        f"days, {plan.warmup_days} of warm-up; {plan.exploration_percent:g} % of page views "
        f"explored (top {plan.exploration_depth} places shuffled); canary {plan.canary_percent} %. "
        "True NDCG@10 after the warm-up.",
        "",
        "| seed | served | frozen | oracle | gap closed | first retrain shipped "
        "| retrains >= serving | retrain - serving | exploration cost (explored / all) "
        "| position bias max error |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        gap = f"{o.gap_closed:.0%}" if math.isfinite(o.gap_closed) else "n/a"
        lines.append(
            f"| {o.seed} | {o.served:.4f} | {o.frozen:.4f} | {o.oracle:.4f} | {gap} "
            f"| {'yes' if o.first_shipped else 'no'} | {o.retrains_not_worse} of {o.retrains} "
            f"| {o.retrain_minus_serving:+.4f} | {o.cost_explored:.4f} / {o.cost_overall:.4f} "
            f"| {o.bias_error:.3f} |"
        )
    served_minus_frozen = [o.served - o.frozen for o in outcomes]
    oracle_minus_frozen = [o.oracle - o.frozen for o in outcomes]
    lines += [
        "",
        "Means over seeds, 95 % t-intervals:",
        "",
        "| figure | mean [95 % interval] |",
        "| --- | --- |",
        f"| served - frozen | {_mean_ci(served_minus_frozen)} |",
        f"| oracle - frozen | {_mean_ci(oracle_minus_frozen)} |",
        f"| gap closed (ratio of the means) | {_ratio(served_minus_frozen, oracle_minus_frozen)} |",
        f"| retrain - serving (per night, pooled per seed) | "
        f"{_mean_ci([o.retrain_minus_serving for o in outcomes])} |",
        f"| exploration cost, all page views | {_mean_ci([o.cost_overall for o in outcomes])} |",
        f"| exploration cost, explored page views | "
        f"{_mean_ci([o.cost_explored for o in outcomes])} |",
        f"| position bias max abs error | {_mean_ci([o.bias_error for o in outcomes])} |",
        f"| first retrain shipped | {sum(o.first_shipped for o in outcomes)} of {len(outcomes)} |",
        f"| retrains at least as good as what served | "
        f"{sum(o.retrains_not_worse for o in outcomes)} of {sum(o.retrains for o in outcomes)} |",
    ]
    return "\n".join(lines) + "\n"


def _ratio(num: list[float], den: list[float]) -> str:
    d = statistics.fmean(den)
    return f"{statistics.fmean(num) / d:.0%}" if d > 0 else "n/a (the oracle is not ahead)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, required=True, help="the ranker-server binary")
    parser.add_argument("--model", type=Path, required=True, help="the base model version dir")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=101)
    parser.add_argument("--readers", type=int, default=1200)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--stationary", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("learning_loop.md"))
    add_publish_option(parser)
    args = parser.parse_args(argv)
    plan = LivePlan(readers=args.readers, days=args.days, changing=not args.stationary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="learning-loop-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            o = run_seed(
                seed,
                LivePlan(**{**plan.__dict__, "seed": seed}),
                args.server,
                args.model,
                Path(tmp),
            )
            outcomes.append(o)
            print(
                f"seed {seed}: served {o.served:.4f}, frozen {o.frozen:.4f}, "
                f"oracle {o.oracle:.4f}; "
                f"retrains >= serving {o.retrains_not_worse} of {o.retrains}",
                flush=True,
            )
            args.out.write_text(table(outcomes, plan))  # what finished, should the run stop
    print("\n" + table(outcomes, plan))
    print(f"wrote {args.out}")
    if args.publish:
        publish(args.publish, table(outcomes, plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
