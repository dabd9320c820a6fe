"""Throughput and peak memory of the training pipeline at a given data scale.

Each stage runs in its own process, so its peak resident memory is its own:
generate the click log, build the feature table, train (a fixed number of
boosting rounds, so sizes compare). `python -m benchmarks.pipeline_throughput --scale S
[--scale S ...]` prints a Markdown table and writes JSON (`make bench-pipeline`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.machine import DEFAULT_OUT, PYTHON_DIR, describe
from benchmarks.publish import add_publish_option, publish

BENCH_ROUNDS = 100


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_stage(stage: str, directory: Path, scale: float) -> dict[str, Any]:
    """One stage in this process; returns seconds, rows and peak memory."""
    start = time.perf_counter()
    if stage == "data":
        from ranker.data.world import WorldConfig, generate

        log = generate(WorldConfig().scaled(scale))
        log.write(directory)
        rows = log.impressions.height
    elif stage == "features":
        from ranker.features.build import feature_table

        table = feature_table(directory)
        table.write_parquet(directory / "features.parquet")
        rows = table.height
    elif stage == "train":
        from ranker.features.spec import FEATURE_NAMES
        from ranker.training.dataset import time_split
        from ranker.training.lambdarank import DEFAULT_PARAMS, fit_position_debiased

        table = pl.read_parquet(directory / "features.parquet")
        train_split, _, _ = time_split(table)
        data = train_split.data
        del table, train_split
        fit_position_debiased(data, BENCH_ROUNDS, list(FEATURE_NAMES), dict(DEFAULT_PARAMS))
        rows = int(data.labels.size)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    seconds = time.perf_counter() - start
    return {
        "stage": stage,
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }


def bench(scales: list[float], work: Path) -> dict[str, Any]:
    results = []
    for scale in scales:
        directory = work / f"scale-{scale:g}"
        directory.mkdir(parents=True, exist_ok=True)
        for stage in ("data", "features", "train"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.pipeline_throughput",
                    "--stage",
                    stage,
                    "--work",
                    str(directory),
                    "--scale",
                    str(scale),
                ],
                cwd=PYTHON_DIR,
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["scale"] = scale
            results.append(result)
            print(
                f"scale {scale:g} {stage}: {result['rows']:,} rows in {result['seconds']:.1f} s, "
                f"peak {result['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    return {
        "machine": describe(),
        "train_rounds": BENCH_ROUNDS,
        "results": results,
    }


def markdown(report: dict[str, Any], *, with_machine: bool = True) -> str:
    """The table; with_machine names the machine first (a published copy
    has it in its header)."""
    m = report["machine"]
    machine = (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}. "
        if with_machine
        else ""
    )
    lines = [
        f"{machine}Training runs {report['train_rounds']} boosting rounds on the training split.",
        "",
        "| rows | stage | seconds | rows/s | peak memory |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['rows']:,} | {r['stage']} | {r['seconds']:.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['peak_rss_mb'] / 1024:.2f} GB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.pipeline_throughput", description=__doc__)
    parser.add_argument(
        "--scale",
        type=float,
        action="append",
        required=True,
        help="data scale (repeatable); 2.78 is 1 million rows, 27.8 is 10 million",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_OUT, help="scratch directory")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # one stage, in a child process
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.work, args.scale[0])))
        return 0
    report = bench(args.scale, args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "pipeline.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    if args.publish:
        publish(args.publish, markdown(report, with_machine=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
