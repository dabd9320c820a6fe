"""Features and training at scale, one machine against the distributed engines.

For each data scale: generate the click log once, then build the feature
table with polars and with Spark (`local[*]`, the engine a cluster runs), and
train with LightGBM on one machine and with lightgbm.dask over two local
worker processes, each stage in its own process. Peak memory is the largest
sum of resident memory over the stage's whole process tree, sampled every
0.1 s: Spark's JVM and Dask's workers are children of the stage's process,
and a child's memory is not in the parent's `ru_maxrss`. Both trainers run
the same fixed number of rounds of the naive lambdarank model (no early
stopping, so sizes compare).

`python -m benchmarks.scale --scale S [--scale S ...]` prints a Markdown table
and writes JSON (`make bench-scale`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import DEFAULT_OUT, PYTHON_DIR, describe
from benchmarks.publish import add_publish_option, publish

BENCH_ROUNDS = 100
DASK_WORKERS = 2
STAGES = ("data", "features-polars", "features-spark", "train-local", "train-dask")
SPARK_PARTS = "features-spark"
FEATURES = "features.parquet"


def _tree_rss_mb(root: int) -> float:
    """Resident memory of root and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name may hold spaces and parentheses; the
                # fields after its closing parenthesis do not.
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone since the listing
        children.setdefault(ppid, []).append(int(entry))
    total_kb, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            continue
    return total_kb / 1024


class PeakSampler:
    """The largest tree RSS of a running process, sampled on a thread."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.peak_mb = 0.0
        self._pid, self._every = pid, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(self._pid))
            self._stop.wait(self._every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def _train_rows(directory: Path) -> tuple[Any, Any, list[str]]:
    import polars as pl

    from ranker.features.spec import FEATURE_NAMES
    from ranker.training.dataset import time_split

    table = pl.read_parquet(directory / FEATURES)
    train_split, valid_split, _ = time_split(table)
    return train_split.data, valid_split.data, list(FEATURE_NAMES)


def run_stage(stage: str, directory: Path, scale: float) -> int:
    """One stage in this process; returns the rows it handled."""
    if stage == "data":
        from ranker.data.world import WorldConfig, generate

        log = generate(WorldConfig().scaled(scale))
        log.write(directory)
        return int(log.impressions.height)
    if stage == "features-polars":
        from ranker.features.build import feature_table

        table = feature_table(directory)
        table.write_parquet(directory / FEATURES)
        return int(table.height)
    if stage == "features-spark":
        import polars as pl

        from ranker.features.spark import SparkOptions, spark_session, write_feature_table

        out = directory / SPARK_PARTS
        # The driver holds no data (the executors read and write Parquet);
        # in local mode the executors live in the driver's JVM.
        with spark_session(SparkOptions(driver_memory="12g")) as spark:
            write_feature_table(spark, directory, out)
        return int(pl.scan_parquet(out / "*.parquet").select(pl.len()).collect().item())
    if stage == "train-local":
        import lightgbm as lgb

        from ranker.training.lambdarank import DEFAULT_PARAMS

        train_rows, _, names = _train_rows(directory)
        lgb.train(dict(DEFAULT_PARAMS), train_rows.dataset(names), num_boost_round=BENCH_ROUNDS)
        return int(train_rows.labels.size)
    if stage == "train-dask":
        from ranker.training.distributed import DaskCluster, dask_client, fit_distributed
        from ranker.training.lambdarank import DEFAULT_PARAMS, Rounds

        train_rows, valid_rows, names = _train_rows(directory)
        with dask_client(DaskCluster(workers=DASK_WORKERS)) as client:
            fit_distributed(
                client,
                train_rows,
                valid_rows,
                names,
                dict(DEFAULT_PARAMS),
                Rounds(max=BENCH_ROUNDS, early_stopping=None, min=BENCH_ROUNDS),
            )
        return int(train_rows.labels.size)
    raise ValueError(f"unknown stage {stage!r}")


def _measure(stage: str, directory: Path, scale: float, timeout: float) -> dict[str, Any]:
    """Runs one stage in a child process, timing it and sampling its memory."""
    command = [sys.executable, "-m", "benchmarks.scale", "--stage", stage]
    command += ["--work", str(directory), "--scale", str(scale)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=PYTHON_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = PeakSampler(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    result: dict[str, Any] = {"stage": stage, "seconds": seconds, "peak_rss_mb": peak}
    if proc.returncode != 0:
        lines = err.strip().splitlines() or [f"exit {proc.returncode}"]
        result["error"] = lines[-1][:300]
        return result
    rows = int(json.loads(out.strip().splitlines()[-1])["rows"])
    result.update(rows=rows, rows_per_second=rows / seconds)
    return result


def bench(scales: list[float], work: Path, timeout: float) -> dict[str, Any]:
    results = []
    for scale in scales:
        directory = work / f"scale-{scale:g}"
        directory.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            result = _measure(stage, directory, scale, timeout)
            result["scale"] = scale
            results.append(result)
            what = (
                f"failed: {result['error']}"
                if "error" in result
                else f"{result['rows']:,} rows in {result['seconds']:.1f} s"
            )
            print(
                f"scale {scale:g} {stage}: {what}, peak {result['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
            if "error" in result and stage == "data":
                break
    return {
        "machine": describe(),
        "train_rounds": BENCH_ROUNDS,
        "dask_workers": DASK_WORKERS,
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
        f"{machine}Training: {report['train_rounds']} rounds of naive lambdarank on the "
        "training split; "
        f"Dask with {report['dask_workers']} local worker processes; Spark in local[*].",
        "",
        "| scale | stage | rows | seconds | rows/s | peak memory (process tree) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(
                f"| {r['scale']:g} | {r['stage']} | failed: {r['error']} | "
                f"{r['seconds']:.1f} | | {r['peak_rss_mb'] / 1024:.2f} GB |"
            )
            continue
        lines.append(
            f"| {r['scale']:g} | {r['stage']} | {r['rows']:,} | {r['seconds']:.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['peak_rss_mb'] / 1024:.2f} GB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.scale", description=__doc__)
    parser.add_argument(
        "--scale",
        type=float,
        action="append",
        required=True,
        help="data scale (repeatable); 2.78 is 1 million rows, 27.8 is 10 million",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_OUT / "scale", help="scratch")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds a stage may take before it counts as failed",
    )
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # in a child process
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps({"rows": run_stage(args.stage, args.work, args.scale[0])}))
        return 0
    report = bench(args.scale, args.work, args.timeout)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "scale.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    if args.publish:
        publish(args.publish, markdown(report, with_machine=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
