"""The semantic features against a brute-force reference written from their
definition (python/src/ranker/features/spec.py), and what the embeddings store
promises: one model call per distinct title, edits re-embedded, bad files
refused by name."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.embeddings.store import (
    EmbeddingRun,
    embed_articles,
    embeddings_for,
    read_embeddings,
    write_embeddings,
)
from ranker.features.build import build_features, features_for_impression
from ranker.features.semantic import quantise
from ranker.features.spec import (
    CTR_PRIOR,
    FEATURE_NAMES,
    LONG_TERM_READS,
    NEIGHBOUR_WINDOW_HOURS,
    RECENT_READS,
    SEMANTIC_FEATURES,
    SEMANTIC_NEIGHBOURS,
    model_features,
)

# Small enough for the pure-Python reference, large enough that readers
# have more than LONG_TERM_READS clicks and windows hold more than
# SEMANTIC_NEIGHBOURS articles.
WORLD = WorldConfig(seed=23, n_users=40, n_articles=300, n_impressions=3000, days=10.0)
DIMENSIONS = 24


def random_embeddings(articles: pl.DataFrame, seed: int, missing: float) -> pl.DataFrame:
    """Unit vectors for all but a `missing` share of the articles: the
    features' arithmetic does not depend on where vectors come from."""
    rng = np.random.default_rng(seed)
    ids = articles["article_id"].to_numpy()
    ids = ids[rng.uniform(size=ids.size) >= missing]
    vectors = rng.normal(size=(ids.size, DIMENSIONS))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pl.DataFrame(
        {
            "article_id": pl.Series(ids, dtype=pl.Int32),
            "embedding": pl.Series(
                vectors.astype(np.float32), dtype=pl.Array(pl.Float32, DIMENSIONS)
            ),
        }
    )


@pytest.fixture(scope="module")
def world() -> ClickLog:
    return generate(WORLD)


@pytest.fixture(scope="module")
def embeddings(world: ClickLog) -> pl.DataFrame:
    return random_embeddings(world.articles, seed=5, missing=0.1)


@pytest.fixture(scope="module")
def table(world: ClickLog, embeddings: pl.DataFrame) -> pl.DataFrame:
    return build_features(world.impressions.lazy(), world.articles.lazy(), embeddings)


def _cosine(p: Sequence[int], v: Sequence[int]) -> float:
    """The definition, with Python's exact integers and float64 operations."""
    dot = sum(a * b for a, b in zip(p, v, strict=True))
    pp, vv = sum(a * a for a in p), sum(b * b for b in v)
    if pp == 0 or vv == 0:
        return math.nan
    return float(np.float32(float(dot) / math.sqrt(float(pp) * float(vv))))


def _reference(world: ClickLog, embeddings: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """SEMANTIC_FEATURES of `rows`, one loop iteration per row, from the definition."""
    q = quantise(np.asarray(embeddings["embedding"].to_numpy()).reshape(embeddings.height, -1))
    vector = {
        int(i): [int(x) for x in row]
        for i, row in zip(embeddings["article_id"].to_list(), q, strict=True)
    }
    zero = [0] * DIMENSIONS
    publish = dict(
        zip(
            world.articles["article_id"].to_list(),
            world.articles["publish_time"].to_list(),
            strict=True,
        )
    )
    log = world.impressions
    clicks = log.filter(pl.col("clicked") == 1).sort("user_id", "time", "article_id")
    clicks_of: dict[int, list[tuple[object, int]]] = {}
    for user, t, article in clicks.select("user_id", "time", "article_id").iter_rows():
        clicks_of.setdefault(user, []).append((t, article))
    shown = log.select("article_id", "time", "clicked")

    def neighbours(c: int) -> list[int]:
        if c not in vector or not any(vector[c]):
            return []
        p, window = publish[c], timedelta(hours=NEIGHBOUR_WINDOW_HOURS)
        scored = []
        for a, v in vector.items():
            if a != c and any(v) and p - window <= publish[a] < p:
                dot = sum(x * y for x, y in zip(v, vector[c], strict=True))
                norm = float(sum(x * x for x in v)) * float(sum(x * x for x in vector[c]))
                scored.append((-float(np.float32(float(dot) / math.sqrt(norm))), a))
        return [a for _, a in sorted(scored)[:SEMANTIC_NEIGHBOURS]]

    nearest: dict[int, list[int]] = {}
    out: dict[str, list[float]] = {n: [] for n in SEMANTIC_FEATURES}
    for user, t, c in rows.select("user_id", "time", "article_id").iter_rows():
        before = [a for when, a in clicks_of.get(user, []) if when < t]
        candidate = vector.get(c, zero)
        for name, depth in (
            ("semantic_similarity_recent", RECENT_READS),
            ("semantic_similarity_longterm", LONG_TERM_READS),
        ):
            profile = [0] * DIMENSIONS
            for a in before[-depth:]:
                profile = [x + y for x, y in zip(profile, vector.get(a, zero), strict=True)]
            out[name].append(_cosine(profile, candidate))
        if c not in nearest:
            nearest[c] = neighbours(c)
        if not nearest[c]:
            out["article_semantic_prior_ctr"].append(math.nan)
            continue
        past = shown.filter(pl.col("article_id").is_in(nearest[c]) & (pl.col("time") < t))
        shows, clicked = past.height, int(past["clicked"].sum())
        prior_clicks, prior_shows = CTR_PRIOR
        out["article_semantic_prior_ctr"].append(
            float(np.float32((clicked + prior_clicks) / (shows + prior_shows)))
        )
    return pl.DataFrame({n: pl.Series(v, dtype=pl.Float32) for n, v in out.items()})


def test_quantise_rounds_half_to_even_and_clamps() -> None:
    scale = 16384.0
    got = quantise(np.array([0.5 / scale, 1.5 / scale, -2.5 / scale, 1.0, 2.0, -2.0, 3e-5]))
    assert got.tolist() == [0, 2, -2, 16384, 32767, -32767, 0]
    assert got.dtype == np.int16


def test_semantic_features_follow_their_definition(
    world: ClickLog, embeddings: pl.DataFrame, table: pl.DataFrame
) -> None:
    # Rows spread over the period: early readers with no clicks, late ones
    # with more than LONG_TERM_READS; every value must be equal, NaN to NaN.
    picked = table.gather(np.linspace(0, table.height - 1, 400).astype(np.int64))
    expected = _reference(world, embeddings, picked)
    assert_frame_equal(picked.select(SEMANTIC_FEATURES), expected)
    # The sample covers every branch of the definition.
    longterm = picked["semantic_similarity_longterm"]
    assert longterm.is_nan().sum() > 0
    assert (~longterm.is_nan()).sum() > 100
    assert (picked["article_semantic_prior_ctr"].is_nan()).sum() > 0
    clicks = world.impressions.filter(pl.col("clicked") == 1).group_by("user_id").len()
    assert clicks["len"].max() > LONG_TERM_READS  # type: ignore[operator]
    recent, longer = picked["semantic_similarity_recent"], longterm
    assert (recent.fill_nan(0) != longer.fill_nan(0)).sum() > 100


def test_semantic_columns_follow_the_spec_order(table: pl.DataFrame) -> None:
    assert tuple(table.columns[-len(model_features(semantic=True)) :]) == model_features(
        semantic=True
    )
    assert all(table.schema[n] == pl.Float32 for n in SEMANTIC_FEATURES)
    plain = model_features()
    assert plain == FEATURE_NAMES
    assert not set(plain) & set(SEMANTIC_FEATURES)


def test_semantic_features_see_only_the_past(world: ClickLog, embeddings: pl.DataFrame) -> None:
    """A new impression's semantic features from the history before it equal
    its training row, and flipping every later click changes nothing."""
    log = world.impressions
    ids = log["impression_id"].unique().sort()
    table = build_features(log.lazy(), world.articles.lazy(), embeddings)
    for impression_id in ids.gather(np.linspace(ids.len() // 2, ids.len() - 1, 4).astype(int)):
        shown = log.filter(pl.col("impression_id") == impression_id).sort("position")
        first = shown.row(0, named=True)
        future_flipped = log.filter(pl.col("time") >= first["time"]).with_columns(
            (1 - pl.col("clicked")).cast(pl.Int8).alias("clicked")
        )
        history = pl.concat([log.filter(pl.col("time") < first["time"]), future_flipped])
        served = features_for_impression(
            history.filter(pl.col("impression_id") != impression_id).lazy(),
            world.articles.lazy(),
            user_id=first["user_id"],
            time=first["time"],
            device=first["device"],
            candidate_ids=shown["article_id"].to_list(),
            embeddings=embeddings,
        )
        trained = table.filter(pl.col("impression_id") == impression_id).sort("position")
        assert_frame_equal(served.select(SEMANTIC_FEATURES), trained.select(SEMANTIC_FEATURES))


def test_articles_without_embeddings_are_missing_not_zero(
    world: ClickLog, embeddings: pl.DataFrame, table: pl.DataFrame
) -> None:
    lacking = set(world.articles["article_id"].to_list()) - set(embeddings["article_id"].to_list())
    rows = table.filter(pl.col("article_id").is_in(list(lacking)))
    assert rows.height > 0
    for name in SEMANTIC_FEATURES:
        assert rows[name].is_nan().all(), name


class CountingEncoder:
    """A deterministic stand-in model that counts the titles it embeds (the
    real model is exercised in test_real_model_*)."""

    name = "counting-encoder-v1"
    dimensions = 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.seen += list(texts)
        out = np.array(
            [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        )
        unit: npt.NDArray[np.float32] = (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(
            np.float32
        )
        return unit


def _articles(titles: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"article_id": pl.Series(range(len(titles)), dtype=pl.Int32), "title": titles}
    )


def test_each_title_is_embedded_once_and_edits_again(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    titles = ["Bundestag stimmt ab", "Neuer Rekord im Marathon", "Bundestag stimmt ab", ""]
    first = embed_articles(_articles(titles), encoder, cache_dir=tmp_path, batch_size=2)
    # The duplicate title is embedded once; the empty one has no embedding.
    assert sorted(encoder.seen) == sorted(set(titles) - {""})
    assert first.frame["article_id"].to_list() == [0, 1, 2]
    assert first.embedded == 2

    encoder.seen.clear()
    edited = ["Bundestag stimmt ab", "Neuer Weltrekord im Marathon", "Bundestag stimmt ab", ""]
    second = embed_articles(_articles(edited), encoder, cache_dir=tmp_path)
    assert encoder.seen == ["Neuer Weltrekord im Marathon"]
    assert (second.embedded, second.cached) == (1, 1)
    unchanged = first.frame.filter(pl.col("article_id") == 0)
    assert_frame_equal(unchanged, second.frame.filter(pl.col("article_id") == 0))


def test_a_torn_cache_is_recomputed_not_trusted(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    embed_articles(_articles(["Eins", "Zwei"]), encoder, cache_dir=tmp_path)
    (cache,) = tmp_path.iterdir()
    cache.write_bytes(cache.read_bytes()[:100])
    encoder.seen.clear()
    run = embed_articles(_articles(["Eins", "Zwei"]), encoder, cache_dir=tmp_path)
    assert sorted(encoder.seen) == ["Eins", "Zwei"]
    assert run.frame.height == 2


def test_embeddings_file_round_trips_and_bad_files_are_named(tmp_path: Path) -> None:
    run = embed_articles(_articles(["Eins", "Zwei"]), CountingEncoder())
    path = write_embeddings(run, tmp_path)
    frame, model = read_embeddings(path)
    assert model == CountingEncoder.name
    assert_frame_equal(frame, run.frame)

    bad = tmp_path / "bad.parquet"
    doubled = run.frame.with_columns(pl.col("embedding") * 2)
    write_embeddings(EmbeddingRun(doubled, "m", 2, 2, 1.0), tmp_path)
    with pytest.raises(ValueError, match="unit vectors"):
        read_embeddings(path)
    pl.DataFrame({"article_id": [1]}).write_parquet(bad)
    with pytest.raises(ValueError, match=r"bad\.parquet"):
        read_embeddings(bad)
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: not a readable"):
        read_embeddings(bad)


def test_embeddings_must_be_the_models_and_of_the_current_titles(tmp_path: Path) -> None:
    articles = _articles(["Eins", "Zwei", "Drei"])
    write_embeddings(embed_articles(articles, CountingEncoder()), tmp_path)
    frame = embeddings_for(tmp_path, articles, model=CountingEncoder.name, dimensions=8)
    assert frame.height == 3
    with pytest.raises(ValueError, match=r"vectors of 'counting-encoder-v1', not 'other'"):
        embeddings_for(tmp_path, articles, model="other")
    with pytest.raises(ValueError, match="8 components, the model expects 512"):
        embeddings_for(tmp_path, articles, dimensions=512)
    edited = _articles(["Eins", "Zwei (aktualisiert)", "Drei"])
    with pytest.raises(ValueError, match="1 articles' titles differ"):
        embeddings_for(tmp_path, edited)
    with pytest.raises(ValueError, match="missing"):
        embeddings_for(tmp_path / "elsewhere", articles)


def test_cached_vectors_that_are_not_unit_vectors_are_embedded_again(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    embed_articles(_articles(["Eins", "Zwei"]), encoder, cache_dir=tmp_path)
    (cache,) = tmp_path.iterdir()
    poisoned = pl.read_parquet(cache).with_columns(pl.col("embedding") * 1000)
    poisoned.write_parquet(cache)
    encoder.seen.clear()
    run = embed_articles(_articles(["Eins", "Zwei"]), encoder, cache_dir=tmp_path)
    assert sorted(encoder.seen) == ["Eins", "Zwei"]
    assert run.cached == 0


def test_an_unwritable_cache_is_skipped_and_no_titles_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run = embed_articles(_articles(["Eins"]), CountingEncoder(), cache_dir=blocker / "cache")
    assert run.frame.height == 1
    with pytest.raises(ValueError, match="no article has a title"):
        embed_articles(_articles(["", "  "]), CountingEncoder())


def test_the_embeddings_file_is_as_readable_as_other_data(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_embeddings(embed_articles(_articles(["Eins"]), CountingEncoder()), tmp_path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_article_missing_from_the_catalog_has_no_semantic_features(
    world: ClickLog, embeddings: pl.DataFrame
) -> None:
    """Without the catalog's largest id (and its embedding), the log still
    builds: that article's semantic features are missing, never another's
    vector and never an IndexError."""
    largest = int(world.articles["article_id"].max())  # type: ignore[arg-type]
    articles = world.articles.filter(pl.col("article_id") != largest)
    table = build_features(
        world.impressions.lazy(),
        articles.lazy(),
        embeddings.filter(pl.col("article_id") != largest),
    )
    gone = table.filter(pl.col("article_id") == largest)
    assert gone.height > 0, "the world never shows its newest article: the test tests nothing"
    for name in ("semantic_similarity_recent", "semantic_similarity_longterm"):
        assert gone[name].is_nan().all(), name
