"""Checks a Grafana dashboard's Prometheus queries: every range is
$__rate_interval (a fixed window shorter than four scrapes is empty, a longer
one hides spikes), and every series selector is scoped by the dashboard's
`job` and `namespace` variables, which must exist.

The project's metric names start with ranker_ or model_sync_; each must be
followed by a selector.

usage: dashboard.py DASHBOARD.json...
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

METRIC = re.compile(r"\b((?:ranker|model_sync)_[a-z_]+)(\{[^}]*\})?")
RANGE = re.compile(r"\[([^\]]*)\]")
SCOPE = ('job=~"$job"', 'namespace=~"$namespace"')


def query_errors(expr: str) -> list[str]:
    found = []
    for window in RANGE.findall(expr):
        if window != "$__rate_interval":
            found.append(f"range [{window}] is not [$__rate_interval]")
    metrics = METRIC.findall(expr)
    if not metrics:
        found.append("uses no ranker_ or model_sync_ metric")
    for name, selector in metrics:
        missing = [s for s in SCOPE if s not in selector]
        if missing:
            found.append(f"{name} lacks {', '.join(missing)}")
    return found


def dashboard_errors(dashboard: dict[str, Any]) -> list[str]:
    found = []
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    for name in ("job", "namespace"):
        if name not in variables:
            found.append(f"no ${name} variable")
    for panel in dashboard.get("panels", []):
        targets = panel.get("targets", [])
        if not targets:
            found.append(f"panel {panel.get('title')!r}: no queries")
        for target in targets:
            for error in query_errors(target.get("expr", "")):
                found.append(f"panel {panel.get('title')!r}, query {target.get('refId')}: {error}")
    return found


def main(argv: list[str]) -> int:
    failed = False
    for path in map(Path, argv):
        try:
            dashboard = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: {e}")
            failed = True
            continue
        for error in dashboard_errors(dashboard):
            print(f"{path}: {error}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
