"""The checks `make deploy-check` runs over the deployment files catch what
they are for."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support import REPO


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"deploy_check_{name}", REPO / f"deploy/check/{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dashboard = _load("dashboard")
manifests = _load("manifests")
prometheusrule = _load("prometheusrule")

SCOPED = 'ranker_requests_total{job=~"$job", namespace=~"$namespace", method="Rank"}'


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        (f"sum(rate({SCOPED}[$__rate_interval]))", []),
        (f"sum(rate({SCOPED}[1m]))", ["range [1m] is not [$__rate_interval]"]),
        (
            'rate(ranker_requests_total{method="Rank"}[$__rate_interval])',
            ['ranker_requests_total lacks job=~"$job", namespace=~"$namespace"'],
        ),
        ("ranker_state_size", ['ranker_state_size lacks job=~"$job", namespace=~"$namespace"']),
        (
            'time() - model_sync_last_success_timestamp_seconds{job=~"$job"}',
            ['model_sync_last_success_timestamp_seconds lacks namespace=~"$namespace"'],
        ),
        ("up", ["uses no ranker_ or model_sync_ metric"]),
    ],
)
def test_dashboard_query_check(expr: str, want: list[str]) -> None:
    got = dashboard.query_errors(expr)
    assert got == want, f"got {got}, want {want}"


def test_dashboard_check_needs_the_job_and_namespace_variables() -> None:
    board: dict[str, Any] = {"templating": {"list": [{"name": "job"}]}, "panels": []}
    got = dashboard.dashboard_errors(board)
    assert got == ["no $namespace variable"], got


def test_the_committed_dashboard_passes() -> None:
    got = dashboard.main([str(REPO / "deploy/grafana/ranker-dashboard.json")])
    assert got == 0


def test_prometheusrule_carries_the_rule_files_groups() -> None:
    rendered = prometheusrule.render("groups: [{name: g, rules: [{alert: A, expr: up == 0}]}]\n")
    assert "kind: PrometheusRule" in rendered
    assert "alert: A" in rendered
    committed = (REPO / "deploy/k8s/overlays/prod/prometheusrule.yaml").read_text()
    assert committed == prometheusrule.render(
        (REPO / "deploy/prometheus/ranker-rules.yaml").read_text()
    )


@pytest.mark.parametrize(
    ("doc", "want_errors"),
    [
        ({"spec": {"port": "web"}}, 0),
        ({"spec": {"port": "web", "prot": "x"}}, 1),  # a typo the API server would drop
        ({"spec": {"port": "web", "labels": {"any": "x"}}}, 0),  # a map stays open
        ({"spec": {"port": "web", "raw": {"any": "x"}}}, 0),  # kept unknown fields stay open
        ({"metadata": {"name": "x", "labelz": {}}, "spec": {"port": "web"}}, 1),  # ObjectMeta
    ],
)
def test_crd_schemas_refuse_unknown_fields(doc: dict[str, Any], want_errors: int) -> None:
    schema = manifests.closed(
        {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                },
            },
        }
    )
    crds = {("monitoring.coreos.com/v1", "ServiceMonitor"): schema}
    full = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        **doc,
    }
    got = manifests.errors(full, "1.33.0", crds)
    assert len(got) == want_errors, got


def test_grace_period_covers_the_prestop_sleep_and_the_drain() -> None:
    server = yaml.safe_load((REPO / "deploy/k8s/base/statefulset.yaml").read_text())
    pod = server["spec"]["template"]["spec"]
    server = pod["containers"][0]
    sleep = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    (timeout,) = [a.split("=", 1)[1] for a in server["args"] if a.startswith("--shutdown-timeout=")]
    assert timeout.endswith("s"), timeout
    drain = int(timeout.removesuffix("s"))
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > sleep + drain, f"grace {grace}s, preStop {sleep}s + drain {drain}s"
