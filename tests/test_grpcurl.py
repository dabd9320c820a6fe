"""The README's grpcurl commands, run for real against the server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker.serving.process import ServerProcess
from tests.support import REPO

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary


@pytest.fixture(scope="module")
def grpcurl() -> str:
    found = os.environ.get("RANKER_GRPCURL") or shutil.which("grpcurl")
    if not found:
        pytest.skip("grpcurl is not installed; `make test-e2e` installs it into go/bin")
    return found


@pytest.fixture(scope="module")
def server(server_binary: Path, model_dir: Path, ort_lib: Path) -> Iterator[ServerProcess]:
    """The server as `make serve` runs it: with reflection, which grpcurl
    uses to learn the API (the server's default leaves it off)."""
    with ServerProcess(
        server_binary, model_dir, ort_lib=ort_lib, extra_args=["--reflection"]
    ) as running:
        yield running


def _readme_rank_request() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(
        r"grpcurl -plaintext -d '(\{\n.*?\n\})' localhost:50051 "
        r"ranker\.v1\.RankingService/Rank",
        readme,
        re.DOTALL,
    )
    assert match, "README lost its grpcurl Rank example"
    return match.group(1)


def _run(grpcurl: str, *args: str) -> str:
    return subprocess.run(
        [grpcurl, "-plaintext", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def test_grpcurl_list_shows_the_service(grpcurl: str, server: ServerProcess) -> None:
    services = _run(grpcurl, server.target, "list").split()
    assert "ranker.v1.RankingService" in services
    assert "grpc.health.v1.Health" in services


def test_grpcurl_health_check(grpcurl: str, server: ServerProcess) -> None:
    reply = _run(
        grpcurl,
        "-d",
        '{"service": "ranker.v1.RankingService"}',
        server.target,
        "grpc.health.v1.Health/Check",
    )
    assert json.loads(reply) == {"status": "SERVING"}


def test_readme_rank_example_works(grpcurl: str, server: ServerProcess, model_dir: Path) -> None:
    request = _readme_rank_request()
    reply = json.loads(_run(grpcurl, "-d", request, server.target, "ranker.v1.RankingService/Rank"))
    sent = json.loads(request)
    assert reply["requestId"] == sent["request_id"]
    assert len(reply["candidates"]) == sent["top_k"]
    assert {c["id"] for c in reply["candidates"]} <= {c["id"] for c in sent["candidates"]}
    scores = [c["score"] for c in reply["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert reply["modelVersion"] == model_dir.name
    assert "missingFeatures" not in reply  # the example sends every model feature
