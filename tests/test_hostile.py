"""Hostile clients and careless operators, replayed against the real binary.

Each test is a scenario that once hurt the server: memory held by layouts
and streams, calls whose status was never counted, overload queued without
bound, a shutdown that refused new connections. They fail if it comes back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ranker.features.spec import FEATURE_NAMES
from ranker.serving.client import RankerClient, request_from_matrix
from ranker.serving.process import ServerProcess
from ranker_client import RankerError
from ranker_client.v1 import ranking_service_pb2 as pb
from ranker_client.v1 import ranking_service_pb2_grpc as pb_grpc

from .support import golden_rows, scrape_metrics

pytestmark = pytest.mark.e2e

# What a pod may never exceed for these stateless requests: the server's
# memory limit before it held the whole shared state (deploy/k8s/base/
# statefulset.yaml now gives it 2 GiB, most of it for the feature state).
POD_LIMIT_BYTES = 512 << 20


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def outcome_count(server: ServerProcess, method: str, code: str) -> float:
    text = scrape_metrics(server)
    prefix = f'ranker_rpc_outcomes_total{{code="{code}",method="{method}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_distinct_layouts_and_held_streams_keep_memory_bounded(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    """Layouts of long names fill a byte-bounded cache, and streams held open
    from many connections stop at --max-inflight: RSS stays far under the pod
    limit (once, 40 requests took it to 1 GB)."""
    with ServerProcess(
        server_binary, model_dir, ort_lib=ort_lib, extra_args=["--max-inflight=300"]
    ) as proc:
        channel = grpc.insecure_channel(
            proc.target, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        stub = pb_grpc.RankingServiceStub(channel)  # type: ignore[no-untyped-call]
        start = rss_bytes(proc.pid)
        # 300 distinct layouts of 200 names of 250 bytes each: 15 MB of names,
        # twice the layout cache's byte budget.
        for i in range(300):
            names = [f"{i:04d}-{j:03d}-".ljust(250, "x") for j in range(200)]
            request = pb.RankRequest(
                user_id="u",
                feature_names=names,
                candidates=[pb.Candidate(id="a", features=[0.0] * len(names))],
            )
            reply = stub.Rank(request, timeout=10)
            assert len(reply.ignored_features) == len(names)
        after_layouts = rss_bytes(proc.pid)

        # Watch calls stay open on the server: hold 900 across 9 connections
        # (a local subchannel pool: one connection per channel), each under
        # the per-connection stream cap, 3x the server-wide bound.
        channels = [
            grpc.insecure_channel(proc.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(9)
        ]
        calls = [
            health_pb2_grpc.HealthStub(c).Watch(health_pb2.HealthCheckRequest(), timeout=60)
            for c in channels
            for _ in range(100)
        ]
        opened, refusals = 0, []
        for call in calls:
            try:
                next(call)  # the first status: the stream is open on the server
                opened += 1
            except grpc.RpcError as err:
                refusals.append((err.code(), str(err.details())))
        refused = len(refusals)
        for code, details in refusals:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
            assert "--max-inflight" in details
        held = rss_bytes(proc.pid)
        assert opened <= 300, opened
        assert refused >= 600, refused
        # Growth well within the limit; the measured figures name the step.
        assert after_layouts - start < 64 << 20, (start, after_layouts)
        assert held < POD_LIMIT_BYTES // 2, held
        for call in calls:
            call.cancel()
        # The server still answers, and every refusal was counted.
        with RankerClient(proc.target) as client:
            rows = golden_rows(model_dir, 3)
            assert (
                len(
                    client.rank(request_from_matrix(FEATURE_NAMES, rows, request_id="h")).candidates
                )
                == 3
            )
        assert outcome_count(proc, "Watch", "ResourceExhausted") == refused
        for c in [channel, *channels]:
            c.close()


def test_malformed_messages_and_made_up_methods_are_counted(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    """Bytes that do not decode, and methods that do not exist, reach no
    handler; their statuses are counted all the same (error-rate alerts read
    ranker_rpc_outcomes_total)."""
    rng = np.random.default_rng(7)
    with ServerProcess(server_binary, model_dir, ort_lib=ort_lib) as proc:
        channel = grpc.insecure_channel(proc.target)
        raw_rank = channel.unary_unary("/ranker.v1.RankingService/Rank")
        codes: dict[grpc.StatusCode, int] = {}
        for _ in range(200):
            junk = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
            code = grpc.StatusCode.OK
            try:
                raw_rank(junk, timeout=5)
            except grpc.RpcError as failure:
                code = failure.code()
            codes[code] = codes.get(code, 0) + 1
        made_up = channel.unary_unary("/ranker.v1.RankingService/Nope")
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as err:
                made_up(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        channel.close()
        assert grpc.StatusCode.INTERNAL not in codes or codes[grpc.StatusCode.INTERNAL] < 200
        for code, n in codes.items():
            name = "".join(w.capitalize() for w in code.name.split("_"))
            name = {"Ok": "OK", "Cancelled": "Canceled"}.get(name, name)
            assert outcome_count(proc, "Rank", name) == n, (code, n)
        assert outcome_count(proc, "unknown", "Unimplemented") == 5


def test_overload_is_shed_fast_and_nothing_fails_internally(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    """With one scoring slot and no queue, concurrent large requests are
    answered at once with RESOURCE_EXHAUSTED and a retry delay, never
    queued without bound nor failed as INTERNAL; shed requests are counted."""
    rows = np.repeat(golden_rows(model_dir, 1), 2000, axis=0)
    request = request_from_matrix(FEATURE_NAMES, rows, request_id="load")
    with ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=["--max-scoring=1", "--max-queue=0", "--max-candidates=2000"],
    ) as proc:
        results: list[grpc.StatusCode] = []
        lock = threading.Lock()

        def hammer() -> None:
            with RankerClient(proc.target) as client:
                for _ in range(20):
                    try:
                        client.rank(request)
                        code = grpc.StatusCode.OK
                    except RankerError as err:
                        code = err.code
                    with lock:
                        results.append(code)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(results) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, results
        shed = results.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert results.count(grpc.StatusCode.OK) > 0, results
        assert shed > 0, results
        text = scrape_metrics(proc)
        assert f'ranker_shed_total{{reason="queue_full"}} {shed}' in text


def test_sigterm_answers_new_connections_not_serving_and_exits_in_time(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    """After SIGTERM a new connection is accepted and told NOT_SERVING for the
    drain delay (balancers move away), requests are still answered, and the
    process exits within --shutdown-timeout."""
    proc = ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=["--drain-delay=1500ms", "--shutdown-timeout=3s"],
    ).start()
    try:
        sent = time.monotonic()
        proc.terminate()
        time.sleep(0.3)
        with RankerClient(proc.target) as client:  # a new connection
            assert client.health() == "NOT_SERVING"
            rows = golden_rows(model_dir, 2)
            assert (
                len(
                    client.rank(request_from_matrix(FEATURE_NAMES, rows, request_id="h")).candidates
                )
                == 2
            )
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 3.5  # the timeout, plus process exit
    finally:
        proc.stop()
        proc.close()
