"""The Python client as a backend service gets it: the ranker-client wheel,
installed into a fresh virtual environment with nothing but its own
dependencies, ranking against the real server binary, its refusals raised as
typed errors with the server's field violations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from ranker.features.spec import CONTEXT_FEATURES
from ranker.serving.process import ServerProcess
from tests.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENT = REPO / "python" / "client"

# Run by the fresh environment's interpreter: the calls a backend service
# makes, their outcomes printed as JSON for the test to check.
PROGRAM = textwrap.dedent(
    """
    import importlib.util, json, sys

    from ranker_client import (
        InvalidArgumentError, NotFoundError, RankerClient, StrictModeError, Strictness,
    )

    target, model = sys.argv[1], sys.argv[2]
    out = {}
    out["modules"] = sorted(
        m for m in ("numpy", "polars", "ranker", "lightgbm", "onnxruntime")
        if importlib.util.find_spec(m) is not None
    )
    with RankerClient(target) as ranker:
        out["health"] = ranker.health("ranker.v1.RankingService")
        info = ranker.model_info(model)
        out["model"] = [info.model_name, info.model_version]
        names = list(info.feature_names)
        rows = {f"a{i}": [float(i + j) for j in range(len(names))] for i in range(3)}
        reply = ranker.rank_features("reader-1", names, rows, top_k=2)
        out["ranked"] = [c.id for c in reply.candidates]
        out["ranked_version"] = reply.model_version

        # A bad request: one candidate's row is short.
        rows_bad = dict(rows, a1=rows["a1"][:-1])
        try:
            ranker.rank_features("reader-1", names, rows_bad)
        except InvalidArgumentError as err:
            out["bad"] = {"type": type(err).__name__, "code": err.code.name,
                          "fields": err.fields, "message": err.message}

        # Strict: a typo in one name, the rest sent.
        typo = [n if n != "article_age_hours" else "article_age_hour" for n in names]
        try:
            ranker.rank_features("reader-1", typo, rows, strictness=Strictness.STRICT)
        except StrictModeError as err:
            out["typo"] = {"code": err.code.name, "unknown_fields": err.unknown_fields,
                           "missing": err.missing_features, "reason": err.reason}

        # Strict: by ids alone, for articles the catalog does not know.
        try:
            ranker.rank("reader-1", ["x1", "x2"], strictness=Strictness.STRICT)
        except StrictModeError as err:
            out["strict"] = {"code": err.code.name, "missing": err.missing_features,
                             "candidates": err.unknown_candidates, "message": err.message}
        lenient = ranker.rank("reader-1", ["x1", "x2"], strictness=Strictness.LENIENT)
        out["lenient_unknown"] = list(lenient.unknown_candidates)

        # A pinned version that is not loaded.
        try:
            ranker.rank_features("reader-1", names, rows, model_version="v999")
        except NotFoundError as err:
            r = err.resource_info
            out["pinned"] = {"code": err.code.name, "fields": err.fields,
                             "resource": [r.resource_type, r.resource_name] if r else None,
                             "message": err.message}
        out["pinned_ok"] = ranker.rank_features(
            "reader-1", names, rows, model_version=info.model_version).model_version
        try:
            ranker.model_info("no-such-model")
        except NotFoundError as err:
            out["unknown_model"] = err.resource_info.resource_name if err.resource_info else None
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment holding the ranker-client wheel and its dependencies."""
    work = tmp_path_factory.mktemp("client")
    # Built from a copy: setuptools leaves build/ and egg-info beside the sources.
    project = work / "project"
    project.mkdir()
    (project / "pyproject.toml").write_bytes((CLIENT / "pyproject.toml").read_bytes())
    shutil.copytree(CLIENT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    dist = work / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(dist),
            str(project),
        ],
        check=True,
    )
    (wheel,) = dist.glob("ranker_client-*.whl")
    env = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    # The wheel's own requirements, at the versions this environment pins
    # (within the wheel's ranges), so the download is the one already cached.
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            str(wheel),
            f"grpcio=={version('grpcio')}",
            f"protobuf=={version('protobuf')}",
        ],
        check=True,
    )
    return python


@pytest.fixture(scope="module")
def running(server_binary: Path, model_dir: Path, ort_lib: Path) -> Iterator[ServerProcess]:
    with ServerProcess(server_binary, model_dir, ort_lib=ort_lib) as server:
        yield server


def test_the_client_wheel_alone_ranks_and_raises_typed_errors(
    client_env: Path, running: ServerProcess, model_dir: Path, tmp_path: Path
) -> None:
    installed = subprocess.run(
        [str(client_env), "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    )
    packages = {p["name"].lower().replace("_", "-") for p in json.loads(installed.stdout)}
    # grpcio brings typing-extensions; nothing else comes along.
    want = {"ranker-client", "grpcio", "protobuf", "typing-extensions"}
    assert packages - {"pip", "setuptools"} == want, packages

    program = tmp_path / "backend.py"
    program.write_text(PROGRAM)
    meta = json.loads((model_dir / "metadata.json").read_text())
    model = meta["model_name"]
    # Run outside the repository, so nothing but the environment is importable.
    result = subprocess.run(
        [str(client_env), str(program), running.target, model],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    out = json.loads(result.stdout)

    assert out["modules"] == []  # none of the training stack
    assert out["health"] == "SERVING"
    assert out["model"] == [model, meta["model_version"]]
    assert len(out["ranked"]) == 2
    assert out["ranked_version"] == meta["model_version"]

    names = meta["feature_names"]
    assert out["bad"]["type"] == "InvalidArgumentError"
    assert out["bad"]["code"] == "INVALID_ARGUMENT"
    assert out["bad"]["fields"] == ["candidates[1].features"]
    assert out["bad"]["message"].startswith(
        f"candidates[1].features: {len(names) - 1} values, feature_names declares {len(names)}"
    )

    age = names.index("article_age_hours")
    assert out["typo"] == {
        "code": "INVALID_ARGUMENT",
        # The server computes article_age_hours itself, so only the name is wrong.
        "unknown_fields": [f"feature_names[{age}]"],
        "missing": [],
        "reason": "STRICT_FEATURES",
    }

    # Every feature but the reader's and the moment's describes the article.
    article = [n for n in names if n not in CONTEXT_FEATURES]
    assert out["strict"]["code"] == "INVALID_ARGUMENT"
    assert out["strict"]["missing"] == article
    assert out["strict"]["candidates"] == ["candidates[0].id", "candidates[1].id"]
    assert "2 candidates are not in the catalog" in out["strict"]["message"]
    assert out["lenient_unknown"] == ["x1", "x2"]

    assert out["pinned"]["code"] == "NOT_FOUND"
    assert out["pinned"]["fields"] == ["model_version"]
    assert out["pinned"]["resource"] == ["ranker.v1.ModelVersion", f"{model}/v999"]
    assert f"loaded: {meta['model_version']}" in out["pinned"]["message"]
    assert out["pinned_ok"] == meta["model_version"]
    assert out["unknown_model"] == "no-such-model"
