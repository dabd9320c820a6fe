"""`make bench`: kernel and server benchmarks in one run, with ratios to baselines.

Kernel: Go testing.B over each scoring backend (native Go, onnxruntime through
cgo), one thread and all cores, batches of 1, 100 and 1000 rows. Server: the
Go server on each backend (native also with intra-request splitting off), and
three peers on loopback: the Python baseline server (grpcio + onnxruntime,
the ranking proto, a message per candidate), the packed-rows Python server
(grpcio + onnxruntime, KServe V2 ModelInfer with the rows packed) and
MLServer's LightGBM runtime (the same V2 protocol), all driven by the one Go
load generator with the same rows: a closed loop of 8 in flight for the
maximum throughput, a closed loop of 1 for the latency of a request alone,
then an open loop at half the maximum for latency under load. Absolute
numbers drift on a shared machine, so every figure is also given as a ratio
to its peers measured minutes apart in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.machine import DEFAULT_OUT, PYTHON_DIR, describe
from benchmarks.publish import add_publish_option, publish
from ranker.serving.process import ServerProcess, free_port, ort_library_path

CANDIDATES = (100, 1000)
CLOSED_LOOP_CONCURRENCY = 8
# The Go servers, and the peers every figure is compared with.
GO_SERVERS = ("go-native", "go-native-unsplit", "go-onnxruntime")
PEERS = ("python-baseline", "python-packed", "mlserver")
PEER_PROTOCOL = {"python-baseline": "ranker", "python-packed": "v2", "mlserver": "v2"}
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
    ort_lib: Path
    mlserver: Path  # the mlserver command, in its own environment


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False
    ).stdout.strip()


def kernel_benchmarks(tools: Tools, models: dict[str, Path]) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "RANKER_ORT_LIB": str(tools.ort_lib),
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


BY_IDS_LINE = re.compile(r"^BenchmarkRankByIDs/candidates=(\d+)/(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op")
INGEST_LINE = re.compile(
    r"^BenchmarkRecordEvents/backend=(\w+)-\d+\s+\d+\s+[\d.]+ ns/op\s+([\d.e+]+) events/s"
)
# The shared design against embedded, side by side: batches of 500 events.
INGEST_500_LINE = re.compile(
    r"^BenchmarkIngest/batch=500/backend=([\w-]+?)-\d+\s+\d+\s+[\d.]+ ns/op\s+([\d.e+]+) events/s"
)


def parse_online(out: str) -> dict[str, Any]:
    """Rank latency with features sent and by ids, and ingestion, from go test output."""
    rank: dict[str, dict[str, float]] = {}
    ingest: dict[str, float] = {}
    ingest_500: dict[str, float] = {}
    for line in out.splitlines():
        if m := BY_IDS_LINE.match(line):
            rank.setdefault(m[1], {})[m[2]] = float(m[3]) / 1000.0  # microseconds
        elif m := INGEST_LINE.match(line):
            ingest[m[1]] = float(m[2])
        elif m := INGEST_500_LINE.match(line):
            ingest_500[m[1]] = float(m[2])
    if not rank or not ingest:
        raise RuntimeError(f"no online-feature benchmark lines in go test output:\n{out}")
    return {"rank_us": rank, "events_per_second": ingest, "events_per_second_batch_500": ingest_500}


KAFKA_LOCAL = Path(
    os.environ.get("RANKER_KAFKA_LOCAL") or PYTHON_DIR.parent / "tests/kafka/kafka-local"
)


def online_benchmarks(tools: Tools) -> dict[str, Any]:
    """The feature engine in process: Rank by ids against features sent
    (same requests otherwise), and event ingestion; embedded, in Redis (a
    redis-server started here on loopback) and on a Kafka state (one local
    broker started here with tests/kafka/kafka-local)."""
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kafka_dir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    time.sleep(0.5)
    try:
        started = subprocess.run(
            [str(KAFKA_LOCAL), "start", str(kafka_dir), "1"],
            capture_output=True,
            text=True,
            check=True,
        )
        brokers = started.stdout.strip().splitlines()[-1]
        return _online_benchmarks(tools, f"redis://127.0.0.1:{redis_port}/0", brokers)
    finally:
        subprocess.run([str(KAFKA_LOCAL), "stop", str(kafka_dir)], check=False)
        shutil.rmtree(kafka_dir, ignore_errors=True)
        redis.terminate()
        redis.wait()


def _online_benchmarks(tools: Tools, redis_url: str, kafka_brokers: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            "go",
            "test",
            "-p",
            "1",  # one package's benchmarks at a time: they share two cores
            "-run",
            "^$",
            "-bench",
            "BenchmarkRankByIDs|BenchmarkRecordEvents|BenchmarkIngest",
            "-benchtime",
            "2s",
            "./internal/server/",
            "./internal/features/embedded/",
            "./internal/features/kafkastate/",
        ],
        cwd=tools.repo / "go",
        env={
            **os.environ,
            "RANKER_BENCH_REDIS": redis_url,
            "RANKER_BENCH_KAFKA": kafka_brokers,
            "RANKER_KAFKA_LOCAL": str(KAFKA_LOCAL),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"go test of the online benchmarks failed ({out.returncode}):\n"
            f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        )
    return parse_online(out.stdout)


def _rss_mb(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def _load(
    tools: Tools,
    target: str,
    model: Path,
    candidates: int,
    rate: float,
    *,
    protocol: str = "ranker",
    model_name: str = "",
    concurrency: int = CLOSED_LOOP_CONCURRENCY,
) -> dict[str, Any]:
    workers = OPEN_LOOP_WORKERS if rate else concurrency
    out = subprocess.run(
        [
            str(tools.load),
            f"--target={target}",
            f"--model={model}",
            f"--candidates={candidates}",
            f"--concurrency={workers}",
            f"--duration={PHASE_SECONDS}s",
            f"--rate={rate}",
            f"--protocol={protocol}",
            f"--model-name={model_name}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    if result["errors"]:
        first = result.get("first_error")
        raise RuntimeError(f"{target}: {result['errors']} errors, the first: {first}")
    return result


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and of its descendants alive
    now (MLServer scores in worker processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)  # ppid
        times[child] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo += children.get(p, [])
    return total


def _wait_for_port(target: str, proc: subprocess.Popen[bytes], what: str) -> None:
    host, port = target.rsplit(":", 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before serving")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on {target} within 120 s")


def _python_peer(module: str, model: Path) -> tuple[subprocess.Popen[bytes], str]:
    target = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, f"--model={model}", f"--listen={target}"],
        cwd=PYTHON_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(target, proc, module)
    return proc, target


def _mlserver(
    tools: Tools, model: Path, name: str, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """MLServer's LightGBM runtime over the model's LightGBM text file, with
    a worker process per core (its setting for throughput)."""
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    root = work / f"mlserver-{name}"
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(
        json.dumps(
            {
                "grpc_port": grpc_port,
                "http_port": http_port,
                "metrics_port": metrics_port,
                "parallel_workers": describe()["cores"],
                "logging_level": "WARNING",
            }
        )
    )
    (root / name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "mlserver_lightgbm.LightGBMModel",
                "parameters": {"uri": str(model / "model.txt")},
            }
        )
    )
    proc = subprocess.Popen(
        [str(tools.mlserver), "start", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Listening is not ready: the model loads in the workers after.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlserver exited with {proc.returncode} before serving")
        try:
            url = f"http://127.0.0.1:{http_port}/v2/models/{name}/ready"
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc, f"127.0.0.1:{grpc_port}"
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"mlserver did not make {name} ready within 180 s")


def server_benchmarks(tools: Tools, models: dict[str, Path], work: Path) -> list[dict[str, Any]]:
    results = []
    for model_name, model in models.items():
        for server in GO_SERVERS + PEERS:
            go = None
            protocol = PEER_PROTOCOL.get(server, "ranker")
            if server == "python-baseline":
                proc, target = _python_peer("benchmarks.baseline_server", model)
            elif server == "python-packed":
                proc, target = _python_peer("benchmarks.packed_server", model)
            elif server == "mlserver":
                proc, target = _mlserver(tools, model, model_name, work)
            else:
                extra = ["--log-level=warn"]
                if server == "go-native-unsplit":
                    extra += ["--backend=native", "--split-min-rows=0"]
                else:
                    extra += [f"--backend={server.removeprefix('go-')}"]
                go = ServerProcess(
                    tools.server, model, ort_lib=tools.ort_lib, extra_args=extra
                ).start()
                target = go.target
            pid = go._proc.pid if go is not None else proc.pid  # type: ignore[union-attr]
            try:
                for candidates in CANDIDATES:
                    load = functools.partial(
                        _load,
                        tools,
                        target,
                        model,
                        candidates,
                        protocol=protocol,
                        model_name=model_name,
                    )
                    cpu_before = _cpu_seconds(pid)
                    peak = load(0)
                    # CPU per candidate at full load: on a shared machine the
                    # throughput moves with what else runs; this moves less.
                    peak["server_cpu_us_per_candidate"] = (
                        (_cpu_seconds(pid) - cpu_before)
                        * 1e6
                        / max(1, (peak["requests"] + 16) * candidates)  # +16: the warm-up
                    )
                    alone = load(0, concurrency=1)
                    half = load(peak["requests_per_second"] / 2)
                    results.append(
                        {
                            "model": model_name,
                            "server": server,
                            "protocol": protocol,
                            "candidates": candidates,
                            "max": peak,
                            "alone": alone,
                            "half_load": half,
                            **_rss_mb(pid),
                        }
                    )
                    print(
                        f"{model_name} {server} {candidates}: "
                        f"{peak['candidates_per_second']:,.0f} candidates/s; alone p50 "
                        f"{alone['p50_ms']} ms; at half load "
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
    for peer in PEERS:
        out[f"server_over_{peer}"] = {}
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
        for peer in PEERS:
            other = next(
                b
                for b in servers
                if (b["model"], b["candidates"], b["server"]) == (s["model"], s["candidates"], peer)
            )
            out[f"server_over_{peer}"][key] = (
                s["max"]["candidates_per_second"] / other["max"]["candidates_per_second"]
            )
            out.setdefault(f"cpu_{peer}_over_server", {})[key] = (
                other["max"]["server_cpu_us_per_candidate"]
                / s["max"]["server_cpu_us_per_candidate"]
            )
    return out


def markdown(report: dict[str, Any], *, with_machine: bool = True) -> str:
    """The tables; with_machine adds the title, commit, time and machine
    (data/bench/bench.md), which a published copy has in its header."""
    m = report["machine"]
    lines: list[str] = []
    if with_machine:
        lines += [
            "# ranker benchmarks",
            "",
            f"Commit `{report['commit']}`, {report['time']}. Machine: {m['cpu']}, "
            f"{m['cores']} cores, {m['memory_gb']} GB, {m['platform']}.",
            "",
            f"CPU flags (vector): {' '.join(m['vector_flags']) or 'none'}.",
            "",
        ]
    if report["kernel"]:
        lines += [
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
        *([""] if lines else []),
        f"## Server over gRPC on loopback (closed loop, {CLOSED_LOOP_CONCURRENCY} in flight, "
        f"{PHASE_SECONDS} s; latency in an open loop at half that rate)",
        "",
        "| model | server | candidates | requests/s | candidates/s | vs Python baseline "
        "| vs Python packed | vs MLServer | server CPU µs / candidate | CPU: Python packed / this "
        "| CPU: MLServer / this | p50 ms alone | p50 ms | p99 ms | p99/p50 | RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- | --- |",
    ]
    r = report["ratios"]
    for s in report["servers"]:
        key = f"{s['model']}/{s['server']}/candidates={s['candidates']}"
        h, peak = s["half_load"], s["max"]
        lines.append(
            f"| {s['model']} | {s['server']} | {s['candidates']} | "
            f"{peak['requests_per_second']:,.0f} | {peak['candidates_per_second']:,.0f} | "
            f"{r['server_over_python-baseline'][key]:.2f}x | "
            f"{r['server_over_python-packed'][key]:.2f}x | {r['server_over_mlserver'][key]:.2f}x | "
            f"{peak['server_cpu_us_per_candidate']:.2f} | "
            f"{r['cpu_python-packed_over_server'][key]:.2f}x | "
            f"{r['cpu_mlserver_over_server'][key]:.2f}x | "
            f"{s['alone']['p50_ms']:.2f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | "
            f"{h['p99_ms'] / max(h['p50_ms'], 1e-9):.2f} | {s['peak_rss_mb']:.0f} |"
        )
    if report.get("online"):
        lines += ["", *online_markdown(report["online"]).splitlines()]
    return "\n".join(lines) + "\n"


def online_markdown(online: dict[str, Any]) -> str:
    """The online-feature tables: Rank by ids embedded, in Redis and on a
    Kafka replica, and ingestion (`make bench-state` publishes these alone)."""
    lines = [
        "## Online features (in process: the Rank handler, no network)",
        "",
        "| candidates | features sent µs | by ids µs | by ids / sent | by ids, Redis µs "
        "| Redis / sent | by ids, Kafka µs | Kafka / by ids |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in sorted(online["rank_us"].items(), key=lambda kv: int(kv[0])):
        sent, ids, shared = r["features-sent"], r["by-ids"], r.get("by-ids-redis", float("nan"))
        kafka = r.get("by-ids-kafka", float("nan"))
        lines.append(
            f"| {n} | {sent:,.1f} | {ids:,.1f} | {ids / sent:.2f}x | {shared:,.1f} "
            f"| {shared / sent:.1f}x | {kafka:,.1f} | {kafka / ids:.2f}x |"
        )
    nan = float("nan")
    lines += [
        "",
        "Rank by ids with and without the semantic features (a model that names the three "
        "of them; profiles of 10 and 100 clicks of 512-dimension vectors, neighbours "
        "precomputed at upsert):",
        "",
        "| candidates | by ids µs | with semantic µs | semantic / plain "
        "| Redis µs | Redis with semantic µs | semantic / plain "
        "| Kafka with semantic µs | Kafka / embedded, semantic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in sorted(online["rank_us"].items(), key=lambda kv: int(kv[0])):
        ids, sem = r["by-ids"], r.get("by-ids-semantic", nan)
        shared, shared_sem = r.get("by-ids-redis", nan), r.get("by-ids-semantic-redis", nan)
        kafka_sem = r.get("by-ids-semantic-kafka", nan)
        lines.append(
            f"| {n} | {ids:,.1f} | {sem:,.1f} | {sem / ids:.2f}x | {shared:,.1f} "
            f"| {shared_sem:,.1f} | {shared_sem / shared:.2f}x "
            f"| {kafka_sem:,.1f} | {kafka_sem / sem:.2f}x |"
        )
    e = online["events_per_second"]
    lines += [
        "",
        f"Event ingestion, batches of 1,000 impressions and 100 clicks: "
        f"{e['memory']:,.0f} events/s in memory, {e['durable']:,.0f} events/s durable, "
        f"{e.get('redis', float('nan')):,.0f} events/s in Redis.",
    ]
    e500 = online.get("events_per_second_batch_500", {})
    if e500:
        lines += [
            "",
            f"Event ingestion, batches of 500 events (450 impressions, 50 clicks), each "
            f"acknowledged and applied before the reply: {e500.get('embedded', nan):,.0f} "
            f"events/s embedded in memory, {e500.get('kafka', nan):,.0f} events/s through one "
            f"Kafka replica with one caller, {e500.get('kafka-8-callers', nan):,.0f} events/s "
            "with 8 callers per core at once.",
        ]
    return "\n".join(lines) + "\n"


def run(
    tools: Tools, models: dict[str, Path], out_dir: Path, *, servers_only: bool = False
) -> dict[str, Any]:
    kernel = kernel_benchmarks(tools, models) if not servers_only else []
    servers = server_benchmarks(tools, models, out_dir)
    report = {
        "commit": _git(tools.repo, "rev-parse", "--short", "HEAD")
        + ("-dirty" if _git(tools.repo, "status", "--porcelain", "--untracked-files=no") else ""),
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "kernel": kernel,
        "servers": servers,
        "online": online_benchmarks(tools) if not servers_only else {},
    }
    report["ratios"] = ratios(kernel, servers)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "bench.md").write_text(markdown(report))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.serving", description=__doc__)
    parser.add_argument("--model", action="append", default=[], help="name=version-dir, repeatable")
    parser.add_argument("--repo", type=Path, default=PYTHON_DIR.parent, help="the repository")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--mlserver", type=Path, help="the mlserver command (its own environment)")
    parser.add_argument(
        "--servers-only", action="store_true", help="skip the kernel and online benchmarks"
    )
    parser.add_argument(
        "--online-only",
        action="store_true",
        help="only the online features: Rank by ids and ingestion, embedded, Redis and Kafka",
    )
    add_publish_option(parser)
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    if args.online_only:
        online = online_benchmarks(
            Tools(
                repo=repo,
                server=repo / "go/bin/ranker-server",
                load=repo / "go/bin/ranker-load",
                ort_lib=ort_library_path(),
                mlserver=Path("mlserver"),
            )
        )
        text = online_markdown(online)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "online.json").write_text(json.dumps(online, indent=1) + "\n")
        print(text)
        if args.publish:
            publish(args.publish, text)
        return 0
    tools = Tools(
        repo=repo,
        server=repo / "go/bin/ranker-server",
        load=repo / "go/bin/ranker-load",
        ort_lib=ort_library_path(),
        mlserver=args.mlserver.resolve(),
    )
    if not args.model or args.mlserver is None:
        parser.error("--model and --mlserver are needed but with --online-only")
    models = dict(item.split("=", 1) for item in args.model)
    report = run(
        tools,
        {k: Path(v).resolve() for k, v in models.items()},
        args.out,
        servers_only=args.servers_only,
    )
    print(markdown(report))
    print(f"written to {args.out}/bench.md and bench.json")
    if args.publish:
        publish(args.publish, markdown(report, with_machine=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
