"""`ranker exposures`, `ranker experiment report` and `ranker promote`: what an
experiment served, whether it won, and shipping the winner."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ranker.cli.args import UserError, add_tracking_options, positive_float, tracking_uri

if TYPE_CHECKING:
    from ranker.experiments.analysis import Guardrails


def _probability(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def _exposures(args: argparse.Namespace) -> int:
    from ranker.experiments.exposure import (
        click_log,
        read_exposures,
        training_rows,
        variant_counts,
    )

    exposures = read_exposures(args.log)
    print(variant_counts(exposures))
    if args.position_bias is not None:
        _position_bias(args, exposures)
    if args.click_log is not None:
        if args.clicks is None or args.articles is None:
            raise UserError("--click-log needs --clicks and --articles")
        log = click_log(exposures, _clicks(args.clicks), pl.read_parquet(args.articles))
        log.write(args.click_log)
        print(
            f"wrote a click log of {log.impressions['impression_id'].n_unique():,} page views "
            f"({log.impressions.height:,} rows, {int(log.impressions['clicked'].sum()):,} clicked) "
            f"to {args.click_log}: `ranker train --data {args.click_log}` reads it"
        )
    elif args.clicks is not None:
        rows = training_rows(exposures, _clicks(args.clicks))
        rows.write_parquet(args.out)
        print(
            f"wrote {rows.height:,} training rows ({int(rows['clicked'].sum()):,} clicked) "
            f"to {args.out}"
        )
    return 0


def _position_bias(args: argparse.Namespace, exposures: pl.LazyFrame) -> None:
    """Estimate the examination curve from the explored pages and write it."""
    from ranker.experiments.feedback import logged_feedback
    from ranker.offpolicy.position_bias import estimate_position_bias

    if args.clicks is None:
        raise UserError("--position-bias needs --clicks")
    logged = logged_feedback(
        exposures, _clicks(args.clicks), drop_without_propensity=args.skip_without_propensity
    )
    estimate = estimate_position_bias(logged, by_device=True)
    estimate.write(args.position_bias)
    print(estimate.markdown())
    print(f"wrote the position-bias estimate to {args.position_bias}")


def _clicks(path: Path) -> pl.LazyFrame:
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    return pl.scan_ndjson(path).with_columns(pl.col("time").str.to_datetime(time_zone="UTC"))


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name or not weight > 0:
            raise argparse.ArgumentTypeError(f"{part!r} is not VARIANT=WEIGHT with a weight > 0")
        weights[name] = weight
    return weights


def _guardrails(path: Path) -> Guardrails:
    from ranker.experiments.analysis import guardrails_from_json, guardrails_from_metrics

    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not JSON: {err}") from None
        return guardrails_from_json(data, str(path))
    try:
        return guardrails_from_metrics(text)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None


def _columns(
    flag: str, path: Path, scan: Callable[[Path], pl.LazyFrame], needed: set[str]
) -> pl.LazyFrame:
    """The file scanned, refused in one line naming the flag when it cannot be
    read or lacks a column."""
    frame = scan(path)
    try:
        names = frame.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{flag} {path}: cannot be read: {err}") from None
    missing = needed - set(names)
    if missing:
        raise UserError(f"{flag} {path}: no column(s) {', '.join(sorted(missing))}")
    return frame


def _report(args: argparse.Namespace) -> int:
    from ranker.experiments.exposure import read_exposures
    from ranker.experiments.report import DEFAULT_TAU, analyze, page_views, write

    for flag, path in (
        ("--clicks", args.clicks),
        ("--truth", args.truth),
        ("--guardrails", args.guardrails),
    ):
        if path is not None and not path.is_file():
            raise UserError(f"{flag} {path}: no such file")
    if not args.exposures.is_dir():
        raise UserError(f"--exposures {args.exposures}: no such directory")
    guardrails = _guardrails(args.guardrails) if args.guardrails is not None else None
    clicks = _columns("--clicks", args.clicks, _clicks, {"request_id", "article_id", "time"})
    truth = None
    if args.truth is not None:
        truth = _columns("--truth", args.truth, pl.scan_parquet, {"request_id", "true_ndcg10"})
    experiment, views = page_views(read_exposures(args.exposures), clicks, truth, args.experiment)
    report = analyze(
        experiment,
        views,
        control=args.control,
        weights=args.weights,
        alpha=args.alpha,
        tau=DEFAULT_TAU if args.tau is None else args.tau,
        guardrails=guardrails,
    )
    path = write(report, args.out)
    for d in report.decisions:
        print(f"{d.variant}: {d.decision.value} ({d.reason})")
    print(f"wrote {path} and charts")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from ranker.experiments.promote import promote

    try:
        target = promote(args.version_dir, args.to, tracking_uri(args))
    except FileExistsError as err:
        raise SystemExit(str(err)) from None
    print(f"promoted {args.version_dir.resolve()} to {target}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("exposures", help="per-variant counts of an exposure log; join clicks")
    p.add_argument("--log", type=Path, required=True, help="the server's --exposure-dir")
    p.add_argument(
        "--clicks",
        type=Path,
        help="click events (request_id, article_id, time) as Parquet or JSON lines",
    )
    p.add_argument("--out", type=Path, default=Path("training_rows.parquet"))
    p.add_argument(
        "--click-log",
        type=Path,
        help="write a click-log directory for `ranker train` instead (needs --clicks, --articles)",
    )
    p.add_argument("--articles", type=Path, help="the catalog (articles.parquet schema)")
    p.add_argument(
        "--position-bias",
        type=Path,
        metavar="OUT.json",
        help="also estimate the examination probability by place (and device) from the "
        "explored pages and write it here, e.g. beside a click log as position_bias.json "
        "(needs --clicks)",
    )
    p.add_argument(
        "--skip-without-propensity",
        action="store_true",
        help="with --position-bias: leave out records without propensities instead of refusing",
    )
    p.set_defaults(run=_exposures)

    p = sub.add_parser("experiment", help="analyse an experiment: metrics, intervals, a decision")
    actions = p.add_subparsers(dest="action", required=True)
    p = actions.add_parser(
        "report",
        help="per-variant metrics with reader-level intervals, SRM, mSPRT decision, charts",
        description="Per-variant readers, page views, clicks, clicks per page view and "
        "clicks per reader (and true NDCG@10 with --truth), each against the control with "
        "a reader-level (delta method) 95 % interval, looked at once per day (a day served "
        "only in part is marked with its page views); a sample-ratio-mismatch check; and a "
        "decision per variant (ship, keep running, stop) from an mSPRT on the relative "
        "lift in clicks per page view that stays valid under daily looks. Writes "
        "report.md, report.json, metrics.png and sequential.png.",
    )
    p.add_argument("--exposures", type=Path, required=True, help="the server's --exposure-dir")
    p.add_argument(
        "--clicks",
        type=Path,
        required=True,
        help="click events (request_id, article_id, time) as Parquet or JSON lines",
    )
    p.add_argument(
        "--truth",
        type=Path,
        help="simulated truth per page view (request_id, true_ndcg10, ...) as Parquet",
    )
    p.add_argument(
        "--guardrails",
        type=Path,
        help="server errors and p99 latency: a scrape of the server's /metrics, or JSON "
        '{"variants": {NAME: {"requests", "errors", "latency_p99_ms"}}, "latency_p99_ms"}',
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the report and charts")
    p.add_argument("--alpha", type=_probability, default=0.05, help="false decision rate")
    p.add_argument(
        "--tau",
        type=positive_float,
        # Importing the analysis here would slow every command; a test holds
        # this default to the report's DEFAULT_TAU.
        help="mSPRT mixing standard deviation of the relative lift in clicks per page view, "
        "log scale (default 0.1)",
    )
    p.add_argument("--control", help="the control variant (default: 'control')")
    p.add_argument("--experiment", help="the experiment, when the log holds several")
    p.add_argument(
        "--weights",
        type=_weights,
        help="configured traffic weights, e.g. control=95,canary=5 (default: equal)",
    )
    p.set_defaults(run=_report)

    p = sub.add_parser("promote", help="publish a version (e.g. a canary) under another model name")
    p.add_argument("--version-dir", type=Path, required=True, help="models/news-canary/<version>")
    p.add_argument("--to", type=Path, required=True, help="the model directory, e.g. models/news")
    add_tracking_options(p)
    p.set_defaults(run=_promote)
