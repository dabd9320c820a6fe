"""The running server as a backend and as Kubernetes see it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ranker.export import artifact
from ranker.features.spec import CONTEXT_FEATURES, FEATURE_NAMES
from ranker.serving.client import RankerClient, request_from_matrix
from ranker.serving.process import ServerProcess
from ranker_client import RankerError
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import golden_rows

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary


def test_health_reports_serving(server: ServerProcess) -> None:
    with RankerClient(server.target) as client:
        assert client.health("") == "SERVING"
        assert client.health("ranker.v1.RankingService") == "SERVING"


def _list_services(target: str) -> set[str]:
    """What `grpcurl -plaintext HOST:PORT list` asks."""
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        return {s.name for reply in replies for s in reply.list_services_response.service}


def test_reflection_is_off_by_default(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _list_services(server.target)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_services_when_asked(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    with ServerProcess(
        server_binary, model_dir, ort_lib=ort_lib, extra_args=["--reflection"]
    ) as running:
        names = _list_services(running.target)
    assert {"ranker.v1.RankingService", "grpc.health.v1.Health"} <= names


def test_model_info_matches_metadata(server: ServerProcess, model_dir: Path) -> None:
    meta = json.loads((model_dir / artifact.METADATA_JSON).read_text())
    with RankerClient(server.target) as client:
        info = client.model_info()
    assert (info.model_name, info.model_version) == (meta["model_name"], meta["model_version"])
    assert list(info.feature_names) == meta["feature_names"] == list(FEATURE_NAMES)
    assert info.feature_hash == meta["feature_hash"]
    if server.backend == "onnxruntime":
        assert info.backend == f"onnxruntime {meta['library_versions']['onnxruntime']}"
    else:
        # The scoring path and vector level chosen at load, which vary by model and CPU.
        assert re.fullmatch(
            rf"native Go tree ensemble \({meta['num_trees']} trees, "
            r"(quickscorer (avx512|avx2|scalar)|lockstep scalar|walk scalar)\)",
            info.backend,
        ), info.backend


def test_context_features_are_broadcast(server: ServerProcess, model_dir: Path) -> None:
    rows = golden_rows(model_dir, 8, case="sample")
    n_ctx = len(CONTEXT_FEATURES)
    with RankerClient(server.target) as client:
        full = client.rank(request_from_matrix(FEATURE_NAMES, rows, request_id="full"))
        split = request_from_matrix(FEATURE_NAMES[n_ctx:], rows[:, n_ctx:], request_id="split")
        split.context_features.update(
            {name: float(rows[0, j]) for j, name in enumerate(CONTEXT_FEATURES)}
        )
        broadcast = client.rank(split)
    assert [(c.id, c.score) for c in broadcast.candidates] == [
        (c.id, c.score) for c in full.candidates
    ]


def test_a_feature_not_sent_is_computed_and_unknown_articles_are_reported(
    server: ServerProcess, model_dir: Path
) -> None:
    """The server computes what a request does not send; for candidates the
    catalog does not know, article features are missing and the ids listed."""
    rows = golden_rows(model_dir, 8, case="sample")
    request = request_from_matrix(FEATURE_NAMES[:-1], rows[:, :-1], request_id="m")
    request.return_features = True
    with RankerClient(server.target) as client:
        response = client.rank(request)
    assert list(response.missing_features) == []
    assert sorted(response.unknown_candidates) == sorted(c.id for c in request.candidates)
    assert list(response.feature_names) == list(FEATURE_NAMES)
    by_id = {c.id: c.features for c in response.candidates}
    for candidate, sent in zip(request.candidates, rows, strict=True):
        served = np.array(by_id[candidate.id], np.float32)
        np.testing.assert_array_equal(served[:-1], sent[:-1])  # sent values win
        assert np.isnan(served[-1])  # title similarity of an unknown article


@pytest.mark.parametrize(
    ("edit", "code", "field"),
    [
        (
            lambda r: r.candidates[1].__setattr__("id", r.candidates[0].id),
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidates[1].id",
        ),
        (
            lambda r: r.candidates[2].features.__delitem__(0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidates[2].features",
        ),
        (
            lambda r: r.candidates.extend(
                pb.Candidate(id=f"x{i}", features=r.candidates[0].features) for i in range(2000)
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "candidates",
        ),
        (lambda r: r.ClearField("candidates"), grpc.StatusCode.INVALID_ARGUMENT, "candidates"),
    ],
)
def test_bad_requests_get_a_status_naming_the_field(
    server: ServerProcess, model_dir: Path, edit: object, code: grpc.StatusCode, field: str
) -> None:
    request = request_from_matrix(
        FEATURE_NAMES, golden_rows(model_dir, 8, case="sample"), request_id="bad"
    )
    edit(request)  # type: ignore[operator]
    with RankerClient(server.target) as client, pytest.raises(RankerError) as err:
        client.rank(request)
    assert err.value.code == code
    assert err.value.message.startswith(field)
    # The field is a structured detail too.
    assert [v.field for v in err.value.field_violations] == [field.removesuffix(":")]
