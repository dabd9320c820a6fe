"""Record each training run in MLflow: parameters, the validation curve per
round, test metrics, the release gate, the lineage and the report.

The embedded default is a SQLite store under the working directory
(`sqlite:///mlruns/mlflow.db`, artifacts in `mlruns/artifacts`), readable
with `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db` or the
MLflow API; `--tracking-uri` points at a shared server instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
EXPERIMENT = "ranker"


@dataclass(frozen=True)
class RunRecord:
    model_name: str
    version: str
    params: dict[str, Any]
    valid_curve: list[float]
    best_round: int
    test_metrics: dict[str, float]
    gate_passed: bool | None
    lineage: dict[str, Any]
    report_dir: Path | None


def record_run(tracking_uri: str, run: RunRecord) -> str:
    """Log one run; returns its MLflow run id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = None
        if tracking_uri.startswith("sqlite:///"):
            # Beside the database, not in whatever directory the run started from.
            store = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
            artifacts = (store / "artifacts").as_uri()
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    tags = {
        "model_name": run.model_name,
        "model_version": run.version,
        "code_commit": str(run.lineage.get("code_commit", "")),
        "data_sha256": str(run.lineage.get("data_sha256", "")),
        "command_line": " ".join(map(str, run.lineage.get("command_line", []))),
        "release_gate": {None: "off", True: "passed", False: "failed"}[run.gate_passed],
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{run.model_name}/{run.version}", tags=tags
    ) as active:
        mlflow.log_params(
            {k: str(v)[:500] for k, v in run.params.items()} | {"best_round": run.best_round}
        )
        for step, score in enumerate(run.valid_curve, start=1):
            mlflow.log_metric("valid_ndcg_at_10", score, step=step)
        mlflow.log_metrics(
            {k.replace("@", "_at_"): v for k, v in run.test_metrics.items() if v == v}
        )
        if run.report_dir is not None and run.report_dir.is_dir():
            mlflow.log_artifacts(str(run.report_dir), artifact_path="report")
        return str(active.info.run_id)
