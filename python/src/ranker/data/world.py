"""A deterministic synthetic news world: the embedded default data set.

Articles have a category and subcategory, a title drawn from a per-topic
vocabulary, a publish time, a hidden quality and an interest curve that decays
with age (breaking stories spike and fade fast). Readers have topic tastes that
drift, a daily rhythm, a device, sessions, and very different activity levels;
some join during the period and start with no history. Each impression shows a
list of fresh articles in the order an editor's noisy view prefers. Clicks are
drawn from a known utility times a position bias, so every candidate's true
utility is known and an oracle ranking can be scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.data.schema import (
    ARTICLE_SCHEMA,
    CATEGORIES,
    CATEGORY_NAMES,
    DEVICES,
    IMPRESSION_SCHEMA,
    SUBCATEGORY_NAMES,
    ClickLog,
)

SUBCATEGORY_CATEGORY = np.array(
    [i for i, subs in enumerate(CATEGORIES.values()) for _ in subs], dtype=np.int64
)
# Hours for interest in a story to fall by a factor of e (an e-folding time),
# per category: news fades fast, features and long reads slowly.
INTEREST_DECAY_HOURS = np.array([12.0, 16.0, 10.0, 30.0, 60.0, 48.0, 40.0, 12.0])

START = datetime(2026, 1, 5)  # a Monday
CANDIDATE_WINDOW_HOURS = 48.0


@dataclass(frozen=True)
class WorldConfig:
    """Size and seed of the world; the defaults are the demo data set (360,000 rows)."""

    seed: int = 7
    n_users: int = 500
    n_articles: int = 1500
    n_impressions: int = 30000
    candidates_per_impression: int = 12
    days: float = 21.0
    # Share of readers who first arrive during the period (cold start).
    new_user_share: float = 0.25

    @property
    def rows(self) -> int:
        return self.n_impressions * self.candidates_per_impression

    def scaled(self, scale: float) -> WorldConfig:
        """`scale` times the impressions and readers (same history per reader);
        the newsroom publishes sqrt(scale) times as many articles."""
        return replace(
            self,
            n_users=max(10, round(self.n_users * scale)),
            n_articles=max(100, round(self.n_articles * math.sqrt(scale))),
            n_impressions=max(100, round(self.n_impressions * scale)),
        )


def _timestamps(hours: npt.NDArray[np.float64]) -> pl.Series:
    offsets = np.asarray(np.round(hours * 3600e6), dtype="timedelta64[us]")
    return pl.Series(np.datetime64(START, "us") + offsets)


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ren",
        "to",
        "sa",
        "vi",
        "dor",
        "pe",
        "lu",
        "ma",
        "quin",
        "ber",
        "al",
        "es",
        "ti",
        "no",
        "gra",
        "fel",
        "un",
        "zo",
        "har",
        "bi",
        "ost",
    ]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables, size=rng.integers(2, 4))))
    return sorted(words)


def _titles(rng: np.random.Generator, subcategory: npt.NDArray[np.int64]) -> list[str]:
    """Titles mostly from the subcategory's words, some from the category's,
    a few common ones, so that text similarity carries topical signal."""
    n_sub, n_cat = len(SUBCATEGORY_NAMES), len(CATEGORY_NAMES)
    vocab = np.array(_vocabulary(rng, 40 * n_sub + 60 * n_cat + 150))
    sub_words = vocab[: 40 * n_sub].reshape(n_sub, 40)
    cat_words = vocab[40 * n_sub : 40 * n_sub + 60 * n_cat].reshape(n_cat, 60)
    common = vocab[40 * n_sub + 60 * n_cat :]
    n = subcategory.size
    picks = np.concatenate(
        [
            sub_words[subcategory[:, None], rng.integers(0, 40, (n, 4))],
            cat_words[SUBCATEGORY_CATEGORY[subcategory][:, None], rng.integers(0, 60, (n, 2))],
            common[rng.integers(0, common.size, (n, 2))],
        ],
        axis=1,
    )
    order = np.argsort(rng.uniform(size=picks.shape), axis=1)
    return [" ".join(row) for row in np.take_along_axis(picks, order, axis=1)]


def _sample_candidates(
    rng: np.random.Generator, start: npt.NDArray[np.int64], end: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.int64]:
    """k distinct article indices from [start, end) per impression (end - start >= k)."""
    width = (end - start)[:, None]
    picks = start[:, None] + (rng.uniform(size=(start.size, k)) * width).astype(np.int64)
    while True:
        ordered = np.sort(picks, axis=1)
        clash = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not clash.any():
            return picks
        rows = np.flatnonzero(clash)
        picks[rows] = start[rows, None] + (rng.uniform(size=(rows.size, k)) * width[rows]).astype(
            np.int64
        )


def generate(config: WorldConfig) -> ClickLog:
    """Build the click log; the same config always gives the same rows."""
    rng = np.random.default_rng(config.seed)
    n_cat, n_sub = len(CATEGORY_NAMES), len(SUBCATEGORY_NAMES)
    horizon = config.days * 24.0
    k = config.candidates_per_impression

    # Articles, published through the period with more in the morning.
    n_art = config.n_articles
    day = rng.uniform(-CANDIDATE_WINDOW_HOURS / 24, config.days, n_art).astype(np.int64)
    hour = np.clip(rng.normal(10.0, 4.0, n_art), 0, 23.99)
    publish = np.sort(day * 24.0 + hour)
    subcategory = rng.integers(0, n_sub, n_art)
    category = SUBCATEGORY_CATEGORY[subcategory]
    quality = rng.beta(2.0, 2.0, n_art)
    breaking = rng.uniform(size=n_art) < 0.04
    long_read = np.isin(category, [4, 5]).astype(np.float64)
    word_count = np.clip(rng.normal(450 + 500 * quality + 500 * long_read, 200), 80, 4000)
    decay_hours = np.where(breaking, 4.0, INTEREST_DECAY_HOURS[category])
    peak_interest = np.where(breaking, 2.5, 1.0)

    # Readers: sparse tastes over subcategories that drift, a daily rhythm,
    # a main device, an activity level; some arrive during the period.
    def tastes() -> npt.NDArray[np.float64]:
        cat = rng.dirichlet(np.full(n_cat, 0.3), config.n_users)
        sub = rng.dirichlet(np.full(3, 0.7), (config.n_users, n_cat)).reshape(config.n_users, -1)
        return np.asarray(cat[:, SUBCATEGORY_CATEGORY] * sub)

    taste_start = tastes()
    taste_end = 0.6 * taste_start + 0.4 * tastes()
    activity = rng.lognormal(0.0, 1.2, config.n_users)
    joins = np.where(
        rng.uniform(size=config.n_users) < config.new_user_share,
        rng.uniform(0.0, horizon * 0.9, config.n_users),
        0.0,
    )
    peak_hour = rng.choice([7.5, 12.5, 20.0], config.n_users, p=[0.4, 0.2, 0.4])
    main_device = rng.choice(len(DEVICES), config.n_users, p=[0.6, 0.3, 0.1])

    # Sessions of one to a few impressions, a few minutes apart.
    n_imp = config.n_impressions
    session_len = 1 + rng.poisson(1.0, n_imp)
    session_len = session_len[np.cumsum(session_len) <= n_imp]
    session_len = np.append(session_len, n_imp - session_len.sum())
    session_len = session_len[session_len > 0]
    n_sessions = session_len.size
    user_of_session = rng.choice(config.n_users, n_sessions, p=activity / activity.sum())
    first_day = np.ceil(joins[user_of_session] / 24.0)
    session_day = np.floor(first_day + rng.uniform(size=n_sessions) * (config.days - first_day))
    session_hour = np.mod(peak_hour[user_of_session] + rng.normal(0.0, 2.0, n_sessions), 24.0)
    session_start = np.maximum(session_day * 24.0 + session_hour, joins[user_of_session])
    session_device = np.where(
        rng.uniform(size=n_sessions) < 0.8,
        main_device[user_of_session],
        rng.integers(0, len(DEVICES), n_sessions),
    )
    session_of = np.repeat(np.arange(n_sessions), session_len)
    step_in_session = np.arange(n_imp) - np.repeat(
        np.cumsum(session_len) - session_len, session_len
    )
    times = np.minimum(
        session_start[session_of] + step_in_session * rng.uniform(0.02, 0.1, n_imp), horizon
    )
    order = np.argsort(times, kind="stable")
    times, session_of = times[order], session_of[order]
    user_of = user_of_session[session_of]
    device_of = session_device[session_of]

    # Candidates: fresh articles, ordered by an editor's noisy view.
    window_end = np.searchsorted(publish, times, side="right")
    window_start = np.minimum(
        np.searchsorted(publish, times - CANDIDATE_WINDOW_HOURS), window_end - k
    )
    window_start = np.maximum(window_start, 0)
    window_end = np.maximum(window_end, window_start + k)
    candidates = _sample_candidates(rng, window_start, window_end, k)
    age = np.maximum(times[:, None] - publish[candidates], 0.0)
    interest = peak_interest[candidates] * np.exp(-age / decay_hours[candidates])
    editorial = quality[candidates] + 0.8 * interest + rng.normal(0.0, 0.4, age.shape)
    position = np.argsort(np.argsort(-editorial, axis=1, kind="stable"), axis=1, kind="stable")

    # The known utility of each candidate for this reader at this moment.
    drift = (times / horizon)[:, None]
    sub_c = subcategory[candidates]
    taste = (1 - drift) * taste_start[user_of[:, None], sub_c] + drift * taste_end[
        user_of[:, None], sub_c
    ]
    hour_of_day = np.mod(times, 24.0)[:, None]
    cat_c = category[candidates]
    morning_news = (hour_of_day >= 6) & (hour_of_day < 10) & np.isin(cat_c, [0, 1, 7])
    evening_sport = (hour_of_day >= 18) & (cat_c == 2)
    long_on_mobile = (device_of[:, None] == 0) & (word_count[candidates] > 1100)
    utility = (
        1.1 * np.log(taste * n_sub + 0.05)
        + 1.6 * quality[candidates]
        + 1.0 * np.log(interest + 0.02)
        + 0.4 * morning_news
        + 0.4 * evening_sport
        - 0.6 * long_on_mobile
        + rng.normal(0.0, 0.3, age.shape)
    )
    examine = 1.0 / (1.0 + position) ** 0.8
    attractiveness = 1.0 / (1.0 + np.exp(-(utility - 0.3)))
    clicked = rng.uniform(size=age.shape) < examine * attractiveness

    articles = pl.DataFrame(
        {
            "article_id": np.arange(n_art, dtype=np.int32),
            "category": [CATEGORY_NAMES[c] for c in category],
            "subcategory": [SUBCATEGORY_NAMES[s] for s in subcategory],
            "title": _titles(rng, subcategory),
            "publish_time": _timestamps(publish),
            "word_count": word_count.astype(np.int32),
            "breaking": breaking,
            "quality": quality.astype(np.float32),
        },
        schema=ARTICLE_SCHEMA,
    )
    impressions = pl.DataFrame(
        {
            "impression_id": np.repeat(np.arange(n_imp, dtype=np.int64), k),
            "session_id": np.repeat(session_of.astype(np.int64), k),
            "user_id": np.repeat(user_of.astype(np.int32), k),
            "time": _timestamps(np.repeat(times, k)),
            "device": pl.Series(np.repeat(device_of, k)).replace_strict(
                dict(enumerate(DEVICES)), return_dtype=pl.Enum(DEVICES)
            ),
            "article_id": candidates.ravel().astype(np.int32),
            "position": position.ravel().astype(np.int16),
            "clicked": clicked.ravel().astype(np.int8),
            "true_utility": utility.ravel().astype(np.float32),
        },
        schema=IMPRESSION_SCHEMA,
    ).sort("impression_id", "position")
    return ClickLog(articles=articles, impressions=impressions)
