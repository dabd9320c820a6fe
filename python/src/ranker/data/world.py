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

That world is almost stationary: only the readers' tastes drift, slowly. A
changing world (`WorldConfig(changing=True)`, `ranker data --changing`) adds
what makes a frozen model decay and nightly retraining worth its while; every
rate is in the "A changing world" block of constants below, and it starts
as the stationary world and moves away from it over the run:

- Topics rise and fade: a few times a day a topic bursts (`TopicBursts`):
  its appeal to everyone rises over half a day by BURST_HEIGHT and fades
  over the next day or two, on top of its constant appeal.
- A section is launched mid-run: one subcategory (drawn from the seed)
  publishes nothing before LAUNCH_SHARE of the run, then as much as any
  other. Readers' tastes for it exist from the start: it arrives with
  demand but without any history, cold for every model.
- Readers' tastes drift further: a reader ends the run with
  CHANGING_TASTE_SHIFT of their subcategory taste new, not 0.4.
- What readers value changes (`utility_weights`, from STEADY_WEIGHTS to
  END_WEIGHTS, linearly in time): breaking news fatigue (a breaking story's
  bonus turns into a penalty), a faster news cycle (every story's interest
  decays sooner, so age counts for more), long reads become welcome on a
  phone, and quality counts more. The ranker's features see these (article
  age, breaking, word count, device; quality through the click rates), so
  the mapping from features to utility moves and a model trained on the
  first days ranks later days worse than one retrained on recent days.

Its own randomness (bursts, the launched section, the new tastes) comes from
a stream of the seed of its own (CHANGE_STREAM): everything else is drawn as
in the stationary world, and `changing=False` gives that world bit for bit.
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
    # A world that changes over the run (the module docstring); off, the
    # world is the stationary one, bit for bit.
    changing: bool = False

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
    def population(readers: int, days: float, seed: int, *, changing: bool = False) -> WorldConfig:
        """`readers` readers over `days` days, as active per reader and with
        as many new articles a day as the default world; `changing` as in
        WorldConfig."""
        default = WorldConfig()
        page_views_per_reader_day = default.n_impressions / (default.n_users * default.days)
        articles_per_day = default.n_articles / (default.days + CANDIDATE_WINDOW_HOURS / 24)
        return WorldConfig(
            seed=seed,
            n_users=readers,
            n_articles=max(100, round(articles_per_day * (days + CANDIDATE_WINDOW_HOURS / 24))),
            n_impressions=max(1, round(page_views_per_reader_day * readers * days)),
            days=days,
            changing=changing,
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


@dataclass(frozen=True)
class UtilityWeights:
    """The weights of the utility's terms (`_utility`), at one moment: each
    a number, or one per page view (a column) in a changing world."""

    # Multiplies every story's interest decay time (INTEREST_DECAY_HOURS,
    # 4 hours for breaking news): below 1, stories grow old sooner.
    interest_decay_scale: float | npt.NDArray[np.float64]
    quality: float | npt.NDArray[np.float64]
    # Added for a breaking story, on top of its spike of interest.
    breaking: float | npt.NDArray[np.float64]
    # Added for a long read (more than LONG_READ_WORDS words) on a phone.
    long_on_mobile: float | npt.NDArray[np.float64]


# A long read: more words than this.
LONG_READ_WORDS = 1100

# The stationary world's weights, all the time.
STEADY_WEIGHTS = UtilityWeights(
    interest_decay_scale=1.0, quality=1.6, breaking=0.0, long_on_mobile=-0.6
)

# ---- A changing world (WorldConfig.changing): every rate in one place ----
# The seed's third stream: bursts, the launched section, the new tastes.
CHANGE_STREAM = 2
# Topic bursts start at this rate through the run (and the day before it),
# each on a topic drawn uniformly; a burst adds BURST_HEIGHT times a
# uniform(0.5, 1.5) draw to its topic's appeal at its peak, BURST_RISE_HOURS
# after it starts (`TopicBursts` gives the shape).
BURSTS_PER_DAY = 3.0
BURST_HEIGHT = 0.8
BURST_RISE_HOURS = 12.0
# The launched section publishes from this share of the run on.
LAUNCH_SHARE = 0.4
# Share of a reader's subcategory taste that is new by the end of the run
# (the stationary world's is 0.4).
CHANGING_TASTE_SHIFT = 0.8
# The weights at the start of the run are STEADY_WEIGHTS; these at its end,
# reached linearly in time. Breaking news fatigue: a fresh breaking story's
# spike of interest puts it 0.9 above a normal story of the same age
# (log(2.52 / 1.02)); -2.0 turns that into a penalty of 1.1. A faster news
# cycle: every story's interest decays in 0.4 of the time (a day-old news
# story is worth about e^-5 of a fresh one instead of e^-2, so age comes to
# outweigh most of a reader's taste). Phones: long reads go from a chore
# (-0.6) to welcome (+0.6). Quality: 1.6 to 3.2. Tuned so that a model
# trained on the first two days of a six-day run clearly falls behind one
# retrained every night (`python -m benchmarks.world_drift`).
END_WEIGHTS = UtilityWeights(
    interest_decay_scale=0.4, quality=3.2, breaking=-2.0, long_on_mobile=0.6
)


def utility_weights(fraction: npt.NDArray[np.float64] | float, *, changing: bool) -> UtilityWeights:
    """The utility's weights `fraction` of the way through the run (0 at
    its start, 1 at its end): STEADY_WEIGHTS in a stationary world, in a
    changing one the way from STEADY_WEIGHTS to END_WEIGHTS."""
    if not changing:
        return STEADY_WEIGHTS
    start, end = STEADY_WEIGHTS, END_WEIGHTS

    def at(name: str) -> npt.NDArray[np.float64]:
        a, b = getattr(start, name), getattr(end, name)
        return np.asarray(a + (b - a) * np.asarray(fraction), dtype=np.float64)

    return UtilityWeights(
        interest_decay_scale=at("interest_decay_scale"),
        quality=at("quality"),
        breaking=at("breaking"),
        long_on_mobile=at("long_on_mobile"),
    )


@dataclass(frozen=True)
class TopicBursts:
    """Topics that rise and fade (a changing world): burst b lifts the appeal
    of topic `topic[b]` from hour `start[b]` on by
    height[b] * x * exp(1 - x), x = (hours - start[b]) / BURST_RISE_HOURS: a
    rise to `height[b]` at BURST_RISE_HOURS, 41 % of it a day after that
    peak, 9 % two days after it."""

    topic: npt.NDArray[np.int64]
    start: npt.NDArray[np.float64]
    height: npt.NDArray[np.float64]

    @staticmethod
    def draw(rng: np.random.Generator, n_topics: int, horizon: float) -> TopicBursts:
        # From a day before the run, so that it starts with bursts under way.
        first = -24.0
        n = int(rng.poisson(BURSTS_PER_DAY * (horizon - first) / 24.0))
        return TopicBursts(
            topic=rng.integers(0, n_topics, n),
            start=np.sort(rng.uniform(first, horizon, n)),
            height=BURST_HEIGHT * rng.uniform(0.5, 1.5, n),
        )

    def lift(
        self, topics: npt.NDArray[np.int64], hours: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """The bursts' lift of each of `topics` at `hours` (broadcast)."""
        lift = np.zeros(np.broadcast_shapes(topics.shape, hours.shape))
        for topic, start, height in zip(self.topic, self.start, self.height, strict=True):
            x = np.maximum(hours - start, 0.0) / BURST_RISE_HOURS
            lift += np.where(topics == topic, height * x * np.exp(1.0 - x), 0.0)
        return lift


NO_BURSTS = TopicBursts(
    np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64)
)


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
    the article's subcategory), the topics' appeal and bursts, the story's
    decay and peak are hidden from the ranker, which sees a topic only
    through the title's words."""

    publish_hours: npt.NDArray[np.float64]  # since the world's start
    subcategory: npt.NDArray[np.int64]
    quality: npt.NDArray[np.float64]
    breaking: npt.NDArray[np.bool_]
    word_count: npt.NDArray[np.float64]
    topic: npt.NDArray[np.int64]
    # Per topic (not per article): how much every reader cares about it,
    # before bursts.
    topic_appeal: npt.NDArray[np.float64]
    titles: list[str]
    # Topics that rise and fade for a while (none in a stationary world).
    bursts: TopicBursts = NO_BURSTS

    @property
    def category(self) -> npt.NDArray[np.int64]:
        return SUBCATEGORY_CATEGORY[self.subcategory]

    def appeal(
        self, topics: npt.NDArray[np.int64], hours: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Each topic's appeal to every reader at `hours` (broadcast against
        `topics`): its constant appeal, and in a changing world its bursts."""
        if self.bursts.topic.size == 0:
            return self.topic_appeal[topics]
        return np.asarray(self.topic_appeal[topics] + self.bursts.lift(topics, hours))

    def interest(
        self,
        candidates: npt.NDArray[np.int64],
        hours: npt.NDArray[np.float64],
        decay_scale: float | npt.NDArray[np.float64] = 1.0,
    ) -> npt.NDArray[np.float64]:
        """How much readers care about each candidate at `hours` (one row per
        page view): a peak at publication that decays, fast for breaking news;
        `decay_scale` times slower (one per page view, a column, or one for all)."""
        category = self.category[candidates]
        breaking = self.breaking[candidates]
        decay_hours = np.where(breaking, 4.0, INTEREST_DECAY_HOURS[category])
        if not (np.isscalar(decay_scale) and decay_scale == 1.0):
            decay_hours = decay_hours * decay_scale
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
        change_rng = np.random.default_rng([config.seed, CHANGE_STREAM])
        n_cat, n_sub = len(CATEGORY_NAMES), len(SUBCATEGORY_NAMES)
        horizon = config.days * 24.0
        k = config.candidates_per_impression

        # Articles, published through the period with more in the morning.
        n_art = config.n_articles
        day = rng.uniform(-CANDIDATE_WINDOW_HOURS / 24, config.days, n_art).astype(np.int64)
        hour = np.clip(rng.normal(10.0, 4.0, n_art), 0, 23.99)
        publish = np.sort(day * 24.0 + hour)
        subcategory = rng.integers(0, n_sub, n_art)
        if config.changing:
            launched = int(change_rng.integers(0, n_sub))
            # Before its launch, the new section's stories were another's.
            early = (subcategory == launched) & (publish < LAUNCH_SHARE * horizon)
            other = change_rng.integers(0, n_sub - 1, int(early.sum()))
            subcategory[early] = other + (other >= launched)
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
        if config.changing:
            new_cat = change_rng.dirichlet(np.full(n_cat, 0.3), config.n_users)
            new_sub = change_rng.dirichlet(np.full(3, 0.7), (config.n_users, n_cat))
            new_taste = new_cat[:, SUBCATEGORY_CATEGORY] * new_sub.reshape(config.n_users, -1)
            taste_end = (1 - CHANGING_TASTE_SHIFT) * taste_start + CHANGING_TASTE_SHIFT * new_taste
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
        bursts = TopicBursts.draw(change_rng, n_topics, horizon) if config.changing else NO_BURSTS
        untitled = Catalog(
            publish, subcategory, quality, breaking, word_count, topic, topic_appeal, [], bursts
        )
        # The editor's view is the stationary world's: editors do not notice
        # the changes either.
        interest = untitled.interest(candidates, times)
        editorial = quality[candidates] + 0.8 * interest + rng.normal(0.0, 0.4, interest.shape)
        weights = utility_weights((times / horizon)[:, None], changing=config.changing)
        utility = _utility(
            untitled, readers, horizon, user_of, device_of, times, candidates, weights
        )
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
    weights: UtilityWeights = STEADY_WEIGHTS,
) -> npt.NDArray[np.float64]:
    """The true utility of each candidate for the page view's reader, on its
    device, at its moment, before the moment's noise, under `weights`
    (STEADY_WEIGHTS, or in a changing world those of the moment,
    `utility_weights`): the reader's drifting
    taste for the subcategory, the reader's drifting taste for the story's
    topic within that subcategory (TOPIC_TASTE_WEIGHT * log(4 * taste + 0.1):
    0 for a reader indifferent among the four, +0.7 for the one topic a
    reader follows, -1.2 for one they never read), the topic's appeal to
    everyone (hot topics; standard deviation TOPIC_APPEAL_SD; in a changing
    world with the bursts under way, `Catalog.appeal`), the story's quality
    (weights.quality) and current interest (its decay times
    weights.interest_decay_scale), a breaking story's bonus
    (weights.breaking, 0 in the stationary world), the rhythm of the day
    (news in the morning, sport in the evening), and long reads on a phone
    (weights.long_on_mobile: a chore in the stationary world).

    In a changing world the weights move from STEADY_WEIGHTS to END_WEIGHTS
    over the run: breaking news fatigue (a fresh breaking story, +0.9 over a
    normal one from its spike of interest, ends up 1.1 below it), a faster
    news cycle (decay times 0.4 as long, so age counts 2.5 times as much),
    long reads welcome on phones (-0.6 to +0.6) and quality counting more
    (1.6 to 3.2).

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
    long_on_mobile = (device[:, None] == 0) & (catalog.word_count[candidates] > LONG_READ_WORDS)
    utility = (
        1.1 * np.log(taste * n_sub + 0.05)
        + TOPIC_TASTE_WEIGHT * np.log(topic_taste * TOPICS_PER_SUBCATEGORY + 0.1)
        + catalog.appeal(topic_c, hours[:, None])
        + weights.quality * catalog.quality[candidates]
        + 1.0 * np.log(catalog.interest(candidates, hours, weights.interest_decay_scale) + 0.02)
        + 0.4 * morning_news
        + 0.4 * evening_sport
        + weights.long_on_mobile * long_on_mobile
    )
    if np.any(weights.breaking):
        utility = utility + weights.breaking * catalog.breaking[candidates]
    return np.asarray(utility, dtype=np.float64)


def generate(config: WorldConfig) -> ClickLog:
    """Build the click log; the same config always gives the same rows."""
    return NewsWorld.draw(config).click_log()
