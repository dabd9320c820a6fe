"""Off-policy estimates of a deterministic target ranking's clicks per page
view, from logged rows (`logged_feedback`).

The target is given per logged row as the 0-based place it would give that
item among the page's logged items (`target_position`, -1 when it would not
show it). Every estimate is a mean of page-level contributions, pages
independent, with a normal 95 % interval, the Kish effective number of
pages, and the share of target placements the log cannot support.

Estimators and their assumptions:
- iips: independent-item IPS: sum_k w_k c_k, w = [target place == logged
  place] / propensity. Assumes a click on an item depends only on that item
  and its place (not on the rest of the page). `clip` caps w (clipped IPS:
  lower variance, biased down).
- snips: iips self-normalised by the page's mean weight (a ratio of sums;
  interval by the delta method). Same assumption; small bias, less variance.
- pbm: position-based IPS: each click weighted by theta(target place) /
  theta(logged place). Assumes the position-based click model and a correct
  examination curve; uses all traffic, not only explored pages. Its interval
  adds the curve's bootstrap uncertainty.
- dr: doubly robust: the reward model's value of the target page plus the
  iips-weighted residuals; unbiased if either the propensities or the reward
  model (theta_k * alpha(item), position-based) are right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.offpolicy.position_bias import (
    ALL_DEVICES,
    PositionBias,
    curve_from_counts,
    shuffled_counts,
)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# Below this many effective pages (Kish) the normal interval is not to be
# trusted: the estimate rests on a handful of heavily weighted pages.
MIN_EFFECTIVE_PAGES = 100
# Above this share of target placements the logging policy could not have
# produced, the estimate misses that part of the target: it is biased.
MAX_UNSUPPORTED_SHARE = 0.10
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate of clicks per page view (or a difference)."""

    estimator: str
    value: float
    low: float
    high: float
    standard_error: float
    pages: int
    effective_pages: float
    unsupported_share: float
    supported: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Parts:
    """What an estimate is made of: its value, the page-level influence
    (mean 0; se = sd / sqrt(n)), extra variance (the examination curve's),
    replicate values for that variance, page weights, unsupported share."""

    name: str
    value: float
    influence: Floats
    replicates: Floats | None
    page_weight: Floats
    unsupported_share: float


def pages_of(logged: pl.DataFrame) -> Ints:
    """Page index 0.. of each row (by request id)."""
    return logged["request_id"].rank("dense").to_numpy().astype(np.int64) - 1


def _per_page(page: Ints, values: Floats, pages: int) -> Floats:
    return np.bincount(page, weights=values, minlength=pages).astype(np.float64)


def _places(page: Ints, key: Floats, tiebreak: npt.ArrayLike) -> Ints:
    """Place within its page of each row when pages are ordered by `key`,
    highest first, NaN last, ties by `tiebreak` (lowest first)."""
    value = np.where(np.isnan(key), -np.inf, key)
    order = np.lexsort((np.asarray(tiebreak), -value, page))
    first = np.searchsorted(page[order], page[order], side="left")
    out = np.empty(page.size, np.int64)
    out[order] = np.arange(page.size) - first
    return out


def logged_order_positions(logged: pl.DataFrame) -> Ints:
    """The logging policy's deterministic place of each row (0-based): the
    order of the logged scores, highest first, ties by the logged place.
    Explored pages shuffled only the places; the scores are the model's."""
    score = logged["score"].to_numpy().astype(np.float64)
    return _places(pages_of(logged), score, logged["position"].to_numpy())


def positions_by(logged: pl.DataFrame, key: npt.ArrayLike) -> Ints:
    """The place (0-based) each row would take if every page were ordered by
    `key`, highest first; NaN last; ties in the logger's deterministic order.
    Never by the logged place: on explored pages that is the shuffle's draw,
    and a target that follows the draw is not a fixed policy (its IPS
    estimate would be biased upwards)."""
    value = np.asarray(key, np.float64)
    return _places(pages_of(logged), value, logged_order_positions(logged))


def _shuffled_depth(logged: pl.DataFrame, page: Ints, pages: int) -> Ints:
    """Per page, how many top places the logging policy randomises: the places
    with a propensity below 1 (0 for a deterministic logger)."""
    below = (logged["propensity"].to_numpy() < 1.0).astype(np.float64)
    return _per_page(page, below, pages).astype(np.int64)


def _gaps(page: Ints, target: Ints, pages: int) -> tuple[Floats, Floats]:
    """Per page, target places left to an item the log did not show (places
    0..max target place without a logged row) and the target's places."""
    shown = target >= 0
    filled = _per_page(page[shown], np.ones(int(shown.sum())), pages)
    top = np.full(pages, -1.0)
    np.maximum.at(top, page[shown], target[shown].astype(np.float64))
    places = top + 1.0
    return places - filled, places


def _check(logged: pl.DataFrame, target: npt.ArrayLike) -> Ints:
    t = np.asarray(target, np.int64)
    if t.shape != (logged.height,):
        raise ValueError(
            f"target_position: {t.shape[0] if t.ndim else 0:,} values for {logged.height:,} "
            "logged rows"
        )
    if logged.height == 0:
        raise ValueError("logged: no rows to evaluate")
    return t


def _iips_parts(
    logged: pl.DataFrame, target: Ints, clip: float | None, name: str
) -> tuple[_Parts, Floats, Ints]:
    page = pages_of(logged)
    pages = int(page.max()) + 1
    position = logged["position"].to_numpy().astype(np.int64)
    propensity = logged["propensity"].to_numpy().astype(np.float64)
    clicked = logged["clicked"].to_numpy().astype(np.float64)
    weight = (target == position) / propensity
    if clip is not None:
        weight = np.minimum(weight, clip)
    per_page = _per_page(page, weight * clicked, pages)
    value = float(per_page.mean())
    # Support: the logger put the item at the target place with a positive
    # chance if it was logged there, or that is its deterministic place, or
    # both lie within the shuffled top D.
    det = logged_order_positions(logged)
    depth = _shuffled_depth(logged, page, pages)[page]
    shown = target >= 0
    supported = (target == position) | (target == det) | ((target < depth) & (det < depth))
    gaps, places = _gaps(page, target, pages)
    unsupported = float(((shown & ~supported).sum() + gaps.sum()) / max(places.sum(), 1.0))
    parts = _Parts(
        name,
        value,
        per_page - value,
        None,
        _page_weight(page, weight, shown, pages),
        unsupported,
    )
    return parts, weight, page


def _page_weight(page: Ints, weight: Floats, shown: npt.NDArray[np.bool_], pages: int) -> Floats:
    """A page's importance weight: its mean weight over the target's placements."""
    count = _per_page(page[shown], np.ones(int(shown.sum())), pages)
    total = _per_page(page[shown], weight[shown], pages)
    return np.divide(total, count, out=np.zeros(pages), where=count > 0)


def _finish(parts: _Parts) -> Estimate:
    n = parts.influence.size
    variance = float(np.sum(parts.influence**2) / (n * (n - 1))) if n > 1 else float("nan")
    if parts.replicates is not None:
        variance += float(np.var(parts.replicates, ddof=1))
    se = float(np.sqrt(variance))
    w = parts.page_weight
    ess = float(w.sum() ** 2 / np.sum(w**2)) if np.any(w > 0) else 0.0
    reasons = []
    if ess < MIN_EFFECTIVE_PAGES:
        reasons.append(
            f"too little exploration: {ess:,.1f} effective pages, fewer than the "
            f"{MIN_EFFECTIVE_PAGES} needed"
        )
    if parts.unsupported_share > MAX_UNSUPPORTED_SHARE:
        reasons.append(
            f"target too far from the logger: {parts.unsupported_share:.1%} of its placements "
            f"the logging policy could not produce (at most {MAX_UNSUPPORTED_SHARE:.0%})"
        )
    return Estimate(
        estimator=parts.name,
        value=parts.value,
        low=parts.value - Z95 * se,
        high=parts.value + Z95 * se,
        standard_error=se,
        pages=n,
        effective_pages=ess,
        unsupported_share=parts.unsupported_share,
        supported=not reasons,
        reason="; ".join(reasons),
    )


def iips_parts(logged: pl.DataFrame, target: Ints, clip: float | None = None) -> _Parts:
    name = "iips" if clip is None else f"iips (clipped at {clip:g})"
    return _iips_parts(logged, target, clip, name)[0]


def snips_parts(logged: pl.DataFrame, target: Ints) -> _Parts:
    base = _iips_parts(logged, target, None, "snips")[0]
    numerator = base.influence + base.value  # per-page sum of w c
    denominator = base.page_weight  # per page mean weight: 1 in expectation
    mean_den = float(denominator.mean())
    if mean_den <= 0:
        ratio, influence = float("nan"), np.zeros_like(numerator)
    else:
        ratio = float(numerator.mean() / mean_den)
        influence = (numerator - ratio * denominator) / mean_den
    return _Parts("snips", ratio, influence, None, base.page_weight, base.unsupported_share)


def _pbm_weights(
    logged: pl.DataFrame, target: Ints, theta: Callable[[Ints, Any], Floats]
) -> Floats:
    position = logged["position"].to_numpy().astype(np.int64)
    device = logged["device"].to_numpy() if "device" in logged.columns else None
    shown = target >= 0
    weight = np.zeros(logged.height)
    weight[shown] = theta(target[shown], None if device is None else device[shown]) / theta(
        position[shown], None if device is None else device[shown]
    )
    return weight


def _curve_influence(logged: pl.DataFrame, page: Ints, pages: int, bias: PositionBias) -> Floats:
    """Each page's influence (pages x places) on the all-traffic curve when it
    was estimated from these very pages: the curve is a function of per-page
    means of shown and clicked counts at the shuffled places, differentiated
    numerically (the delta method)."""
    curve = bias.curves[ALL_DEVICES]
    depth, places = bias.depth, curve.estimate.size
    shown, clicked = shuffled_counts(logged, page, pages, depth)
    counts = np.concatenate([shown, clicked], axis=1)
    mean = counts.mean(axis=0)
    base = curve_from_counts(mean[:depth], mean[depth:], places)
    jacobian = np.empty((places, 2 * depth))
    for j in range(2 * depth):
        step = 1e-6 * max(mean[j], 1e-9)
        bumped = mean.copy()
        bumped[j] += step
        jacobian[:, j] = (curve_from_counts(bumped[:depth], bumped[depth:], places) - base) / step
    return np.asarray((counts - mean) @ jacobian.T, np.float64)


def pbm_parts(
    logged: pl.DataFrame, target: Ints, position_bias: PositionBias, same_log: bool = False
) -> _Parts:
    """`same_log`: the curve was estimated from these pages, so its error and
    the clicks' are correlated; the interval then takes each page's share in
    both (the delta method), else adds the curve's bootstrap variance as
    independent."""
    page = pages_of(logged)
    pages = int(page.max()) + 1
    clicked = logged["clicked"].to_numpy().astype(np.float64)
    position = logged["position"].to_numpy().astype(np.int64)
    device = logged["device"].to_numpy() if "device" in logged.columns else None
    weight = _pbm_weights(logged, target, position_bias.examination)
    per_page = _per_page(page, weight * clicked, pages)
    value = float(per_page.mean())
    influence = per_page - value
    shown = target >= 0
    used = shown & (clicked > 0)
    replicates = None
    if same_log and set(position_bias.curves) == {ALL_DEVICES}:
        theta = position_bias.examination
        places = position_bias.curves[ALL_DEVICES].estimate.size
        t, p, c = target[used], position[used], clicked[used]
        theta_t, theta_p = theta(t), theta(p)
        gradient = np.zeros(places)
        inside_t, inside_p = t < places, p < places
        np.add.at(gradient, t[inside_t], (c / theta_p)[inside_t])
        np.add.at(gradient, p[inside_p], -(c * theta_t / theta_p**2)[inside_p])
        influence = influence + _curve_influence(logged, page, pages, position_bias) @ (
            gradient / pages
        )
    else:
        # The estimate under each bootstrap curve (only clicked rows count).
        on = None if device is None else device[used]
        theta_target = position_bias.replicate_examination(target[used], on)
        theta_logged = position_bias.replicate_examination(position[used], on)
        replicates = (theta_target / theta_logged) @ clicked[used] / pages
    gaps, places_total = _gaps(page, target, pages)
    unsupported = float(gaps.sum() / max(places_total.sum(), 1.0))
    return _Parts(
        "pbm",
        value,
        influence,
        replicates,
        _page_weight(page, weight, shown, pages),
        unsupported,
    )


def dr_parts(
    logged: pl.DataFrame, target: Ints, position_bias: PositionBias, attractiveness: Floats
) -> _Parts:
    base, weight, page = _iips_parts(logged, target, None, "dr")
    pages = base.page_weight.size
    position = logged["position"].to_numpy().astype(np.int64)
    device = logged["device"].to_numpy() if "device" in logged.columns else None
    clicked = logged["clicked"].to_numpy().astype(np.float64)
    shown = target >= 0
    alpha = np.asarray(attractiveness, np.float64)
    q_logged = np.clip(position_bias.examination(position, device) * alpha, 0.0, 1.0)
    q_target = np.zeros(logged.height)
    q_target[shown] = np.clip(
        position_bias.examination(target[shown], None if device is None else device[shown])
        * alpha[shown],
        0.0,
        1.0,
    )
    per_page = _per_page(page, q_target + weight * (clicked - q_logged), pages)
    value = float(per_page.mean())
    return _Parts("dr", value, per_page - value, None, base.page_weight, base.unsupported_share)


@dataclass(frozen=True)
class Inputs:
    """What some estimators need beyond the log: the examination curve (pbm,
    dr), the reward model's attractiveness per row (dr), a weight cap (iips)."""

    position_bias: PositionBias | None = None
    attractiveness: Floats | None = None
    clip: float | None = None
    # The curve was estimated from the evaluated pages themselves (pbm).
    curve_from_same_log: bool = False


def _need(value: Any, what: str, name: str) -> Any:
    if value is None:
        raise ValueError(f"estimator {name} needs {what}")
    return value


PARTS: dict[str, Callable[[pl.DataFrame, Ints, Inputs], _Parts]] = {
    "iips": lambda lg, t, i: iips_parts(lg, t, i.clip),
    "snips": lambda lg, t, i: snips_parts(lg, t),
    "pbm": lambda lg, t, i: pbm_parts(
        lg, t, _need(i.position_bias, "a position-bias estimate", "pbm"), i.curve_from_same_log
    ),
    "dr": lambda lg, t, i: dr_parts(
        lg,
        t,
        _need(i.position_bias, "a position-bias estimate", "dr"),
        _need(i.attractiveness, "a reward model (fit_reward_model)", "dr"),
    ),
}
ESTIMATORS = tuple(PARTS)


def estimate(
    name: str, logged: pl.DataFrame, target_position: npt.ArrayLike, inputs: Inputs | None = None
) -> Estimate:
    """The named estimator's estimate of the target's clicks per page view."""
    if name not in PARTS:
        raise ValueError(f"unknown estimator {name!r} (choose from {', '.join(ESTIMATORS)})")
    return _finish(PARTS[name](logged, _check(logged, target_position), inputs or Inputs()))


def iips(
    logged: pl.DataFrame, target_position: npt.ArrayLike, clip: float | None = None
) -> Estimate:
    return _finish(iips_parts(logged, _check(logged, target_position), clip))


def snips(logged: pl.DataFrame, target_position: npt.ArrayLike) -> Estimate:
    return _finish(snips_parts(logged, _check(logged, target_position)))


def pbm(
    logged: pl.DataFrame,
    target_position: npt.ArrayLike,
    position_bias: PositionBias,
    curve_from_same_log: bool = False,
) -> Estimate:
    return _finish(
        pbm_parts(logged, _check(logged, target_position), position_bias, curve_from_same_log)
    )


def dr(
    logged: pl.DataFrame,
    target_position: npt.ArrayLike,
    position_bias: PositionBias,
    attractiveness: Floats,
) -> Estimate:
    return _finish(dr_parts(logged, _check(logged, target_position), position_bias, attractiveness))


def difference(
    name: str,
    logged: pl.DataFrame,
    target_a: npt.ArrayLike,
    target_b: npt.ArrayLike,
    inputs: Inputs | None = None,
) -> Estimate:
    """a - b on the same pages: the interval from the paired page-level
    influences (and the paired curve replicates for pbm)."""
    if name not in PARTS:
        raise ValueError(f"unknown estimator {name!r} (choose from {', '.join(ESTIMATORS)})")
    given = inputs or Inputs()
    a = PARTS[name](logged, _check(logged, target_a), given)
    b = PARTS[name](logged, _check(logged, target_b), given)
    replicates = None
    if a.replicates is not None and b.replicates is not None:
        replicates = a.replicates - b.replicates
    worse = a if _finish(a).effective_pages <= _finish(b).effective_pages else b
    return _finish(
        _Parts(
            f"{a.name} difference",
            a.value - b.value,
            a.influence - b.influence,
            replicates,
            worse.page_weight,
            max(a.unsupported_share, b.unsupported_share),
        )
    )
