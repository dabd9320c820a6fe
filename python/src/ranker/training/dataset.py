"""Training data: rows grouped by query, and the split of a feature table by time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.features.spec import FEATURE_NAMES

# Fractions of the time span used for training and validation; the rest,
# the most recent impressions, is the held-out test split.
TRAIN_FRACTION = 0.70
VALID_FRACTION = 0.15


@dataclass(frozen=True)
class RankData:
    """Rows in query-group order; `positions` where the log recorded them."""

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float64]
    groups: npt.NDArray[np.int64]
    positions: npt.NDArray[np.int32] | None = None

    def without(self, names: list[str], dropped: tuple[str, ...]) -> RankData:
        """The same rows without the columns named in `dropped` (`names` are
        the columns' names), for a model trained without those features."""
        keep = [i for i, n in enumerate(names) if n not in dropped]
        return replace(self, features=np.ascontiguousarray(self.features[:, keep]))

    def dataset(
        self,
        feature_names: list[str],
        *,
        with_positions: bool = False,
        reference: lgb.Dataset | None = None,
    ) -> lgb.Dataset:
        return lgb.Dataset(
            self.features,
            self.labels,
            group=self.groups,
            feature_name=feature_names,
            position=self.positions if with_positions else None,
            reference=reference,
            free_raw_data=False,
        )


@dataclass(frozen=True)
class TimeSplit:
    """Feature-table rows of one time range, in query-group order."""

    name: str
    table: pl.DataFrame
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @cached_property
    def data(self) -> RankData:
        groups = self.table.group_by("impression_id", maintain_order=True).len()["len"]
        return RankData(
            features=self.table.select(self.feature_names).to_numpy().astype(np.float32),
            labels=self.table["clicked"].to_numpy().astype(np.float64),
            groups=groups.to_numpy().astype(np.int64),
            positions=self.table["position"].to_numpy().astype(np.int32),
        )


def time_split(
    table: pl.DataFrame, feature_names: tuple[str, ...] = FEATURE_NAMES
) -> tuple[TimeSplit, TimeSplit, TimeSplit]:
    """Train, validation and test splits by impression time, oldest first."""
    start, end = table["time"].min(), table["time"].max()
    if start is None or end is None:
        raise ValueError("the feature table has no rows to split")
    span = end - start  # type: ignore[operator]
    train_end = start + span * TRAIN_FRACTION  # type: ignore[operator]
    valid_end = start + span * (TRAIN_FRACTION + VALID_FRACTION)  # type: ignore[operator]
    ordered = table.sort("impression_id", "position")
    splits = (
        TimeSplit("train", ordered.filter(pl.col("time") < train_end), feature_names),
        TimeSplit(
            "valid",
            ordered.filter((pl.col("time") >= train_end) & (pl.col("time") < valid_end)),
            feature_names,
        ),
        TimeSplit("test", ordered.filter(pl.col("time") >= valid_end), feature_names),
    )
    for split in splits:
        if split.table.is_empty():
            raise ValueError(f"the {split.name} split is empty; generate more data")
    return splits
