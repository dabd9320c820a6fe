"""The statistics that decide an experiment, on reader-level numbers.

Page views of one reader are not independent (a reader who clicks a lot does so
on every page), so every interval treats the reader as the unit: a ratio
metric such as clicks per page view is sum(clicks) / sum(views) over
readers, with its variance from the delta method. The decision comes from a
mixture sequential probability ratio test (mSPRT, normal mixture; Johari,
Koomen, Pekelis and Walsh, "Peeking at A/B tests", KDD 2017), which stays valid
however often the results are looked at. A sample-ratio-mismatch test blocks
any decision, and guardrails (server errors, latency) can veto a ship.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
from scipy import stats

Array = npt.NDArray[np.float64]

# Below this p-value the readers' split between variants is not what the
# configuration asked for: assignment or logging is broken and no metric can
# be trusted (the threshold used across the industry, e.g. Fabijan et al. 2019).
SRM_P_VALUE = 0.001


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its standard error (normal approximation)."""

    value: float
    se: float

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = statistics.NormalDist().inv_cdf(0.5 + level / 2) * self.se
        return self.value - half, self.value + half


def ratio_estimate(numerators: Array, denominators: Array) -> Estimate:
    """sum(numerators) / sum(denominators) over readers, with the delta-method
    standard error that treats each reader's pair as one observation:
    Var(R) ~ (s_y^2 - 2 R s_yn + R^2 s_n^2) / (N mean(n)^2)."""
    y, n = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if y.shape != n.shape:
        raise ValueError(f"numerators {y.shape} and denominators {n.shape} differ in shape")
    readers = y.size
    if readers == 0 or n.sum() <= 0:
        return Estimate(math.nan, math.nan)
    ratio = float(y.sum() / n.sum())
    if readers < 2:
        return Estimate(ratio, math.nan)
    cov = np.cov(y, n, ddof=1)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (
        readers * float(n.mean()) ** 2
    )
    return Estimate(ratio, math.sqrt(max(float(variance), 0.0)))


def mean_estimate(values: Array) -> Estimate:
    """The mean over readers and its standard error."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Estimate(math.nan, math.nan)
    if x.size < 2:
        return Estimate(float(x.mean()), math.nan)
    return Estimate(float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)))


def difference(treatment: Estimate, control: Estimate) -> Estimate:
    """treatment - control; the arms hold different readers, so independent."""
    return Estimate(treatment.value - control.value, math.hypot(treatment.se, control.se))


def log_lift(treatment: Estimate, control: Estimate) -> Estimate:
    """log(treatment / control), the relative lift on a scale where the
    sequential test's mixing variance means the same for any baseline."""
    if not (treatment.value > 0 and control.value > 0):
        return Estimate(math.nan, math.nan)
    return Estimate(
        math.log(treatment.value / control.value),
        math.hypot(treatment.se / treatment.value, control.se / control.value),
    )


def srm_p_value(observed: Mapping[str, int], weights: Mapping[str, float]) -> float:
    """Chi-square goodness of fit of readers per variant to the configured weights."""
    missing = sorted(set(observed) - set(weights))
    if missing:
        raise ValueError(f"--weights: no weight for variant(s) {', '.join(missing)}")
    names = sorted(weights)
    counts = np.array([observed.get(name, 0) for name in names], dtype=np.float64)
    shares = np.array([weights[name] for name in names], dtype=np.float64)
    if counts.sum() == 0:
        return math.nan
    expected = counts.sum() * shares / shares.sum()
    return float(stats.chisquare(counts, expected).pvalue)


def msprt_log_statistic(estimate: float, variance: float, tau2: float) -> float:
    """log of the mSPRT statistic for H0: theta = 0, with the estimate
    ~ N(theta, variance) and the mixture theta ~ N(0, tau2):
    Lambda = sqrt(V / (V + tau2)) * exp(tau2 * est^2 / (2 V (V + tau2)))."""
    if not (variance > 0 and math.isfinite(estimate)):
        return 0.0  # no evidence yet: the statistic starts at 1
    return 0.5 * math.log(variance / (variance + tau2)) + tau2 * estimate**2 / (
        2 * variance * (variance + tau2)
    )


def always_valid_interval(
    estimate: float, variance: float, tau2: float, alpha: float
) -> tuple[float, float]:
    """The thetas the mSPRT would not reject at level alpha: a confidence
    sequence, covering the truth at every look at once with probability 1 - alpha."""
    if not (variance > 0 and math.isfinite(estimate)):
        return -math.inf, math.inf
    half = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
    )
    return estimate - half, estimate + half


class Decision(Enum):
    SHIP = "ship"
    KEEP_RUNNING = "keep running"
    STOP = "stop"
    INVALID = "no decision: sample ratio mismatch"


@dataclass(frozen=True)
class Look:
    """One look at the primary metric's relative lift (log scale)."""

    day: str
    estimate: float
    variance: float


@dataclass(frozen=True)
class SequentialResult:
    log_statistics: list[float]
    threshold: float  # log(1 / alpha)
    crossed_on: str | None  # the first look where the statistic reached the threshold
    lift_at_crossing: float


def sequential_test(looks: Sequence[Look], tau2: float, alpha: float) -> SequentialResult:
    """The mSPRT over the looks in order; it stops at the first crossing, so a
    later dip does not undo it (that is what makes peeking valid)."""
    threshold = math.log(1 / alpha)
    logs = [msprt_log_statistic(look.estimate, look.variance, tau2) for look in looks]
    for look, value in zip(looks, logs, strict=True):
        if value >= threshold:
            return SequentialResult(logs, threshold, look.day, look.estimate)
    return SequentialResult(logs, threshold, None, math.nan)


@dataclass(frozen=True)
class Guardrails:
    """Per-variant server errors (requests, errors) and p99 latency in ms; a
    latency measured across all variants is under the key "*"."""

    requests: dict[str, int]
    errors: dict[str, int]
    latency_p99_ms: dict[str, float]


@dataclass(frozen=True)
class GuardrailLimits:
    # One-sided p-value below which a variant's error rate is higher than the control's.
    error_p_value: float = 0.01
    # A variant's p99 may exceed the control's by this share.
    latency_ratio: float = 1.2
    # The service's latency objective, which no variant (or the server) may break.
    latency_slo_ms: float = 100.0


def guardrail_breaches(
    guardrails: Guardrails, variant: str, control: str, limits: GuardrailLimits
) -> list[str]:
    """Why shipping `variant` would break a guardrail; empty when it would not."""
    found = []
    n_t, n_c = guardrails.requests.get(variant, 0), guardrails.requests.get(control, 0)
    if n_t and n_c:
        e_t, e_c = guardrails.errors.get(variant, 0), guardrails.errors.get(control, 0)
        pooled = (e_t + e_c) / (n_t + n_c)
        rate_t, rate_c = e_t / n_t, e_c / n_c
        se = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
        if se > 0:
            p = float(stats.norm.sf((rate_t - rate_c) / se))
            if p < limits.error_p_value:
                found.append(
                    f"error rate {rate_t:.3%} vs control {rate_c:.3%} "
                    f"(one-sided p = {p:.2g} < {limits.error_p_value})"
                )
    latency = guardrails.latency_p99_ms
    if (
        variant in latency
        and control in latency
        and latency[variant] > limits.latency_ratio * latency[control]
    ):
        found.append(
            f"p99 latency {latency[variant]:.1f} ms > {limits.latency_ratio} x "
            f"control's {latency[control]:.1f} ms"
        )
    own = latency.get(variant, latency.get("*"))
    if own is not None and own > limits.latency_slo_ms:
        scope = "" if variant in latency else " (server-wide)"
        found.append(f"p99 latency{scope} {own:.1f} ms > SLO {limits.latency_slo_ms:.0f} ms")
    return found


def guardrails_from_json(data: object, source: str) -> Guardrails:
    """{"variants": {name: {"requests": int, "errors": int, "latency_p99_ms": float}},
    "latency_p99_ms": float (optional, server-wide)}."""
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
        raise ValueError(f"{source}: expected an object with a 'variants' object")
    requests, errors, latency = {}, {}, {}
    for name, entry in data["variants"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: variants.{name} is not an object")
        for key, value in entry.items():
            if key not in ("requests", "errors", "latency_p99_ms"):
                raise ValueError(f"{source}: variants.{name}.{key} is not a guardrail field")
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{source}: variants.{name}.{key} must be a number >= 0")
        if "requests" in entry:
            requests[name] = int(entry["requests"])
            errors[name] = int(entry.get("errors", 0))
        if "latency_p99_ms" in entry:
            latency[name] = float(entry["latency_p99_ms"])
    server_wide = data.get("latency_p99_ms")
    if server_wide is not None:
        if not isinstance(server_wide, int | float) or isinstance(server_wide, bool):
            raise ValueError(f"{source}: latency_p99_ms must be a number")
        latency["*"] = float(server_wide)
    return Guardrails(requests, errors, latency)


# gRPC codes that are the server's fault; a caller's bad request is not an error of the variant.
SERVER_ERROR_CODES = frozenset(
    {"Unknown", "DeadlineExceeded", "ResourceExhausted", "Aborted", "Internal", "Unavailable"}
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def guardrails_from_metrics(text: str) -> Guardrails:
    """The server's /metrics scrape as guardrails: Rank requests and server
    errors per variant from ranker_requests_total, and the p99 of
    ranker_request_duration_seconds for Rank. The server times requests
    across variants, so that p99 is server-wide (checked against the SLO)."""
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        labels = dict(_LABEL.findall(raw_labels or ""))
        if labels.get("method") != "Rank":
            continue
        value = float(raw_value)
        if name == "ranker_requests_total" and labels.get("variant"):
            variant = labels["variant"]
            requests[variant] = requests.get(variant, 0) + int(value)
            if labels.get("code") in SERVER_ERROR_CODES:
                errors[variant] = errors.get(variant, 0) + int(value)
        elif name == "ranker_request_duration_seconds_bucket":
            buckets[float(labels["le"])] = value
    if not requests:
        raise ValueError("no ranker_requests_total samples for Rank with a variant")
    latency = {}
    p99 = histogram_quantile(0.99, buckets)
    if math.isfinite(p99):
        latency["*"] = p99 * 1000
    return Guardrails(requests, errors, latency)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile on cumulative buckets {upper bound: count}:
    linear within the bucket; the highest finite bound when it falls in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(
                count - lower_count, 1e-300
            )
        lower_bound, lower_count = bound, count
    return lower_bound
