"""Starting and stopping the real binary: refusals at load, graceful shutdown."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ranker.export import artifact
from ranker.features.spec import FEATURE_NAMES
from ranker.serving.client import RankerClient, request_from_matrix
from ranker.serving.process import ServerProcess

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "demo" / "v1"
    shutil.copytree(model_dir, target)
    return target


def _corrupt_onnx(d: Path) -> None:
    data = bytearray((d / artifact.MODEL_ONNX).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    (d / artifact.MODEL_ONNX).write_bytes(bytes(data))


def _tamper_golden(d: Path) -> None:
    lines = (d / artifact.GOLDEN_JSONL).read_text().splitlines()
    record = json.loads(lines[5])
    record["onnx_score"] += 0.25
    lines[5] = json.dumps(record)
    (d / artifact.GOLDEN_JSONL).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("name", "damage", "file_named"),
    [
        ("corrupted model.onnx", _corrupt_onnx, artifact.MODEL_ONNX),
        (
            "missing metadata.json",
            lambda d: (d / artifact.METADATA_JSON).unlink(),
            artifact.METADATA_JSON,
        ),
        ("tampered golden.jsonl", _tamper_golden, artifact.GOLDEN_JSONL),
    ],
)
def test_server_refuses_a_broken_model(
    name: str,
    damage: Callable[[Path], None],
    file_named: str,
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    tmp_path: Path,
) -> None:
    broken = _copy(model_dir, tmp_path)
    damage(broken)
    code, log = ServerProcess(server_binary, broken, ort_lib=ort_lib).run_to_exit()
    assert code == 1, log
    last = json.loads(log.strip().splitlines()[-1])
    assert last["level"] == "ERROR"
    assert "model refused" in last["error"]
    assert str(broken / file_named) in last["error"], last["error"]


def test_missing_library_is_a_clear_error(
    server_binary: Path, model_dir: Path, tmp_path: Path
) -> None:
    code, log = ServerProcess(
        server_binary, model_dir, ort_lib=tmp_path / "nope.so", extra_args=["--backend=onnxruntime"]
    ).run_to_exit()
    assert code == 1
    assert "onnxruntime library" in log
    assert "nope.so" in log


def test_sigterm_drains_and_exits_cleanly(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    proc = ServerProcess(server_binary, model_dir, ort_lib=ort_lib).start()
    with RankerClient(proc.target) as client:
        rows = np.zeros((1, len(FEATURE_NAMES)), np.float32)
        assert (
            len(client.rank(request_from_matrix(FEATURE_NAMES, rows, request_id="x")).candidates)
            == 1
        )
    assert proc.stop() == 0  # stop() sends SIGTERM, as Kubernetes does
    log = proc.log
    proc.close()
    messages = [json.loads(line)["msg"] for line in log.splitlines()]
    assert messages[-2:] == ["shutting down", "drained"]


def test_demo_command_ranks_a_held_out_impression(
    server_binary: Path, model_dir: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last step of `make demo`: start, rank one impression, stop."""
    from ranker.cli import main

    code = main(
        [
            "demo",
            "--server",
            str(server_binary),
            "--model",
            str(model_dir),
            "--data",
            str(data_dir),
            "--top-k",
            "12",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"model test version {model_dir.name}" in out
    assert "by id alone" in out  # the server computed every feature from its state
    ranked = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked) == 12
    assert "<- clicked" in out  # the demo impression is one with a click
    scores = [float(line.split()[2]) for line in ranked]
    assert scores == sorted(scores, reverse=True)
    assert out.rstrip().endswith("server stopped")
