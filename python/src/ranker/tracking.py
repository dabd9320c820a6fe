"""Record each training run in MLflow (parameters, the validation curve per
round, test metrics, the release gate, the lineage and the report), and each
model version's life in the MLflow Model Registry.

One store, whatever the working directory: `$MLFLOW_TRACKING_URI` when set,
else a SQLite store in `$XDG_DATA_HOME/ranker/mlflow` (by default
`~/.local/share/ranker/mlflow/mlflow.db`, artifacts beside it).
`ranker tracking-uri` prints it and `make mlflow-ui` opens the MLflow UI on it;
`--tracking-uri` points one command at another store (e.g. a shared server).

The registry records lineage; the server never reads it. The model root stays
what serves: a registered model per ranker model name, one registry version
per version directory that was exported, refused by the gate, promoted or
rolled back, tagged with where it lives and the gate's verdict. Two aliases
follow what the server serves: `serving` (the version readers outside an
experiment get, the newest in the model root as the server picks it) and
`canary` (a version serving a share of readers in an experiment). A refused
or rolled-back version carries that as tags, which last, where an alias
would move.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPERIMENT = "ranker"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
# Registry aliases: what the server serves now.
SERVING, CANARY = "serving", "canary"
# Registry version tags.
TAG_MODEL_ROOT = "model_root"
TAG_VERSION = "version"  # the version directory's name (MLflow numbers its own versions)
TAG_VERSION_DIR = "version_dir"  # where the version lives now
TAG_RELEASE_GATE = "release_gate"
TAG_STATUS = "status"  # exported, refused, canary, promoted or rolled back
TAG_ROLLED_BACK = "rolled_back"  # why
TAG_PROMOTED_FROM = "promoted_from"
TAG_COPIED_FROM = "copied_from"


def default_store() -> Path:
    """$XDG_DATA_HOME/ranker/mlflow, or ~/.local/share/ranker/mlflow: one
    directory per user, so every working directory records to the same store."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "ranker" / "mlflow"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store in `default_store()`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store() / STORE_FILE}"


def gate_outcome(passed: bool | None) -> str:
    """The release gate's verdict as runs and registry versions are tagged:
    off (not run), passed or failed (refused)."""
    return {None: "off", True: "passed", False: "failed"}[passed]


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


def _client(tracking_uri: str) -> Any:
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def record_run(tracking_uri: str, run: RunRecord) -> str:
    """Log one run; returns its MLflow run id."""
    import mlflow

    client = _client(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = None
        if tracking_uri.startswith("sqlite:///"):
            # Beside the database, not in whatever directory the run started from.
            store = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
            artifacts = (store / ARTIFACTS_DIR).as_uri()
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    tags = {
        "model_name": run.model_name,
        "model_version": run.version,
        "code_commit": str(run.lineage.get("code_commit", "")),
        "data_sha256": str(run.lineage.get("data_sha256", "")),
        "command_line": " ".join(map(str, run.lineage.get("command_line", []))),
        "release_gate": gate_outcome(run.gate_passed),
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


class ModelRegistry:
    """The MLflow Model Registry of one tracking store, told about each step
    of a version's life by the code that takes the step."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._mlflow = _client(tracking_uri)

    def _model(self, model_name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._mlflow.get_registered_model(model_name)
        except MlflowException:
            self._mlflow.create_registered_model(
                model_name,
                description=f"ranker model {model_name!r}: versions as exported to a model root",
            )

    def _register(
        self, model_name: str, directory: Path, run_id: str | None, tags: dict[str, str]
    ) -> str:
        self._model(model_name)
        directory = directory.resolve()
        created = self._mlflow.create_model_version(
            model_name,
            source=str(directory),
            run_id=run_id,
            tags={TAG_VERSION: directory.name, TAG_VERSION_DIR: str(directory), **tags},
        )
        return str(created.version)

    def find(self, model_name: str, version_dir: Path) -> str | None:
        """The registry version of the newest registration of `version_dir`
        (where it lives now), or None."""
        where = str(version_dir.resolve()).replace("'", "\\'")
        found = self._mlflow.search_model_versions(
            f"name='{model_name}' and tags.{TAG_VERSION_DIR}='{where}'"
        )
        return str(max(int(v.version) for v in found)) if found else None

    def aliases(self, model_name: str) -> dict[str, str]:
        """Alias -> registry version."""
        return {k: str(v) for k, v in self._mlflow.get_registered_model(model_name).aliases.items()}

    def tags(self, model_name: str, registry_version: str) -> dict[str, str]:
        return dict(self._mlflow.get_model_version(model_name, registry_version).tags)

    def exported(
        self,
        version_dir: Path,
        *,
        gate_passed: bool | None,
        run_id: str | None = None,
        canary: bool = False,
        copied_from: Path | None = None,
    ) -> str:
        """A version published into a model root (<root>/<name>/<version>).
        It serves at once, as the server picks the newest version, unless it
        goes out as a canary beside the serving one."""
        model_root, model_name = version_dir.resolve().parent.parent, version_dir.parent.name
        tags = {
            TAG_MODEL_ROOT: str(model_root),
            TAG_RELEASE_GATE: gate_outcome(gate_passed),
            TAG_STATUS: CANARY if canary else "exported",
        }
        if copied_from is not None:
            tags[TAG_COPIED_FROM] = str(copied_from.resolve())
            if gate_passed is None:  # a copy carries the verdict on its original
                tags[TAG_RELEASE_GATE] = self._gate_of(copied_from)
        registered = self._register(model_name, version_dir, run_id, tags)
        if canary:
            self._mlflow.set_registered_model_alias(model_name, CANARY, registered)
        else:
            self.follow_model_root(model_root, model_name)
        return registered

    def refused(
        self, model_name: str, version: str, report_dir: Path, models_root: Path, run_id: str | None
    ) -> str:
        """A version the release gate refused: nothing was exported; its
        report (`report_dir`) is what there is to see."""
        return self._register(
            model_name,
            report_dir.parent,
            run_id,
            {
                TAG_MODEL_ROOT: str(models_root.resolve()),
                TAG_RELEASE_GATE: gate_outcome(False),
                TAG_STATUS: "refused",
                TAG_VERSION: version,
            },
        )

    def promoted(self, source_dir: Path, target_dir: Path) -> str:
        """`source_dir` (e.g. a canary's version under another name) was
        published as `target_dir`, which now serves under its name."""
        target_root = target_dir.resolve().parent.parent
        registered = self._register(
            target_dir.parent.name,
            target_dir,
            None,
            {
                TAG_MODEL_ROOT: str(target_root),
                TAG_RELEASE_GATE: self._gate_of(source_dir),
                TAG_STATUS: "promoted",
                TAG_PROMOTED_FROM: str(source_dir.resolve()),
            },
        )
        self.follow_model_root(target_root, target_dir.parent.name)
        return registered

    def _gate_of(self, version_dir: Path) -> str:
        found = self.find(version_dir.parent.name, version_dir)
        if found is None:
            return "unknown"
        return self.tags(version_dir.parent.name, found).get(TAG_RELEASE_GATE, "unknown")

    def rolled_back(self, model_name: str, was: Path, now: Path, reason: str) -> str:
        """The version at `was` left the served model directory for `now`
        (kept aside for inspection) because of `reason`; the canary alias, if
        it pointed there, is gone, and `serving` follows the model root."""
        registered = self.find(model_name, was)
        if registered is None:
            registered = self._register(
                model_name, now, None, {TAG_MODEL_ROOT: str(was.resolve().parent.parent)}
            )
        for key, value in (
            (TAG_STATUS, "rolled back"),
            (TAG_ROLLED_BACK, reason),
            (TAG_VERSION_DIR, str(now.resolve())),
        ):
            self._mlflow.set_model_version_tag(model_name, registered, key, value)
        if self.aliases(model_name).get(CANARY) == registered:
            self._mlflow.delete_registered_model_alias(model_name, CANARY)
        self.follow_model_root(was.resolve().parent.parent, model_name)
        return registered

    def ended_canary(self, model_name: str) -> None:
        """The experiment is over: no version is a canary any more."""
        if CANARY in self.aliases(model_name):
            self._mlflow.delete_registered_model_alias(model_name, CANARY)

    def follow_model_root(self, models_root: Path, model_name: str) -> None:
        """Point `serving` at the version the server serves from the model
        root: the newest version there, in the server's order."""
        from ranker.gate import serving_version  # LightGBM: only when it is needed

        chosen = serving_version(models_root, model_name)
        registered = self.find(model_name, chosen) if chosen is not None else None
        if registered is not None:
            self._mlflow.set_registered_model_alias(model_name, SERVING, registered)
        elif SERVING in self.aliases(model_name):
            # The served version was never registered: say nothing rather than the wrong one.
            self._mlflow.delete_registered_model_alias(model_name, SERVING)
