"""Standard LTR files: our reader and training against LightGBM reading them itself."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from ranker.export import artifact
from ranker.pipeline import LibsvmSource, train_and_export
from ranker.training.lambdarank import DEFAULT_PARAMS, EVAL_AT, Rounds
from ranker.training.libsvm import read_ltr

# Same LightGBM parameters on both sides; NDCG must agree to this.
NDCG_AGREEMENT = 0.002


def _write_split(path: Path, rng: np.random.Generator, queries: int, with_qid: bool) -> None:
    """MSLR-style rows: graded relevance 0-4 from a hidden linear score, sparse
    features (absent means 0), queries of varying size."""
    weights = rng.normal(size=20)
    lines, sizes = [], []
    for q in range(queries):
        size = int(rng.integers(5, 30))
        sizes.append(size)
        x = rng.normal(size=(size, 20)) * (rng.uniform(size=(size, 20)) < 0.7)
        score = x @ weights + rng.normal(0, 1.0, size)
        label = np.digitize(score, np.quantile(score, [0.5, 0.75, 0.9, 0.97]))
        for row, rel in zip(x, label, strict=True):
            feats = " ".join(f"{j + 1}:{v:.6g}" for j, v in enumerate(row) if v != 0)
            qid = f" qid:{q}" if with_qid else ""
            lines.append(f"{rel}{qid} {feats}")
    path.write_text("\n".join(lines) + "\n")
    if not with_qid:
        path.with_name(path.name + ".query").write_text("\n".join(map(str, sizes)) + "\n")


def _files(tmp_path: Path, with_qid: bool) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(99)
    paths = tuple(tmp_path / f"{name}.txt" for name in ("train", "vali", "test"))
    for path, n in zip(paths, (300, 80, 80), strict=True):
        _write_split(path, np.random.default_rng(rng.integers(1 << 30)), n, with_qid)
    return paths  # type: ignore[return-value]


def _lightgbm_native(
    train: Path, valid: Path, test: Path, tmp_path: Path
) -> tuple[int, dict[str, float]]:
    """LightGBM trained on the files itself (it reads `.query` sidecars, not qid)."""
    native = []
    for path in (train, valid, test):
        data = read_ltr(path, 20)
        target = tmp_path / "native" / path.name
        target.parent.mkdir(exist_ok=True)
        text = [ln.split(" ", 2) for ln in path.read_text().splitlines()]
        target.write_text(
            "\n".join(
                f"{p[0]} {p[2]}" if len(p) > 2 and p[1].startswith("qid:") else " ".join(p)
                for p in text
            )
            + "\n"
        )
        target.with_name(target.name + ".query").write_text("\n".join(map(str, data.groups)) + "\n")
        native.append(target)
    params = {**DEFAULT_PARAMS, "eval_at": [max(EVAL_AT)]}
    dtrain = lgb.Dataset(str(native[0]), params={"verbose": -1})
    dvalid = lgb.Dataset(str(native[1]), reference=dtrain)
    curve: dict[str, dict[str, list[float]]] = {}
    rounds = Rounds()
    lgb.train(
        params,
        dtrain,
        num_boost_round=rounds.max,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[lgb.record_evaluation(curve)],
    )
    # The documented rule, applied by hand: the best round among rounds
    # `min` and later, stopping `early_stopping` rounds after it.
    valid_curve = curve["valid"][f"ndcg@{max(EVAL_AT)}"]
    best, best_score = 0, -np.inf
    for round_, score in enumerate(valid_curve, start=1):
        if round_ >= rounds.min and score > best_score:
            best, best_score = round_, score
        if best and round_ - best >= (rounds.early_stopping or rounds.max):
            break
    record: dict[str, dict[str, list[float]]] = {}
    dtest = lgb.Dataset(str(native[2]), reference=dtrain)
    lgb.train(
        {**params, "eval_at": list(EVAL_AT)},
        lgb.Dataset(str(native[0]), params={"verbose": -1}),
        num_boost_round=best,
        valid_sets=[dtest],
        valid_names=["test"],
        callbacks=[lgb.record_evaluation(record)],
    )
    return best, {f"ndcg@{k}": record["test"][f"ndcg@{k}"][-1] for k in EVAL_AT}


@pytest.mark.slow
@pytest.mark.parametrize("with_qid", [True, False], ids=["qid", "query-sidecar"])
def test_ndcg_matches_lightgbm_trained_on_the_files(tmp_path: Path, with_qid: bool) -> None:
    train, valid, test = _files(tmp_path, with_qid)
    ours = train_and_export(
        LibsvmSource(train, valid, test), tmp_path / "models", "ltr", version="v1"
    )
    best, native = _lightgbm_native(train, valid, test, tmp_path)
    assert ours.result.best_iteration == best
    for k in EVAL_AT:
        assert abs(ours.test_metrics[f"ndcg@{k}"] - native[f"ndcg@{k}"]) <= NDCG_AGREEMENT, k
    meta = json.loads((ours.export.directory / artifact.METADATA_JSON).read_text())
    assert meta["feature_names"] == [f"f{i}" for i in range(1, 21)]


@pytest.mark.slow
def test_tune_saves_the_best_parameters(tmp_path: Path) -> None:
    train, valid, test = _files(tmp_path, with_qid=True)
    result = train_and_export(
        LibsvmSource(train, valid, test), tmp_path / "models", "ltr", version="v1", tune_trials=3
    )
    meta = json.loads((result.export.directory / artifact.METADATA_JSON).read_text())
    training = meta["training"]
    assert training["tuned_trials"] == 3
    assert {"learning_rate", "num_leaves", "min_data_in_leaf"} <= set(training["params"])
    assert (
        training["params"]["num_leaves"] != DEFAULT_PARAMS["num_leaves"]
        or training["params"]["learning_rate"] != DEFAULT_PARAMS["learning_rate"]
    )


def test_bad_files_get_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("1 1:0.5\n0 2:0.1\n")
    with pytest.raises(ValueError, match="no qid"):
        read_ltr(path, 2)
    path.with_name("x.txt.query").write_text("3\n")
    with pytest.raises(ValueError, match="sum to 3"):
        read_ltr(path, 2)
