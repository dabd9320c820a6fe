"""`ranker experiment report`: an experiment's exposures and clicks, looked at
once per day (cumulatively), become per-variant metrics with reader-level
intervals, a sample-ratio-mismatch check, a sequential decision per variant
against the control, and a Markdown report with PNG charts."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ranker.experiments.analysis import (
    SRM_P_VALUE,
    Array,
    Decision,
    Estimate,
    GuardrailLimits,
    Guardrails,
    Look,
    SequentialResult,
    always_valid_interval,
    difference,
    guardrail_breaches,
    log_lift,
    mean_estimate,
    ratio_estimate,
    sequential_test,
    srm_p_value,
)

# The metrics, in report order; clicks per page view is the primary: see
# PRIMARY_WHY. A page shows several articles and a reader may click more than
# one, so clicks per page view can exceed 1: it is not a click-through rate
# (clicks / articles shown), and nothing here calls it one.
METRICS = {
    "clicks_per_page_view": "clicks per page view",
    "clicks_per_reader": "clicks per reader",
    "true_ndcg10": "true NDCG@10 (simulated truth)",
}
PRIMARY = "clicks_per_page_view"
PRIMARY_WHY = (
    "Clicks per page view is the primary metric: it is a per-page-view quantity whose "
    "scale does not change as readers accumulate days, so one mixing variance (on the "
    "relative lift) fits every look, and it does not mix the ranking's effect with how "
    "often readers came back. It counts every click on a page, which shows several "
    "articles, so it can exceed 1; it is not a click-through rate (clicks / articles "
    "shown). Clicks per reader grows with the length of the experiment and carries the "
    "spread of reader activity; it is reported beside it."
)
DEFAULT_TAU = 0.1
# A day counts as whole when the experiment's window covers at least this many
# of its 24 hours: a window read from the data starts at the first page view
# and ends at the last, a little inside days that were served whole.
WHOLE_DAY_HOURS = 23.0


@dataclass(frozen=True)
class VariantDecision:
    variant: str
    decision: Decision
    reason: str
    sequential: SequentialResult
    alpha: float
    # The always-valid interval for the relative lift in clicks per page view at
    # the last look, as a share.
    lift_interval: tuple[float, float]
    lift: float
    guardrail_breaches: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str
    control: str
    alpha: float
    tau: float
    days: list[str]
    counts: pl.DataFrame  # variant, readers, page_views, clicks at the last look
    # day, variant, metric, value, se, low, high, readers and page_views so far
    metrics: pl.DataFrame
    # day, variant, metric, value, se, low, high (vs control), readers and
    # page_views so far in the variant and the control together
    differences: pl.DataFrame
    weights: dict[str, float]
    srm_p: float
    decisions: list[VariantDecision]
    readers_in_several_variants: int
    has_truth: bool
    guardrails: Guardrails | None
    # day, page_views (that day), page_views_so_far, covered_hours, partial
    day_sizes: pl.DataFrame

    def look_label(self, day: str) -> str:
        """The day, marked when partial with its page views: "2026-01-10
        (partial: 42 page views)"."""
        row = self.day_sizes.filter(pl.col("day") == day).row(0, named=True)
        return day_label(day, row["page_views"], row["partial"])


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def day_sizes(times: pl.Series, window: tuple[datetime, datetime] | None = None) -> pl.DataFrame:
    """Per UTC day of `times` (one per page view): its page views, those up to
    and including it, the hours of the day inside the window (by default from
    the first page view to the last) and whether the day is partial (the
    window covers less than WHOLE_DAY_HOURS of it)."""
    if isinstance(times.dtype, pl.Datetime) and times.dtype.time_zone is not None:
        times = times.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    start, end = (times.min(), times.max()) if window is None else window
    if not (isinstance(start, datetime) and isinstance(end, datetime)):
        raise ValueError(f"page view times {times.dtype}: not times, or none")
    start, end = _naive_utc(start), _naive_utc(end)
    counts = (
        pl.DataFrame({"date": times.dt.date()})
        .group_by("date")
        .agg(pl.len().cast(pl.Int64).alias("page_views"))
        .sort("date")
    )
    rows = []
    so_far = 0
    for date, page_views in counts.iter_rows():
        begins = datetime.combine(date, time())
        overlap = min(end, begins + timedelta(days=1)) - max(start, begins)
        hours = max(overlap.total_seconds() / 3600, 0.0)
        so_far += page_views
        rows.append((str(date), page_views, so_far, hours, hours < WHOLE_DAY_HOURS))
    return pl.DataFrame(
        rows,
        schema={
            "day": pl.String,
            "page_views": pl.Int64,
            "page_views_so_far": pl.Int64,
            "covered_hours": pl.Float64,
            "partial": pl.Boolean,
        },
        orient="row",
    )


def day_label(day: str, page_views: int, partial: bool) -> str:
    """How a day is named in tables and charts: a partial day with its sample size."""
    if partial:
        return f"{day} (partial: {page_views:,} page views)"
    return f"{day} ({page_views:,} page views)"


def page_views(
    exposures: pl.LazyFrame,
    clicks: pl.LazyFrame,
    truth: pl.LazyFrame | None = None,
    experiment: str | None = None,
) -> tuple[str, pl.DataFrame]:
    """One row per page view of the experiment: request_id, user_id, variant,
    day (UTC date of the exposure), clicks (distinct shown articles clicked at
    or after the exposure) and, with truth, true_ndcg10."""
    names = sorted(
        n
        for n in exposures.select(pl.col("experiment").unique()).collect().to_series().to_list()
        if n
    )
    if experiment is None:
        if len(names) != 1:
            raise ValueError(
                f"the exposure log holds experiments {names or 'none'}; name one with --experiment"
            )
        experiment = names[0]
    elif experiment not in names:
        raise ValueError(f"--experiment {experiment!r} is not in the exposure log ({names})")
    shown = exposures.filter(pl.col("experiment") == experiment)
    views = shown.group_by("request_id").agg(
        pl.col("time").min(), pl.col("user_id").first(), pl.col("variant").first()
    )
    clicked = (
        clicks.select("request_id", "article_id", _utc(clicks, "time").alias("click_time"))
        .join(shown.select("request_id", "article_id", "time"), on=["request_id", "article_id"])
        .filter(pl.col("click_time") >= pl.col("time"))
        .unique(["request_id", "article_id"])
        .group_by("request_id")
        .agg(pl.len().cast(pl.Int64).alias("clicks"))
    )
    rows = views.join(clicked, on="request_id", how="left").with_columns(
        pl.col("clicks").fill_null(0), pl.col("time").dt.date().cast(pl.String).alias("day")
    )
    if truth is not None:
        rows = rows.join(
            truth.select("request_id", pl.col("true_ndcg10").cast(pl.Float64)),
            on="request_id",
            how="left",
        )
    return experiment, rows.sort("time", "request_id").collect()


def _utc(frame: pl.LazyFrame, column: str) -> pl.Expr:
    """A time column as UTC datetimes, whichever way a clicks file stored it:
    ISO strings, naive datetimes (taken as UTC) or datetimes in any zone."""
    dtype = frame.collect_schema()[column]
    col = pl.col(column)
    if dtype == pl.String:
        return col.str.to_datetime(time_zone="UTC")
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"clicks: column {column!r} is {dtype}, not a time")
    if dtype.time_zone is None:
        return col.dt.replace_time_zone("UTC")
    return col.dt.convert_time_zone("UTC")


def _readers(views: pl.DataFrame, has_truth: bool) -> pl.DataFrame:
    aggregates = [pl.len().alias("views"), pl.col("clicks").sum().alias("clicks")]
    if has_truth:
        aggregates += [
            pl.col("true_ndcg10").sum().alias("ndcg_sum"),
            pl.col("true_ndcg10").is_not_null().sum().alias("ndcg_views"),
        ]
    return views.group_by("variant", "user_id").agg(aggregates)


def _arrays(readers: pl.DataFrame, variant: str, column: str) -> Array:
    return readers.filter(pl.col("variant") == variant)[column].to_numpy().astype(np.float64)


def _estimates(readers: pl.DataFrame, variant: str, has_truth: bool) -> dict[str, Estimate]:
    views = _arrays(readers, variant, "views")
    clicks = _arrays(readers, variant, "clicks")
    out = {
        "clicks_per_page_view": ratio_estimate(clicks, views),
        "clicks_per_reader": mean_estimate(clicks),
    }
    if has_truth:
        out["true_ndcg10"] = ratio_estimate(
            _arrays(readers, variant, "ndcg_sum"), _arrays(readers, variant, "ndcg_views")
        )
    return out


def analyze(
    experiment: str,
    views: pl.DataFrame,
    *,
    control: str | None = None,
    weights: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    tau: float = DEFAULT_TAU,
    guardrails: Guardrails | None = None,
    limits: GuardrailLimits | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> ExperimentReport:
    """Every metric at every daily look, and each variant's decision. The
    `window` the experiment ran (UTC; by default from its first page view to
    its last) says which days were served only in part."""
    if views.is_empty():
        raise ValueError(f"experiment {experiment!r}: no page views")
    # A reader seen in several variants (a forced variant, a reshuffled salt)
    # belongs to no arm: counting them in both would blur the comparison.
    spread = views.group_by("user_id").agg(pl.col("variant").n_unique().alias("n"))
    mixed = spread.filter(pl.col("n") > 1)["user_id"]
    views = views.filter(~pl.col("user_id").is_in(mixed.implode()))
    variants = sorted(views["variant"].unique().to_list())
    if control is None:
        if "control" not in variants:
            raise ValueError(f"no variant named 'control' in {variants}; name one with --control")
        control = "control"
    elif control not in variants:
        raise ValueError(f"--control {control!r} is not a variant of the experiment ({variants})")
    treatments = [v for v in variants if v != control]
    if not treatments:
        raise ValueError(f"experiment {experiment!r} has only the control variant {control!r}")
    weights = dict(weights) if weights else dict.fromkeys(variants, 1.0)
    has_truth = "true_ndcg10" in views.columns and views["true_ndcg10"].is_not_null().any()
    # Bonferroni: each variant against the control at alpha / k keeps the
    # chance of any false decision at alpha.
    alpha_each = alpha / len(treatments)
    tau2 = tau**2

    days = sorted(views["day"].unique().to_list())
    metric_rows, diff_rows = [], []
    looks: dict[str, list[Look]] = {t: [] for t in treatments}
    readers = views.clear()
    for day in days:
        readers = _readers(views.filter(pl.col("day") <= day), bool(has_truth))
        per_variant = {v: _estimates(readers, v, bool(has_truth)) for v in variants}
        # The sample behind every point: readers and page views so far.
        sizes = {
            v: (
                readers.filter(pl.col("variant") == v).height,
                int(readers.filter(pl.col("variant") == v)["views"].sum()),
            )
            for v in variants
        }
        for variant, estimates in per_variant.items():
            for metric, est in estimates.items():
                metric_rows.append(
                    (day, variant, metric, est.value, est.se, *est.interval(), *sizes[variant])
                )
        for t in treatments:
            both = (sizes[t][0] + sizes[control][0], sizes[t][1] + sizes[control][1])
            for metric, est in per_variant[t].items():
                diff = difference(est, per_variant[control][metric])
                diff_rows.append((day, t, metric, diff.value, diff.se, *diff.interval(), *both))
            lift = log_lift(per_variant[t][PRIMARY], per_variant[control][PRIMARY])
            looks[t].append(Look(day, lift.value, lift.se**2))
    columns = ["day", "variant", "metric", "value", "se", "low", "high", "readers", "page_views"]
    metrics = pl.DataFrame(metric_rows, schema=columns, orient="row")
    differences = pl.DataFrame(diff_rows, schema=columns, orient="row")
    counts = (
        readers.group_by("variant")
        .agg(
            pl.len().alias("readers"),
            pl.col("views").sum().alias("page_views"),
            pl.col("clicks").sum().alias("clicks"),
        )
        .sort("variant")
    )
    srm_p = srm_p_value(dict(zip(counts["variant"], counts["readers"], strict=True)), weights)

    decisions = []
    for t in treatments:
        result = sequential_test(looks[t], tau2, alpha_each)
        last = looks[t][-1]
        low, high = always_valid_interval(last.estimate, last.variance, tau2, alpha_each)
        breaches = (
            guardrail_breaches(guardrails, t, control, limits or GuardrailLimits())
            if guardrails is not None
            else []
        )
        decision, reason = _decide(result, srm_p, breaches)
        decisions.append(
            VariantDecision(
                t,
                decision,
                reason,
                result,
                alpha_each,
                (math.expm1(low), math.expm1(high)),
                math.expm1(last.estimate),
                breaches,
            )
        )
    return ExperimentReport(
        experiment,
        control,
        alpha,
        tau,
        days,
        counts,
        metrics,
        differences,
        weights,
        srm_p,
        decisions,
        mixed.len(),
        bool(has_truth),
        guardrails,
        day_sizes(views["time"], window),
    )


def _decide(result: SequentialResult, srm_p: float, breaches: list[str]) -> tuple[Decision, str]:
    if srm_p < SRM_P_VALUE:
        return Decision.INVALID, (
            f"readers per variant do not match the weights (chi-square p = {srm_p:.2g} "
            f"< {SRM_P_VALUE}): fix assignment or logging before reading any metric"
        )
    if result.crossed_on is None:
        peak = max(result.log_statistics)
        return Decision.KEEP_RUNNING, (
            f"the mSPRT statistic has not reached 1/alpha (largest log statistic "
            f"{peak:.2f} < {result.threshold:.2f})"
        )
    lift = (
        f"the relative lift in clicks per page view, {math.expm1(result.lift_at_crossing):+.1%}, "
        f"crossed the threshold on {result.crossed_on}"
    )
    if result.lift_at_crossing < 0:
        return Decision.STOP, f"harm: {lift}"
    if breaches:
        return Decision.STOP, f"{lift}, but a guardrail vetoes the ship: {'; '.join(breaches)}"
    return Decision.SHIP, lift


@dataclass(frozen=True)
class EndOfRun:
    """What became of a variant when its experiment ended, in plain words."""

    promoted: bool
    serving: str  # the version every reader gets now
    readout: str


def end_of_run(decision: VariantDecision, variant_version: str, control_version: str) -> EndOfRun:
    """The decision and what serves now: a variant that did not ship is
    rolled back, since an ended experiment cannot keep running."""
    who = f"the {decision.variant} ({variant_version})"
    if decision.decision is Decision.SHIP:
        return EndOfRun(
            True,
            variant_version,
            f"shipped: {decision.reason}; {who} was promoted; {variant_version} serves "
            "every reader",
        )
    rolled_back = f"{who} was rolled back; {control_version} serves"
    if decision.decision is Decision.STOP:
        harm = decision.sequential.lift_at_crossing < 0  # the reason starts "harm: "
        readout = f"stopped {'for' if harm else 'by a guardrail:'} {decision.reason}; {rolled_back}"
    elif decision.decision is Decision.KEEP_RUNNING:
        readout = (
            f"no decision within the run: {decision.reason}; {who} was rolled back because "
            f"the run ended; {control_version} serves"
        )
    else:
        readout = f"no valid decision: {decision.reason}; {rolled_back}"
    return EndOfRun(False, control_version, readout)


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}" if metric == "clicks_per_reader" else f"{value:.4f}"


def markdown(report: ExperimentReport, ended: Mapping[str, EndOfRun] | None = None) -> str:
    """The report; with `ended` (by variant), the experiment is over and each
    of those variants' lines says what became of it and what serves now."""
    last = report.days[-1]
    lines = [
        f"# Experiment `{report.experiment}`",
        "",
        f"{len(report.days)} daily looks, {report.days[0]} to {last}; control `{report.control}`.",
    ]
    partial = report.day_sizes.filter(pl.col("partial"))
    if not partial.is_empty():
        lines += [
            "",
            "Served only in part (the window covers less than "
            f"{WHOLE_DAY_HOURS:g} h of the day): "
            + "; ".join(report.look_label(day) for day in partial["day"])
            + ". Its points are hollow and joined by dashes in the charts.",
        ]
    lines += ["", "## Decision", ""]
    for d in report.decisions:
        if ended is not None and d.variant in ended:
            lines.append(f"- **`{d.variant}`**: {ended[d.variant].readout}.")
        else:
            lines.append(f"- **`{d.variant}`: {d.decision.value}**: {d.reason}.")
    lines += [
        "",
        "## Method",
        "",
        "- The reader is the unit of analysis: a reader's page views are not independent. "
        "Ratio metrics (clicks per page view, true NDCG@10 per page view) are sum over "
        "readers / sum over "
        "readers, with standard errors from the **delta method**; clicks per reader is a "
        "plain mean over readers. Intervals are 95 % normal intervals; those per look in "
        "the tables and charts are fixed-horizon intervals, valid for one look.",
        f"- {PRIMARY_WHY}",
        '- Decision: **mSPRT with a normal mixture** (Johari et al. 2017, "Peeking at A/B '
        'tests") on the relative lift in clicks per page view theta = log(clicks per page '
        "view of the variant / of the control), estimated "
        f"by the delta method at each daily look; mixing distribution theta ~ N(0, tau^2) "
        f"with **tau = {report.tau}** (relative lifts of about {report.tau:.0%}), "
        f"**alpha = {report.alpha}** "
        f"split over {len(report.decisions)} variant(s) (Bonferroni). The statistic is "
        "Lambda = sqrt(V / (V + tau^2)) exp(tau^2 theta^2 / (2 V (V + tau^2))); the test "
        "stops at the first look where Lambda >= 1 / alpha: ship for a gain, stop for harm. "
        "It stays valid however often it is looked at; its always-valid interval covers "
        "the true lift at every look at once.",
        "- Sample ratio mismatch: chi-square of readers per variant against the weights "
        + ", ".join(f"{name} {w:g}" for name, w in sorted(report.weights.items()))
        + f"; p < {SRM_P_VALUE} blocks any decision.",
        "- Guardrails: a variant whose server error rate is higher than the control's "
        "(one-sided two-proportion test) or whose p99 latency breaks the limits cannot ship.",
        "",
        "## Looks",
        "",
        "Each look reads every page view up to the end of its day.",
        "",
        "| look | page views that day | page views so far | hours of the day in the window |",
        "|---|---|---|---|",
    ]
    for row in report.day_sizes.iter_rows(named=True):
        lines.append(
            f"| {report.look_label(row['day'])} | {row['page_views']:,} | "
            f"{row['page_views_so_far']:,} | {row['covered_hours']:.1f} |"
        )
    lines += [
        "",
        f"## Variants (at {report.look_label(last)})",
        "",
        "| variant | readers | page views | clicks | "
        + " | ".join(METRICS[m] + " [95 % CI]" for m in _metric_names(report))
        + " |",
        "|---" * (4 + len(_metric_names(report))) + "|",
    ]
    for row in report.counts.iter_rows(named=True):
        cells = []
        for metric in _metric_names(report):
            m = report.metrics.filter(
                (pl.col("day") == last)
                & (pl.col("variant") == row["variant"])
                & (pl.col("metric") == metric)
            ).row(0, named=True)
            cells.append(
                f"{_fmt(m['value'], metric)} [{_fmt(m['low'], metric)}, {_fmt(m['high'], metric)}]"
            )
        lines.append(
            f"| `{row['variant']}` | {row['readers']:,} | {row['page_views']:,} | "
            f"{row['clicks']:,} | " + " | ".join(cells) + " |"
        )
    if report.readers_in_several_variants:
        lines += [
            "",
            f"{report.readers_in_several_variants:,} reader(s) seen in several variants are "
            "left out of every arm.",
        ]
    lines += [
        "",
        f"## Differences from `{report.control}` (at {report.look_label(last)})",
        "",
        "| variant | metric | difference | 95 % CI (fixed horizon) |",
        "|---|---|---|---|",
    ]
    for row in report.differences.filter(pl.col("day") == last).iter_rows(named=True):
        metric = row["metric"]
        lines.append(
            f"| `{row['variant']}` | {METRICS[metric]} | {_fmt(row['value'], metric)} | "
            f"[{_fmt(row['low'], metric)}, {_fmt(row['high'], metric)}] |"
        )
    lines += [
        "",
        "## Sequential test (primary: clicks per page view)",
        "",
        "| variant | relative lift | always-valid CI | log Lambda (last look) "
        "| threshold log(1/alpha) | crossed on |",
        "|---|---|---|---|---|---|",
    ]
    for d in report.decisions:
        lines.append(
            f"| `{d.variant}` | {d.lift:+.2%} | [{d.lift_interval[0]:+.2%}, "
            f"{d.lift_interval[1]:+.2%}] | {d.sequential.log_statistics[-1]:.2f} | "
            f"{d.sequential.threshold:.2f} | {d.sequential.crossed_on or 'not yet'} |"
        )
    lines += [
        "",
        "## Sample ratio",
        "",
        f"Chi-square p = {report.srm_p:.3g} "
        + ("(**mismatch: no decision**)." if report.srm_p < SRM_P_VALUE else "(no mismatch)."),
        "",
        "## Guardrails",
        "",
    ]
    if report.guardrails is None:
        lines.append("No guardrail numbers were given (`--guardrails`).")
    else:
        g = report.guardrails
        for name in sorted(set(g.requests) | set(g.latency_p99_ms)):
            parts = []
            if name in g.requests:
                n, e = g.requests[name], g.errors.get(name, 0)
                parts.append(f"{n:,} requests, {e:,} server errors ({e / max(n, 1):.3%})")
            if name in g.latency_p99_ms:
                parts.append(f"p99 latency {g.latency_p99_ms[name]:.1f} ms")
            label = "all variants" if name == "*" else f"`{name}`"
            lines.append(f"- {label}: " + ", ".join(parts))
        for d in report.decisions:
            verdict = "; ".join(d.guardrail_breaches) or "no breach"
            lines.append(f"- `{d.variant}`: {verdict}")
    lines += [
        "",
        "## Charts",
        "",
        "![metrics over time](metrics.png)",
        "",
        "![sequential statistic](sequential.png)",
        "",
    ]
    return "\n".join(lines)


def _metric_names(report: ExperimentReport) -> list[str]:
    return [m for m in METRICS if report.has_truth or m != "true_ndcg10"]


def plot_days(
    ax: Any, x: Sequence[Any], y: Sequence[float], partial: Sequence[bool], **kw: Any
) -> None:
    """A line over days whose points on partial days are hollow and joined by
    dashes, so a small last sample does not read as a drop."""
    whole = [i for i, p in enumerate(partial) if not p]
    (line,) = ax.plot([x[i] for i in whole], [y[i] for i in whole], marker="o", **kw)
    color = line.get_color()
    for i in (i for i, p in enumerate(partial) if p):
        for j in (i - 1, i + 1):
            if 0 <= j < len(x):
                ax.plot([x[j], x[i]], [y[j], y[i]], linestyle="--", color=color)
        ax.plot([x[i]], [y[i]], marker="o", markerfacecolor="none", color=color, linestyle="none")


def _look_ticks(report: ExperimentReport) -> list[str]:
    """MM-DD and the page views so far under each look; a partial day marked."""
    ticks = []
    for row in report.day_sizes.iter_rows(named=True):
        mark = f"\npartial: +{row['page_views']:,}" if row["partial"] else ""
        ticks.append(f"{row['day'][5:]}\nn={row['page_views_so_far']:,}{mark}")
    return ticks


def _charts(report: ExperimentReport, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _metric_names(report)
    x = list(range(len(report.days)))
    ticks = _look_ticks(report)
    partial = report.day_sizes["partial"].to_list()
    note = " (hollow, dashed: partial day)" if any(partial) else ""
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.4 * len(names)), squeeze=False)
    for i, metric in enumerate(names):
        left, right = axes[i]
        for variant in report.counts["variant"]:
            rows = report.metrics.filter(
                (pl.col("variant") == variant) & (pl.col("metric") == metric)
            ).sort("day")
            plot_days(left, x, rows["value"].to_list(), partial, label=variant)
            left.fill_between(x, rows["low"], rows["high"], alpha=0.2)
        for d in report.decisions:
            rows = report.differences.filter(
                (pl.col("variant") == d.variant) & (pl.col("metric") == metric)
            ).sort("day")
            plot_days(
                right, x, rows["value"].to_list(), partial, label=f"{d.variant} - {report.control}"
            )
            right.fill_between(x, rows["low"], rows["high"], alpha=0.2)
        right.axhline(0, color="grey", linewidth=0.8)
        left.set_title(f"{METRICS[metric]}, 95 % CI{note}", fontsize=9)
        right.set_title("difference from control, 95 % CI", fontsize=9)
        for ax in (left, right):
            ax.set_xticks(x, ticks, fontsize=7)
            ax.set_xlabel("look (n = page views so far)", fontsize=7)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for d in report.decisions:
        plot_days(ax, x, d.sequential.log_statistics, partial, label=f"{d.variant}: log Lambda")
        ax.axhline(d.sequential.threshold, linestyle="--", color="red")
    ax.set_title(
        f"mSPRT on the relative lift in clicks per page view (tau = {report.tau});\n"
        f"red dashes: log(1/alpha){note}",
        fontsize=9,
    )
    ax.set_xticks(x, ticks, fontsize=7)
    ax.set_xlabel("look (n = page views so far)", fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sequential.png", dpi=110)
    plt.close(fig)


def _finite(value: object) -> object:
    """NaN and infinities (a metric with no data yet) as null: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write(report: ExperimentReport, out: Path, ended: Mapping[str, EndOfRun] | None = None) -> Path:
    """report.md, metrics.png, sequential.png and report.json (the numbers) in
    `out`; with `ended`, what became of each variant when the experiment ended."""
    out.mkdir(parents=True, exist_ok=True)
    _charts(report, out)
    (out / "report.md").write_text(markdown(report, ended))
    summary = {
        "experiment": report.experiment,
        "control": report.control,
        "alpha": report.alpha,
        "tau": report.tau,
        "days": report.days,
        "srm_p": report.srm_p,
        "counts": report.counts.to_dicts(),
        "decisions": [
            {
                "variant": d.variant,
                "decision": d.decision.value,
                "reason": d.reason,
                "relative_lift": d.lift,
                "always_valid_interval": list(d.lift_interval),
                "crossed_on": d.sequential.crossed_on,
                "log_statistics": d.sequential.log_statistics,
                "guardrail_breaches": d.guardrail_breaches,
            }
            | (
                {"readout": ended[d.variant].readout, "serving": ended[d.variant].serving}
                if ended is not None and d.variant in ended
                else {}
            )
            for d in report.decisions
        ],
        "day_sizes": report.day_sizes.to_dicts(),
        "metrics": report.metrics.to_dicts(),
        "differences": report.differences.to_dicts(),
    }
    (out / "report.json").write_text(json.dumps(_finite(summary), indent=2) + "\n")
    return out / "report.md"
