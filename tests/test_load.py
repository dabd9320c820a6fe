"""`ranker load`, as a newcomer runs it: a click log's catalog and events go
into a running server, after which ranking by ids finds every candidate and
serves the training rows; a second load records nothing twice; what the
server refuses is counted, printed and turns the exit status to 1."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.features.build import build_features
from ranker.serving.client import RankerClient
from ranker.serving.process import ServerProcess
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import stateful_server

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary

# A world no other test uses: its own seed, about 1,500 page views over the
# world's weeks, longer than the server's default --event-lateness (24 h).
LOAD_WORLD = WorldConfig(seed=9).scaled(0.05)

SUMMARY = re.compile(
    r"^accepted (?P<articles>[\d,]+) articles(, (?P<impressions>[\d,]+) impressions, "
    r"(?P<clicks>[\d,]+) clicks| and (?P<events>[\d,]+) events \(of (?P<impressions_sent>[\d,]+) "
    r"impressions and (?P<clicks_sent>[\d,]+) clicks sent\)); (?P<duplicates>[\d,]+) duplicates "
    r"\(already recorded\); (?P<rejected>[\d,]+) rejected(: (?P<reasons>.*))?$"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("load-world")
    generate(LOAD_WORLD).write(directory)
    return directory


def _load(
    capsys: pytest.CaptureFixture[str], target: str, data: Path, *args: str
) -> tuple[int, dict[str, int], str]:
    """Exit status, the summary line's counts, and its rejection reasons."""
    code = main(["load", "--data", str(data), "--target", target, *args])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"loading {data}"), out
    match = SUMMARY.match(out[-1])
    assert match, f"summary line {out[-1]!r}"
    counts = {
        k: int(v.replace(",", "")) for k, v in match.groupdict().items() if k != "reasons" and v
    }
    return code, counts, match["reasons"] or ""


def _last_page_view(world: Path) -> pl.DataFrame:
    """The rows of the log's last page view, in the order shown."""
    shown = ClickLog.read(world).impressions
    last = shown.sort("time", "impression_id").row(-1, named=True)["impression_id"]
    return shown.filter(pl.col("impression_id") == last).sort("position")


def _rank_by_ids(client: RankerClient, rows: pl.DataFrame) -> pb.RankResponse:
    first = rows.row(0, named=True)
    return client.rank(
        str(first["user_id"]),
        [str(a) for a in rows["article_id"]],
        device=str(first["device"]),
        event_time=first["time"],
        return_features=True,
    )


def test_a_loaded_log_is_served_as_trained_and_a_second_load_records_nothing_twice(
    stateful: ServerProcess, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = ClickLog.read(world)
    rows = _last_page_view(world)
    ids = [str(a) for a in rows["article_id"]]
    with RankerClient(stateful.target) as client:
        before = _rank_by_ids(client, rows)
    assert sorted(before.unknown_candidates) == sorted(ids)

    code, counts, reasons = _load(capsys, stateful.target, world)
    assert (code, reasons) == (0, "")
    assert counts == {
        "articles": log.articles.height,
        "impressions": log.impressions.height,
        "clicks": int(log.impressions["clicked"].sum()),
        "duplicates": 0,
        "rejected": 0,
    }

    with RankerClient(stateful.target) as client:
        loaded = _rank_by_ids(client, rows)
    assert list(loaded.unknown_candidates) == []
    # The reader's history and the articles' counts are the ones training
    # computes from the same log (exactly, as replay holds every row to).
    names = list(loaded.feature_names)
    training = (
        build_features(log.impressions.lazy(), log.articles.lazy())
        .filter(pl.col("impression_id") == rows["impression_id"][0])
        .sort("position")
    )
    served = {c.id: np.array(c.features, np.float32) for c in loaded.candidates}
    compared = [n for n in names if n in training.columns]
    assert {"user_prior_impressions", "user_category_ctr", "article_ctr_24h"} <= set(compared)
    expected = training.select(compared).to_numpy().astype(np.float32)
    got = np.stack([served[i][[names.index(n) for n in compared]] for i in ids])
    np.testing.assert_array_equal(got, expected)  # NaN equals NaN
    assert got[:, compared.index("user_prior_impressions")].max() > 0

    # Again: the server remembers the last --event-lateness (24 h) of event
    # ids and answers those as duplicates; it refuses the older ones as late
    # (and their clicks, whose impressions it no longer keeps). Nothing is
    # recorded twice and no answer changes; the refusals are printed and the
    # exit status says so.
    code, again, reasons = _load(capsys, stateful.target, world)
    sent = counts["impressions"] + counts["clicks"]
    assert again["events"] == 0
    assert (again["impressions_sent"], again["clicks_sent"]) == (
        counts["impressions"],
        counts["clicks"],
    )
    assert again["duplicates"] > 0
    assert again["duplicates"] + again["rejected"] == sent
    assert code == 1
    assert set(re.findall(r"(\w+\.\w+) [\d,]+ \(e\.g\.", reasons)) == {
        "impressions.time",
        "clicks.request_id",
    }
    with RankerClient(stateful.target) as client:
        reloaded = _rank_by_ids(client, rows)
    assert [(c.id, c.score, list(c.features)) for c in reloaded.candidates] == [
        (c.id, c.score, list(c.features)) for c in loaded.candidates
    ]


def test_a_second_load_within_the_lateness_window_is_all_duplicates(
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = ClickLog.read(world)
    times = log.impressions["time"].sort()
    span: timedelta = times[-1] - times[0]
    lateness = f"--event-lateness={int(span.total_seconds() // 3600) + 2}h"
    with stateful_server(server_binary, model_dir, ort_lib, tmp_path / "state", lateness) as server:
        assert _load(capsys, server.target, world)[0] == 0
        code, again, reasons = _load(capsys, server.target, world)
    clicks = int(log.impressions["clicked"].sum())
    assert (code, reasons, again["events"]) == (0, "", 0)
    assert (again["duplicates"], again["rejected"]) == (log.impressions.height + clicks, 0)


def test_until_loads_only_the_earlier_events(
    stateful: ServerProcess, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = ClickLog.read(world).impressions
    middle = shown.sort("time")["time"][shown.height // 2]
    code, counts, _ = _load(capsys, stateful.target, world, "--until", middle.isoformat())
    earlier = shown.filter(pl.col("time") < middle)
    assert code == 0
    assert (counts["impressions"], counts["clicks"]) == (
        earlier.height,
        int(earlier["clicked"].sum()),
    )


def test_refused_events_are_counted_by_reason_and_exit_1(
    stateful: ServerProcess, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A catalog missing one article: the server refuses its impressions
    (not in the catalog) and their clicks, and the rest goes in."""
    log = ClickLog.read(world)
    dropped = log.impressions["article_id"].mode()[0]
    partial = ClickLog(
        articles=log.articles.filter(pl.col("article_id") != dropped), impressions=log.impressions
    )
    partial.write(tmp_path / "partial")
    code, counts, reasons = _load(capsys, stateful.target, tmp_path / "partial")
    refused = log.impressions.filter(pl.col("article_id") == dropped)
    assert code == 1
    assert counts["articles"] == log.articles.height - 1
    assert counts["impressions"] == log.impressions.height - refused.height
    assert counts["rejected"] == refused.height + int(refused["clicked"].sum())
    assert f"impressions.article_id {refused.height:,} (e.g. article " in reasons
    assert "is not in the catalog" in reasons
