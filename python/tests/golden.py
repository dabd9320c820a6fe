"""Read golden.jsonl rows, with NaN restored from null."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ranker import artifact


def read_golden(directory: Path) -> list[dict[str, Any]]:
    rows = []
    with (directory / artifact.GOLDEN_JSONL).open() as f:
        for line in f:
            record = json.loads(line)
            record["x"] = [float("nan") if v is None else v for v in record["features"]]
            rows.append(record)
    return rows
