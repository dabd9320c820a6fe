"""Loading a click log into the server, without one: the batches stay within
the server's limits, the report counts what the server answered, and the
ranking printed names the candidates the server did not know."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from ranker.serving.client import format_ranking
from ranker.serving.history import BATCH, MAX_BATCH_BYTES, LoadReport, catalog_batches
from ranker_client.v1 import ranking_service_pb2 as pb


def _articles(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "article_id": np.arange(n, dtype=np.int64),
            "category": ["news"] * n,
            "subcategory": ["world"] * n,
            "title": [f"headline number {i}" for i in range(n)],
            "word_count": [300] * n,
            "breaking": [False] * n,
            "publish_time": [datetime(2026, 1, 5)] * n,
        }
    )


def test_catalog_batches_hold_at_most_the_servers_count_per_call() -> None:
    batches = list(catalog_batches(_articles(2 * BATCH + 1)))
    assert [len(b) for b in batches] == [BATCH, BATCH, 1]


def test_catalog_batches_with_embeddings_stay_under_the_message_size() -> None:
    n, width = 3_000, 512  # about 6 MB of vectors: more than one call
    articles = _articles(n)
    vectors = np.random.default_rng(0).standard_normal((n, width)).astype(np.float32)
    embeddings = pl.DataFrame(
        {"article_id": articles["article_id"], "embedding": vectors},
        schema={"article_id": pl.Int64, "embedding": pl.Array(pl.Float32, width)},
    )
    batches = list(catalog_batches(articles, embeddings))
    assert len(batches) > 1
    for batch in batches:
        assert pb.UpsertArticlesRequest(articles=batch).ByteSize() <= MAX_BATCH_BYTES
    sent = [a for batch in batches for a in batch]
    assert [a.id for a in sent] == [str(i) for i in range(n)]
    np.testing.assert_array_equal(np.array(sent[-1].embedding, np.float32), vectors[-1])


def _rejection(field: str, reason: str) -> pb.Rejection:
    return pb.Rejection(id="e", field=field, reason=reason)


def test_the_report_splits_events_by_kind_when_the_answer_allows() -> None:
    report = LoadReport(articles=3, impressions_sent=10, clicks_sent=2, events=9)
    report.refuse(
        [
            _rejection("impressions[4].article_id", 'article "7" is not in the catalog'),
            _rejection("impressions[9].article_id", 'article "8" is not in the catalog'),
            _rejection("clicks[0].request_id", "no impression of article"),
        ]
    )
    assert not report.ok
    assert report.summary() == (
        "accepted 3 articles, 8 impressions, 1 clicks; 0 duplicates (already recorded); "
        '3 rejected: impressions.article_id 2 (e.g. article "7" is not in the catalog); '
        "clicks.request_id 1 (e.g. no impression of article)"
    )


def test_with_duplicates_the_report_counts_events_together() -> None:
    # The server counts duplicate impressions and clicks together, so the
    # accepted ones cannot be told apart by kind.
    report = LoadReport(articles=3, impressions_sent=10, clicks_sent=2, events=5, duplicates=7)
    assert report.ok
    assert report.accepted("impressions") is None
    assert report.summary() == (
        "accepted 3 articles and 5 events (of 10 impressions and 2 clicks sent); "
        "7 duplicates (already recorded); 0 rejected"
    )


def test_the_ranking_marks_and_lists_unknown_candidates() -> None:
    reply = pb.RankResponse(
        request_id="r1",
        model_name="news",
        model_version="v1",
        candidates=[
            pb.ScoredCandidate(id="a2", score=0.5),
            pb.ScoredCandidate(id="a1", score=-1.5),
            pb.ScoredCandidate(id="a3", score=-1.5),
        ],
        unknown_candidates=["a1", "a3"],
    )
    lines = format_ranking(reply, clicked={"a1"}).splitlines()
    assert lines[2].rstrip().endswith("0.500000")
    assert lines[3].endswith("<- clicked, unknown")
    assert lines[4].endswith("<- unknown")
    assert lines[5] == "unknown to the server (no catalog row): a1, a3"
    assert "unknown" not in format_ranking(pb.RankResponse(candidates=reply.candidates[:1]))
