"""Operating the real server: hot model swaps under load, experiments,
exposure logs read back by the Python side, Prometheus metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import lightgbm as lgb
import polars as pl
import pytest

from ranker.experiments.exposure import read_exposures, variant_counts
from ranker.export import artifact
from ranker.export.onnx import onnx_scores, onnx_session
from ranker.features.spec import FEATURE_NAMES
from ranker.serving.client import RankerClient, request_from_matrix
from ranker.serving.process import ServerProcess
from ranker.tracking import SERVING, ModelRegistry, default_tracking_uri
from ranker_client import InvalidArgumentError, RankerError
from ranker_client.v1 import ranking_service_pb2 as pb
from ranker_client.v1 import ranking_service_pb2_grpc as pb_grpc
from tests.support import (
    EXPERIMENT,
    add_version,
    experiment_server,
    export_smaller,
    golden_rows,
    metric_value,
    scrape_metrics,
)

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary


def test_versions_swap_under_load_without_a_failed_request(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    total = lgb.Booster(model_file=model_dir / artifact.MODEL_TXT).num_trees()
    trees = {"v1": total, "v2": max(1, total - 2), "v4": max(1, total - 4), "v5": max(1, total - 6)}
    export_smaller(model_dir, root, "news", "v1", trees["v1"])
    rows = golden_rows(model_dir, 20)
    ids = [f"c{i}" for i in range(len(rows))]
    seen: list[tuple[str, dict[str, float]]] = []
    errors: list[str] = []
    stop = threading.Event()
    with ServerProcess(
        server_binary,
        None,
        ort_lib=ort_lib,
        extra_args=[f"--model-root={root}", "--reload-interval=100ms"],
    ) as server:

        def load() -> None:
            with RankerClient(server.target) as client:
                i = 0
                while not stop.is_set():
                    request = request_from_matrix(FEATURE_NAMES, rows, request_id=str(i), ids=ids)
                    try:
                        reply = client.rank(request)
                        seen.append(
                            (reply.model_version, {c.id: c.score for c in reply.candidates})
                        )
                    except RankerError as err:
                        errors.append(str(err))
                    i += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        for version in ("v2", "v3", "v4", "v5"):
            time.sleep(0.5)
            if version == "v3":
                add_version(model_dir, root, "news", "v3", broken=True)
            else:
                export_smaller(model_dir, root, "news", version, trees[version])
        time.sleep(0.8)
        stop.set()
        for t in threads:
            t.join()
        with RankerClient(server.target) as client:
            info = client.model_info()
        text = scrape_metrics(server)
    assert not errors, errors[:3]
    assert len(seen) > 100
    versions = [v for v, _ in seen]
    assert set(versions) <= set(trees), set(versions)
    assert {"v1", "v5"} <= set(versions)
    assert versions[-1] == "v5"
    # Every response was scored by the version it names.
    expected = {
        v: dict(
            zip(
                ids,
                onnx_scores(onnx_session(root / "news" / v / artifact.MODEL_ONNX), rows),
                strict=True,
            )
        )
        for v in trees
    }
    assert len({tuple(e.values()) for e in expected.values()}) == len(trees)  # versions differ
    for version, scores in seen:
        for cid, score in scores.items():
            assert abs(score - expected[version][cid]) <= 1e-5, (version, cid)
    assert (info.model_version, info.refused_version) == ("v5", "v3")
    assert "model.onnx" in info.refusal_reason
    assert 'ranker_model_loads_total{model="news",result="refused"} 1' in text
    assert 'ranker_model_loads_total{model="news",result="loaded"} 4' in text


def test_experiment_assigns_variants_logs_exposures_and_scores_shadows(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    root, exposures = tmp_path / "models", tmp_path / "exposures"
    add_version(model_dir, root, "news", "v1")
    export_smaller(model_dir, root, "news-b", "v7", 2)
    config = tmp_path / "experiment.yaml"
    config.write_text(EXPERIMENT)
    rows = golden_rows(model_dir, 12)
    variants: dict[str, str] = {}
    server = experiment_server(
        server_binary, root, config, ort_lib, f"--exposure-dir={exposures}"
    ).start()
    try:
        with RankerClient(server.target) as client:
            for i in range(200):
                request = request_from_matrix(FEATURE_NAMES, rows, request_id=f"r{i}")
                request.user_id = f"user-{i % 100}"
                reply = client.rank(request)
                assert reply.experiment == "homepage"
                expected_version = {"control": "v1", "treatment": "v7"}[reply.variant]
                assert reply.model_version == expected_version
                # The same user always lands in the same variant.
                assert variants.setdefault(request.user_id, reply.variant) == reply.variant
            forced = request_from_matrix(FEATURE_NAMES, rows, request_id="qa")
            forced.experiment_variant = "treatment"
            assert client.rank(forced).variant == "treatment"
            channel = grpc.insecure_channel(server.target)
            stub = pb_grpc.RankingServiceStub(channel)  # type: ignore[no-untyped-call]
            plain = request_from_matrix(FEATURE_NAMES, rows, request_id="qa2")
            by_header = stub.Rank(plain, metadata=[("x-ranker-variant", "control")], timeout=5)
            assert by_header.variant == "control"
            bad = request_from_matrix(FEATURE_NAMES, rows, request_id="qa3")
            bad.experiment_variant = "nope"
            with pytest.raises(InvalidArgumentError) as err:
                client.rank(bad)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.fields == ["experiment_variant"]
            channel.close()
        time.sleep(0.5)
        text = scrape_metrics(server)
    finally:
        assert server.stop() == 0  # SIGTERM flushes the exposure log
        server.close()
    assert 25 <= sum(v == "control" for v in variants.values()) <= 75
    counts = variant_counts(read_exposures(exposures))
    by_variant = dict(zip(counts["variant"], counts["requests"], strict=True))
    assert sum(by_variant.values()) == 202  # 200 assigned, 2 forced
    assert set(by_variant) == {"control", "treatment"}
    shown = read_exposures(exposures).collect()
    assert shown.filter(pl.col("request_id") == "r0")["position"].to_list() == list(range(1, 13))
    # The shadow (a two-tree model) scored the control requests on the side.
    count = float(metric_value(text, "ranker_shadow_rank_correlation_count"))
    total = float(metric_value(text, "ranker_shadow_rank_correlation_sum"))
    assert count > 0
    assert -1.0 <= total / count < 1.0
    assert (
        'ranker_requests_total{code="OK",method="Rank",model="news-b",variant="treatment"}' in text
    )


def test_metrics_expose_requests_latency_candidates_and_model_age(server: ServerProcess) -> None:
    with RankerClient(server.target) as client:
        for i in range(3):
            client.rank(
                pb.RankRequest(
                    request_id=str(i),
                    feature_names=["hour_of_day"],
                    candidates=[pb.Candidate(id="a", features=[8.0])],
                )
            )
    text = scrape_metrics(server)
    for series in (
        "ranker_requests_total",
        "ranker_request_duration_seconds_bucket",
        "ranker_candidates_per_request_count",
        "ranker_scores_bucket",
        "ranker_missing_features_total",
        "ranker_model_age_seconds",
        "ranker_model_loads_total",
        "ranker_exposure_dropped_total",
    ):
        assert series in text, series


def test_a_variant_can_hold_an_older_version_beside_the_newest(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    add_version(model_dir, root, "news", "v1")
    export_smaller(model_dir, root, "news", "v2", 2)
    config = tmp_path / "experiment.yaml"
    config.write_text(
        "experiment:\n  name: hold\n  salt: s\n  variants:\n"
        "    - {name: newest, model: news, weight: 50}\n"
        "    - {name: held, model: news, version: v1, weight: 50}\n"
    )
    rows = golden_rows(model_dir, 6)
    seen = set()
    with (
        experiment_server(server_binary, root, config, ort_lib) as server,
        RankerClient(server.target) as client,
    ):
        for i in range(60):
            request = request_from_matrix(FEATURE_NAMES, rows, request_id=str(i))
            request.user_id = f"reader-{i}"
            reply = client.rank(request)
            seen.add((reply.variant, reply.model_version))
    assert seen == {("newest", "v2"), ("held", "v1")}


def test_promote_publishes_a_canary_under_the_main_name(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    from ranker.cli import main

    root = tmp_path / "models"
    add_version(model_dir, root, "news", "v1")
    add_version(model_dir, root, "news-canary", "v2")
    assert (
        main(
            [
                "promote",
                "--version-dir",
                str(root / "news-canary" / "v2"),
                "--to",
                str(root / "news"),
            ]
        )
        == 0
    )
    with (
        ServerProcess(
            server_binary, None, ort_lib=ort_lib, extra_args=[f"--model-root={root}"]
        ) as s,
        RankerClient(s.target) as client,
    ):
        assert client.model_info().model_version == "v2"  # news serves the promoted version
    # The registry (the test session's default store) says the same.
    registry = ModelRegistry(default_tracking_uri())
    serving = registry.tags("news", registry.aliases("news")[SERVING])
    assert (serving["version"], serving["status"]) == ("v2", "promoted")
