"""Position bias by intervention harvesting (Agarwal, Zaitsev, Wang, Li,
Najork, Joachims, WSDM 2019): the examination curve from the variants an
experiment already runs, without shuffling anything.

An experiment assigns readers to variants at random (a hash of the reader
id), and each variant ranks with its own model. Offline every logged page can
be scored by both models, so each logged item has a place under ranker A (k)
and under ranker B (k'). Because assignment is random, the items with
(k, k') are alike, in reader, item and moment, on the pages A served and on
those B served; A showed them at k, B at k'. Under the position-based click
model (P(click) = theta(place) * attractiveness), the click-through rate of
those items on A's pages over that on B's pages estimates theta_k / theta_k'.

All the cells (k, k') with k != k' are combined by the extremum estimator of
the paper (its AllPairs idea) under a Poisson likelihood: clicks in cell c
shown at place p have mean rows * theta_p * gamma_c, with one free
attractiveness gamma_c per cell. The cells' shares of A and B traffic
(the known assignment) enter through the row counts, so any split works.
The likelihood profiled over gamma is concave in log theta; Newton's method
finds its maximum, with theta_0 = 1. Places no intervened cell links to place
0 take the power law (1 + k) ** -eta fitted to the estimated ones, marked
extrapolated (as in `position_bias`). Intervals are percentile bootstraps over
readers, the unit of assignment (seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.offpolicy.position_bias import (
    ALL_DEVICES,
    Curve,
    PositionBias,
    PositionBiasError,
    TooLittleExploration,
    _fit_eta,
)

# Below these, the ratios are mostly noise: refuse rather than report them.
MIN_PAGES_PER_RANKER = 50
MIN_INTERVENED_CLICKS = 20
# The places must reproduce what was served; a larger share of rows whose
# logged place is not the serving ranker's place means the feature rows or
# the models are not those that served.
MAX_PLACE_MISMATCH = 0.05
_NEWTON_STEPS = 100

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


class TooFewInterventions(TooLittleExploration):
    """The two rankers disagree on too few logged items, or too few of them
    were clicked, to estimate the curve."""


@dataclass(frozen=True)
class HarvestedBias:
    """Examination probability by place relative to place 0, harvested from
    two rankers' interventions, with 95 % bootstrap intervals over readers."""

    estimate: Floats
    low: Floats
    high: Floats
    # Rows and clicks shown at each place in the cells where the rankers disagree.
    shown: Ints
    clicks: Ints
    extrapolated: npt.NDArray[np.bool_]
    eta: float
    replicates: Floats  # bootstrap replicates x places
    pages_a: int
    pages_b: int
    readers: int
    intervened_cells: int
    notes: list[str] = field(default_factory=list)

    def error_against(
        self, true_curve: Callable[[npt.NDArray[np.int64]], Floats]
    ) -> PositionBiasError:
        """Per place and largest absolute error against the true curve,
        normalised to the truth at place 0 (the estimate's scale)."""
        return self.to_position_bias().error_against(true_curve)

    def to_position_bias(self) -> PositionBias:
        """The package's curve type, so the position-based estimators can use
        a harvested curve as they use one from explored pages."""
        curve = Curve(
            estimate=self.estimate,
            low=self.low,
            high=self.high,
            pages=self.shown,
            clicks=self.clicks,
            extrapolated=self.extrapolated,
            eta=self.eta,
            replicates=self.replicates,
        )
        depth = int(np.flatnonzero(~self.extrapolated).max(initial=-1)) + 1
        notes = [
            f"harvested from {self.pages_a:,} pages of ranker A and {self.pages_b:,} of "
            f"ranker B ({self.readers:,} readers, {self.intervened_cells} intervened cells); "
            "no page was explored",
            *self.notes,
        ]
        return PositionBias({ALL_DEVICES: curve}, depth, 0, notes)

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "position": np.arange(self.estimate.size),
                "estimate": self.estimate,
                "low": self.low,
                "high": self.high,
                "shown": self.shown,
                "clicks": self.clicks,
                "extrapolated": self.extrapolated,
            }
        )


def _connected_to_first(
    shown: Floats, cell_clicks: Floats, usable: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Places linked to place 0 by cells with clicks that show items at both."""
    places = shown.shape[1]
    linked = np.zeros((places, places), bool)
    for row in shown[(cell_clicks > 0)] > 0:
        at = np.flatnonzero(row & usable)
        linked[np.ix_(at, at)] = True
    reached = np.zeros(places, bool)
    if not usable[0]:
        return reached
    reached[0] = True
    frontier = [0]
    while frontier:
        nxt = np.flatnonzero(linked[frontier].any(axis=0) & ~reached)
        reached[nxt] = True
        frontier = nxt.tolist()
    return reached


def _fit(shown: Floats, clicked: Floats) -> Floats:
    """theta per place (nan where not estimable) from cells x places counts:
    the maximum of the Poisson likelihood with a free level per cell,
    profiled: sum_cp C_cp log theta_p - sum_c C_c log(sum_p N_cp theta_p)."""
    places = shown.shape[1]
    theta = np.full(places, np.nan)
    # A place never clicked has its maximum at theta = 0: its rows then weigh
    # nothing in the others' denominators, so they are left out.
    usable = clicked.sum(axis=0) > 0
    reached = _connected_to_first(shown, clicked.sum(axis=1), usable)
    free = np.flatnonzero(reached)[1:]
    if free.size == 0:
        return theta
    cells = (shown[:, reached] > 0).sum(axis=1) >= 2
    n = shown[np.ix_(cells, reached)]
    c = clicked[np.ix_(cells, reached)]
    cell_clicks = c.sum(axis=1)
    place_clicks = c.sum(axis=0)

    def loglik(u: Floats) -> float:
        return float(place_clicks @ u - cell_clicks @ np.log(n @ np.exp(u)))

    u = np.zeros(n.shape[1])
    for _ in range(_NEWTON_STEPS):
        w = n * np.exp(u)
        w /= w.sum(axis=1, keepdims=True)
        grad = place_clicks - cell_clicks @ w
        hess = np.einsum("c,cp,cq->pq", cell_clicks, w, w) - np.diag(cell_clicks @ w)
        step = np.zeros_like(u)
        try:
            step[1:] = np.linalg.solve(hess[1:, 1:], -grad[1:])
        except np.linalg.LinAlgError:
            # Only a sparse bootstrap replicate gets here: it counts as not estimable.
            return theta
        before, t = loglik(u), 1.0
        while loglik(u + t * step) < before - 1e-12 and t > 1e-6:
            t /= 2
        u = u + t * step
        if np.max(np.abs(t * step)) < 1e-10:
            break
    theta[reached] = np.exp(u)
    return theta


def _curve(shown: Floats, clicked: Floats, places: int) -> tuple[Floats, float]:
    """The whole table: fitted places, then the power law beyond them."""
    theta = _fit(shown, clicked)
    eta = _fit_eta(theta, clicked.sum(axis=0), float(clicked[:, 0].sum()))
    missing = np.isnan(theta)
    theta[missing] = (1.0 + np.flatnonzero(missing)) ** -eta
    return theta[:places], eta


def _check_inputs(
    logged: pl.DataFrame, place_a: Ints, place_b: Ints, served_by_a: npt.NDArray[np.bool_]
) -> None:
    missing = {"request_id", "user_id", "position", "clicked"} - set(logged.columns)
    if missing:
        raise ValueError(f"logged: missing columns {sorted(missing)}")
    for name, values in (("place_a", place_a), ("place_b", place_b), ("served_by_a", served_by_a)):
        if values.shape != (logged.height,):
            raise ValueError(f"{name}: {values.shape[0]:,} values for {logged.height:,} rows")
    for name, values in (("place_a", place_a), ("place_b", place_b)):
        if values.size and values.min() < 0:
            raise ValueError(f"{name}: negative place {values.min()}")
    per_page = (
        pl.DataFrame(
            {"request_id": logged["request_id"], "a": place_a, "b": place_b, "s": served_by_a}
        )
        .group_by("request_id")
        .agg(
            (pl.col("a").n_unique() == pl.len()).alias("a"),
            (pl.col("b").n_unique() == pl.len()).alias("b"),
            (pl.col("s").n_unique() == 1).alias("s"),
        )
    )
    for column, what in (
        ("a", "place_a repeats a place within a page"),
        ("b", "place_b repeats a place within a page"),
        ("s", "served_by_a differs between rows of one page"),
    ):
        bad = per_page.filter(~pl.col(column))
        if bad.height:
            raise ValueError(f"{what} ({bad.height:,} pages, e.g. {bad['request_id'][0]!r})")


def harvest_position_bias(
    logged: pl.DataFrame,
    place_a: npt.NDArray[np.integer],
    place_b: npt.NDArray[np.integer],
    served_by_a: npt.NDArray[np.bool_],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    places: int | None = None,
    min_intervened_clicks: int = MIN_INTERVENED_CLICKS,
    min_pages_per_ranker: int = MIN_PAGES_PER_RANKER,
) -> HarvestedBias:
    """The examination curve from the pages two randomly assigned rankers
    served. `logged`: one row per shown item (request_id, user_id, position
    from 0, clicked; `explored` when the log has it), only pages served by A
    or B; `place_a`/`place_b`: each row's place (0 first) among its page's
    items under each ranker; `served_by_a`: which ranker served the row's page.
    `places` (default: the longest page) sets how far the table reaches.

    Raises TooFewInterventions, in words, when the rankers disagree on too few
    clicked items; ValueError when the places do not fit the log."""
    places_a = np.asarray(place_a, np.int64)
    places_b = np.asarray(place_b, np.int64)
    by_a_all = np.asarray(served_by_a, bool)
    _check_inputs(logged, places_a, places_b, by_a_all)
    # Explored pages are dropped. Exploration is decided by the request id,
    # independently of the reader's arm and of the items, so the rest of each
    # arm stays a like-for-like sample. Keeping the rows an explored page
    # happened to show at the serving ranker's place would also be unbiased
    # under the position-based model, but not if shuffling the others changes
    # how a reader scans the page; and leaving them out keeps this curve
    # independent of `estimate_position_bias`, which reads exactly those
    # pages, so the two can check each other.
    keep = np.ones(logged.height, bool)
    notes: list[str] = []
    if "explored" in logged.columns:
        keep = ~logged["explored"].fill_null(False).to_numpy()
        dropped = logged.filter(~pl.Series(keep))["request_id"].n_unique()
        if dropped:
            notes.append(f"{dropped:,} explored pages left out")
    position = logged["position"].to_numpy().astype(np.int64)[keep]
    clicked = logged["clicked"].to_numpy().astype(np.float64)[keep]
    a, b, by_a = places_a[keep], places_b[keep], by_a_all[keep]
    request = logged["request_id"].filter(pl.Series(keep))
    reader = logged["user_id"].filter(pl.Series(keep)).rank("dense").to_numpy().astype(np.int64) - 1

    serving_place = np.where(by_a, a, b)
    mismatch = int(np.sum(serving_place != position))
    if mismatch > MAX_PLACE_MISMATCH * max(position.size, 1):
        raise ValueError(
            f"place_a/place_b: on {mismatch:,} of {position.size:,} rows the serving "
            "ranker's place is not the logged position: the feature rows or the models "
            "are not those that served"
        )
    if mismatch:
        notes.append(f"{mismatch:,} rows shown away from the serving ranker's place")

    longest = int(max(a.max(initial=-1), b.max(initial=-1), position.max(initial=-1))) + 1
    width = max(places or 0, longest)
    intervened = a != b
    pages_a = request.filter(pl.Series(by_a)).n_unique()
    pages_b = request.filter(pl.Series(~by_a)).n_unique()
    clicks_a = int(clicked[intervened & by_a].sum())
    clicks_b = int(clicked[intervened & ~by_a].sum())
    agree = 1.0 - intervened.mean() if intervened.size else 1.0
    if min(pages_a, pages_b) < min_pages_per_ranker:
        raise TooFewInterventions(
            f"{pages_a:,} pages served by ranker A and {pages_b:,} by ranker B, fewer than "
            f"the {min_pages_per_ranker} each needed to harvest position bias"
        )
    if min(clicks_a, clicks_b) < min_intervened_clicks:
        raise TooFewInterventions(
            f"the two rankers put {agree:.1%} of the logged items at the same place; the "
            f"items they place differently drew {clicks_a:,} clicks on A's pages and "
            f"{clicks_b:,} on B's, fewer than the {min_intervened_clicks} each needed to "
            "harvest position bias: compare rankers that disagree more, or wait for traffic"
        )

    # Per (reader, cell, shown place): rows and clicks, the bootstrap's unit.
    cell = (a * width + b)[intervened]
    shown_at = position[intervened]
    who = reader[intervened]
    key = (who * width * width + cell) * width + shown_at
    groups, group_of = np.unique(key, return_inverse=True)
    group_rows = np.bincount(group_of).astype(np.float64)
    group_clicks = np.bincount(group_of, weights=clicked[intervened])
    group_reader = groups // (width**3)
    group_cell_place = groups % (width**3)
    readers = int(reader.max(initial=-1)) + 1

    def counts(weight: Floats) -> tuple[Floats, Floats]:
        w = weight[group_reader]
        size = width**3
        n = np.bincount(group_cell_place, weights=w * group_rows, minlength=size)
        c = np.bincount(group_cell_place, weights=w * group_clicks, minlength=size)
        shape = (width * width, width)
        return np.asarray(n, np.float64).reshape(shape), np.asarray(c, np.float64).reshape(shape)

    n, c = counts(np.ones(readers))
    fitted = _fit(n, c)
    if np.isnan(fitted[1:]).all():
        raise TooFewInterventions(
            "no cell where the two rankers disagree links place 0, with clicks, to "
            "another place: nothing to harvest"
        )
    estimate, eta = _curve(n, c, width)
    extrapolated = np.isnan(fitted)

    rng = np.random.default_rng(seed)
    reps = np.empty((bootstrap, width))
    for r in range(bootstrap):
        weight = np.bincount(rng.integers(0, readers, readers), minlength=readers)
        reps[r] = _curve(*counts(weight.astype(np.float64)), width)[0]
    reps = np.where(np.isnan(reps), estimate, reps)
    low, high = np.percentile(reps, [2.5, 97.5], axis=0)
    return HarvestedBias(
        estimate=estimate,
        low=low,
        high=high,
        shown=n.sum(axis=0).astype(np.int64),
        clicks=c.sum(axis=0).astype(np.int64),
        extrapolated=extrapolated,
        eta=eta,
        replicates=reps,
        pages_a=pages_a,
        pages_b=pages_b,
        readers=readers,
        intervened_cells=int(np.count_nonzero(n.sum(axis=1))),
        notes=notes,
    )


@dataclass(frozen=True)
class HarvestInputs:
    """What `harvest_position_bias` reads, from a served log and two models."""

    logged: pl.DataFrame
    place_a: Ints
    place_b: Ints
    served_by_a: npt.NDArray[np.bool_]


def harvest_inputs(
    table: pl.DataFrame,
    exposures: pl.LazyFrame,
    model_a: Path,
    model_b: Path,
    *,
    variant_a: str,
    variant_b: str,
) -> HarvestInputs:
    """Score a served log with the two variants' models.

    `table`: feature rows of the served log, one per shown item (request_id,
    user_id, position from 0, clicked, and every feature the models read);
    `exposures`: `read_exposures` output, whose `variant` says which variant
    served each request (and `explored`, when logged). `model_a`/`model_b`:
    LightGBM model.txt files. Pages of other variants are dropped. Each row's
    place under a model is its rank by that model's score among its page's
    logged items: this matches the experiment only when a page logs every
    candidate its ranker ordered (a top_k cut would make the shown set depend
    on the ranker)."""
    columns = ["request_id", "variant"]
    if "explored" in exposures.collect_schema().names():
        columns.append("explored")
    served = exposures.select(columns).unique("request_id").collect()
    rows = table.drop([c for c in columns[1:] if c in table.columns]).join(
        served.filter(pl.col("variant").is_in([variant_a, variant_b])),
        on="request_id",
        how="inner",
        maintain_order="left",
    )
    if rows.height == 0:
        raise ValueError(f"exposures: no page served by variant {variant_a!r} or {variant_b!r}")
    scores = {}
    for name, path in (("a", model_a), ("b", model_b)):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        booster = lgb.Booster(model_file=path)
        features = booster.feature_name()
        absent = set(features) - set(rows.columns)
        if absent:
            raise ValueError(f"{path}: features not in the table: {sorted(absent)}")
        scores[name] = np.asarray(
            booster.predict(rows.select(features).to_numpy().astype(np.float32)), np.float64
        )
    ranked = rows.with_columns(pl.Series("_a", scores["a"]), pl.Series("_b", scores["b"])).select(
        (pl.col(s).rank("ordinal", descending=True).over("request_id") - 1).cast(pl.Int64)
        for s in ("_a", "_b")
    )
    return HarvestInputs(
        logged=rows.drop("variant"),
        place_a=ranked["_a"].to_numpy(),
        place_b=ranked["_b"].to_numpy(),
        served_by_a=(rows["variant"] == variant_a).to_numpy(),
    )
