"""`ranker features` (a click log's feature table, built by polars or Spark)
and `ranker compare-features` (are two feature tables equal?)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ranker.cli.args import UserError

if TYPE_CHECKING:
    from ranker.features.spark import SparkOptions

ENGINES = ("polars", "spark")
FeatureBuilder = Callable[[Path, pl.DataFrame | None], pl.DataFrame]


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and the Spark engine's options, shared by `features` and `train`."""
    from ranker.features.spark import DEFAULT_DRIVER_MEMORY, DEFAULT_MASTER, INSTALL_HINT

    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="polars",
        help=f"what builds the feature table (spark needs `{INSTALL_HINT}` and Java 17 or 21)",
    )
    p.add_argument(
        "--spark-master",
        help=f"Spark master URL, e.g. spark://host:7077 (default: {DEFAULT_MASTER}); "
        "a cluster must see the click log (and the output) at the same path",
    )
    p.add_argument(
        "--spark-driver-memory",
        default=DEFAULT_DRIVER_MEMORY,
        help="heap of the Spark driver (default: %(default)s)",
    )
    p.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other Spark setting, e.g. spark.executor.memory=4g (repeatable)",
    )


def _spark_options(args: argparse.Namespace) -> SparkOptions:
    from ranker.features.spark import DEFAULT_MASTER, SparkOptions

    conf = []
    for item in args.spark_conf:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--spark-conf {item!r}: expected KEY=VALUE")
        conf.append((key.strip(), value))
    return SparkOptions(
        master=args.spark_master or DEFAULT_MASTER,
        driver_memory=args.spark_driver_memory,
        conf=tuple(conf),
    )


def check_engine_options(args: argparse.Namespace) -> None:
    """Refuse Spark options without --engine spark, and a missing PySpark or
    Java before any work is done."""
    from ranker.features.spark import SEMANTIC_UNSUPPORTED, SparkUnavailable, require_spark

    if args.engine != "spark":
        if args.spark_master or args.spark_conf:
            raise UserError("--spark-master and --spark-conf need --engine spark")
        return
    if getattr(args, "semantic", False):
        raise UserError(SEMANTIC_UNSUPPORTED)
    try:
        require_spark()
    except SparkUnavailable as err:
        raise UserError(str(err)) from None


def feature_builder(args: argparse.Namespace, scratch: Path | None = None) -> FeatureBuilder:
    """What builds the feature table for these options (after `check_engine_options`)."""
    from ranker.features.build import feature_table

    if args.engine == "polars":
        return feature_table
    from ranker.features import spark

    options = _spark_options(args)

    def build(data: Path, embeddings: pl.DataFrame | None) -> pl.DataFrame:
        if embeddings is not None:
            raise UserError(spark.SEMANTIC_UNSUPPORTED)
        return spark.feature_table(data, options, scratch)

    return build


def write_table(table: pl.DataFrame, out: Path) -> None:
    """A feature table as one Parquet file, written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp")
    table.write_parquet(staging)
    staging.replace(out)


def _features(args: argparse.Namespace) -> int:
    from ranker.data.schema import validate_click_log

    check_engine_options(args)
    validate_click_log(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Spark's executors write the table beside the output, where they must
    # be able to write anyway.
    table = feature_builder(args, scratch=args.out.parent)(args.data, None)
    seconds = time.perf_counter() - started
    write_table(table, args.out)
    print(
        f"wrote {table.height:,} feature rows to {args.out} "
        f"(built by {args.engine} in {seconds:.1f} s)"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ranker.features.compare import compare_tables

    tables = []
    for path in (args.left, args.right):
        try:
            tables.append(pl.read_parquet(path))
        except (OSError, pl.exceptions.PolarsError) as err:
            raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    comparison = compare_tables(tables[0], tables[1])
    print(f"{args.left} against {args.right}")
    print(comparison.report())
    return 0 if comparison.passed else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("features", help="write the feature table of a click log (Parquet)")
    p.add_argument("--data", type=Path, required=True, help="click-log directory")
    p.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    add_engine_options(p)
    p.set_defaults(run=_features)

    p = sub.add_parser(
        "compare-features",
        help="compare two feature tables row for row; exit 1 if they differ",
    )
    p.add_argument("left", type=Path)
    p.add_argument("right", type=Path)
    p.set_defaults(run=_compare)
