"""The machine a benchmark ran on, recorded beside its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# python/, where `python -m benchmarks.<name>` finds this package; child
# processes run from here whatever the caller's working directory.
PYTHON_DIR = Path(__file__).resolve().parents[1]
# Where results go unless told otherwise: data/bench in the repository.
DEFAULT_OUT = PYTHON_DIR.parent / "data" / "bench"


# The CPU flags that decide which scoring code a machine can run.
VECTOR_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "bmi2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
)


def describe() -> dict[str, Any]:
    """CPU model and vector flags, usable cores, memory, Python and platform."""
    cpu, flags = "unknown", set[str]()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])  # MemTotal
    return {
        "cpu": cpu,
        "vector_flags": [f for f in VECTOR_FLAGS if f in flags],
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
