"""MLflow as a newcomer expects it: one tracking store whatever the working
directory, the UI on that store, and every version's life (exported, refused,
canary, promoted, rolled back) in the Model Registry with aliases that follow
what the server serves."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from ranker.cli import main
from ranker.experiments.promote import promote
from ranker.gate import Gate, GateFailed
from ranker.pipeline import LibsvmSource, train_and_export
from ranker.tracking import (
    CANARY,
    EXPERIMENT,
    SERVING,
    STORE_FILE,
    ModelRegistry,
    default_store,
    default_tracking_uri,
)
from ranker.training.lambdarank import Rounds

QUICK = Rounds(max=120)
# Gates that pass or refuse whatever the fit: the registry, not the gate, is under test.
PASSES = Gate(min_trees=1, min_gain_over_popular=-1.0, max_loss_vs_serving=1.0)
REFUSES = Gate(min_trees=10**6)


def _libsvm(directory: Path) -> tuple[Path, Path, Path]:
    """Train, validation and test files of a tiny learning-to-rank problem:
    a version trains and exports in a second or two."""
    rng = np.random.default_rng(5)
    directory.mkdir(parents=True, exist_ok=True)
    paths = tuple(directory / f"{name}.txt" for name in ("train", "valid", "test"))
    for path, queries in zip(paths, (60, 20, 20), strict=True):
        lines = []
        for q in range(queries):
            x = rng.normal(size=(8, 3))
            relevance = np.digitize(x[:, 0] + rng.normal(0, 0.5, 8), [0.0, 1.0])
            for row, rel in zip(x, relevance, strict=True):
                lines.append(
                    f"{rel} qid:{q} " + " ".join(f"{j + 1}:{v:.5f}" for j, v in enumerate(row))
                )
        path.write_text("\n".join(lines) + "\n")
    return paths  # type: ignore[return-value]


def test_the_default_store_is_one_per_user_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    expected = f"sqlite:///{tmp_path / 'data-home' / 'ranker' / 'mlflow' / STORE_FILE}"
    for cwd in (tmp_path, tmp_path / "elsewhere"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        assert default_tracking_uri() == expected
        assert main(["tracking-uri"]) == 0
        assert capsys.readouterr().out.strip() == expected
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store() == tmp_path / "home" / ".local" / "share" / "ranker" / "mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert main(["tracking-uri"]) == 0
    assert capsys.readouterr().out.strip() == "http://mlflow.internal:5000"


@pytest.mark.slow
def test_training_from_two_working_directories_records_to_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    train, valid, test = _libsvm(tmp_path / "ltr")
    for i, cwd in enumerate((tmp_path / "a", tmp_path / "b" / "deeper")):
        cwd.mkdir(parents=True)
        monkeypatch.chdir(cwd)
        argv = ["train", "--data", str(train), "--valid", str(valid), "--test", str(test)]
        argv += ["--models", str(tmp_path / "models"), "--version", f"v{i + 1}"]
        assert main([*argv, "--no-gate", "--quiet"]) == 0
        assert not (cwd / "mlruns").exists()
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri())
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["model_version"] for r in runs) == ["v1", "v2"]
    # The run's report went beside the store, not into either working directory.
    assert (default_store() / "artifacts").is_dir()


def _version_tags(registry: ModelRegistry, name: str) -> dict[str, dict[str, str]]:
    """Registry versions of `name` by their version directory's name and status."""
    found = mlflow.MlflowClient(tracking_uri=registry.tracking_uri).search_model_versions(
        f"name='{name}'"
    )
    return {f"{v.tags['version']}/{v.tags['status']}": dict(v.tags) for v in found}


@pytest.mark.slow
def test_the_registry_follows_export_refusal_canary_promotion_and_rollback(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / STORE_FILE}"
    root = tmp_path / "models"
    source = LibsvmSource(*_libsvm(tmp_path / "ltr"))
    registry = ModelRegistry(uri)

    def train(name: str, version: str, gate: Gate, canary: bool = False) -> Path:
        trained = train_and_export(
            source,
            root,
            name,
            version=version,
            rounds=QUICK,
            gate=gate,
            tracking_uri=uri,
            canary=canary,
        )
        return trained.export.directory

    v1 = train("news", "v1", PASSES)
    assert registry.tags("news", registry.aliases("news")[SERVING])["version"] == "v1"
    with pytest.raises(GateFailed):
        train("news", "v2", REFUSES)
    # Refused: registered with its report, nothing serves from it.
    refused = _version_tags(registry, "news")["v2/refused"]
    assert refused["release_gate"] == "failed"
    assert refused["version_dir"] == str((root / ".rejected" / "news" / "v2").resolve())
    assert refused["model_root"] == str(root.resolve())
    assert registry.tags("news", registry.aliases("news")[SERVING])["version"] == "v1"

    # A canary beside the serving version: serving stays, canary points at it.
    canary = train("news", "v3", PASSES, canary=True)
    aliases = registry.aliases("news")
    assert registry.tags("news", aliases[SERVING])["version"] == "v1"
    assert registry.tags("news", aliases[CANARY])["version_dir"] == str(canary.resolve())
    # It loses: rolled back out of the model root; serving stays on v1.
    aside = root / ".rolled-back" / "news" / "v3"
    aside.parent.mkdir(parents=True)
    shutil.move(canary, aside)
    registry.rolled_back("news", canary, aside, "no decision within the run")
    aliases = registry.aliases("news")
    assert CANARY not in aliases
    assert registry.tags("news", aliases[SERVING])["version"] == "v1"
    rolled = _version_tags(registry, "news")["v3/rolled back"]
    assert rolled["rolled_back"] == "no decision within the run"
    assert rolled["version_dir"] == str(aside.resolve())

    # A version trained under another name, promoted under "news": it serves.
    other = train("news-canary", "v4", PASSES)
    target = promote(other, root / "news", tracking_uri=uri)
    serving = registry.tags("news", registry.aliases("news")[SERVING])
    assert serving["version_dir"] == str(target.resolve())
    assert serving["status"] == "promoted"
    assert serving["promoted_from"] == str(other.resolve())
    assert serving["release_gate"] == "passed"
    exported = _version_tags(registry, "news")["v1/exported"]
    assert exported["version_dir"] == str(v1.resolve())
    assert exported["release_gate"] == "passed"
    assert sorted(_version_tags(registry, "news")) == [
        "v1/exported",
        "v2/refused",
        "v3/rolled back",
        "v4/promoted",
    ]
    # Every registry version but the promoted copy links to its training run.
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = {v.tags["version"]: v.run_id for v in client.search_model_versions("name='news'")}
    assert all(runs[v] for v in ("v1", "v2", "v3"))
    assert runs["v4"] is None
    assert client.get_run(str(runs["v1"])).data.tags["model_version"] == "v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_mlflow_ui_starts_on_the_tracking_store_and_answers(tmp_path: Path) -> None:
    """What `make mlflow-ui` runs, on a free port: the full mlflow (the dev
    extra) serves its UI and API over the store training records to."""
    uri = f"sqlite:///{tmp_path / STORE_FILE}"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT)
    port = _free_port()
    log = (tmp_path / "ui.log").open("wb")
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers too are stopped below
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # About 75 s to start on two busy cores.
        deadline = time.monotonic() + 300
        while True:
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as reply:
                    assert reply.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, (tmp_path / "ui.log").read_text()[-3000:]
                time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/", timeout=10) as reply:
            assert reply.status == 200
            assert b"<html" in reply.read().lower()
        query = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
        with urllib.request.urlopen(query, timeout=10) as reply:
            assert reply.status == 200
            assert EXPERIMENT.encode() in reply.read()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
        log.close()
