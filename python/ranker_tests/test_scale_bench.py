"""The scale benchmark's memory reading: the resident memory of a stage's
whole process tree, since Spark's JVM and Dask's workers are children of
the stage's process and their memory is not in its own peak."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.scale import PeakSampler, _tree_rss_mb, markdown

# A child that holds 300 MB, and a grandchild that holds 200 MB more.
HOLD = (
    "import subprocess, sys, time\n"
    "block = bytearray({mb} << 20)\n"
    "if {spawn}:\n"
    "    subprocess.Popen([sys.executable, '-c', "
    "'block = bytearray(200 << 20); import time; time.sleep(30)'])\n"
    "time.sleep(30)\n"
)


def test_the_peak_counts_children_and_grandchildren() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(mb=300, spawn=True)])
    try:
        sampler = PeakSampler(proc.pid, every=0.05)
        deadline = time.monotonic() + 20
        while sampler.peak_mb < 500 and time.monotonic() < deadline:
            time.sleep(0.1)
        peak = sampler.stop()
        # bytearray writes its zeros, so the pages are resident: 500 MB
        # held, plus two interpreters (about 10 MB each).
        assert 500 <= peak < 600, peak
        assert _tree_rss_mb(proc.pid) >= 500
    finally:
        for child in _children(proc.pid):
            subprocess.run(["kill", str(child)], check=False)
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_process_that_is_gone_reads_as_nothing() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert _tree_rss_mb(proc.pid) == 0


def test_a_failed_stage_is_reported_not_dropped() -> None:
    report = {
        "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 23.5, "python": "3.11"},
        "train_rounds": 100,
        "dask_workers": 2,
        "results": [
            {
                "scale": 2.78,
                "stage": "features-polars",
                "rows": 1_000_800,
                "seconds": 4.0,
                "rows_per_second": 250_200.0,
                "peak_rss_mb": 1200.0,
            },
            {
                "scale": 27.8,
                "stage": "features-spark",
                "seconds": 60.0,
                "peak_rss_mb": 9000.0,
                "error": "java.lang.OutOfMemoryError: Java heap space",
            },
        ],
    }
    table = markdown(report)
    assert "| 2.78 | features-polars | 1,000,800 | 4.0 | 250,200 | 1.17 GB |" in table
    assert (
        "| 27.8 | features-spark | failed: java.lang.OutOfMemoryError: Java heap space |" in table
    )
