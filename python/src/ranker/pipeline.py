"""Data in, model version out: the one path `ranker train` runs, for a click
log (the news world or a publisher's own) and for LibSVM learning-to-rank files.

Stage 6: it only composes the stages before it (data, features, training,
evaluation, export).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl
from tqdm import tqdm

from ranker.data.schema import ARTICLES_FILE, IMPRESSIONS_FILE, WORLD_FILE, validate_click_log
from ranker.evaluation.metrics import ndcg_at_k, ndcg_summary
from ranker.evaluation.report import Ablation, Evaluation, evaluate, write_report
from ranker.export.artifact import file_sha256
from ranker.export.fingerprint import Fingerprint, Reuse, fingerprint, reusable
from ranker.export.golden import GOLDEN_SAMPLE_QUERIES
from ranker.export.version import ExportResult, export_model
from ranker.features.build import feature_table
from ranker.features.spec import model_features
from ranker.gate import DEFAULT_GATE, Gate, GateFailed, ServedEvidence, run_gate, serving_version
from ranker.tracking import ModelRegistry, RunRecord, record_run
from ranker.training.counterfactual import (
    PositionBiasResult,
    choose,
    examination_weights,
    fit_ips_weighted,
    is_served_log,
    position_bias,
    why_not_served,
)
from ranker.training.dataset import RankData, TimeSplit, time_split
from ranker.training.distributed import DaskCluster, Distribution
from ranker.training.lambdarank import (
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    EVAL_AT,
    Curves,
    Rounds,
    TrainResult,
    train,
    tune,
)
from ranker.training.libsvm import libsvm_feature_names, max_feature_index, read_ltr

REPORT_DIR = "report"


@dataclass(frozen=True)
class TrainingData:
    """What a source gives the training path: rows of three time-ordered
    splits, the feature names, and a description for metadata.json."""

    feature_names: list[str]
    train: RankData
    valid: RankData
    test: RankData
    # The id of each test query (impression id for a click log, ordinal for files).
    test_query_ids: npt.NDArray[np.int64]
    summary: dict[str, Any]
    # The click log's test split with every column, for the full evaluation
    # (baselines need article age and popularity, the oracle true utility).
    test_split: TimeSplit | None = None
    # A log the server wrote with propensities: its splits and examination
    # curve, for counterfactual training and the off-policy gate.
    served: ServedLog | None = None


@dataclass(frozen=True)
class ServedLog:
    """What a served log adds: the train and validation splits with every
    column, and the examination curve of its explored pages."""

    train: TimeSplit
    valid: TimeSplit
    bias: PositionBiasResult


class Source(Protocol):
    def load(self) -> TrainingData: ...

    def files(self) -> list[Path]: ...

    # What, besides its files, decides the rows it gives (for the fingerprint).
    def settings(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ClickLogSource:
    """A click-log directory (articles.parquet, impressions.parquet); with
    `embeddings` (article_id, embedding) the semantic features too."""

    data_dir: Path
    embeddings: pl.DataFrame | None = None
    embedding_model: str | None = None
    # What builds the feature table (the polars pipeline unless `ranker
    # train --engine` names another; every engine gives the same table).
    build: Callable[[Path, pl.DataFrame | None], pl.DataFrame] = feature_table

    def files(self) -> list[Path]:
        return [self.data_dir / IMPRESSIONS_FILE, self.data_dir / ARTICLES_FILE]

    def settings(self) -> dict[str, Any]:
        # The embeddings derive from the titles (hashed with articles.parquet)
        # and the embedding model. The feature engine is left out: every
        # engine gives the same table (their parity test holds them to it).
        return {"semantic": self.embeddings is not None, "embedding_model": self.embedding_model}

    def load(self) -> TrainingData:
        validate_click_log(self.data_dir)
        table = self.build(self.data_dir, self.embeddings)
        names = model_features(semantic=self.embeddings is not None)
        splits = time_split(table, names)
        train_split, valid_split, test_split = splits
        served = None
        if is_served_log(table):
            served = ServedLog(train_split, valid_split, position_bias(table))
        partly_served = why_not_served(table)
        test_ids = (
            test_split.table["impression_id"]
            .unique(maintain_order=True)
            .to_numpy()
            .astype(np.int64)
        )
        return TrainingData(
            feature_names=list(names),
            train=train_split.data,
            valid=valid_split.data,
            test=test_split.data,
            test_query_ids=test_ids,
            test_split=test_split,
            served=served,
            summary={
                "source": "click log",
                "data_dir": str(self.data_dir),
                "rows": table.height,
                "queries": int(table["impression_id"].n_unique()),
                "click_rate": float(table.select(pl.col("clicked").mean()).item()),
                "time_range": [str(table["time"].min()), str(table["time"].max())],
                **self._embedding_summary(),
                **({"not_a_served_log": partly_served} if partly_served else {}),
                "splits": {
                    s.name: {
                        "rows": s.table.height,
                        "queries": int(s.table["impression_id"].n_unique()),
                    }
                    for s in splits
                },
            },
        )

    def _embedding_summary(self) -> dict[str, Any]:
        if self.embeddings is None:
            return {}
        dtype = self.embeddings.schema["embedding"]
        return {
            "embeddings": {
                "model": self.embedding_model,
                "dimensions": dtype.size if isinstance(dtype, pl.Array) else None,
                "articles": self.embeddings.height,
            }
        }


@dataclass(frozen=True)
class LibsvmSource:
    """LibSVM/SVMlight files, one per split (`ranker.training.libsvm`)."""

    train: Path
    valid: Path
    test: Path

    def files(self) -> list[Path]:
        return [self.train, self.valid, self.test]

    def settings(self) -> dict[str, Any]:
        return {}

    def load(self) -> TrainingData:
        paths = (self.train, self.valid, self.test)
        n = max(max_feature_index(p) for p in paths)
        train, valid, test = (read_ltr(p, n) for p in paths)
        return TrainingData(
            feature_names=libsvm_feature_names(n),
            train=train,
            valid=valid,
            test=test,
            test_query_ids=np.arange(test.groups.size, dtype=np.int64),
            summary={
                "source": "LibSVM learning-to-rank files",
                "files": {
                    "train": str(self.train),
                    "valid": str(self.valid),
                    "test": str(self.test),
                },
                "rows": {
                    "train": int(train.labels.size),
                    "valid": int(valid.labels.size),
                    "test": int(test.labels.size),
                },
            },
        )


@dataclass(frozen=True)
class TrainedVersion:
    result: TrainResult
    # The test-split metrics recorded in metadata.json: the full evaluation's
    # headline for a click log; for files, NDCG@k as LightGBM and as this
    # project count it.
    test_metrics: dict[str, float]
    # The full evaluation with baselines; a click log's test split only.
    evaluation: Evaluation | None
    export: ExportResult
    # How the model was trained over a Dask cluster; None on one machine.
    distribution: Distribution | None = None


def train_and_export(
    source: Source,
    models_root: Path,
    model_name: str,
    *,
    version: str | None = None,
    tune_trials: int = 0,
    params: dict[str, Any] | None = None,
    rounds: Rounds = DEFAULT_ROUNDS,
    gate: Gate | None = DEFAULT_GATE,
    quiet: bool = True,
    tracking_uri: str | None = None,
    ablate: tuple[str, ...] = (),
    cluster: DaskCluster | None = None,
    canary: bool = False,
) -> TrainedVersion:
    """Tune (optionally), train, evaluate on the test split, pass the release
    gate (None skips it), export a version. A failed gate raises GateFailed
    and leaves the report under <models_root>/.rejected/<name>/<version>.
    With tracking_uri, the run is recorded in MLflow, passed or refused, and
    the version in its Model Registry (`canary`: it goes out beside the
    serving version, so the registry's `serving` alias stays where it is).
    With `ablate`, a second model is trained the same way without those
    features, and the evaluation says what they add. With `cluster`, the
    models train with LightGBM's distributed mode over its Dask workers
    (`ranker.training.distributed`)."""
    if cluster is not None and tune_trials > 0:
        raise ValueError("tuning trains on this machine: tune without a Dask cluster")
    say = _Stages(quiet)
    recipe = training_fingerprint(
        source,
        tune_trials=tune_trials,
        params=params,
        rounds=rounds,
        gate=gate,
        ablate=ablate,
        cluster=cluster,
    )
    # The cluster first: an unreachable scheduler fails before the features
    # are built; it is let go once the models are trained.
    with ExitStack() as cluster_scope:
        fit = _trainer(cluster, cluster_scope, say, rounds)
        with say.stage("features"):
            data = source.load()
        if "not_a_served_log" in data.summary:  # said even when quiet: a user expects it
            print(f"warning: {data.summary['not_a_served_log']}", file=sys.stderr, flush=True)
        if data.served is not None and cluster is not None:
            raise ValueError(
                "a served log trains on this machine (counterfactual training is not "
                "distributed): train without a Dask cluster"
            )
        say.note(
            f"{data.train.labels.size:,} training, {data.valid.labels.size:,} validation and "
            f"{data.test.labels.size:,} test rows"
        )
        names = data.feature_names
        chosen = {**DEFAULT_PARAMS, **(params or {})}
        if tune_trials > 0:
            with say.stage(f"tuning ({tune_trials} Optuna trials)"):
                chosen = tune(
                    data.train,
                    data.valid,
                    names,
                    chosen,
                    tune_trials,
                    rounds=rounds,
                    show_progress=not quiet,
                )
        with (
            say.stage("training"),
            tqdm(
                total=rounds.max,
                desc="boosting rounds",
                unit="round",
                # The rounds of a distributed run happen in the workers.
                disable=True if quiet or cluster is not None else None,
                leave=False,
            ) as bar,
        ):

            def progress(round_: int, score: float) -> None:
                bar.update(1)
                bar.set_postfix_str(f"valid NDCG@10 {score:.4f}", refresh=False)

            # A served log's order follows the features: LightGBM's own
            # position debiasing cannot separate the two there
            # (ranker.training.counterfactual), so it is not trained.
            rows = data.train if data.served is None else replace(data.train, positions=None)
            result, distribution = fit(rows, data.valid, names, chosen, progress)
        say.note(f"best round {result.best_iteration} of {len(result.valid_curve)} trained")
        counterfactual: dict[str, Any] | None = None
        if data.served is not None and data.served.bias.curve is not None:
            with say.stage("counterfactual training (inverse propensity weights)"):
                curve = data.served.bias.curve
                weighted = fit_ips_weighted(
                    data.train,
                    examination_weights(data.served.train.table, curve),
                    result.best_iteration,
                    names,
                    result.params,
                )
                shipped, counterfactual = choose(
                    result.naive_booster, weighted, data.served.valid, curve
                )
                result = replace(result, booster=shipped)
            say.note(f"shipped the {counterfactual['shipped']} model (higher off-policy estimate)")
        if distribution is not None:
            say.note(distribution.describe())
        without = None
        if ablate and data.test_split is not None:
            with say.stage(f"training without {', '.join(ablate)}"):
                kept = [n for n in names if n not in ablate]
                without = Ablation(
                    ablate,
                    fit(
                        data.train.without(names, ablate),
                        data.valid.without(names, ablate),
                        kept,
                        chosen,
                        None,
                    )[0].booster,
                    data.test.without(names, ablate).features,
                )
    evaluation = None
    with say.stage("evaluation"):
        if data.test_split is not None:
            evaluation = evaluate(
                data.test_split,
                result.booster,
                result.naive_booster if result.position_debiased else None,
                ablation=without,
            )
            test_metrics = evaluation.headline()
        else:
            scores = np.asarray(result.booster.predict(data.test.features), np.float64)
            test_metrics = ndcg_summary(data.test.labels, scores, data.test.groups, EVAL_AT)

    # The first queries of the test split, whole, become the golden sample rows.
    sample_groups = data.test.groups[:GOLDEN_SAMPLE_QUERIES]
    n_sample = int(sample_groups.sum())
    summary = data.summary | {
        "lineage": lineage(source),
        "fingerprint": recipe.to_json(),
        "params": result.params,
        "tuned_trials": tune_trials,
        "best_iteration": result.best_iteration,
    }
    if counterfactual is not None:
        summary["counterfactual"] = counterfactual
    if data.served is not None:
        bias = data.served.bias
        summary["position_bias"] = (
            bias.curve.to_json() if bias.curve is not None else {"not_estimated": bias.why_not}
        )
    if result.position_debiased and counterfactual is not None:
        summary["position_debiasing"] = (
            "inverse propensity weights from the explored pages' examination curve"
        )
    elif result.position_debiased:
        summary["position_debiasing"] = "LightGBM unbiased lambdarank (Dataset position)"
    if distribution is not None:
        summary["distributed"] = asdict(distribution)
    title = f"Evaluation of {model_name}"
    if distribution is not None:
        title += f", trained {distribution.describe()}"
    summary["metrics_test"] = test_metrics

    def track(version: str, passed: bool | None, report_dir: Path, exported: Path | None) -> None:
        """Record the run, and the version (`exported`, or refused when None)."""
        if tracking_uri is None:
            return
        with say.stage("tracking (MLflow)"):
            run_id = record_run(
                tracking_uri,
                RunRecord(
                    model_name,
                    version,
                    result.params,
                    result.valid_curve,
                    result.best_iteration,
                    test_metrics,
                    passed,
                    summary["lineage"],
                    report_dir,
                ),
            )
            registry = ModelRegistry(tracking_uri)
            if exported is None:
                registered = registry.refused(model_name, version, report_dir, models_root, run_id)
            else:
                registered = registry.exported(
                    exported, gate_passed=passed, run_id=run_id, canary=canary
                )
        say.note(f"MLflow run {run_id}, registered model {model_name} version {registered}")
        say.note(f"in {tracking_uri}")

    gate_report = None
    if gate is not None:
        popular = evaluation.value("most_popular", "ndcg@10") if evaluation is not None else None
        served = None
        if data.served is not None and data.test_split is not None:
            bias = data.served.bias
            served = ServedEvidence(data.test_split, bias.curve, bias.why_not)
        gate_report = run_gate(
            gate, result.booster, data.test, names, popular, models_root, model_name, served
        )
        summary["release_gate"] = asdict(gate_report)
        if not gate_report.passed:
            version = version or _timestamp()
            rejected = models_root / ".rejected" / model_name / version
            if evaluation is not None:
                write_report(evaluation, rejected / REPORT_DIR, title)
            gate_report.write(rejected / REPORT_DIR)
            # The refused model itself, for whoever wants to see what it did.
            result.booster.save_model(str(rejected / "model.txt"))
            write_learning_curve(result.curves, result.best_iteration, rejected / REPORT_DIR)
            track(version, False, rejected / REPORT_DIR, None)
            raise GateFailed(gate_report, rejected / REPORT_DIR)

    def write_extras(staging: Path) -> None:
        if evaluation is not None:
            write_report(evaluation, staging / REPORT_DIR, title)
        if gate_report is not None:
            gate_report.write(staging / REPORT_DIR)
        write_learning_curve(result.curves, result.best_iteration, staging / REPORT_DIR)
        if data.served is not None and data.served.bias.curve is not None:
            curve = data.served.bias.curve
            (staging / REPORT_DIR / "position_bias.md").write_text(curve.markdown())

    with say.stage("export"):
        exported = export_model(
            result.booster,
            models_root=models_root,
            model_name=model_name,
            feature_names=names,
            sample_rows=data.test.features[:n_sample],
            sample_queries=np.repeat(data.test_query_ids[: sample_groups.size], sample_groups),
            training_summary=summary,
            version=version,
            write_extras=write_extras,
        )

    track(
        exported.directory.name,
        gate_report.passed if gate_report else None,
        exported.directory / REPORT_DIR,
        exported.directory,
    )
    return TrainedVersion(result, test_metrics, evaluation, exported, distribution)


def training_fingerprint(
    source: Source,
    *,
    tune_trials: int,
    params: dict[str, Any] | None,
    rounds: Rounds,
    gate: Gate | None,
    ablate: tuple[str, ...],
    cluster: DaskCluster | None,
) -> Fingerprint:
    """The fingerprint train_and_export records for these arguments: the
    source's files, every setting that shapes the model or its release, the
    code and the library versions (`ranker.export.fingerprint`)."""
    settings = {
        "params": {**DEFAULT_PARAMS, **(params or {})},
        "rounds": asdict(rounds),
        "tune_trials": tune_trials,
        "release_gate": asdict(gate) if gate is not None else None,
        "ablate": list(ablate),
        # LightGBM's distributed mode gives other trees than one machine.
        "distributed": cluster is not None,
        **source.settings(),
    }
    return fingerprint(source.files(), settings)


def reusable_version(
    source: Source,
    models_root: Path,
    model_name: str,
    *,
    tune_trials: int = 0,
    params: dict[str, Any] | None = None,
    rounds: Rounds = DEFAULT_ROUNDS,
    gate: Gate | None = DEFAULT_GATE,
    ablate: tuple[str, ...] = (),
    cluster: DaskCluster | None = None,
) -> Reuse:
    """The newest version of model_name if train_and_export with the same
    arguments would train it again from the same inputs (equal fingerprints),
    with the reason either way. Nothing is trained or written."""
    current = training_fingerprint(
        source,
        tune_trials=tune_trials,
        params=params,
        rounds=rounds,
        gate=gate,
        ablate=ablate,
        cluster=cluster,
    )
    return reusable(serving_version(models_root, model_name), current)


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def lineage(source: Source) -> dict[str, Any]:
    """What made this model: the code's commit, a hash of every input file,
    the command line, and for a generated log the world's seed and scale."""
    digest = hashlib.sha256()
    for path in source.files():
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    out: dict[str, Any] = {
        "code_commit": _commit(),
        "data_sha256": digest.hexdigest(),
        "command_line": sys.argv,
    }
    world = source.files()[0].parent / WORLD_FILE
    if world.is_file():
        out["world"] = json.loads(world.read_text())
    return out


def _commit() -> str:
    """The git commit of this code, "-dirty" when it has local changes;
    "unknown" outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


class _Stages:
    """Says on stderr what each stage does and how long it took (quiet: nothing)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"  {text}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Prints the stage when it is done (a failure ends in its own one line)."""
        started = time.perf_counter()
        yield
        if not self.quiet:
            print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def write_learning_curve(curves: Curves, best: int, directory: Path) -> None:
    """learning_curve.png and .json: NDCG@10 per round on the training and
    validation rows, and the round kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "learning_curve.json").write_text(
        json.dumps(
            {"train_ndcg@10": curves.train, "valid_ndcg@10": curves.valid, "best_round": best}
        )
        + "\n"
    )
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    ax.plot(range(1, len(curves.train) + 1), curves.train, label="training NDCG@10")
    ax.plot(
        range(1, len(curves.valid) + 1), curves.valid, label="validation NDCG@10 (logged clicks)"
    )
    ax.axvline(best, color="k", linestyle="--", label=f"kept: {best} rounds")
    ax.set_xlabel("boosting round")
    ax.legend(fontsize=8)
    fig.savefig(directory / "learning_curve.png", dpi=90)
    plt.close(fig)


# Trains one model: the rows, their feature names, the parameters and a
# progress callback in; the result and how it was distributed (None on one
# machine) out.
Trainer = Callable[
    [RankData, RankData, list[str], dict[str, Any], Callable[[int, float], None] | None],
    tuple[TrainResult, Distribution | None],
]


def _trainer(
    cluster: DaskCluster | None, scope: ExitStack, say: _Stages, rounds: Rounds
) -> Trainer:
    """`train` on this machine, or over `cluster`'s workers through one
    client that lives as long as `scope`."""
    if cluster is None:
        return lambda tr, va, names, params, progress: (
            train(tr, va, names, params, rounds, progress),
            None,
        )
    from ranker.training.distributed import dask_client, train_distributed

    local = cluster.workers is not None
    with say.stage(f"Dask cluster ({'local' if local else cluster.scheduler})"):
        client = scope.enter_context(dask_client(cluster))

    def fit(
        tr: RankData,
        va: RankData,
        names: list[str],
        params: dict[str, Any],
        progress: Callable[[int, float], None] | None,
    ) -> tuple[TrainResult, Distribution]:
        result, workers = train_distributed(client, tr, va, names, params, rounds)
        curves = Curves(_training_curve(result.booster, tr), result.curves.valid)
        distribution = Distribution(workers, str(client.scheduler.address), local)
        return replace(result, curves=curves), distribution

    return fit


def _training_curve(booster: lgb.Booster, rows: RankData) -> list[float]:
    """NDCG@10 on the training rows after every round of `booster`, as
    LightGBM counts it (queries without a click count as 1.0), for a model
    trained over workers that each evaluated only their own rows. The
    workers return the trees up to the round kept, so the curve ends there."""
    scores = np.zeros(rows.labels.size)
    curve = []
    for i in range(booster.current_iteration()):
        scores += booster.predict(rows.features, start_iteration=i, num_iteration=1, raw_score=True)
        curve.append(
            ndcg_at_k(rows.labels, scores, rows.groups, max(EVAL_AT), queries_without_relevance=1.0)
        )
    return curve
