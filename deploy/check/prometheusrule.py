"""The prod overlay's PrometheusRule, generated from the one rule file,
deploy/prometheus/ranker-rules.yaml (which promtool checks and tests).

usage: prometheusrule.py --write   regenerate it
       prometheusrule.py --check   fail, saying how to fix it, if it differs
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
RULES = DEPLOY / "prometheus/ranker-rules.yaml"
TARGET = DEPLOY / "k8s/overlays/prod/prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/ranker-rules.yaml by `make deploy-rules`: edit that file.\n"
)


def render(rules: str) -> str:
    groups = yaml.safe_load(rules)["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ranker", "labels": {"app.kubernetes.io/name": "ranker"}},
        "spec": {"groups": groups},
    }
    body: str = yaml.safe_dump(rule, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    want = render(RULES.read_text())
    if argv == ["--write"]:
        TARGET.write_text(want)
        return 0
    if argv == ["--check"]:
        if not TARGET.exists() or TARGET.read_text() != want:
            print(f"{TARGET} differs from {RULES}: run `make deploy-rules` and commit")
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
