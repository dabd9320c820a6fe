"""Position bias from randomised traffic: how likely a reader examines each
place, relative to the first (theta_0 = 1).

Within the shuffled top D of an explored page an item's place is independent
of its relevance, so the click-through rate at place k over those rows,
divided by the rate at place 0, estimates theta_k / theta_0 under the
position-based click model (P(click) = theta(place) * attractiveness(item)).
Places at or beyond D are never randomised: their values come from a power
law theta_k = (1 + k) ** -eta fitted to the estimated ratios (weighted least
squares on the logs) and are marked extrapolated. Intervals are percentile
bootstraps over explored pages (seeded); the bootstrap curves are kept so the
position-based estimator can carry their uncertainty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

# Written beside a click log by `ranker exposures --position-bias`.
POSITION_BIAS_FILE = "position_bias.json"
# Fewer explored pages, or clicks at place 0 (every ratio's denominator),
# leave the ratios mostly noise: refuse rather than report them.
MIN_EXPLORED_PAGES = 100
MIN_CLICKS_AT_FIRST_PLACE = 20
ALL_DEVICES = "all"

Floats = npt.NDArray[np.float64]


class TooLittleExploration(ValueError):
    """The log holds too few explored pages or clicks to estimate the curve."""


@dataclass(frozen=True)
class Curve:
    """One device's (or all traffic's) examination curve, place 0 first."""

    estimate: Floats
    low: Floats
    high: Floats
    pages: npt.NDArray[np.int64]
    clicks: npt.NDArray[np.int64]
    extrapolated: npt.NDArray[np.bool_]
    eta: float
    # Bootstrap curves (replicates x places): the estimate's uncertainty.
    replicates: Floats

    def at(self, position: npt.NDArray[np.int64]) -> Floats:
        """theta at each place; beyond the table, the power law."""
        position = np.asarray(position, np.int64)
        inside = position < self.estimate.size
        out = (1.0 + position.astype(np.float64)) ** -self.eta
        out[inside] = self.estimate[position[inside]]
        return out


@dataclass(frozen=True)
class PositionBiasError:
    """Absolute error against a known curve, per place and at worst."""

    per_position: dict[str, list[float]]
    max_abs_error: float


@dataclass(frozen=True)
class PositionBias:
    """Examination probability by place (and device), relative to place 0."""

    curves: dict[str, Curve]
    depth: int
    explored_pages: int
    notes: list[str] = field(default_factory=list)

    def examination(
        self, position: npt.NDArray[np.int64], device: npt.NDArray[Any] | None = None
    ) -> Floats:
        """theta at each place (0 first); per device when given and estimated,
        else from all traffic."""
        position = np.asarray(position, np.int64)
        out = self.curves[ALL_DEVICES].at(position)
        if device is not None:
            device = np.asarray(device).astype(str)
            for name, curve in self.curves.items():
                if name != ALL_DEVICES:
                    rows = device == name
                    out[rows] = curve.at(position[rows])
        return out

    def replicate_examination(
        self, position: npt.NDArray[np.int64], device: npt.NDArray[Any] | None = None
    ) -> Floats:
        """Bootstrap replicates x rows of theta (places beyond a replicate's
        table take its last value's power law: the point estimate's eta)."""
        position = np.asarray(position, np.int64)
        curves = [(ALL_DEVICES, np.ones(position.size, bool))]
        if device is not None:
            device = np.asarray(device).astype(str)
            curves += [(n, device == n) for n in self.curves if n != ALL_DEVICES]
        reps = self.curves[ALL_DEVICES].replicates
        out = np.empty((reps.shape[0], position.size))
        for name, rows in curves:
            curve = self.curves[name]
            p = position[rows]
            inside = p < curve.estimate.size
            block = np.broadcast_to((1.0 + p) ** -curve.eta, (reps.shape[0], p.size)).copy()
            block[:, inside] = curve.replicates[:, p[inside]]
            out[:, rows] = block
        return out

    def table(self) -> pl.DataFrame:
        return pl.concat(
            pl.DataFrame(
                {
                    "device": name,
                    "position": np.arange(c.estimate.size),
                    "estimate": c.estimate,
                    "low": c.low,
                    "high": c.high,
                    "pages": c.pages,
                    "clicks": c.clicks,
                    "extrapolated": c.extrapolated,
                }
            )
            for name, c in self.curves.items()
        )

    def markdown(self) -> str:
        lines = [
            f"Examination probability by place, relative to place 0: {self.explored_pages:,} "
            f"explored pages, shuffled depth {self.depth}; 95 % bootstrap intervals; "
            "places at or beyond the depth extrapolated by a power law (1 + k) ** -eta.",
            "",
            "| device | place | estimate | 95 % interval | pages | clicks | extrapolated |",
            "|---|---:|---:|---|---:|---:|---|",
        ]
        for row in self.table().iter_rows(named=True):
            lines.append(
                f"| {row['device']} | {row['position']} | {row['estimate']:.3f} | "
                f"[{row['low']:.3f}, {row['high']:.3f}] | {row['pages']:,} | {row['clicks']:,} | "
                f"{'yes' if row['extrapolated'] else 'no'} |"
            )
        etas = ", ".join(f"{n} {c.eta:.3f}" for n, c in self.curves.items())
        lines += ["", f"Fitted eta: {etas}.", *(f"Note: {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"

    def error_against(
        self, true_curve: Callable[[npt.NDArray[np.int64]], Floats]
    ) -> PositionBiasError:
        """Per place and largest absolute error against the true curve,
        normalised to the truth at place 0 (the estimate's scale)."""
        per: dict[str, list[float]] = {}
        for name, c in self.curves.items():
            places = np.arange(c.estimate.size)
            truth = true_curve(places) / true_curve(np.zeros(1, np.int64))[0]
            per[name] = np.abs(c.estimate - truth).tolist()
        worst = max((max(v) for v in per.values() if v), default=0.0)
        return PositionBiasError(per_position=per, max_abs_error=float(worst))

    def to_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "explored_pages": self.explored_pages,
            "notes": self.notes,
            "curves": {
                name: {
                    "estimate": c.estimate.tolist(),
                    "low": c.low.tolist(),
                    "high": c.high.tolist(),
                    "pages": c.pages.tolist(),
                    "clicks": c.clicks.tolist(),
                    "extrapolated": c.extrapolated.tolist(),
                    "eta": c.eta,
                    "replicates": c.replicates.tolist(),
                }
                for name, c in self.curves.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PositionBias:
        curves = {
            name: Curve(
                estimate=np.asarray(c["estimate"], np.float64),
                low=np.asarray(c["low"], np.float64),
                high=np.asarray(c["high"], np.float64),
                pages=np.asarray(c["pages"], np.int64),
                clicks=np.asarray(c["clicks"], np.int64),
                extrapolated=np.asarray(c["extrapolated"], bool),
                eta=float(c["eta"]),
                replicates=np.asarray(c["replicates"], np.float64).reshape(-1, len(c["estimate"])),
            )
            for name, c in data["curves"].items()
        }
        return cls(curves, int(data["depth"]), int(data["explored_pages"]), list(data["notes"]))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()) + "\n")

    @classmethod
    def read(cls, path: Path) -> PositionBias:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a position-bias estimate ({err})") from None


def _fit_eta(ratios: Floats, clicks: Floats, clicks_first: float) -> float:
    """eta of theta_k = (1 + k) ** -eta by weighted least squares through the
    origin on log ratios, places 1.. with clicks; weight 1 / var(log ratio)
    ~ 1 / (1/clicks_k + 1/clicks_0) (Poisson counts, the delta method)."""
    k = np.arange(ratios.size)
    use = (k >= 1) & (ratios > 0) & (clicks > 0)
    if not use.any() or clicks_first <= 0:
        return float("nan")
    x = np.log1p(k[use].astype(np.float64))
    y = np.log(ratios[use])
    w = 1.0 / (1.0 / clicks[use] + 1.0 / clicks_first)
    return float(-np.sum(w * x * y) / np.sum(w * x * x))


def curve_from_counts(shown: Floats, clicks: Floats, places: int) -> Floats:
    """The whole curve (shuffled places, then the power law) from the items
    shown and clicked at each shuffled place: sums or per-page means alike
    (both the ratios and the weighted fit are scale-free)."""
    depth = shown.size
    ctr = np.divide(clicks, shown, out=np.zeros(depth), where=shown > 0)
    ratios = ctr / ctr[0] if ctr[0] > 0 else np.full(depth, np.nan)
    eta = _fit_eta(ratios, clicks, float(clicks[0]))
    return np.concatenate([ratios, (1.0 + np.arange(depth, places)) ** -eta])


def shuffled_counts(
    logged: pl.DataFrame, page: npt.NDArray[np.int64], pages: int, depth: int
) -> tuple[Floats, Floats]:
    """Per page (pages x depth), the items shown and clicked at each place
    the logger shuffled (explored pages, propensity below 1; zeros elsewhere):
    what `estimate_position_bias` reads, for estimators that need each page's
    share in the curve."""
    rows = logged["explored"].to_numpy() & (logged["propensity"].to_numpy() < 1.0)
    position = logged["position"].to_numpy().astype(np.int64)
    rows &= position < depth
    shown = np.zeros((pages, depth))
    clicked = np.zeros((pages, depth))
    np.add.at(shown, (page[rows], position[rows]), 1.0)
    np.add.at(clicked, (page[rows], position[rows]), logged["clicked"].to_numpy()[rows])
    return shown, clicked


def _curve(
    shown: npt.NDArray[np.int64],
    clicked: npt.NDArray[np.int64],
    depth: int,
    places: int,
    bootstrap: int,
    rng: np.random.Generator,
) -> Curve:
    """`shown`, `clicked`: pages x depth counts of the shuffled places."""
    pages_k = shown.sum(axis=0)
    clicks_k = clicked.sum(axis=0)

    def full(s: Floats, c: Floats) -> tuple[Floats, float]:
        curve = curve_from_counts(s, c, places)
        return curve, _fit_eta(curve[:depth], c, float(c[0]))

    estimate, eta = full(pages_k.astype(np.float64), clicks_k.astype(np.float64))
    reps = np.empty((bootstrap, places))
    n = shown.shape[0]
    for b in range(bootstrap):
        pick = rng.integers(0, n, n)
        s, c = shown[pick].sum(axis=0), clicked[pick].sum(axis=0)
        reps[b] = full(s.astype(np.float64), c.astype(np.float64))[0]
    low, high = np.nanpercentile(reps, [2.5, 97.5], axis=0)
    pad = np.zeros(places - depth, np.int64)
    return Curve(
        estimate=estimate,
        low=low,
        high=high,
        pages=np.concatenate([pages_k, pad]),
        clicks=np.concatenate([clicks_k, pad]),
        extrapolated=np.arange(places) >= depth,
        eta=eta,
        replicates=_usable(reps, estimate),
    )


def _usable(reps: Floats, estimate: Floats) -> Floats:
    """Bootstrap replicates as the estimators divide by them: a resample
    with no click at a place (theta 0) or none at place 0 (no ratio at all)
    says only that the place is rare in that resample; it takes the point
    estimate there rather than a weight of infinity or a flat curve of 1."""
    return np.where(np.isfinite(reps) & (reps > 0), reps, estimate[None, :])


def _shuffled_counts(
    rows: pl.DataFrame, depth: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    page = rows["request_id"].rank("dense").to_numpy().astype(np.int64) - 1
    pages = int(page.max()) + 1 if rows.height else 0
    position = rows["position"].to_numpy().astype(np.int64)
    shown = np.zeros((pages, depth), np.int64)
    clicked = np.zeros((pages, depth), np.int64)
    np.add.at(shown, (page, position), 1)
    np.add.at(clicked, (page, position), rows["clicked"].to_numpy().astype(np.int64))
    return shown, clicked


def estimate_position_bias(
    logged: pl.DataFrame,
    *,
    by_device: bool = False,
    bootstrap: int = 200,
    seed: int = 0,
    places: int | None = None,
) -> PositionBias:
    """The examination curve from the explored pages of `logged`
    (`logged_feedback` rows): the shuffled places are those whose propensity
    is below 1 on an explored page. `places` (default: the longest page) sets
    how far the table reaches. Raises TooLittleExploration, in words, when the
    log cannot support the estimate; a device that cannot is left out with a note."""
    shuffled = logged.filter(pl.col("explored") & (pl.col("propensity") < 1.0))
    explored_pages = shuffled["request_id"].n_unique()
    depth = int(shuffled["position"].to_numpy().max(initial=-1)) + 1
    longest = int(logged["position"].to_numpy().max(initial=-1)) + 1
    places = max(places or 0, longest, depth)
    rng = np.random.default_rng(seed)

    def check(rows: pl.DataFrame, who: str) -> str | None:
        pages = rows["request_id"].n_unique()
        first = int(rows.filter(pl.col("position") == 0)["clicked"].sum())
        if depth < 2:
            return f"{who}: no shuffled places (exploration depth {depth}): nothing is randomised"
        if pages < MIN_EXPLORED_PAGES:
            return (
                f"{who}: {pages:,} explored pages, fewer than the {MIN_EXPLORED_PAGES} needed "
                "to estimate position bias; explore a larger share or wait for more traffic"
            )
        if first < MIN_CLICKS_AT_FIRST_PLACE:
            return (
                f"{who}: {first:,} clicks at the first place of explored pages, fewer than the "
                f"{MIN_CLICKS_AT_FIRST_PLACE} needed to estimate position bias"
            )
        return None

    if reason := check(shuffled, "all traffic"):
        raise TooLittleExploration(reason)
    curves = {
        ALL_DEVICES: _curve(*_shuffled_counts(shuffled, depth), depth, places, bootstrap, rng)
    }
    notes = []
    if by_device:
        for device in sorted(shuffled["device"].drop_nulls().unique().to_list()):
            rows = shuffled.filter(pl.col("device") == device)
            if reason := check(rows, f"device {device}"):
                notes.append(reason + "; all traffic's curve stands in for it")
                continue
            curves[device] = _curve(*_shuffled_counts(rows, depth), depth, places, bootstrap, rng)
    return PositionBias(curves, depth, explored_pages, notes)
