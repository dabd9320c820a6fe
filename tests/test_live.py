"""`make live` on a small world: the real server serves simulated readers, a
model retrained from the server's own logs goes out as a canary, and the
experiment ends in a decision with its report and charts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ranker.experiments.exposure import read_exposures
from ranker.simulation.live import BASE, CANARY, EXPERIMENT, MODEL, LivePlan, run_live
from ranker.tracking import CANARY as CANARY_ALIAS
from ranker.tracking import SERVING, ModelRegistry

pytestmark = pytest.mark.e2e


def test_a_small_live_run_ends_in_a_decision(
    server_binary: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "live"
    said: list[str] = []
    plan = LivePlan(readers=400, days=3, warmup_days=1, seed=4242, workers=2)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_live(server_binary, model_dir, out, plan, say=said.append, tracking_uri=store)

    assert result.decision in {"ship", "keep running", "stop"}
    assert result.serving == (CANARY if result.decision == "ship" else BASE)
    decided = json.loads((out / "decision.json").read_text())
    assert decided["decision"] == result.decision
    # The readout says what serves now; an undecided canary was rolled back.
    assert decided["readout"] == result.readout
    assert result.readout.endswith(
        f"{CANARY} serves every reader" if result.serving == CANARY else f"; {BASE} serves"
    )
    if result.decision == "keep running":
        assert "rolled back because the run ended" in result.readout
    assert f"- **`canary`**: {result.readout}." in (out / "report" / "report.md").read_text()
    for name in ("report.md", "report.json", "metrics.png", "sequential.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert result.chart.stat().st_size > 0
    # The chart's numbers: every point's page views; the run's end instant is a partial day.
    daily = pl.read_csv(result.chart.with_suffix(".csv"))
    assert (daily["page_views"] > 0).all()
    assert daily.filter(pl.col("partial"))["day_number"].unique().to_list() in ([], [plan.days + 1])
    # The canary was trained from what the server logged, not from a file
    # made by hand: its version exists and the log it learned from is there.
    # Shipped, it stays the newest version; rolled back, it is set aside.
    kept = out / "models" / "news" / CANARY
    aside = out / "models" / ".rolled-back" / "news" / CANARY
    assert (kept if result.serving == CANARY else aside).joinpath("metadata.json").is_file()
    assert not (aside if result.serving == CANARY else kept).exists()
    assert (out / "experiment" / "metrics.txt").stat().st_size > 0  # the guardrails' source
    assert (out / "served-log" / "impressions.parquet").is_file()
    # After the warm-up, both arms served readers, as the experiment said.
    exposures = read_exposures(out / "exposures").collect()
    arms = exposures.filter(pl.col("experiment") == EXPERIMENT)
    assert set(arms["model_version"].unique().to_list()) == {BASE, CANARY}
    assert exposures.filter(pl.col("experiment") == "")["model_version"].unique().to_list() == [
        BASE
    ]
    report = (out / "report" / "report.md").read_text()
    assert "mSPRT" in report
    assert "true NDCG@10" in report
    assert any("canary" in line for line in said)
    # The Model Registry says what serves now: no canary left, `serving` on
    # the version the model root serves, a rolled-back canary tagged so.
    registry = ModelRegistry(store)
    aliases = registry.aliases(MODEL)
    assert CANARY_ALIAS not in aliases
    assert registry.tags(MODEL, aliases[SERVING])["version"] == result.serving
    canary = registry.find(MODEL, aside if result.serving == BASE else kept)
    assert canary is not None
    status = registry.tags(MODEL, canary)["status"]
    assert status == ("rolled back" if result.serving == BASE else "canary")
