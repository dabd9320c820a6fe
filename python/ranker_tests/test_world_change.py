"""A world that changes (`WorldConfig.changing`): topics that rise and fade,
a section launched mid-run, faster taste drift and utility weights that
move; off, the world is the stationary one it always was."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ranker.cli import main
from ranker.data.schema import SUBCATEGORY_NAMES, WORLD_FILE
from ranker.data.world import (
    BURST_RISE_HOURS,
    BURSTS_PER_DAY,
    END_WEIGHTS,
    LAUNCH_SHARE,
    LONG_READ_WORDS,
    STEADY_WEIGHTS,
    NewsWorld,
    TopicBursts,
    WorldConfig,
    _utility,
    utility_weights,
)

SMALL = WorldConfig.population(readers=150, days=4, seed=9)
STATIONARY = NewsWorld.draw(SMALL)
CHANGING = NewsWorld.draw(WorldConfig.population(readers=150, days=4, seed=9, changing=True))
HORIZON = SMALL.days * 24.0


def test_changing_is_off_by_default_and_population_passes_it_on() -> None:
    assert not WorldConfig().changing
    assert not SMALL.changing
    assert CHANGING.config.changing
    assert CHANGING.config.scaled(2.0).changing


def test_an_explicit_stationary_world_is_the_default_one() -> None:
    """changing=False draws the stationary world bit for bit (the log
    digests of test_world_model hold the default configurations to theirs)."""
    explicit = NewsWorld.draw(WorldConfig(seed=9, n_users=150, changing=False))
    default = NewsWorld.draw(WorldConfig(seed=9, n_users=150))
    for part in ("catalog", "readers", "page_views"):
        a, b = getattr(explicit, part), getattr(default, part)
        for field in fields(a):
            np.testing.assert_array_equal(
                getattr(a, field.name), getattr(b, field.name), err_msg=f"{part}.{field.name}"
            )


def test_the_changes_draw_from_their_own_stream() -> None:
    """Who reads when, which candidates they see and the click draws are
    those of the stationary world of the same seed: only what changes
    differs (and the editor's view of the stories the launched section's
    absence gave to other sections)."""
    for part, names in {
        "page_views": ("hours", "session", "user", "device", "candidates", "click_draw"),
        "catalog": ("publish_hours", "quality", "breaking", "topic_appeal"),
        "readers": ("taste_start", "topic_taste_start", "activity", "joins", "peak_hour"),
    }.items():
        for name in names:
            np.testing.assert_array_equal(
                getattr(getattr(CHANGING, part), name),
                getattr(getattr(STATIONARY, part), name),
                err_msg=f"{part}.{name}",
            )
    assert not np.array_equal(CHANGING.page_views.utility, STATIONARY.page_views.utility)


def test_the_same_seed_gives_the_same_changing_world() -> None:
    again = NewsWorld.draw(CHANGING.config)
    for part in ("catalog", "readers", "page_views"):
        a, b = getattr(again, part), getattr(CHANGING, part)
        for field in fields(a):
            if field.name == "bursts":
                for burst_field in fields(a.bursts):
                    np.testing.assert_array_equal(
                        getattr(a.bursts, burst_field.name), getattr(b.bursts, burst_field.name)
                    )
            else:
                np.testing.assert_array_equal(
                    getattr(a, field.name), getattr(b, field.name), err_msg=f"{part}.{field.name}"
                )
    other = NewsWorld.draw(WorldConfig.population(150, 4, seed=10, changing=True))
    assert not np.array_equal(other.catalog.bursts.start, CHANGING.catalog.bursts.start)


def _sections_before(world: NewsWorld, hours: float) -> set[int]:
    catalog = world.catalog
    return set(catalog.subcategory[catalog.publish_hours < hours].tolist())


def test_one_section_is_launched_mid_run() -> None:
    launch = LAUNCH_SHARE * HORIZON
    every = set(range(len(SUBCATEGORY_NAMES)))
    assert _sections_before(STATIONARY, launch) == every
    missing = every - _sections_before(CHANGING, launch)
    assert len(missing) == 1, missing
    (launched,) = missing
    catalog = CHANGING.catalog
    after = catalog.subcategory[catalog.publish_hours >= launch] == launched
    # After its launch it publishes about as much as any section.
    share = after.mean()
    assert 0.5 / len(SUBCATEGORY_NAMES) < share < 2.0 / len(SUBCATEGORY_NAMES), share
    # It is shown to readers only after its launch.
    views = CHANGING.page_views
    shown = catalog.subcategory[views.candidates] == launched
    assert shown.any()
    assert np.all(views.hours[shown.any(axis=1)] >= launch)


def test_topic_appeal_changes_over_the_run_only_in_a_changing_world() -> None:
    topics = np.arange(CHANGING.catalog.topic_appeal.size)
    early, late = np.full(topics.size, 0.1 * HORIZON), np.full(topics.size, 0.9 * HORIZON)
    np.testing.assert_array_equal(
        STATIONARY.catalog.appeal(topics, early), STATIONARY.catalog.appeal(topics, late)
    )
    changed = CHANGING.catalog.appeal(topics, early) != CHANGING.catalog.appeal(topics, late)
    assert changed.sum() >= 3, changed.sum()
    bursts = CHANGING.catalog.bursts
    expected = BURSTS_PER_DAY * (SMALL.days + 1)
    assert abs(bursts.topic.size - expected) < 4 * np.sqrt(expected), bursts.topic.size


def test_a_burst_rises_to_its_height_and_fades_over_a_day_or_two() -> None:
    bursts = TopicBursts(np.array([5]), np.array([10.0]), np.array([0.8]))
    since_start = np.array([-5.0, 0.0, 6.0, BURST_RISE_HOURS, 24.0, 48.0, 96.0])
    hours = 10.0 + since_start
    lift = bursts.lift(np.full(hours.size, 5), hours)
    before, start, rising, peak, day, two_days, four_days = lift
    assert before == start == 0.0
    assert 0.0 < rising < peak
    assert peak == pytest.approx(0.8)
    assert peak > day > two_days > four_days > 0.0
    assert two_days < 0.5 * peak
    assert four_days < 0.01
    # Other topics are untouched.
    assert not bursts.lift(np.full(hours.size, 6), hours).any()


def test_a_drawn_burst_lifts_its_topic() -> None:
    catalog = CHANGING.catalog
    bursts = catalog.bursts
    b = int(np.argmax(bursts.height))
    topic = np.array([bursts.topic[b]])
    start = bursts.start[b]
    at_start = catalog.appeal(topic, np.array([start]))
    at_peak = catalog.appeal(topic, np.array([start + BURST_RISE_HOURS]))
    # Other bursts of the topic may fade meanwhile, by less than it rises.
    assert at_peak[0] - at_start[0] > 0.5 * bursts.height[b]


def test_utility_weights_move_from_steady_to_the_end_weights() -> None:
    assert utility_weights(np.array([[0.0], [1.0]]), changing=False) is STEADY_WEIGHTS
    moving = utility_weights(np.array([[0.0], [0.5], [1.0]]), changing=True)
    for field in fields(STEADY_WEIGHTS):
        start, end = getattr(STEADY_WEIGHTS, field.name), getattr(END_WEIGHTS, field.name)
        assert start != end, field.name
        np.testing.assert_allclose(
            getattr(moving, field.name)[:, 0], [start, (start + end) / 2, end], err_msg=field.name
        )
    # As documented: breaking news fatigue, a faster news cycle, long reads
    # welcome on a phone, quality counting more.
    assert END_WEIGHTS.breaking < 0 == STEADY_WEIGHTS.breaking
    assert END_WEIGHTS.interest_decay_scale < 1 == STEADY_WEIGHTS.interest_decay_scale
    assert STEADY_WEIGHTS.long_on_mobile < 0 < END_WEIGHTS.long_on_mobile
    assert END_WEIGHTS.quality > STEADY_WEIGHTS.quality


def test_the_end_weights_change_what_readers_prefer() -> None:
    """The same page views' utility (before the moment's noise) under the
    start and the end weights: a fresh breaking story drops against a fresh
    normal one (breaking news fatigue), an older story drops against a fresh
    one (a faster news cycle), a long read gains on a phone against one on a
    desktop, and a high-quality story gains against a low-quality one."""
    world, catalog, views = CHANGING, CHANGING.catalog, CHANGING.page_views
    inputs = (catalog, world.readers, HORIZON, views.user, views.device, views.hours)
    change = _utility(*inputs, views.candidates, utility_weights(1.0, changing=True)) - _utility(
        *inputs, views.candidates, utility_weights(0.0, changing=True)
    )
    age = views.hours[:, None] - catalog.publish_hours[views.candidates]
    breaking = catalog.breaking[views.candidates]
    long_read = catalog.word_count[views.candidates] > LONG_READ_WORDS
    phone = np.broadcast_to(views.device[:, None] == 0, change.shape)
    quality = catalog.quality[views.candidates]

    def gain(better: npt.NDArray[np.bool_], worse: npt.NDArray[np.bool_]) -> float:
        assert better.sum() > 5, better.sum()
        assert worse.sum() > 5, worse.sum()
        return float(change[better].mean() - change[worse].mean())

    fresh = age < 1.0
    assert gain(fresh & breaking, fresh & ~breaking) < -1.5
    assert gain(~breaking & (age > 24), ~breaking & fresh) < -1.0
    assert gain(long_read & phone, long_read & ~phone) == pytest.approx(
        END_WEIGHTS.long_on_mobile - STEADY_WEIGHTS.long_on_mobile, abs=0.3
    )
    assert gain(quality > 0.7, quality < 0.3) > 0.5


def test_tastes_drift_further_in_a_changing_world() -> None:
    def drift(world: NewsWorld) -> float:
        readers = world.readers
        return float(np.abs(readers.taste_end - readers.taste_start).sum(axis=1).mean())

    assert drift(CHANGING) > 1.5 * drift(STATIONARY), (drift(CHANGING), drift(STATIONARY))


def test_ranker_data_writes_a_changing_world_on_request(tmp_path: Path) -> None:
    common = ["data", "--scale", "0.02", "--seed", "4"]
    assert main([*common, "--out", str(tmp_path / "still")]) == 0
    assert main([*common, "--out", str(tmp_path / "changing"), "--changing"]) == 0
    still = json.loads((tmp_path / "still" / WORLD_FILE).read_text())
    changing = json.loads((tmp_path / "changing" / WORLD_FILE).read_text())
    # A stationary world's description is what it always was.
    assert "changing" not in still
    assert changing.pop("changing") is True
    assert changing == still
