"""A deterministic synthetic news world: the embedded default data set.

Articles have a category and subcategory, a hidden topic within the
subcategory (4 each, `ranker.data.headlines`), a German headline that says the
topic in one of many ways, a publish time, a hidden quality and an interest
curve that decays with age (breaking stories spike and fade fast). Some topics
are hotter than others. Readers have tastes over subcategories and over the
topics within each that drift, a daily rhythm, a device, sessions, and very
different activity levels; some join during the period and start with no
history. Each impression shows a list of fresh articles in the order an
editor's noisy view prefers. Clicks are drawn from a known utility times a
position bias, so every candidate's true utility is known and an oracle
ranking can be scored.

`NewsWorld` holds all of it, drawn once from the seed: `generate` writes the
page views as the editor orders them, and `ranker.simulation` lets a ranking
server order the same page views and asks the same world what readers click.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.data.headlines import TEMPLATES, TOPIC_NAMES, TOPIC_PHRASES, TOPICS_PER_SUBCATEGORY
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

# Topic t belongs to subcategory t // TOPICS_PER_SUBCATEGORY (headlines.TOPIC_NAMES).
TOPIC_SUBCATEGORY = np.arange(len(TOPIC_NAMES), dtype=np.int64) // TOPICS_PER_SUBCATEGORY

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

    @staticmethod
    def population(readers: int, days: float, seed: int) -> WorldConfig:
        """`readers` readers over `days` days, as active per reader and with
        as many new articles a day as the default world."""
        default = WorldConfig()
        page_views_per_reader_day = default.n_impressions / (default.n_users * default.days)
        articles_per_day = default.n_articles / (default.days + CANDIDATE_WINDOW_HOURS / 24)
        return WorldConfig(
            seed=seed,
            n_users=readers,
            n_articles=max(100, round(articles_per_day * (days + CANDIDATE_WINDOW_HOURS / 24))),
            n_impressions=max(1, round(page_views_per_reader_day * readers * days)),
            days=days,
        )


def timestamps(hours: npt.NDArray[np.float64], start: datetime = START) -> pl.Series:
    """Hours since `start` as microsecond datetimes (naive, read as UTC)."""
    offsets = np.asarray(np.round(hours * 3600e6), dtype="timedelta64[us]")
    return pl.Series(np.datetime64(start, "us") + offsets)


def _titles(rng: np.random.Generator, topic: npt.NDArray[np.int64]) -> list[str]:
    """A German headline per article: one of its topic's key phrases in one
    of the topic-neutral templates. Phrases of one topic say the same thing
    in different words, so titles on a topic read alike to a language model
    but share few exact words."""
    n = topic.size
    sizes = np.array([len(p) for p in TOPIC_PHRASES])
    phrase = (rng.uniform(size=n) * sizes[topic]).astype(np.int64)
    template = rng.integers(0, len(TEMPLATES), n)
    return [
        TEMPLATES[m].format(TOPIC_PHRASES[t][i])
        for t, i, m in zip(topic.tolist(), phrase.tolist(), template.tolist(), strict=True)
    ]


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


# The seed's second stream (`NewsWorld.draw`): topics, tastes for them, titles.
TOPIC_STREAM = 1
# Readers' taste over the topics of a subcategory: Dirichlet with this
# concentration (below 1: most readers follow one or two of the four).
TOPIC_TASTE_CONCENTRATION = 0.5
# Weight of log(4 * topic taste + 0.1) in the utility.
TOPIC_TASTE_WEIGHT = 0.5
# Standard deviation of a topic's appeal to all readers, added to the utility.
TOPIC_APPEAL_SD = 0.35

# Position bias: the chance a reader examines the slot at `position` (0 first)
# falls as 1 / (1 + position) ** POSITION_BIAS_POWER.
POSITION_BIAS_POWER = 0.8
# Utility at which an examined article is clicked half the time.
CLICK_MIDPOINT = 0.3


def examine_probability(position: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The position bias: how likely the reader looks at each slot (0 first)."""
    return np.asarray(1.0 / (1.0 + position) ** POSITION_BIAS_POWER, dtype=np.float64)


def click_probability(
    utility: npt.NDArray[np.float64], position: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Examined, then found attractive: the click model of every page view,
    whoever ordered the page."""
    attractiveness = 1.0 / (1.0 + np.exp(-(utility - CLICK_MIDPOINT)))
    return np.asarray(examine_probability(position) * attractiveness, dtype=np.float64)


@dataclass(frozen=True)
class Catalog:
    """The newsroom's articles, indexed by article id (0, 1, ...) in publish
    order; `quality`, `topic` (an index into headlines.TOPIC_NAMES, within
    the article's subcategory), the topics' appeal, the story's decay and
    peak are hidden from the ranker, which sees a topic only through the
    title's words."""

    publish_hours: npt.NDArray[np.float64]  # since the world's start
    subcategory: npt.NDArray[np.int64]
    quality: npt.NDArray[np.float64]
    breaking: npt.NDArray[np.bool_]
    word_count: npt.NDArray[np.float64]
    topic: npt.NDArray[np.int64]
    # Per topic (not per article): how much every reader cares about it now.
    topic_appeal: npt.NDArray[np.float64]
    titles: list[str]

    @property
    def category(self) -> npt.NDArray[np.int64]:
        return SUBCATEGORY_CATEGORY[self.subcategory]

    def interest(
        self, candidates: npt.NDArray[np.int64], hours: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """How much readers care about each candidate at `hours` (one row per
        page view): a peak at publication that decays, fast for breaking news."""
        category = self.category[candidates]
        breaking = self.breaking[candidates]
        decay_hours = np.where(breaking, 4.0, INTEREST_DECAY_HOURS[category])
        peak_interest = np.where(breaking, 2.5, 1.0)
        age = np.maximum(hours[:, None] - self.publish_hours[candidates], 0.0)
        return np.asarray(peak_interest * np.exp(-age / decay_hours), dtype=np.float64)

    def frame(self, start: datetime = START) -> pl.DataFrame:
        """The catalog in the click log's schema: what the ranker may see, and
        the world's hidden `quality` and `topic` (see ARTICLE_SCHEMA), which
        are no features."""
        return pl.DataFrame(
            {
                "article_id": np.arange(self.publish_hours.size, dtype=np.int32),
                "category": [CATEGORY_NAMES[c] for c in self.category],
                "subcategory": [SUBCATEGORY_NAMES[s] for s in self.subcategory],
                "title": self.titles,
                "publish_time": timestamps(self.publish_hours, start),
                "word_count": self.word_count.astype(np.int32),
                "breaking": self.breaking,
                "quality": self.quality.astype(np.float32),
                "topic": [TOPIC_NAMES[t] for t in self.topic],
            },
            schema=ARTICLE_SCHEMA,
        )


@dataclass(frozen=True)
class Readers:
    """Hidden tastes over subcategories that drift from `taste_start` to
    `taste_end` over the period (one row per reader, summing to 1), and
    likewise over the topics of each subcategory (`topic_taste_*`, one column
    per topic; the TOPICS_PER_SUBCATEGORY columns of each subcategory sum to
    1), an hour of day they like to read, a main device, an activity level,
    and the hour they join (0 for most)."""

    taste_start: npt.NDArray[np.float64]
    taste_end: npt.NDArray[np.float64]
    topic_taste_start: npt.NDArray[np.float64]
    topic_taste_end: npt.NDArray[np.float64]
    activity: npt.NDArray[np.float64]
    joins: npt.NDArray[np.float64]
    peak_hour: npt.NDArray[np.float64]
    main_device: npt.NDArray[np.int64]


@dataclass(frozen=True)
class PageViews:
    """Who reads when, and what is fresh for them: one row per page view in
    time order, `candidates` (article ids, one row of k per page view) in no
    particular order. Per candidate slot: `utility` (the true utility,
    including its per-moment noise), `editorial` (an editor's noisy view,
    how the embedded log orders the page) and `click_draw` (the uniform draw
    a click is decided by, whatever position the slot is shown at)."""

    hours: npt.NDArray[np.float64]
    session: npt.NDArray[np.int64]
    user: npt.NDArray[np.int64]
    device: npt.NDArray[np.int64]
    candidates: npt.NDArray[np.int64]
    editorial: npt.NDArray[np.float64]
    utility: npt.NDArray[np.float64]
    click_draw: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.hours.size)


@dataclass(frozen=True)
class NewsWorld:
    """The world's one model of readers and articles: who reads when, what
    is fresh, the true utility of each candidate and the clicks it draws at
    a position. `generate` orders each page as an editor would; a simulator
    lets a ranking server order it and asks `clicks` what readers do."""

    config: WorldConfig
    catalog: Catalog
    readers: Readers
    page_views: PageViews

    @staticmethod
    def draw(config: WorldConfig) -> NewsWorld:
        """Everything random in the world, from `config.seed`: the same config
        always gives the same world. Topics, the tastes for them and the
        titles come from their own stream of the seed, so that the topics can
        change without changing anything else (articles, readers, page views,
        the editor's order, noise, click draws)."""
        rng = np.random.default_rng(config.seed)
        topic_rng = np.random.default_rng([config.seed, TOPIC_STREAM])
        n_cat, n_sub = len(CATEGORY_NAMES), len(SUBCATEGORY_NAMES)
        horizon = config.days * 24.0
        k = config.candidates_per_impression

        # Articles, published through the period with more in the morning.
        n_art = config.n_articles
        day = rng.uniform(-CANDIDATE_WINDOW_HOURS / 24, config.days, n_art).astype(np.int64)
        hour = np.clip(rng.normal(10.0, 4.0, n_art), 0, 23.99)
        publish = np.sort(day * 24.0 + hour)
        subcategory = rng.integers(0, n_sub, n_art)
        quality = rng.beta(2.0, 2.0, n_art)
        breaking = rng.uniform(size=n_art) < 0.04
        long_read = np.isin(SUBCATEGORY_CATEGORY[subcategory], [4, 5]).astype(np.float64)
        word_count = np.clip(rng.normal(450 + 500 * quality + 500 * long_read, 200), 80, 4000)

        # Readers: sparse tastes over subcategories that drift, a daily rhythm,
        # a main device, an activity level; some arrive during the period.
        def tastes() -> npt.NDArray[np.float64]:
            cat = rng.dirichlet(np.full(n_cat, 0.3), config.n_users)
            sub = rng.dirichlet(np.full(3, 0.7), (config.n_users, n_cat)).reshape(
                config.n_users, -1
            )
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

        # Topics: each article's, uniform within its subcategory; each
        # topic's appeal to everyone (a few are hot, a few nobody wants);
        # each reader's taste over the topics of every subcategory, peaked on
        # one or two and drifting like the subcategory taste.
        n_topics = len(TOPIC_NAMES)
        topic = subcategory * TOPICS_PER_SUBCATEGORY + topic_rng.integers(
            0, TOPICS_PER_SUBCATEGORY, n_art
        )
        topic_appeal = topic_rng.normal(0.0, TOPIC_APPEAL_SD, n_topics)

        def topic_tastes() -> npt.NDArray[np.float64]:
            within = topic_rng.dirichlet(
                np.full(TOPICS_PER_SUBCATEGORY, TOPIC_TASTE_CONCENTRATION), (config.n_users, n_sub)
            )
            return np.asarray(within.reshape(config.n_users, n_topics))

        topic_taste_start = topic_tastes()
        readers = Readers(
            taste_start=taste_start,
            taste_end=taste_end,
            topic_taste_start=topic_taste_start,
            topic_taste_end=0.6 * topic_taste_start + 0.4 * topic_tastes(),
            activity=activity,
            joins=joins,
            peak_hour=peak_hour,
            main_device=main_device,
        )

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
        session_hour = np.mod(
            readers.peak_hour[user_of_session] + rng.normal(0.0, 2.0, n_sessions), 24.0
        )
        session_start = np.maximum(session_day * 24.0 + session_hour, joins[user_of_session])
        session_device = np.where(
            rng.uniform(size=n_sessions) < 0.8,
            readers.main_device[user_of_session],
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

        # Candidates: fresh articles.
        window_end = np.searchsorted(publish, times, side="right")
        window_start = np.minimum(
            np.searchsorted(publish, times - CANDIDATE_WINDOW_HOURS), window_end - k
        )
        window_start = np.maximum(window_start, 0)
        window_end = np.maximum(window_end, window_start + k)
        candidates = _sample_candidates(rng, window_start, window_end, k)
        # The catalog without its titles, which are drawn last.
        untitled = Catalog(
            publish, subcategory, quality, breaking, word_count, topic, topic_appeal, []
        )
        interest = untitled.interest(candidates, times)
        editorial = quality[candidates] + 0.8 * interest + rng.normal(0.0, 0.4, interest.shape)
        utility = _utility(untitled, readers, horizon, user_of, device_of, times, candidates)
        utility = utility + rng.normal(0.0, 0.3, interest.shape)
        click_draw = rng.uniform(size=interest.shape)
        catalog = replace(untitled, titles=_titles(topic_rng, topic))
        page_views = PageViews(
            times, session_of, user_of, device_of, candidates, editorial, utility, click_draw
        )
        return NewsWorld(config, catalog, readers, page_views)

    def clicks(
        self, rows: npt.NDArray[np.int64], position: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """What readers click on page views `rows` when each candidate slot
        is shown at `position` (one row of k per page view, 0 first)."""
        views = self.page_views
        p = click_probability(views.utility[rows], position)
        clicked: npt.NDArray[np.bool_] = views.click_draw[rows] < p
        return clicked

    def click_log(self, start: datetime = START) -> ClickLog:
        """The log of the page views as the editor orders them."""
        views, k = self.page_views, self.config.candidates_per_impression
        n_imp = len(views)
        position = np.argsort(
            np.argsort(-views.editorial, axis=1, kind="stable"), axis=1, kind="stable"
        )
        clicked = self.clicks(np.arange(n_imp), position)
        impressions = pl.DataFrame(
            {
                "impression_id": np.repeat(np.arange(n_imp, dtype=np.int64), k),
                "session_id": np.repeat(views.session.astype(np.int64), k),
                "user_id": np.repeat(views.user.astype(np.int32), k),
                "time": timestamps(np.repeat(views.hours, k), start),
                "device": pl.Series(np.repeat(views.device, k)).replace_strict(
                    dict(enumerate(DEVICES)), return_dtype=pl.Enum(DEVICES)
                ),
                "article_id": views.candidates.ravel().astype(np.int32),
                "position": position.ravel().astype(np.int16),
                "clicked": clicked.ravel().astype(np.int8),
                "true_utility": views.utility.ravel().astype(np.float32),
            },
            schema=IMPRESSION_SCHEMA,
        ).sort("impression_id", "position")
        return ClickLog(articles=self.catalog.frame(start), impressions=impressions)


def _utility(
    catalog: Catalog,
    readers: Readers,
    horizon: float,
    user: npt.NDArray[np.int64],
    device: npt.NDArray[np.int64],
    hours: npt.NDArray[np.float64],
    candidates: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """The true utility of each candidate for the page view's reader, on its
    device, at its moment, before the moment's noise: the reader's drifting
    taste for the subcategory, the reader's drifting taste for the story's
    topic within that subcategory (TOPIC_TASTE_WEIGHT * log(4 * taste + 0.1):
    0 for a reader indifferent among the four, +0.7 for the one topic a
    reader follows, -1.2 for one they never read), the topic's appeal to
    everyone (hot topics; standard deviation TOPIC_APPEAL_SD), the story's
    quality and current interest, the rhythm of the day (news in the
    morning, sport in the evening), and long reads being a chore on a phone.

    The topic matters about as much as quality and less than the
    subcategory: in the default world the standard deviation within a page
    is 0.42 for the topic taste term and 0.33 for the appeal, against 1.45
    for the subcategory taste, 0.34 for quality and 0.98 for interest.
    Neither topic term is a feature: a ranker sees the topic only through
    the title's words (and the clicks on similar titles)."""
    n_sub = len(SUBCATEGORY_NAMES)
    drift = (hours / horizon)[:, None]
    sub_c = catalog.subcategory[candidates]
    taste = (1 - drift) * readers.taste_start[user[:, None], sub_c] + drift * readers.taste_end[
        user[:, None], sub_c
    ]
    topic_c = catalog.topic[candidates]
    topic_taste = (1 - drift) * readers.topic_taste_start[
        user[:, None], topic_c
    ] + drift * readers.topic_taste_end[user[:, None], topic_c]
    hour_of_day = np.mod(hours, 24.0)[:, None]
    cat_c = catalog.category[candidates]
    morning_news = (hour_of_day >= 6) & (hour_of_day < 10) & np.isin(cat_c, [0, 1, 7])
    evening_sport = (hour_of_day >= 18) & (cat_c == 2)
    long_on_mobile = (device[:, None] == 0) & (catalog.word_count[candidates] > 1100)
    return np.asarray(
        1.1 * np.log(taste * n_sub + 0.05)
        + TOPIC_TASTE_WEIGHT * np.log(topic_taste * TOPICS_PER_SUBCATEGORY + 0.1)
        + catalog.topic_appeal[topic_c]
        + 1.6 * catalog.quality[candidates]
        + 1.0 * np.log(catalog.interest(candidates, hours) + 0.02)
        + 0.4 * morning_news
        + 0.4 * evening_sport
        - 0.6 * long_on_mobile,
        dtype=np.float64,
    )


def generate(config: WorldConfig) -> ClickLog:
    """Build the click log; the same config always gives the same rows."""
    return NewsWorld.draw(config).click_log()
