"""Distributed training: LightGBM's data-parallel mode over a real Dask
cluster of worker processes on loopback, against the single-machine model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from benchmarks.dask_parity import NDCG_TOLERANCE
from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.export import artifact
from ranker.export.golden import golden_matrix, read_golden
from ranker.export.onnx import lgbm_scores, onnx_scores, onnx_session
from ranker.pipeline import ClickLogSource, TrainedVersion, _training_curve, train_and_export
from ranker.training.distributed import DaskCluster, DistributedError, dask_client, group_blocks
from ranker_tests.conftest import SMALL_WORLD_ROUNDS

WORKERS = 2


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 39, 40, 50])
def test_blocks_hold_whole_queries_with_about_equal_rows(
    parts: int, rng: np.random.Generator
) -> None:
    groups = rng.integers(1, 30, size=40).astype(np.int64)
    blocks = group_blocks(groups, parts)
    # One block per worker (each worker trains), fewer only when there are
    # fewer queries than workers.
    assert len(blocks) == min(parts, groups.size)
    # Contiguous, covering every group once, none empty.
    assert blocks[0][0] == 0
    assert blocks[-1][1] == groups.size
    assert all(a < b for a, b in blocks)
    assert all(blocks[i][1] == blocks[i + 1][0] for i in range(len(blocks) - 1))
    if parts <= 7:
        # Each block ends at the first group boundary at or past its share
        # of rows, so it holds less than its share plus one query.
        rows = [int(groups[a:b].sum()) for a, b in blocks]
        assert max(rows) < groups.sum() / parts + groups.max()


def test_no_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="no query groups"):
        group_blocks(np.array([], np.int64), 2)


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if absent
    with (
        pytest.raises(DistributedError, match=r"pip install 'ranker\[distributed\]'"),
        dask_client(DaskCluster(workers=1)),
    ):
        pass


def test_training_on_one_machine_imports_no_dask() -> None:
    """`make demo` and every run without the flags work without the extra."""
    code = (
        "import sys, ranker.cli, ranker.pipeline, ranker.training.distributed\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]\n"
        "sys.exit(f'imported {loaded}' if loaded else 0)"
    )
    # (pandas is left out: LightGBM itself imports it wherever it is installed.)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_scheduler_is_named_within_the_timeout() -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with (
        pytest.raises(DistributedError, match=rf"cannot reach the Dask scheduler at {address}"),
        dask_client(DaskCluster(scheduler=address, connect_timeout=2.0)),
    ):
        pass
    # The timeout, plus Dask's last connection attempt and its own start.
    assert time.monotonic() - started < 8.0


@pytest.mark.slow
def test_train_names_an_unreachable_scheduler_before_building_features(
    small_log: ClickLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_log.write(tmp_path / "data")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--models",
            str(tmp_path / "models"),
            "--dask-scheduler",
            address,
            "--no-tracking",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert address in err
    assert "cannot reach the Dask scheduler" in err
    assert "Traceback" not in err
    # The default connection timeout (10 s) and the CLI's start; no features.
    assert time.monotonic() - started < 25.0
    assert not (tmp_path / "models").exists()


@pytest.fixture(scope="module")
def dask_trained(small_log: ClickLog, tmp_path_factory: pytest.TempPathFactory) -> TrainedVersion:
    """The pipeline of the `trained` fixture (same log, parameters and
    rounds), trained over a local cluster of worker processes on TCP loopback."""
    root = tmp_path_factory.mktemp("distributed")
    small_log.write(root / "data")
    return train_and_export(
        ClickLogSource(root / "data"),
        root,
        "small",
        version="v1",
        rounds=SMALL_WORLD_ROUNDS,
        cluster=DaskCluster(workers=WORKERS),
    )


@pytest.mark.slow
def test_distributed_model_ranks_like_the_single_machine_model(
    dask_trained: TrainedVersion, trained: TrainedVersion
) -> None:
    # Compared with the single-machine naive model: position debiasing is
    # not available through lightgbm.dask, so a distributed run ships the
    # naive model. Not bit-identical: bins are found per worker, bagging
    # draws from each worker's own rows, histograms add up in another order
    # (ranker.training.distributed); NDCG_TOLERANCE is justified by the
    # measurements over seeds beside it (benchmarks/dask_parity.py).
    assert trained.evaluation is not None
    assert dask_trained.evaluation is not None
    single = trained.evaluation.value("model_naive", "ndcg@10")
    over_workers = dask_trained.evaluation.value("model", "ndcg@10")
    assert abs(over_workers - single) <= NDCG_TOLERANCE, (over_workers, single)
    # Still a ranker worth shipping: above the popularity baseline.
    assert over_workers > dask_trained.evaluation.value("most_popular", "ndcg@10")
    # Early stopping chose a round among those allowed, as on one machine.
    result = dask_trained.result
    assert SMALL_WORLD_ROUNDS.min <= result.best_iteration <= SMALL_WORLD_ROUNDS.max
    assert result.booster.current_iteration() == result.best_iteration
    # The training curve ends at the kept round (the workers return only its
    # trees); the validation curve goes on to where early stopping stopped.
    assert len(result.curves.train) == result.best_iteration
    assert len(result.curves.valid) >= result.best_iteration


@pytest.mark.slow
def test_the_training_curve_counts_like_lightgbm(
    trained: TrainedVersion, small_log: ClickLog, tmp_path: Path
) -> None:
    """A distributed run measures its training curve from the finished
    model; on the single-machine model it must equal LightGBM's own."""
    small_log.write(tmp_path / "data")
    rows = ClickLogSource(tmp_path / "data").load().train
    naive = trained.result.naive_booster
    ours = _training_curve(naive, rows)
    lightgbm = trained.result.curves.train[: naive.current_iteration()]
    assert len(ours) == len(lightgbm) == trained.result.best_iteration
    # Same scores summed in another order (per tree here, per round there).
    np.testing.assert_allclose(ours, lightgbm, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_distributed_training_is_recorded(dask_trained: TrainedVersion) -> None:
    directory = dask_trained.export.directory
    meta = json.loads((directory / artifact.METADATA_JSON).read_text())
    recorded = meta["training"]["distributed"]
    assert recorded["workers"] == WORKERS
    assert recorded["local_cluster"] is True
    assert recorded["position_debiasing"] is False
    assert "position_debiasing" not in meta["training"]
    assert meta["training"]["release_gate"]["passed"] is True
    report = (directory / "report" / "evaluation.md").read_text()
    assert f"distributed over {WORKERS} Dask workers" in report.splitlines()[0]
    assert "| LightGBM (shipped) |" in report
    assert "position-debiased" not in report


@pytest.mark.slow
def test_distributed_export_scores_like_its_booster(dask_trained: TrainedVersion) -> None:
    directory = dask_trained.export.directory
    booster = lgb.Booster(model_file=directory / artifact.MODEL_TXT)
    golden = read_golden(directory)
    rows = golden_matrix(golden)
    diff = np.abs(
        onnx_scores(onnx_session(directory / artifact.MODEL_ONNX), rows)
        - lgbm_scores(booster, rows)
    )
    assert rows.shape[0] > 0
    assert diff.max() <= artifact.LGBM_ONNX_ABS_TOL
    assert dask_trained.export.max_abs_diff_lgbm_onnx <= artifact.LGBM_ONNX_ABS_TOL


@pytest.mark.slow
def test_the_local_cluster_is_shut_down(dask_trained: TrainedVersion) -> None:
    assert dask_trained.distribution is not None
    address = dask_trained.distribution.scheduler
    with socket.socket() as s:
        s.settimeout(2.0)
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        assert s.connect_ex((host, int(port))) != 0
