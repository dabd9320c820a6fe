"""A synthetic position-based world in pure numpy, the oracle of the
off-policy tests: items with an attractiveness, a logger that orders by a
noisy score and shuffles the top D on a share epsilon of pages, clicks by
theta(place) * attractiveness, and the exact propensities of that mixture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

ETA = 0.8


def theta(place: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    return np.asarray((1.0 + place) ** -ETA, np.float64)


@dataclass(frozen=True)
class World:
    logged: pl.DataFrame
    alpha: npt.NDArray[np.float64]  # per logged row
    deterministic: npt.NDArray[np.int64]  # the logger's place per row
    pages: int
    items: int


def simulate(
    rng: np.random.Generator,
    *,
    pages: int,
    items: int = 8,
    epsilon: float = 0.1,
    depth: int = 3,
    noise: float = 1.0,
) -> World:
    alpha = rng.beta(1.0, 4.0, (pages, items))
    score = np.log(alpha / (1 - alpha)) + rng.normal(0.0, noise, (pages, items))
    det = np.argsort(np.argsort(-score, axis=1), axis=1)  # item -> deterministic place
    explored = rng.uniform(size=pages) < epsilon
    place = det.copy()
    for i in np.flatnonzero(explored):
        top = det[i] < depth
        place[i, top] = rng.permutation(depth)[det[i, top]]
    d = min(depth, items)
    propensity = np.where(det < d, (1 - epsilon) * (place == det) + epsilon / d, 1.0)
    propensity = np.where(place < d, propensity, 1.0)
    clicked = rng.uniform(size=(pages, items)) < theta(place) * alpha
    request = np.repeat(np.arange(pages), items)
    logged = pl.DataFrame(
        {
            "request_id": [f"r{i:07d}" for i in request],
            "device": "mobile",
            "position": place.ravel().astype(np.int32),
            "score": score.ravel(),
            "propensity": propensity.ravel(),
            "explored": np.repeat(explored, items),
            "clicked": clicked.ravel().astype(np.int8),
        }
    )
    return World(logged, alpha.ravel(), det.ravel(), pages, items)


def rerank_top(
    world: World, depth: int, rng: np.random.Generator, noise: float
) -> npt.NDArray[np.int64]:
    """A target that reorders only the logger's top `depth` by a better noisy
    score: every placement is one the shuffle can produce."""
    det = world.deterministic.reshape(world.pages, world.items)
    alpha = world.alpha.reshape(world.pages, world.items)
    key = np.where(det < depth, -np.log(alpha) + rng.normal(0, noise, det.shape), 1e9 + det)
    return np.argsort(np.argsort(key, axis=1), axis=1).ravel().astype(np.int64)


def truth(world: World, target: npt.NDArray[np.int64]) -> float:
    """Expected clicks per page view of the target on these pages."""
    shown = target >= 0
    return float(np.sum(theta(target[shown]) * world.alpha[shown]) / world.pages)


def reverse_top(world: World, depth: int) -> npt.NDArray[np.int64]:
    """A worse target: the logger's top `depth` in reverse."""
    det = world.deterministic
    return np.where(det < depth, depth - 1 - det, det).astype(np.int64)
