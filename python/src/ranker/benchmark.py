"""Throughput and peak memory of the training pipeline at a given data scale.

Each stage runs in its own process, so its peak resident memory is its own:
generate the click log, build the feature table, train (a fixed number of
boosting rounds, so sizes compare). `ranker bench-pipeline` prints a Markdown
table and writes JSON.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

BENCH_ROUNDS = 100


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_stage(stage: str, directory: Path, scale: float) -> dict[str, Any]:
    """One stage in this process; returns seconds, rows and peak memory."""
    start = time.perf_counter()
    if stage == "data":
        from ranker.data import WorldConfig, generate

        log = generate(WorldConfig().scaled(scale))
        log.write(directory)
        rows = log.impressions.height
    elif stage == "features":
        from ranker.pipeline import feature_table

        table = feature_table(directory)
        table.write_parquet(directory / "features.parquet")
        rows = table.height
    elif stage == "train":
        from ranker.features import FEATURE_NAMES
        from ranker.train import DEFAULT_PARAMS, fit_position_debiased, time_split

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
                [sys.executable, "-m", "ranker.benchmark", stage, str(directory), str(scale)],
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
        "machine": {
            "cpus": _cpus(),
            "memory_gb": _memory_gb(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "train_rounds": BENCH_ROUNDS,
        "results": results,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _memory_gb() -> float:
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return round(kib / 1024 / 1024, 1)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {m['memory_gb']} GB, Python {m['python']}. "
        f"Training runs {report['train_rounds']} boosting rounds on the training split.",
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


if __name__ == "__main__":
    stage, directory, scale = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(run_stage(stage, directory, scale)))
