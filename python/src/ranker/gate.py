"""The release gate: the checks a trained model must pass before it is
exported under its name, so that no silently bad model reaches the server.

The stage between export and the pipeline that runs it: it reads the
evaluation and the version currently serving (the newest under the same name).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from ranker.evaluation.metrics import per_query
from ranker.export import artifact
from ranker.training.dataset import RankData


@dataclass(frozen=True)
class Gate:
    """What a candidate model must show; every figure is NDCG@10 on clicks
    of the held-out test split."""

    # A model this small is a failed fit (early stopping kept a stump).
    min_trees: int = 20
    # Above the most-popular baseline by at least this (click logs only).
    min_gain_over_popular: float = 0.02
    # Not below the version serving under the same name by more than this.
    max_loss_vs_serving: float = 0.01


DEFAULT_GATE = Gate()


@dataclass
class GateReport:
    passed: bool = True
    checks: list[dict[str, object]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": name, "passed": ok, "detail": detail})
        self.passed = self.passed and ok

    def failures(self) -> list[str]:
        return [f"{c['check']}: {c['detail']}" for c in self.checks if not c["passed"]]

    def markdown(self) -> str:
        lines = ["# Release gate", "", f"**{'passed' if self.passed else 'FAILED'}**", ""]
        lines += ["| check | result | detail |", "| --- | --- | --- |"]
        for c in self.checks:
            lines.append(f"| {c['check']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "gate.md").write_text(self.markdown())
        (directory / "gate.json").write_text(json.dumps(asdict(self), indent=1) + "\n")


class GateFailed(Exception):
    """The candidate did not pass the release gate; nothing was exported."""

    def __init__(self, report: GateReport, report_dir: Path) -> None:
        super().__init__(
            "release gate failed: " + "; ".join(report.failures()) + f" (report in {report_dir})"
        )
        self.report = report
        self.report_dir = report_dir


def ndcg10(booster: lgb.Booster, test: RankData) -> float:
    scores = np.asarray(booster.predict(test.features), np.float64)
    return float(np.nanmean(per_query(test.labels, scores, test.groups, ks=(10,))["ndcg@10"]))


def serving_version(models_root: Path, model_name: str) -> Path | None:
    """The newest exported version under the name (natural order, as the
    server picks it), or None."""
    parent = models_root / model_name
    if not parent.is_dir():
        return None
    versions = [
        d
        for d in parent.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / artifact.METADATA_JSON).exists()
    ]
    if not versions:
        return None

    def natural(d: Path) -> list[object]:
        import re

        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", d.name)]

    return max(versions, key=natural)


def run_gate(
    gate: Gate,
    booster: lgb.Booster,
    test: RankData,
    feature_names: list[str],
    popular_ndcg10: float | None,
    models_root: Path,
    model_name: str,
) -> GateReport:
    report = GateReport()
    trees = booster.num_trees()
    report.check("trees", trees >= gate.min_trees, f"{trees} trees (minimum {gate.min_trees})")
    model = ndcg10(booster, test)
    if popular_ndcg10 is not None:
        need = popular_ndcg10 + gate.min_gain_over_popular
        report.check(
            "beats most popular",
            model >= need,
            f"NDCG@10 {model:.4f}, most popular {popular_ndcg10:.4f} (needs {need:.4f})",
        )
    serving = serving_version(models_root, model_name)
    if serving is None:
        report.check("vs serving", True, f"no version of {model_name} is serving yet")
        return report
    meta = json.loads((serving / artifact.METADATA_JSON).read_text())
    if meta.get("feature_names") != feature_names:
        report.check("vs serving", True, f"{serving.name} uses other features; not comparable")
        return report
    current = ndcg10(lgb.Booster(model_file=serving / artifact.MODEL_TXT), test)
    need = current - gate.max_loss_vs_serving
    report.check(
        "vs serving",
        model >= need,
        f"NDCG@10 {model:.4f}, serving {serving.name} {current:.4f} on the same test split "
        f"(needs {need:.4f})",
    )
    return report
