"""Semantic features end to end: titles embedded by the real pretrained model,
a model trained with `ranker train --semantic`, served by the Go server, whose
online semantic features equal the training rows on replay, with the embedded
state and with Redis."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.embeddings.store import embeddings_for
from ranker.features.spec import SEMANTIC_FEATURES, model_features
from ranker.serving.client import RankerClient
from ranker.serving.history import catalog_batches
from ranker.serving.process import ServerProcess
from ranker.serving.replay import replay
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import RedisServer

pytestmark = pytest.mark.e2e  # the Go server binary, and the real embedding model

# A world no other test uses; readers with enough clicks for both profiles.
WORLD = WorldConfig(seed=41).scaled(0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The world's click log (with article_embeddings.parquet) and the
    version `ranker train --semantic` exported from it."""
    root = tmp_path_factory.mktemp("semantic")
    data = root / "data"
    generate(WORLD).write(data)
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--models",
            str(root / "models"),
            "--name",
            "semantic",
            "--version",
            "v1",
            "--semantic",
            "--embedding-cache",
            str(root / "cache"),
            "--no-gate",  # a world this small need not beat the baselines by the margin
            "--no-tracking",
            "--quiet",
        ]
    )
    assert code == 0
    return data, root / "models" / "semantic" / "v1"


@pytest.fixture
def served(
    server_binary: Path, ort_lib: Path, trained: tuple[Path, Path], tmp_path: Path
) -> Iterator[ServerProcess]:
    _, version = trained
    with ServerProcess(
        server_binary, version, ort_lib=ort_lib, extra_args=[f"--state-dir={tmp_path}"]
    ) as running:
        yield running


def test_the_model_takes_the_semantic_features(
    served: ServerProcess, trained: tuple[Path, Path]
) -> None:
    with RankerClient(served.target) as client:
        names = tuple(client.model_info().feature_names)
    assert names == model_features(semantic=True)
    report = (trained[1] / "report" / "evaluation.md").read_text()
    assert "## What the ablated features add" in report


def test_replay_serves_the_semantic_features_of_the_training_rows(
    served: ServerProcess, trained: tuple[Path, Path]
) -> None:
    data, _ = trained
    report = replay(data, served.target)
    assert report.ok, report.text()
    assert report.rows == ClickLog.read(data).impressions.height
    # Every semantic feature was compared, and was exact.
    for name in SEMANTIC_FEATURES:
        assert report.largest[name] == 0.0, name


def test_replay_through_redis_gives_the_same_semantic_features(
    server_binary: Path, ort_lib: Path, trained: tuple[Path, Path]
) -> None:
    data, version = trained
    redis = RedisServer()
    try:
        with ServerProcess(
            server_binary,
            version,
            ort_lib=ort_lib,
            # A loaded CI machine may be slower than the production bound.
            extra_args=[*redis.server_args, "--state-timeout=10s"],
        ) as server:
            report = replay(data, server.target)
    finally:
        redis.stop()
    assert report.ok, report.text()
    assert set(SEMANTIC_FEATURES) <= set(report.largest)


def test_an_article_without_an_embedding_has_missing_semantic_features(
    served: ServerProcess, trained: tuple[Path, Path]
) -> None:
    data, _ = trained
    log = ClickLog.read(data)
    embeddings = embeddings_for(data, log.articles)
    with RankerClient(served.target) as client:
        for batch in catalog_batches(log.articles, embeddings):
            assert not client.upsert_articles(batch).rejected
        newest = log.articles.sort("publish_time").row(-1, named=True)
        bare = pb.Article(id="no-vector", category="politics", subcategory="elections")
        bare.title, bare.word_count = "Ohne Vektor", 100
        bare.publish_time.FromDatetime(newest["publish_time"])
        assert not client.upsert_articles([bare]).rejected
        reply = client.rank(
            "1",
            ["no-vector", str(newest["article_id"])],
            event_time=newest["publish_time"],
            return_features=True,
        )
    names = list(reply.feature_names)
    rows = {c.id: dict(zip(names, c.features, strict=True)) for c in reply.candidates}
    for name in SEMANTIC_FEATURES:
        assert math.isnan(rows["no-vector"][name]), name
    # The article with a vector has a content prior from its neighbours.
    assert not np.isnan(rows[str(newest["article_id"])]["article_semantic_prior_ctr"])


def test_embeddings_of_the_wrong_length_are_refused_naming_the_field(
    served: ServerProcess,
) -> None:
    article = pb.Article(id="short", category="politics", subcategory="elections", title="x")
    article.publish_time.GetCurrentTime()
    article.embedding.extend([1.0, 0.0, 0.0])
    with RankerClient(served.target) as client:
        reply = client.upsert_articles([article])
    assert reply.accepted == 0
    (rejection,) = reply.rejected
    assert "embedding" in rejection.field
    assert "512" in rejection.reason


def test_simulated_readers_are_served_with_the_semantic_features(
    served: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ranker simulate` sees that the model names semantic features and
    publishes the world's articles with their embeddings."""
    out = tmp_path / "sim"
    args = ["simulate", "--server", served.target, "--readers", "60", "--days", "1"]
    assert main([*args, "--seed", "8", "--out", str(out)]) == 0
    assert "page views of" in capsys.readouterr().out
    with RankerClient(served.target) as client:
        info = client.model_info()
        reply = client.rank("0", ["0", "1", "2"], return_features=True)
    names = list(info.feature_names)
    prior = [c.features[names.index("article_semantic_prior_ctr")] for c in reply.candidates]
    # The world's first articles were upserted with vectors; a later one has
    # earlier neighbours, so at least one prior is a number, not missing.
    assert any(not math.isnan(p) for p in prior), prior
