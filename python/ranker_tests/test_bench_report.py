"""The benchmark report: parsing Go benchmark output, ratios, the Markdown table."""

from __future__ import annotations

from benchmarks.serving import BENCH_LINE, markdown, parse_online, ratios


def _server(name: str, candidates: int, rate: float, cpu_us: float) -> dict[str, object]:
    run = {
        "requests_per_second": rate / candidates,
        "candidates_per_second": rate,
        "p50_ms": 2.0,
        "p99_ms": 5.0,
        "server_cpu_us_per_candidate": cpu_us,
    }
    return {
        "model": "demo",
        "server": name,
        "candidates": candidates,
        "max": run,
        "half_load": run,
        "alone": {"p50_ms": 1.5},
        "rss_mb": 30.0,
        "peak_rss_mb": 31.0,
    }


MACHINE = {
    "cpu": "cpu",
    "cores": 2,
    "memory_gb": 1.0,
    "platform": "p",
    "vector_flags": ["avx2", "avx512f"],
}


def test_go_benchmark_lines_parse() -> None:
    line = (
        "BenchmarkScore/model=stress/backend=native/threads=1/batch=1000-2   \t     183\t"
        "  12702614 ns/op\t     78724 rows/s"
    )
    m = BENCH_LINE.match(line)
    assert m is not None
    assert (m[1], m[2], m[3], m[4], float(m[5])) == ("stress", "native", "1", "1000", 78724.0)
    assert BENCH_LINE.match("BenchmarkRank/candidates=100-2  1  2 ns/op") is None


def test_ratios_and_table_compare_each_figure_with_its_baseline() -> None:
    kernel = [
        {
            "model": "stress",
            "backend": "native",
            "threads": 1,
            "batch": 1000,
            "rows_per_second": 80.0,
        },
        {
            "model": "stress",
            "backend": "onnxruntime",
            "threads": 1,
            "batch": 1000,
            "rows_per_second": 40.0,
        },
    ]
    servers = [
        _server("go-native", 1000, 600.0, 1.0),
        _server("python-baseline", 1000, 100.0, 8.0),
        _server("python-packed", 1000, 200.0, 4.0),
        _server("mlserver", 1000, 50.0, 16.0),
    ]
    r = ratios(kernel, servers)
    assert r["kernel_native_over_onnxruntime"] == {"stress/threads=1/batch=1000": 2.0}
    assert r["server_over_python"]["demo/go-native/candidates=1000"] == 6.0
    assert r["server_over_python-packed"]["demo/go-native/candidates=1000"] == 3.0
    assert r["server_over_mlserver"]["demo/go-native/candidates=1000"] == 12.0
    assert r["cpu_mlserver_over_server"]["demo/go-native/candidates=1000"] == 16.0
    report = {
        "commit": "abc",
        "time": "t",
        "kernel": kernel,
        "servers": servers,
        "ratios": r,
        "machine": MACHINE,
    }
    text = markdown(report)
    assert "| stress | 1 | 1000 | 80 | 40 | 2.00x |" in text
    assert (
        "| demo | go-native | 1000 | 1 | 600 | 6.00x | 3.00x | 12.00x | 1.00 | 4.00x | 16.00x "
        "| 1.50 | 2.00 | 5.00 | 2.50 | 31 |" in text
    )
    assert "CPU flags (vector): avx2 avx512f." in text


def test_online_feature_lines_parse_into_latency_and_ingestion() -> None:
    out = "\n".join(
        [
            "BenchmarkRankByIDs/candidates=1000/features-sent-2  3550  722811 ns/op"
            "  1383488 candidates/s  109765 B/op  21 allocs/op",
            "BenchmarkRankByIDs/candidates=1000/by-ids-2  2256  1066234 ns/op"
            "  937880 candidates/s  125067 B/op  19 allocs/op",
            "BenchmarkRankByIDs/candidates=1000/by-ids-redis-2  46  25682543 ns/op"
            "  38937 candidates/s  4962330 B/op  108210 allocs/op",
            "BenchmarkRankByIDs/candidates=1000/by-ids-semantic-2  1500  1599000 ns/op"
            "  625390 candidates/s  125067 B/op  19 allocs/op",
            "BenchmarkRankByIDs/candidates=1000/by-ids-semantic-redis-2  40  30820000 ns/op"
            "  32446 candidates/s  4962330 B/op  108210 allocs/op",
            "BenchmarkRecordEvents/backend=memory-2  787  3628046 ns/op  303193 events/s",
            "BenchmarkRecordEvents/backend=durable-2  573  4726940 ns/op  232709 events/s",
            "BenchmarkRecordEvents/backend=redis-2  38  27731384 ns/op  39666 events/s",
            "BenchmarkRankByIDs/candidates=1000/by-ids-kafka-2  2200  1100000 ns/op"
            "  909090 candidates/s  125067 B/op  19 allocs/op",
            "BenchmarkRankByIDs/candidates=1000/by-ids-semantic-kafka-2  1480  1650000 ns/op"
            "  606060 candidates/s  125067 B/op  19 allocs/op",
            "BenchmarkIngest/batch=500/backend=embedded-2  784  7191574 ns/op  69526 events/s",
            "BenchmarkIngest/batch=500/backend=kafka-2  361  9788954 ns/op  51078 events/s",
            "BenchmarkIngest/batch=500/backend=kafka-8-callers-2  484  8124571 ns/op"
            "  61542 events/s",
        ]
    )
    online = parse_online(out)
    assert online["rank_us"]["1000"] == {
        "features-sent": 722.811,
        "by-ids": 1066.234,
        "by-ids-redis": 25682.543,
        "by-ids-semantic": 1599.0,
        "by-ids-semantic-redis": 30820.0,
        "by-ids-kafka": 1100.0,
        "by-ids-semantic-kafka": 1650.0,
    }
    assert online["events_per_second"] == {
        "memory": 303193.0,
        "durable": 232709.0,
        "redis": 39666.0,
    }
    assert online["events_per_second_batch_500"] == {
        "embedded": 69526.0,
        "kafka": 51078.0,
        "kafka-8-callers": 61542.0,
    }
    text = markdown(
        {
            "commit": "abc",
            "time": "t",
            "kernel": [],
            "servers": [],
            "ratios": {"kernel_native_over_onnxruntime": {}, "server_over_python": {}},
            "machine": MACHINE,
            "online": online,
        }
    )
    assert "| 1000 | 722.8 | 1,066.2 | 1.48x | 25,682.5 | 35.5x |" in text
    assert "39,666 events/s in Redis" in text
    # The Kafka state beside embedded: by ids, and with the semantic features.
    assert "| 1000 | 722.8 | 1,066.2 | 1.48x | 25,682.5 | 35.5x | 1,100.0 | 1.03x |" in text
    assert "| 30,820.0 | 1.20x | 1,650.0 | 1.03x |" in text
    assert "69,526 events/s embedded in memory, 51,078 events/s through one Kafka replica" in text
    assert "61,542 events/s with 8 callers per core at once" in text
    # With and without the semantic features, side by side.
    assert "| 1000 | 1,066.2 | 1,599.0 | 1.50x | 25,682.5 | 30,820.0 | 1.20x |" in text
