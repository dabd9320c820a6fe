"""`make live` on a small world: the real server serves simulated readers
with exploration; every night a model retrained from the server's own logs
meets the release gate and, passed, runs as a canary the next day; the
canary's experiment decides; the readout sets what served beside the
frozen base model and the nightly oracle."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ranker.experiments.exposure import read_exposures
from ranker.simulation.live import BASE, EXPERIMENT, MODEL, LivePlan, run_live
from ranker.tracking import CANARY as CANARY_ALIAS
from ranker.tracking import SERVING, ModelRegistry

pytestmark = pytest.mark.e2e


def test_a_small_live_run_retrains_every_night_and_decides(
    server_binary: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "live"
    said: list[str] = []
    plan = LivePlan(readers=500, days=3, warmup_days=1, seed=4242, workers=2)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_live(server_binary, model_dir, out, plan, say=said.append, tracking_uri=store)

    # One night after every day from the warm-up on; the last trains nothing.
    assert [n.night for n in result.nights] == [1, 2, 3]
    assert result.nights[-1].candidate is None
    for night in result.nights[:-1]:
        assert night.candidate is not None
        assert night.gate is not None
    # A night's candidate that passed the gate is the next night's canary,
    # which is then promoted or rolled back, in words.
    for tonight, tomorrow in zip(result.nights, result.nights[1:], strict=False):
        passed = tonight.gate is not None and not tonight.gate.startswith("refused")
        assert tomorrow.canary == (tonight.candidate if passed else None)
        if tomorrow.canary is not None:
            assert tomorrow.canary_outcome is not None
            promoted = tomorrow.canary_outcome.startswith("promoted")
            assert tomorrow.serves_next == (tomorrow.canary if promoted else tonight.serves_next)
            kept = out / "models" / MODEL / tomorrow.canary
            aside = out / "models" / ".rolled-back" / MODEL / tomorrow.canary
            assert (kept if promoted else aside).joinpath("metadata.json").is_file()
            assert not (aside if promoted else kept).exists()
    assert result.serving == result.nights[-1].serves_next
    assert json.loads((out / "nights.json").read_text())[0]["night"] == 1

    # The exposure log says which policy chose every page and with what
    # propensity each item stood where it stood.
    exposures = read_exposures(out / "exposures").collect()
    single = exposures.filter(pl.col("interleaved").is_null())
    assert single["propensity"].null_count() == 0
    assert single["policy"].struct.field("name").is_in(["shuffle-top", "deterministic"]).all()
    explored = single.filter(pl.col("explored"))
    assert explored.height > 0, "5 % of page views explore"
    assert ((single["propensity"] > 0) & (single["propensity"] <= 1)).all()
    # Canaries ran as experiments of their own, pinned beside what served.
    arms = exposures.filter(pl.col("experiment").str.starts_with(EXPERIMENT))
    if result.nights[1].canary is not None:
        assert set(arms["variant"].unique().to_list()) == {"control", "canary"}

    # The readout: one row per day with all three lines after day 1.
    readout = result.readout
    assert readout.daily["day"].to_list() == [1, 2, 3]
    assert readout.daily.filter(pl.col("day") > 1)["oracle"].is_not_null().all()
    assert (readout.daily["page_views"] > 0).all()
    page = readout.page.read_text()
    for section in ("## Day by day", "## Night by night", "frozen", "oracle"):
        assert section in page
    assert readout.chart.stat().st_size > 0
    assert 0 < readout.served_after_warmup < 1
    assert any("night 1" in line for line in said)

    # The Model Registry follows the model root: no canary left at the end.
    registry = ModelRegistry(store)
    aliases = registry.aliases(MODEL)
    assert CANARY_ALIAS not in aliases
    assert registry.tags(MODEL, aliases[SERVING])["version"] == result.serving
    assert result.serving == BASE or (out / "models" / MODEL / result.serving).is_dir()
