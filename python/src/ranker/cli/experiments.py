"""`ranker exposures` and `ranker promote`: what an experiment served, and shipping the winner."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from ranker.cli.args import UserError


def _exposures(args: argparse.Namespace) -> int:
    from ranker.experiments.exposure import (
        click_log,
        read_exposures,
        training_rows,
        variant_counts,
    )

    exposures = read_exposures(args.log)
    print(variant_counts(exposures))
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


def _clicks(path: Path) -> pl.LazyFrame:
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    return pl.scan_ndjson(path).with_columns(pl.col("time").str.to_datetime(time_zone="UTC"))


def _promote(args: argparse.Namespace) -> int:
    from ranker.experiments.promote import promote

    try:
        target = promote(args.version_dir, args.to)
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
    p.set_defaults(run=_exposures)

    p = sub.add_parser("promote", help="publish a version (e.g. a canary) under another model name")
    p.add_argument("--version-dir", type=Path, required=True, help="models/news-canary/<version>")
    p.add_argument("--to", type=Path, required=True, help="the model directory, e.g. models/news")
    p.set_defaults(run=_promote)
