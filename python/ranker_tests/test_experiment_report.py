"""`ranker experiment report` end to end: an exposure directory, clicks and
truth written here, read the way the server's files are, to a decision with
its Markdown and charts; and the command's handling of bad input."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ranker.cli import main
from ranker.experiments.analysis import Decision, Guardrails
from ranker.experiments.exposure import read_exposures
from ranker.experiments.report import (
    DEFAULT_TAU,
    METRICS,
    PRIMARY,
    VariantDecision,
    analyze,
    day_sizes,
    end_of_run,
    markdown,
    page_views,
    plot_days,
    write,
)

T0 = datetime(2026, 11, 20, 6, tzinfo=UTC)
SHOWN = 5


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _experiment(
    directory: Path,
    readers: dict[str, int],
    click_prob: dict[str, float],
    days: int = 4,
    seed: int = 0,
) -> tuple[Path, Path, Path]:
    """Exposures (as the server writes them), clicks and truth of an experiment
    where each reader visits 1-3 times a day and clicks each shown article with
    the variant's probability."""
    rng = np.random.default_rng(seed)
    exposures = directory / "exposures"
    exposures.mkdir()
    lines: list[str] = []
    clicks: list[dict[str, str]] = []
    truth: list[dict[str, object]] = []
    users = [(f"{v}-{i}", v) for v, n in readers.items() for i in range(n)]
    for day in range(days):
        for user, variant in users:
            for visit in range(int(rng.integers(1, 4))):
                t = T0 + timedelta(days=day, minutes=int(rng.integers(0, 900)), seconds=visit)
                rid = f"r{len(lines)}"
                articles = [f"a{day}-{k}" for k in rng.permutation(20)[:SHOWN]]
                lines.append(
                    json.dumps(
                        {
                            "time": _stamp(t),
                            "request_id": rid,
                            "user_id": user,
                            "device": "mobile",
                            "experiment": "homepage",
                            "variant": variant,
                            "model": "news",
                            "model_version": "v1" if variant == "control" else "v2",
                            "items": [
                                {"id": a, "position": p + 1, "score": 1.0 - p / 10}
                                for p, a in enumerate(articles)
                            ],
                        }
                    )
                )
                hits = [a for a in articles if rng.random() < click_prob[variant]]
                clicks += [
                    {"request_id": rid, "article_id": a, "user_id": user, "time": _stamp(t)}
                    for a in hits
                ]
                truth.append(
                    {
                        "request_id": rid,
                        "user_id": user,
                        "variant": variant,
                        "true_ndcg10": float(rng.uniform(0.4, 0.6))
                        + (0.2 if variant != "control" else 0.0),
                    }
                )
    half = len(lines) // 2  # a rotated file and the live one
    (exposures / "exposure-20261121T000000Z.jsonl").write_text("\n".join(lines[:half]) + "\n")
    (exposures / "exposure.jsonl").write_text("\n".join(lines[half:]) + "\n")
    clicks_path = directory / "clicks.jsonl"
    clicks_path.write_text("".join(json.dumps(c) + "\n" for c in clicks))
    truth_path = directory / "truth.parquet"
    pl.DataFrame(truth).write_parquet(truth_path)
    return exposures, clicks_path, truth_path


@pytest.mark.parametrize("stored", ["utc", "naive", "iso string", "other zone"])
def test_clicks_count_once_per_shown_article_after_the_exposure(
    tmp_path: Path, stored: str
) -> None:
    exposures = tmp_path / "exposures"
    exposures.mkdir()
    records = [("r1", "u1", "control", ["a", "b"]), ("r2", "u2", "treatment", ["a", "c"])]
    (exposures / "exposure.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "time": _stamp(T0),
                    "request_id": rid,
                    "user_id": user,
                    "experiment": "homepage",
                    "variant": variant,
                    "items": [
                        {"id": a, "position": p + 1, "score": 0.5} for p, a in enumerate(ids)
                    ],
                }
            )
            + "\n"
            for rid, user, variant, ids in records
        )
    )
    later, earlier = T0 + timedelta(seconds=5), T0 - timedelta(seconds=5)
    times = pl.Series([later, later, later, earlier, earlier])
    times = {
        "utc": times,
        "naive": times.dt.replace_time_zone(None),
        "iso string": times.dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
        "other zone": times.dt.convert_time_zone("Europe/Paris"),
    }[stored]
    clicks = pl.LazyFrame(
        {
            "request_id": ["r1", "r1", "r1", "r2", "r2"],
            # a twice, then an article never shown; r2's only click came before its exposure
            "article_id": ["a", "a", "zzz", "c", "a"],
            "time": times,
        }
    )
    experiment, views = page_views(read_exposures(exposures), clicks)
    assert experiment == "homepage"
    got = dict(zip(views["request_id"], views["clicks"], strict=True))
    assert got == {"r1": 1, "r2": 0}
    assert views["day"].to_list() == ["2026-11-20", "2026-11-20"]


def test_a_clear_winner_ships_with_report_and_charts(tmp_path: Path) -> None:
    exposures, clicks, truth = _experiment(
        tmp_path, {"control": 150, "treatment": 150}, {"control": 0.05, "treatment": 0.1}
    )
    guardrails = tmp_path / "guardrails.json"
    guardrails.write_text(
        json.dumps(
            {
                "variants": {
                    "control": {"requests": 5000, "errors": 2, "latency_p99_ms": 9.0},
                    "treatment": {"requests": 5000, "errors": 3, "latency_p99_ms": 9.5},
                }
            }
        )
    )
    out = tmp_path / "report"
    argv = ["experiment", "report", "--exposures", str(exposures), "--clicks", str(clicks)]
    argv += ["--truth", str(truth), "--guardrails", str(guardrails), "--out", str(out)]
    assert main(argv) == 0

    summary = json.loads((out / "report.json").read_text())
    (decision,) = summary["decisions"]
    assert decision["variant"] == "treatment"
    assert decision["decision"] == "ship"
    assert summary["days"] == ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
    # Each reader visits every day: the readers are all there from the first look.
    assert {c["variant"]: c["readers"] for c in summary["counts"]} == {
        "control": 150,
        "treatment": 150,
    }
    # Clicks per page view is the total clicks over the total page views.
    clicks_by_variant = {c["variant"]: c["clicks"] / c["page_views"] for c in summary["counts"]}
    last_ctr = {
        m["variant"]: m["value"]
        for m in summary["metrics"]
        if m["day"] == "2026-11-23" and m["metric"] == "clicks_per_page_view"
    }
    assert last_ctr == pytest.approx(clicks_by_variant)
    # True NDCG@10 differs by 0.2 by construction; the interval holds it.
    (ndcg,) = [
        d
        for d in summary["differences"]
        if d["day"] == "2026-11-23" and d["metric"] == "true_ndcg10"
    ]
    assert ndcg["low"] < 0.2 < ndcg["high"]
    assert len(decision["log_statistics"]) == 4

    text = (out / "report.md").read_text()
    assert "**`treatment`: ship**" in text
    assert "delta method" in text
    assert f"tau = {DEFAULT_TAU}" in text
    assert "mSPRT with a normal mixture" in text
    assert re.search(r"\| `control` \| 150 \| [\d,]+ \| [\d,]+ \| 0\.\d{4} \[", text)
    assert "true NDCG@10" in text
    for chart in ("metrics.png", "sequential.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_guardrail_vetoes_the_ship(tmp_path: Path) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 150, "treatment": 150}, {"control": 0.05, "treatment": 0.1}
    )
    scrape = tmp_path / "metrics.txt"
    scrape.write_text(
        'ranker_requests_total{code="OK",method="Rank",model="a",variant="control"} 1000\n'
        'ranker_requests_total{code="OK",method="Rank",model="b",variant="treatment"} 900\n'
        'ranker_requests_total{code="Internal",method="Rank",model="b",variant="treatment"} 100\n'
    )
    out = tmp_path / "report"
    argv = ["experiment", "report", "--exposures", str(exposures), "--clicks", str(clicks)]
    assert main([*argv, "--guardrails", str(scrape), "--out", str(out)]) == 0
    (decision,) = json.loads((out / "report.json").read_text())["decisions"]
    assert decision["decision"] == "stop"
    assert "guardrail vetoes the ship" in decision["reason"]
    assert "error rate 10.000% vs control 0.000%" in decision["reason"]


def test_an_aa_experiment_keeps_running(tmp_path: Path) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 150, "treatment": 150}, {"control": 0.08, "treatment": 0.08}
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    report = analyze("homepage", views)
    (decision,) = report.decisions
    assert decision.decision is Decision.KEEP_RUNNING
    assert decision.lift_interval[0] < 0 < decision.lift_interval[1]


def test_a_sample_ratio_mismatch_blocks_the_decision(tmp_path: Path) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 100, "treatment": 160}, {"control": 0.05, "treatment": 0.15}
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    (decision,) = analyze("homepage", views).decisions
    assert decision.decision is Decision.INVALID
    assert "chi-square p = " in decision.reason
    # With the weights that were configured, 100 : 160 is no mismatch.
    (decision,) = analyze("homepage", views, weights={"control": 5, "treatment": 8}).decisions
    assert decision.decision is Decision.SHIP


def test_each_of_several_variants_is_tested_at_a_share_of_alpha(tmp_path: Path) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path,
        {"control": 120, "better": 120, "same": 120},
        {"control": 0.05, "better": 0.1, "same": 0.05},
        days=2,
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    # "same" starts a day late: its first look has no data.
    views = views.filter((pl.col("variant") != "same") | (pl.col("day") > "2026-11-20"))
    report = analyze("homepage", views, alpha=0.05)
    write(report, tmp_path / "out")
    text = (tmp_path / "out" / "report.json").read_text()
    assert "NaN" not in text  # strict JSON: a look without data is null
    (first,) = [
        m
        for m in json.loads(text)["metrics"]
        if (m["day"], m["variant"], m["metric"]) == ("2026-11-20", "same", "clicks_per_page_view")
    ]
    assert first["value"] is None
    by_variant = {d.variant: d for d in report.decisions}
    assert sorted(by_variant) == ["better", "same"]
    assert {d.alpha for d in report.decisions} == {0.025}
    assert by_variant["better"].sequential.threshold == pytest.approx(math.log(40))
    assert by_variant["better"].decision is Decision.SHIP
    assert by_variant["same"].decision is Decision.KEEP_RUNNING


def test_readers_in_two_variants_are_left_out(tmp_path: Path) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 30, "treatment": 30}, {"control": 0.1, "treatment": 0.1}, days=1
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    # One control reader also forced into the treatment once.
    forced = views.filter(pl.col("user_id") == "control-0").head(1)
    views = pl.concat([views, forced.with_columns(pl.lit("treatment").alias("variant"))])
    report = analyze("homepage", views)
    assert report.readers_in_several_variants == 1
    assert dict(zip(report.counts["variant"], report.counts["readers"], strict=True)) == {
        "control": 29,
        "treatment": 30,
    }


def _scan(path: Path) -> pl.LazyFrame:
    return pl.scan_ndjson(path).with_columns(pl.col("time").str.to_datetime(time_zone="UTC"))


def test_help_names_the_method_and_the_default_tau(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "report", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mSPRT" in out
    assert "delta method" in out
    assert f"(default {DEFAULT_TAU})" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--clicks": "missing.jsonl"}, "--clicks {tmp}/missing.jsonl: no such file"),
        (
            {"--clicks": "truth.parquet"},
            "--clicks {tmp}/truth.parquet: no column(s) article_id, time",
        ),
        ({"--exposures": "nowhere"}, "--exposures {tmp}/nowhere: no such directory"),
        ({"--truth": "clicks.jsonl"}, "--truth {tmp}/clicks.jsonl: cannot be read"),
        ({"--truth": "exposures"}, "--truth {tmp}/exposures: no such file"),
        ({"--control": "baseline"}, "--control 'baseline' is not a variant"),
        ({"--guardrails": "clicks.jsonl"}, "no ranker_requests_total samples"),
        ({"--guardrails": "metrics.txt"}, "--guardrails {tmp}/metrics.txt: no such file"),
        ({"--weights": "control=1"}, "--weights: no weight for variant(s) treatment"),
    ],
)
def test_bad_input_ends_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], message: str
) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 5, "treatment": 5}, {"control": 0.1, "treatment": 0.1}, days=1
    )
    flags = {"--exposures": str(exposures), "--clicks": str(clicks)}
    flags |= {
        k: str(tmp_path / v) if k != "--control" and "=" not in v else v for k, v in change.items()
    }
    argv = ["experiment", "report", "--out", str(tmp_path / "out")]
    for flag, value in flags.items():
        argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("ranker experiment: error: ")
    assert message.format(tmp=tmp_path) in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--alpha", "1.5", "1.5 must be between 0 and 1"),
        ("--tau", "0", "0 must be a positive number"),
        ("--weights", "control", "'control' is not VARIANT=WEIGHT with a weight > 0"),
        ("--weights", "control=1,canary=-2", "'canary=-2' is not VARIANT=WEIGHT"),
    ],
)
def test_a_bad_option_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    argv = ["experiment", "report", "--exposures", "e", "--clicks", "c", "--out", "o"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, flag, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# The readout in plain words: the decision and what serves once the run ends.


def _canary_decision(tmp_path: Path, canary_click_prob: float) -> VariantDecision:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 150, "canary": 150}, {"control": 0.08, "canary": canary_click_prob}
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    (decision,) = analyze("homepage", views).decisions
    return decision


def test_a_canary_that_wins_is_promoted_and_serves(tmp_path: Path) -> None:
    decision = _canary_decision(tmp_path, 0.16)
    assert decision.decision is Decision.SHIP
    ended = end_of_run(decision, "v2", "v1")
    assert ended.promoted
    assert ended.serving == "v2"
    assert re.fullmatch(
        r"shipped: the relative lift in clicks per page view, \+\d+\.\d%, crossed the "
        r"threshold on 2026-11-2\d; the canary \(v2\) was promoted; v2 serves every reader",
        ended.readout,
    ), ended.readout


def test_a_harmful_canary_is_stopped_and_rolled_back(tmp_path: Path) -> None:
    decision = _canary_decision(tmp_path, 0.03)
    assert decision.decision is Decision.STOP
    ended = end_of_run(decision, "v2", "v1")
    assert not ended.promoted
    assert ended.serving == "v1"
    assert re.fullmatch(
        r"stopped for harm: the relative lift in clicks per page view, -\d+\.\d%, crossed "
        r"the threshold on 2026-11-2\d; the canary \(v2\) was rolled back; v1 serves",
        ended.readout,
    ), ended.readout


def test_a_run_that_ends_undecided_says_so_and_that_the_canary_was_rolled_back(
    tmp_path: Path,
) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 150, "canary": 150}, {"control": 0.08, "canary": 0.08}
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    report = analyze("homepage", views)
    (decision,) = report.decisions
    assert decision.decision is Decision.KEEP_RUNNING
    ended = end_of_run(decision, "v2", "v1")
    assert not ended.promoted
    assert ended.serving == "v1"
    assert ended.readout == (
        f"no decision within the run: {decision.reason}; the canary (v2) was rolled back "
        "because the run ended; v1 serves"
    )
    assert decision.reason.startswith("the mSPRT statistic has not reached 1/alpha")
    # The written report says what happened, not "keep running".
    write(report, tmp_path / "out", {"canary": ended})
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"- **`canary`**: {ended.readout}." in text
    assert "keep running**" not in text
    (written,) = json.loads((tmp_path / "out" / "report.json").read_text())["decisions"]
    assert (written["decision"], written["readout"], written["serving"]) == (
        "keep running",
        ended.readout,
        "v1",
    )
    # A report of a running experiment keeps its decision.
    assert "**`canary`: keep running**" in markdown(report)


def test_clicks_per_page_view_is_never_called_ctr(tmp_path: Path) -> None:
    decision = _canary_decision(tmp_path, 0.16)
    (tmp_path / "again").mkdir()
    exposures, clicks, truth = _experiment(
        tmp_path / "again",
        {"control": 50, "canary": 50},
        {"control": 0.3, "canary": 0.3},
        days=2,
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks), pl.scan_parquet(truth))
    report = analyze("homepage", views)
    text = markdown(report)
    # Several articles per page: clicks per page view exceeds 1 here, so it is no rate.
    per_view = report.metrics.filter(pl.col("metric") == "clicks_per_page_view")["value"]
    assert per_view.max() > 1  # type: ignore[operator]
    for readout in (text, decision.reason, METRICS[PRIMARY]):
        assert "CTR" not in readout
    assert "clicks per page view" in text
    assert "not a click-through rate" in text


def _views_with_a_short_last_day(tmp_path: Path, last_day_views: int) -> pl.DataFrame:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 60, "canary": 60}, {"control": 0.1, "canary": 0.1}, days=4
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    last = views.filter(pl.col("day") == "2026-11-23").sort("time").head(last_day_views)
    return pl.concat([views.filter(pl.col("day") < "2026-11-23"), last])


def test_a_partial_day_is_marked_with_its_page_views(tmp_path: Path) -> None:
    views = _views_with_a_short_last_day(tmp_path, 42)
    window = (datetime(2026, 11, 20), datetime(2026, 11, 23, 8))  # ended at 08:00 on day 4
    report = analyze("homepage", views, window=window)
    sizes = report.day_sizes
    assert sizes["partial"].to_list() == [False, False, False, True]
    assert sizes["page_views"][-1] == 42
    assert sizes["covered_hours"].to_list() == [24.0, 24.0, 24.0, 8.0]
    assert sizes["page_views_so_far"][-1] == views.height
    assert report.look_label("2026-11-23") == "2026-11-23 (partial: 42 page views)"
    assert report.look_label("2026-11-22") == (
        f"2026-11-22 ({int(sizes['page_views'][2]):,} page views)"
    )
    text = markdown(report)
    assert "Served only in part" in text
    assert "| 2026-11-23 (partial: 42 page views) | 42 |" in text
    assert "## Variants (at 2026-11-23 (partial: 42 page views))" in text
    # Every plotted point carries its sample: page views so far per variant and look.
    last = report.metrics.filter(pl.col("day") == "2026-11-23")
    counts = dict(zip(report.counts["variant"], report.counts["page_views"], strict=True))
    for row in last.iter_rows(named=True):
        assert row["page_views"] == counts[row["variant"]]
    out = tmp_path / "out"
    write(report, out)
    summary = json.loads((out / "report.json").read_text())
    assert summary["day_sizes"][-1] == {
        "day": "2026-11-23",
        "page_views": 42,
        "page_views_so_far": views.height,
        "covered_hours": 8.0,
        "partial": True,
    }
    assert all(m["page_views"] > 0 for m in summary["metrics"])
    # Without a window, the data's own span: day 1 starts after 06:00 here.
    inferred = analyze("homepage", views).day_sizes
    assert inferred["partial"].to_list()[0]


def test_the_window_read_from_the_data_counts_a_day_served_whole_as_whole() -> None:
    times = pl.Series(
        "time",
        [datetime(2026, 1, 5, 0, 10), datetime(2026, 1, 5, 23, 50), datetime(2026, 1, 6, 0, 0)],
    )
    sizes = day_sizes(times)
    # 23 h 40 min of the first day lie between the first and the last page view.
    assert sizes["partial"].to_list() == [False, True]
    assert sizes["page_views"].to_list() == [2, 1]
    assert sizes["covered_hours"][1] == 0.0
    zoned = day_sizes(times.dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Berlin"))
    assert zoned.equals(sizes)


def test_points_on_partial_days_are_hollow_and_joined_by_dashes() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_days(ax, [0, 1, 2, 3], [0.5, 0.6, 0.55, 0.2], [False, False, False, True], label="v1")

    def xs(line: Any) -> list[float]:
        return [float(x) for x in np.asarray(line.get_xdata())]

    solid, *rest = ax.get_lines()
    assert xs(solid) == [0, 1, 2]
    assert solid.get_linestyle() == "-"
    dashed = [line for line in rest if line.get_linestyle() == "--"]
    assert [xs(line) for line in dashed] == [[2, 3]]
    hollow = [line for line in rest if line.get_markerfacecolor() == "none"]
    assert [xs(line) for line in hollow] == [[3]]
    plt.close(fig)


def test_a_winner_a_guardrail_vetoes_is_stopped_by_it_and_rolled_back(tmp_path: Path) -> None:
    exposures, clicks, _ = _experiment(
        tmp_path, {"control": 150, "canary": 150}, {"control": 0.08, "canary": 0.16}
    )
    _, views = page_views(read_exposures(exposures), _scan(clicks))
    slow = Guardrails({}, {}, {"control": 10.0, "canary": 30.0})
    (decision,) = analyze("homepage", views, guardrails=slow).decisions
    ended = end_of_run(decision, "v2", "v1")
    assert (ended.promoted, ended.serving) == (False, "v1")
    assert ended.readout.startswith("stopped by a guardrail: the relative lift in clicks per")
    assert "but a guardrail vetoes the ship: p99 latency 30.0 ms > 1.2 x" in ended.readout
    assert ended.readout.endswith("; the canary (v2) was rolled back; v1 serves")
