"""The feature specification: the one place that lists the model's features
and the constants that define them. Every implementation (the polars pipeline
here, the Go server online) reads these names in this order.
"""

from __future__ import annotations

import json
from typing import Any

from ranker.data.schema import DEVICES

# Features of the reader and the moment: sent once per request and applied to
# every candidate (RankRequest.context_features).
CONTEXT_FEATURES: tuple[str, ...] = (
    "hour_of_day",
    "day_of_week",
    "device_code",
    "user_prior_impressions",
    "user_prior_clicks",
    "user_prior_ctr",
    "user_is_cold_start",
    "user_hours_since_last_visit",
)

# Features of each candidate article for this reader (Candidate.features).
CANDIDATE_FEATURES: tuple[str, ...] = (
    "article_age_hours",
    "article_word_count",
    "article_breaking",
    "article_impressions_1h",
    "article_clicks_1h",
    "article_impressions_24h",
    "article_clicks_24h",
    "article_ctr_24h",
    "article_prior_ctr",
    "user_category_prior_impressions",
    "user_category_ctr",
    "user_subcategory_ctr",
    "title_similarity",
)

# The model's input order. Changing it changes the feature hash, and the Go
# server refuses a model whose hash does not match its metadata.
FEATURE_NAMES: tuple[str, ...] = CONTEXT_FEATURES + CANDIDATE_FEATURES

# `device_code`: the device's index in the log schema's device list.
DEVICE_CODES: dict[str, int] = {device: i for i, device in enumerate(DEVICES)}

# Beta prior (clicks, impressions) that shrinks click-through rates with
# little evidence towards a typical value instead of a noisy 0/0.
CTR_PRIOR: tuple[float, float] = (1.0, 10.0)
# Title vectors: signed hashing of words into this many dimensions; the
# reader's profile is the sum of the last RECENT_READS clicked titles.
TITLE_DIMENSIONS = 64
RECENT_READS = 10
# Windows of the article popularity features (article_*_1h, article_*_24h).
ARTICLE_WINDOWS_HOURS: tuple[int, int] = (1, 24)

# Semantic features, from a pretrained text-embedding model's vectors of the
# article titles (ranker.embeddings). A model trained with `--semantic` takes
# FEATURE_NAMES + SEMANTIC_FEATURES; the server computes them when a model
# names them. All three describe the candidate (they are NaN for an article
# without an embedding).
SEMANTIC_FEATURES: tuple[str, ...] = (
    # Cosine between the candidate and the reader's last RECENT_READS clicks.
    "semantic_similarity_recent",
    # Cosine between the candidate and the reader's last LONG_TERM_READS clicks.
    "semantic_similarity_longterm",
    # Smoothed CTR (CTR_PRIOR) of the SEMANTIC_NEIGHBOURS articles most like
    # the candidate among those published in the NEIGHBOUR_WINDOW_HOURS before
    # it, pooled over their impressions before the page view: a content-based
    # prior for stories nobody has seen yet.
    "article_semantic_prior_ctr",
)
# Embeddings are stored quantised, round-half-even(x * EMBEDDING_SCALE) as
# int16 (a unit vector's components fit with room to spare): profiles are sums
# of integers and dot products integer, exact in any order, so the Go server's
# online values equal the training rows bit for bit. A cosine is then
# float64(dot) / sqrt(float64(|p|^2) * float64(|v|^2)), rounded to float32.
EMBEDDING_SCALE = 16384
LONG_TERM_READS = 100
SEMANTIC_NEIGHBOURS = 10
NEIGHBOUR_WINDOW_HOURS = 168


def model_features(*, semantic: bool = False) -> tuple[str, ...]:
    """The model's input order: FEATURE_NAMES, then SEMANTIC_FEATURES when
    the model is trained with them."""
    return FEATURE_NAMES + SEMANTIC_FEATURES if semantic else FEATURE_NAMES


# The columns of a feature table besides the features: what identifies a row
# and what it is labelled with.
LABEL_COLUMNS: tuple[str, ...] = (
    "impression_id",
    "user_id",
    "article_id",
    "time",
    "position",
    "clicked",
)

# Columns a log may carry that a feature table keeps beside its rows, never
# as features: a simulated world's true utility, and what a served log says
# about how each page was chosen (the request, the serving model's score,
# the logging policy's propensity of the item at its place, whether the
# page was explored).
LOGGED_COLUMNS: tuple[str, ...] = (
    "true_utility",
    "request_id",
    "score",
    "propensity",
    "explored",
)


def spec_document() -> dict[str, Any]:
    """The specification as JSON for the other implementations: the Go server
    embeds it (go/internal/features/spec.json, written by `make proto` and
    checked for drift by `make proto-check`)."""
    return {
        "feature_names": list(FEATURE_NAMES),
        "context_features": list(CONTEXT_FEATURES),
        "candidate_features": list(CANDIDATE_FEATURES),
        "devices": list(DEVICES),
        "ctr_prior": {"clicks": CTR_PRIOR[0], "impressions": CTR_PRIOR[1]},
        "title_dimensions": TITLE_DIMENSIONS,
        "recent_reads": RECENT_READS,
        "article_windows_hours": list(ARTICLE_WINDOWS_HOURS),
        "semantic_features": list(SEMANTIC_FEATURES),
        "embedding_scale": EMBEDDING_SCALE,
        "long_term_reads": LONG_TERM_READS,
        "semantic_neighbours": SEMANTIC_NEIGHBOURS,
        "neighbour_window_hours": NEIGHBOUR_WINDOW_HOURS,
    }


def spec_json() -> str:
    """spec_document() as the text of go/internal/features/spec.json."""
    return json.dumps(spec_document(), indent=2) + "\n"
