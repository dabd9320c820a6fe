"""`make bench`: kernel and server benchmarks in one run, with ratios to baselines.

Kernel: Go testing.B over each scoring backend (native Go, onnxruntime through
cgo), one thread and all cores, batches of 1, 100 and 1000 rows. Server: the
Go server on each backend and the Python baseline server (grpcio +
onnxruntime) on loopback, driven by the Go load generator: a closed loop for
the maximum throughput, then an open loop at half of it for latency. Absolute
numbers drift on a shared machine, so every figure is also given as a ratio
to its baseline measured minutes apart in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranker.server_process import ServerProcess, free_port

CANDIDATES = (100, 1000)
CLOSED_LOOP_CONCURRENCY = 8
OPEN_LOOP_WORKERS = 32
PHASE_SECONDS = 6
BENCH_LINE = re.compile(
    r"^BenchmarkScore/model=(\S+?)/backend=(\S+?)/threads=(\d+)/batch=(\d+)-\d+"
    r"\s+\d+\s+[\d.]+ ns/op\s+([\d.e+]+) rows/s"
)


@dataclass(frozen=True)
class Tools:
    repo: Path
    server: Path
    load: Path
    ranker: Path
    ort_lib: Path


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gb = int(f.readline().split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False
    ).stdout.strip()


def kernel_benchmarks(
    tools: Tools, models: dict[str, Path], test_model: Path
) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "RANKER_ORT_LIB": str(tools.ort_lib),
        "RANKER_TEST_MODEL": str(test_model),
        "RANKER_BENCH_MODELS": ",".join(f"{k}={v}" for k, v in models.items()),
    }
    out = subprocess.run(
        [
            "go",
            "test",
            "-run",
            "^$",
            "-bench",
            "BenchmarkScore",
            "-benchtime",
            "1s",
            "./internal/model/",
        ],
        cwd=tools.repo / "go",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        if m := BENCH_LINE.match(line):
            rows.append(
                {
                    "model": m[1],
                    "backend": m[2],
                    "threads": int(m[3]),
                    "batch": int(m[4]),
                    "rows_per_second": float(m[5]),
                }
            )
    if not rows:
        raise RuntimeError(f"no benchmark lines in go test output:\n{out}")
    return rows


def _rss_mb(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def _load(tools: Tools, target: str, model: Path, candidates: int, rate: float) -> dict[str, Any]:
    workers = OPEN_LOOP_WORKERS if rate else CLOSED_LOOP_CONCURRENCY
    out = subprocess.run(
        [
            str(tools.load),
            f"--target={target}",
            f"--model={model}",
            f"--candidates={candidates}",
            f"--concurrency={workers}",
            f"--duration={PHASE_SECONDS}s",
            f"--rate={rate}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _python_baseline(tools: Tools, model: Path) -> tuple[subprocess.Popen[bytes], str]:
    target = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(tools.ranker), "baseline-server", f"--model={model}", f"--listen={target}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3.0)  # imports and session creation
    return proc, target


def server_benchmarks(tools: Tools, models: dict[str, Path]) -> list[dict[str, Any]]:
    results = []
    for model_name, model in models.items():
        for server in ("go-native", "go-onnxruntime", "python-baseline"):
            if server == "python-baseline":
                proc, target = _python_baseline(tools, model)
                pid = proc.pid
                go = None
            else:
                go = ServerProcess(
                    tools.server,
                    model,
                    ort_lib=tools.ort_lib,
                    extra_args=[f"--backend={server.removeprefix('go-')}", "--log-level=warn"],
                ).start()
                target, pid = go.target, go._proc.pid  # type: ignore[union-attr]
            try:
                for candidates in CANDIDATES:
                    peak = _load(tools, target, model, candidates, 0)
                    half = _load(tools, target, model, candidates, peak["requests_per_second"] / 2)
                    results.append(
                        {
                            "model": model_name,
                            "server": server,
                            "candidates": candidates,
                            "max": peak,
                            "half_load": half,
                            **_rss_mb(pid),
                        }
                    )
                    print(
                        f"{model_name} {server} {candidates}: "
                        f"{peak['candidates_per_second']:,.0f} candidates/s; at half load "
                        f"p50 {half['p50_ms']} ms p99 {half['p99_ms']} ms",
                        file=sys.stderr,
                    )
            finally:
                if go is not None:
                    go.stop()
                    go.close()
                else:
                    proc.terminate()
                    proc.wait()
    return results


def ratios(kernel: list[dict[str, Any]], servers: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(model: str, backend: str, threads: int, batch: int) -> float:
        return float(
            next(
                r["rows_per_second"]
                for r in kernel
                if (r["model"], r["backend"], r["threads"], r["batch"])
                == (model, backend, threads, batch)
            )
        )

    out: dict[str, Any] = {"kernel_native_over_onnxruntime": {}, "server_over_python": {}}
    for r in kernel:
        if r["backend"] == "native":
            key = f"{r['model']}/threads={r['threads']}/batch={r['batch']}"
            out["kernel_native_over_onnxruntime"][key] = r["rows_per_second"] / rate(
                r["model"], "onnxruntime", r["threads"], r["batch"]
            )
    for s in servers:
        base = next(
            b
            for b in servers
            if b["model"] == s["model"]
            and b["candidates"] == s["candidates"]
            and b["server"] == "python-baseline"
        )
        key = f"{s['model']}/{s['server']}/candidates={s['candidates']}"
        out["server_over_python"][key] = (
            s["max"]["candidates_per_second"] / base["max"]["candidates_per_second"]
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# ranker benchmarks",
        "",
        f"Commit `{report['commit']}`, {report['time']}. Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['platform']}.",
        "",
        "## Scoring kernel (Go testing.B, rows/s)",
        "",
        "| model | threads | batch | native Go | onnxruntime (cgo) | native / onnxruntime |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ratio = report["ratios"]["kernel_native_over_onnxruntime"]
    for r in report["kernel"]:
        if r["backend"] != "native":
            continue
        ort = next(
            o
            for o in report["kernel"]
            if o["backend"] == "onnxruntime"
            and (o["model"], o["threads"], o["batch"]) == (r["model"], r["threads"], r["batch"])
        )
        key = f"{r['model']}/threads={r['threads']}/batch={r['batch']}"
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['batch']} | {r['rows_per_second']:,.0f} | "
            f"{ort['rows_per_second']:,.0f} | {ratio[key]:.2f}x |"
        )
    lines += [
        "",
        f"## Server over gRPC on loopback (closed loop, {CLOSED_LOOP_CONCURRENCY} in flight, "
        f"{PHASE_SECONDS} s; latency in an open loop at half that rate)",
        "",
        "| model | server | candidates | requests/s | candidates/s | vs Python | p50 ms | p99 ms | "
        "p99/p50 | RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sratio = report["ratios"]["server_over_python"]
    for s in report["servers"]:
        key = f"{s['model']}/{s['server']}/candidates={s['candidates']}"
        h, peak = s["half_load"], s["max"]
        lines.append(
            f"| {s['model']} | {s['server']} | {s['candidates']} | "
            f"{peak['requests_per_second']:,.0f} | {peak['candidates_per_second']:,.0f} | "
            f"{sratio[key]:.2f}x | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | "
            f"{h['p99_ms'] / max(h['p50_ms'], 1e-9):.2f} | {s['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run(tools: Tools, models: dict[str, Path], test_model: Path, out_dir: Path) -> dict[str, Any]:
    kernel = kernel_benchmarks(tools, models, test_model)
    servers = server_benchmarks(tools, models)
    report = {
        "commit": _git(tools.repo, "rev-parse", "--short", "HEAD")
        + ("-dirty" if _git(tools.repo, "status", "--porcelain", "--untracked-files=no") else ""),
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "kernel": kernel,
        "servers": servers,
    }
    report["ratios"] = ratios(kernel, servers)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "bench.md").write_text(markdown(report))
    return report
