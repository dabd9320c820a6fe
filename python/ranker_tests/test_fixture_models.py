"""The model versions the Go tests commit are what the generator writes today:
regenerated here, their model files and golden rows must equal the committed
bytes, so an export change cannot leave the Go tests on stale files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranker.export import artifact
from ranker_tests.fixture_models import write_go_testdata

GO_TESTDATA = Path(__file__).resolve().parents[2] / "go/internal/model/modeltest/testdata"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("go-testdata")
    write_go_testdata(directory)
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("name", ["news", "edge"])
@pytest.mark.parametrize("file", [artifact.MODEL_TXT, artifact.MODEL_ONNX, artifact.GOLDEN_JSONL])
def test_committed_go_fixtures_are_current(regenerated: Path, name: str, file: str) -> None:
    committed = GO_TESTDATA / name / "v1" / file
    fresh = regenerated / name / "v1" / file
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"{committed} is not what the generator writes: run `make go-testdata` and commit"
    )
