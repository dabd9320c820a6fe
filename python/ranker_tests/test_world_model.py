"""The news world's one model of readers, articles, utility and clicks:
`generate` still writes exactly the log it always wrote, and the click
model follows position and utility."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ranker.data.schema import ClickLog
from ranker.data.world import (
    NewsWorld,
    WorldConfig,
    click_probability,
    examine_probability,
    generate,
)

# SHA-256 of the generated logs (articles, then impressions, as CSV) for the
# configurations the project ships and tests with. A change to the world that
# is meant to change the data must refresh them: run
#   python -c "from ranker_tests.test_world_model import print_digests; print_digests()"
# and say in the commit why the embedded data set changed.
LOG_DIGESTS = {
    "default": (
        WorldConfig(),
        "9dda146d7ecec9712eaa6fda749fde2a11378ccc04c3a72374cd881567fd92b7",
    ),
    "e2e test data": (
        WorldConfig().scaled(0.3),
        "8098d227922fc81944706bf8c88dd5a686f7faa66457c03b69d4623c91f5a29d",
    ),
    "python suite": (
        WorldConfig(seed=11).scaled(0.2),
        "0e662e28532a6f4e523a70eefd7f089d78678d217c33c5e5ba356177929e70b3",
    ),
    "tiny": (
        WorldConfig(seed=3).scaled(0.05),
        "5b465c7e0fa4d0b728c5f24722d9d346c707a6e7bffe30ece78484f396d608e5",
    ),
}


def log_digest(log: ClickLog) -> str:
    digest = hashlib.sha256()
    for frame in (log.articles, log.impressions):
        digest.update(frame.write_csv().encode())
    return digest.hexdigest()


def print_digests() -> None:
    for name, (config, _) in LOG_DIGESTS.items():
        print(f"{name}: {log_digest(generate(config))}")


@pytest.mark.parametrize("name", list(LOG_DIGESTS))
def test_generate_writes_the_same_log_as_ever(name: str) -> None:
    config, expected = LOG_DIGESTS[name]
    assert log_digest(generate(config)) == expected


def test_the_digest_sees_a_single_changed_value() -> None:
    log = generate(LOG_DIGESTS["tiny"][0])
    flipped = log.impressions.with_columns(
        log.impressions["clicked"].scatter(0, 1 - log.impressions["clicked"][0])
    )
    assert log_digest(ClickLog(log.articles, flipped)) != LOG_DIGESTS["tiny"][1]


def test_examination_falls_with_position_as_a_power_law() -> None:
    got = examine_probability(np.array([0, 1, 3]))
    np.testing.assert_allclose(got, [1.0, 2**-0.8, 4**-0.8])


def test_clicks_follow_position_and_utility() -> None:
    world = NewsWorld.draw(WorldConfig(seed=3).scaled(0.2))
    views = world.page_views
    rows = np.arange(len(views))
    k = views.candidates.shape[1]
    # Every page in the same slot order: slot j at position j.
    in_slot_order = np.tile(np.arange(k), (rows.size, 1))
    clicked = world.clicks(rows, in_slot_order)
    expected = click_probability(views.utility, in_slot_order)
    # The click rate per position is the click probability's mean, within
    # four standard errors of a binomial proportion.
    rate, p = clicked.mean(axis=0), expected.mean(axis=0)
    assert np.all(np.abs(rate - p) < 4 * np.sqrt(p * (1 - p) / rows.size)), (rate, p)
    # Position bias: the same slots shown in reverse draw fewer clicks at the top slot.
    reversed_order = in_slot_order[:, ::-1]
    assert world.clicks(rows, reversed_order)[:, 0].mean() < 0.5 * clicked[:, 0].mean()
    # Utility: what is clicked is worth more than what is not.
    assert views.utility[clicked].mean() > views.utility[~clicked].mean() + 0.5


def test_population_config_keeps_the_default_worlds_rates() -> None:
    config = WorldConfig.population(readers=1000, days=7, seed=1)
    default = WorldConfig()
    per_reader_day = config.n_impressions / (config.n_users * config.days)
    assert per_reader_day == pytest.approx(
        default.n_impressions / (default.n_users * default.days), rel=1e-3
    )
    assert (config.seed, config.n_users, config.days) == (1, 1000, 7)
