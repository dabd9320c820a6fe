"""Compare two feature tables row for row: how the Spark engine is held to
the polars one (`make spark-parity`, the parity tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ranker.features.spec import LABEL_COLUMNS


@dataclass(frozen=True)
class ColumnDiff:
    """One column of the comparison: the largest |left - right| over rows
    where both are numbers, and how many rows differ at all (a value against
    a missing one, NaN against a number, or any difference)."""

    name: str
    max_abs_diff: float
    differing_rows: int


@dataclass(frozen=True)
class TableComparison:
    left_rows: int
    right_rows: int
    # Columns in one table only, or with another dtype: "name: why".
    schema_problems: list[str] = field(default_factory=list)
    # Rows whose label columns differ after sorting both tables by them.
    label_mismatches: int = 0
    columns: list[ColumnDiff] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.left_rows == self.right_rows
            and not self.schema_problems
            and self.label_mismatches == 0
            and all(c.differing_rows == 0 for c in self.columns)
        )

    def report(self) -> str:
        lines = [f"rows: {self.left_rows:,} and {self.right_rows:,}"]
        lines += [f"schema: {problem}" for problem in self.schema_problems]
        if self.label_mismatches:
            lines.append(f"label columns differ in {self.label_mismatches:,} rows")
        width = max((len(c.name) for c in self.columns), default=0)
        for c in self.columns:
            lines.append(
                f"{c.name:<{width}}  max |diff| {c.max_abs_diff:<10.3g}  "
                f"differing rows {c.differing_rows:,}"
            )
        lines.append("PASS: the tables are equal" if self.passed else "FAIL: the tables differ")
        return "\n".join(lines)


def compare_tables(left: pl.DataFrame, right: pl.DataFrame) -> TableComparison:
    """Sort both by LABEL_COLUMNS and compare every other column exactly
    (NaN equals NaN, missing equals missing)."""
    problems = []
    for name in dict.fromkeys([*left.columns, *right.columns]):
        if name not in left.columns or name not in right.columns:
            problems.append(f"{name}: in one table only")
        elif left.schema[name] != right.schema[name]:
            problems.append(f"{name}: {left.schema[name]} against {right.schema[name]}")
    missing_labels = [c for c in LABEL_COLUMNS if c not in left.columns or c not in right.columns]
    if left.height != right.height or missing_labels:
        return TableComparison(left.height, right.height, problems)
    a = left.sort(LABEL_COLUMNS)
    b = right.sort(LABEL_COLUMNS)
    labels_equal = pl.all_horizontal(a[c].eq_missing(b[c]) for c in LABEL_COLUMNS)
    mismatches = a.height - int(pl.select(labels_equal).to_series().sum())
    columns = []
    for name in a.columns:
        if name in LABEL_COLUMNS or name not in b.columns or not a.schema[name].is_numeric():
            continue
        x = a[name].cast(pl.Float64)
        y = b[name].cast(pl.Float64)
        both = x.is_not_null() & y.is_not_null() & ~x.is_nan() & ~y.is_nan()
        diff = (x - y).abs().filter(both).max()
        same = x.eq_missing(y) | (x.is_nan() & y.is_nan()).fill_null(False)
        columns.append(
            ColumnDiff(
                name,
                float(diff) if isinstance(diff, int | float) else 0.0,
                int((~same).sum()),
            )
        )
    return TableComparison(left.height, right.height, problems, mismatches, columns)
