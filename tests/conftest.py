"""Cross-language fixtures: the real Go server binary, a real exported model,
the onnxruntime library from the pinned wheel. `make test-e2e` provides the
binary and the model through RANKER_SERVER and RANKER_TEST_MODEL; run alone,
these fixtures build and train them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker.data.world import WorldConfig, generate
from ranker.pipeline import ClickLogSource, train_and_export
from ranker.serving.process import ServerProcess, ort_library_path
from tests.support import REPO, stateful_server


@pytest.fixture(scope="session")
def server_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if env := os.environ.get("RANKER_SERVER"):
        return Path(env)
    out = tmp_path_factory.mktemp("bin") / "ranker-server"
    subprocess.run(
        ["go", "build", "-o", str(out), "./cmd/ranker-server"], cwd=REPO / "go", check=True
    )
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if env := os.environ.get("RANKER_TEST_DATA"):
        return Path(env)
    directory = tmp_path_factory.mktemp("data")
    generate(WorldConfig().scaled(0.3)).write(directory)
    return directory


@pytest.fixture(scope="session")
def model_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if env := os.environ.get("RANKER_TEST_MODEL"):
        return Path(env)
    root = tmp_path_factory.mktemp("models")
    return train_and_export(ClickLogSource(data_dir), root, "test", version="v1").export.directory


@pytest.fixture(scope="session")
def ort_lib() -> Path:
    return ort_library_path()


BACKENDS = ("native", "onnxruntime")


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, server_binary: Path, model_dir: Path, ort_lib: Path
) -> Iterator[ServerProcess]:
    """The server on each scoring backend: native Go (the default) and
    onnxruntime (the reference)."""
    with ServerProcess(
        server_binary, model_dir, ort_lib=ort_lib, extra_args=[f"--backend={request.param}"]
    ) as running:
        yield running


@pytest.fixture
def stateful(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> Iterator[ServerProcess]:
    """A started server with a fresh durable feature state of its own."""
    with stateful_server(server_binary, model_dir, ort_lib, tmp_path / "state") as running:
        yield running
