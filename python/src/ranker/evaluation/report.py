"""Offline evaluation on the time-held-out test split, with a Markdown and PNG report.

Rankers: the shipped model, the same model trained without position
debiasing, and baselines (random, most recent, most popular, and the oracle
that ranks by the known true utility). Metrics: NDCG@5, NDCG@10, MRR and AUC
on clicks, and NDCG@10 against the true utility, which is what position
debiasing is for (logged clicks reward the order the editor showed). Each with
a bootstrap 95 % interval over queries, and NDCG@10 by reader segment.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.evaluation.metrics import bootstrap_interval, per_query
from ranker.training.dataset import TimeSplit

CLICK_METRICS = ("ndcg@5", "ndcg@10", "mrr", "auc")
UTILITY_METRIC = "utility_ndcg@10"
# Reader segments by what the reader had been shown before the impression
# (candidate rows; an impression shows 12): cold start is fewer than 4 page
# views of history, light fewer than 50.
SEGMENT_BOUNDS = (("cold start", 0, 48), ("light", 48, 600), ("heavy", 600, None))
BOOTSTRAP_SAMPLES = 1000
RANKER_LABELS = {
    "model": "LightGBM (position-debiased, shipped)",
    "model_naive": "LightGBM without position debiasing",
    "model_without": "LightGBM without the ablated features",
    "random": "random",
    "most_recent": "most recent",
    "most_popular": "most popular (clicks, last 24 h)",
    "oracle": "oracle (true utility)",
}


@dataclass(frozen=True)
class MetricRow:
    ranker: str
    metric: str
    mean: float
    low: float
    high: float
    queries: int


@dataclass(frozen=True)
class SegmentRow:
    ranker: str
    segment: str
    queries: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Ablation:
    """The shipped model's twin trained the same way without `dropped`, and
    the test rows without those columns."""

    dropped: tuple[str, ...]
    booster: lgb.Booster
    features: npt.NDArray[np.float32]


# Articles this young are new: no or little click history yet.
NEW_ARTICLE_HOURS = 1.0
# Where the lift of ablated features is measured: every impression, the
# reader segments, and impressions that show a new article.
LIFT_SEGMENTS = ("all", *(name for name, _, _ in SEGMENT_BOUNDS), "shows a new article")


@dataclass(frozen=True)
class LiftRow:
    """Per-impression difference (model - model without the ablated
    features), its mean and paired bootstrap 95 % interval."""

    segment: str
    metric: str
    queries: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Evaluation:
    metrics: list[MetricRow]
    segments: list[SegmentRow]
    importance: dict[str, float]
    test_queries: int
    test_rows: int
    # What the ablated features add (empty without an ablation).
    ablated: tuple[str, ...] = ()
    lift: tuple[LiftRow, ...] = ()

    def value(self, ranker: str, metric: str) -> float:
        """The mean; NaN when it was not measured (utility on a real log)."""
        return next(
            (r.mean for r in self.metrics if r.ranker == ranker and r.metric == metric),
            float("nan"),
        )

    def row(self, ranker: str, metric: str) -> MetricRow | None:
        return next((r for r in self.metrics if r.ranker == ranker and r.metric == metric), None)

    def headline(self) -> dict[str, float]:
        return {f"{r.ranker}_{r.metric}": r.mean for r in self.metrics}


def utility_grades(table: pl.DataFrame) -> npt.NDArray[np.float64]:
    """Graded relevance from the true utility: 3 for the best candidate of the
    impression, 2 for the next two, 1 for the two after, 0 for the rest."""
    rank = (
        table.select(pl.col("true_utility").rank("ordinal", descending=True).over("impression_id"))
        .to_series()
        .to_numpy()
    )
    return np.select([rank == 1, rank <= 3, rank <= 5], [3.0, 2.0, 1.0], 0.0)


def evaluate(
    test: TimeSplit,
    model: lgb.Booster,
    naive: lgb.Booster | None,
    seed: int = 0,
    *,
    ablation: Ablation | None = None,
) -> Evaluation:
    """Every ranker on the test split; `naive` (the model without position
    debiasing) is left out when None. With `ablation`, its model is one more
    ranker and the lift of the ablated features is measured, paired by
    impression, overall and by segment."""
    data = test.data
    table = test.table
    rng = np.random.default_rng(seed)
    scores = {"model": np.asarray(model.predict(data.features), np.float64)}
    if naive is not None:
        scores["model_naive"] = np.asarray(naive.predict(data.features), np.float64)
    if ablation is not None:
        scores["model_without"] = np.asarray(ablation.booster.predict(ablation.features))
    # Baselines tie often (most popular: many stories with no clicks yet);
    # a stable sort would break ties in the logged order, which carries the
    # editor's position bias. A random tie-break well below the gap between
    # distinct values removes that.
    jitter = rng.uniform(0.0, 1e-6, size=table.height)
    scores |= {
        "random": rng.uniform(size=table.height),
        "most_recent": -table["article_age_hours"].to_numpy().astype(np.float64) + jitter,
        "most_popular": table["article_clicks_24h"].to_numpy().astype(np.float64) + jitter,
    }
    # Only a simulated log knows the true utility: a real one has no oracle
    # and no utility metric.
    known_utility = "true_utility" in table.columns
    grades = None
    if known_utility:
        scores["oracle"] = table["true_utility"].to_numpy().astype(np.float64)
        grades = utility_grades(table)
    first_rows = np.concatenate([[0], np.cumsum(data.groups)[:-1]])
    history = table["user_prior_impressions"].to_numpy()[first_rows]

    metrics: list[MetricRow] = []
    segments: list[SegmentRow] = []
    per_ranker: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
    for ranker, s in scores.items():
        per = per_query(data.labels, s, data.groups)
        if grades is not None:
            per[UTILITY_METRIC] = per_query(grades, s, data.groups, ks=(10,))["ndcg@10"]
        per_ranker[ranker] = per
        for metric in per:
            values = per[metric]
            mean, low, high = bootstrap_interval(values, samples=BOOTSTRAP_SAMPLES, seed=seed)
            metrics.append(
                MetricRow(ranker, metric, mean, low, high, int((~np.isnan(values)).sum()))
            )
        for name, lo, hi in SEGMENT_BOUNDS:
            mask = (history >= lo) & (history < hi if hi is not None else True)
            values = per["ndcg@10"][mask]
            mean, low, high = bootstrap_interval(values, samples=BOOTSTRAP_SAMPLES, seed=seed)
            segments.append(
                SegmentRow(ranker, name, int((~np.isnan(values)).sum()), mean, low, high)
            )
    lift: list[LiftRow] = []
    if ablation is not None:
        young = table["article_age_hours"].to_numpy() < NEW_ARTICLE_HOURS
        group_of_row = np.repeat(np.arange(data.groups.size), data.groups)
        shows_new = np.bincount(group_of_row, weights=young, minlength=data.groups.size) > 0
        masks = {"all": np.ones(data.groups.size, bool), "shows a new article": shows_new}
        for name, lo, hi in SEGMENT_BOUNDS:
            masks[name] = (history >= lo) & (history < hi if hi is not None else True)
        for metric in ("ndcg@10", UTILITY_METRIC):
            if metric not in per_ranker["model"]:
                continue
            difference = per_ranker["model"][metric] - per_ranker["model_without"][metric]
            for segment in LIFT_SEGMENTS:
                values = difference[masks[segment]]
                mean, low, high = bootstrap_interval(values, samples=BOOTSTRAP_SAMPLES, seed=seed)
                lift.append(
                    LiftRow(segment, metric, int((~np.isnan(values)).sum()), mean, low, high)
                )
    gain = model.feature_importance("gain")
    total = float(gain.sum()) or 1.0
    importance = dict(
        sorted(
            ((n, float(g) / total) for n, g in zip(model.feature_name(), gain, strict=True)),
            key=lambda item: -item[1],
        )
    )
    return Evaluation(
        metrics,
        segments,
        importance,
        int(data.groups.size),
        table.height,
        ablation.dropped if ablation is not None else (),
        tuple(lift),
    )


def _fmt(mean: float, low: float, high: float) -> str:
    return "n/a" if np.isnan(mean) else f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def markdown(evaluation: Evaluation, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Test split: the newest 15 % of the log, {evaluation.test_queries:,} impressions, "
        f"{evaluation.test_rows:,} candidate rows. Each cell is the mean over impressions with "
        f"a bootstrap 95 % interval ({BOOTSTRAP_SAMPLES} resamples of impressions). Click metrics "
        "count impressions with at least one click; `utility NDCG@10` grades each candidate by "
        "its known true utility (3 for the best, 2 for the next two, 1 for the two after).",
        "",
        "| ranker | NDCG@5 | NDCG@10 | MRR | AUC | utility NDCG@10 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    present = {r.ranker for r in evaluation.metrics}
    labels = dict(RANKER_LABELS)
    if "model_naive" not in present:
        # Only a position-debiased model comes with its naive twin; a model
        # trained without debiasing (over Dask workers) or read back alone
        # does not claim it.
        labels["model"] = "LightGBM (shipped)"
    for ranker, label in labels.items():
        if ranker not in present:
            continue
        cells = []
        for metric in (*CLICK_METRICS, UTILITY_METRIC):
            row = evaluation.row(ranker, metric)
            cells.append("n/a" if row is None else _fmt(row.mean, row.low, row.high))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Logged clicks favour the order the editor showed, so a ranker that copies it looks good "
        "on click metrics; position debiasing gives up some of that for a better ranking by "
        "true utility.",
        "",
        "## NDCG@10 by reader segment",
        "",
        "Cold start: fewer than 4 page views of history before the impression; light: fewer "
        "than 50; heavy: the rest.",
        "",
        "| ranker | " + " | ".join(f"{s} (n)" for s, _, _ in SEGMENT_BOUNDS) + " |",
        "| --- | " + " | ".join("---" for _ in SEGMENT_BOUNDS) + " |",
    ]
    for ranker, label in labels.items():
        if ranker not in present:
            continue
        cells = []
        for name, _, _ in SEGMENT_BOUNDS:
            seg = next(r for r in evaluation.segments if r.ranker == ranker and r.segment == name)
            cells.append(f"{_fmt(seg.mean, seg.low, seg.high)} ({seg.queries})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += _lift_section(evaluation)
    lines += [
        "",
        "## Feature importance (share of total gain)",
        "",
        "| feature | gain |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {share:.3f} |" for name, share in evaluation.importance.items()]
    lines += ["", "![importance](importance.png)"]
    lines += ["", "![metrics](metrics.png)", "", "![segments](segments.png)", ""]
    return "\n".join(lines)


def _lift_section(evaluation: Evaluation) -> list[str]:
    if not evaluation.lift:
        return []
    dropped = ", ".join(f"`{n}`" for n in evaluation.ablated)
    lines = [
        "",
        "## What the ablated features add",
        "",
        f"The shipped model against its twin trained the same way (same data, parameters and "
        f"early stopping) without {dropped}: the mean per-impression difference in NDCG@10, "
        f"with a paired bootstrap 95 % interval. An interval that contains 0 means no "
        f"measurable difference at this test size. A new article is younger than "
        f"{NEW_ARTICLE_HOURS:g} hour.",
        "",
        "| segment | NDCG@10 on clicks (n) | utility NDCG@10 (n) |",
        "| --- | --- | --- |",
    ]
    for segment in LIFT_SEGMENTS:
        cells = []
        for metric in ("ndcg@10", UTILITY_METRIC):
            row = next(
                (r for r in evaluation.lift if r.segment == segment and r.metric == metric), None
            )
            cells.append(
                "n/a"
                if row is None or np.isnan(row.mean)
                else f"{row.mean:+.4f} [{row.low:+.4f}, {row.high:+.4f}] ({row.queries})"
            )
        lines.append(f"| {segment} | " + " | ".join(cells) + " |")
    return lines


def _plots(evaluation: Evaluation, directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {r.ranker for r in evaluation.metrics}
    rankers = [k for k in RANKER_LABELS if k in present]
    measured = {r.metric for r in evaluation.metrics}
    shown = [m for m in ("ndcg@10", "mrr", "auc", UTILITY_METRIC) if m in measured]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 4.2), constrained_layout=True)
    for ax, metric in zip(axes, shown, strict=True):
        rows = [
            next(r for r in evaluation.metrics if r.ranker == k and r.metric == metric)
            for k in rankers
        ]
        means = np.array([r.mean for r in rows])
        errors = np.array([[r.mean - r.low for r in rows], [r.high - r.mean for r in rows]])
        ax.bar(range(len(rows)), means, yerr=errors, capsize=3)
        ax.set_xticks(range(len(rows)), [k.replace("_", "\n") for k in rankers], fontsize=8)
        ax.set_title(metric)
        ax.set_ylim(0, 1)
    fig.suptitle("Test split, mean with bootstrap 95 % interval")
    fig.savefig(directory / "metrics.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    width = 0.8 / len(rankers)
    for i, ranker in enumerate(rankers):
        segs = [
            next(r for r in evaluation.segments if r.ranker == ranker and r.segment == s)
            for s, _, _ in SEGMENT_BOUNDS
        ]
        means = np.array([r.mean for r in segs])
        errors = np.array([[r.mean - r.low for r in segs], [r.high - r.mean for r in segs]])
        ax.bar(
            np.arange(len(segs)) + i * width,
            np.nan_to_num(means),
            width,
            yerr=np.nan_to_num(errors),
            capsize=2,
            label=ranker,
        )
    ax.set_xticks(
        np.arange(len(SEGMENT_BOUNDS)) + 0.4 - width / 2, [s for s, _, _ in SEGMENT_BOUNDS]
    )
    ax.set_ylabel("NDCG@10 on clicks")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    fig.savefig(directory / "segments.png", dpi=90)
    plt.close(fig)


def _importance_plot(evaluation: Evaluation, directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(evaluation.importance)[::-1]  # largest at the top
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1.2), constrained_layout=True)
    ax.barh(names, [evaluation.importance[n] for n in names])
    ax.set_xlabel("share of total gain")
    ax.tick_params(axis="y", labelsize=7)
    fig.savefig(directory / "importance.png", dpi=90)
    plt.close(fig)


def write_report(evaluation: Evaluation, directory: Path, title: str) -> list[Path]:
    """evaluation.md, evaluation.json, metrics.png and segments.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "evaluation.md").write_text(markdown(evaluation, title))
    (directory / "evaluation.json").write_text(json.dumps(asdict(evaluation), indent=1) + "\n")
    _plots(evaluation, directory)
    _importance_plot(evaluation, directory)
    return [
        directory / n
        for n in (
            "evaluation.md",
            "evaluation.json",
            "metrics.png",
            "segments.png",
            "importance.png",
        )
    ]


def summary_table(evaluation: Evaluation) -> str:
    """The headline numbers `ranker train` prints."""
    candidates = ("model", "model_naive", "model_without", "most_popular", "most_recent")
    shown = [r for r in (*candidates, "random", "oracle") if evaluation.row(r, "ndcg@10")]
    lines = [
        f"{'test split':<14} {'NDCG@5':>8} {'NDCG@10':>8} {'MRR':>7} {'AUC':>7} {'util@10':>8}"
    ]
    for ranker in shown:
        v = [
            evaluation.value(ranker, m)
            for m in ("ndcg@5", "ndcg@10", "mrr", "auc", "utility_ndcg@10")
        ]
        lines.append(
            f"{ranker:<14} {v[0]:>8.4f} {v[1]:>8.4f} {v[2]:>7.4f} {v[3]:>7.4f} {v[4]:>8.4f}"
        )
    gain = evaluation.value("model", "ndcg@10") - evaluation.value("most_popular", "ndcg@10")
    lines.append(f"model - most popular, NDCG@10: {gain:+.4f}")
    for row in evaluation.lift:
        if row.segment in ("all", "cold start", "shows a new article"):
            lines.append(
                f"lift of the {len(evaluation.ablated)} ablated features, {row.metric}, "
                f"{row.segment}: {row.mean:+.4f} "
                f"[{row.low:+.4f}, {row.high:+.4f}] over {row.queries:,} impressions"
            )
    return "\n".join(lines)
