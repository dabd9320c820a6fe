"""The checks `make deploy-check` runs over the deployment files catch what
they are for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
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


invariants = _load("invariants")
KAFKA_VERSION = invariants.kafka_release(REPO / "tests/kafka/pom.xml")
Docs = list[dict[str, Any]]


def _base() -> Docs:
    """The base's objects, as `kustomize build` lists them (the base has no
    patches, so its files are its output)."""
    base = REPO / "deploy/k8s/base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    return [yaml.safe_load((base / name).read_text()) for name in kustomization["resources"]]


def _find(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _server(docs: Docs) -> dict[str, Any]:
    pod = _find(docs, "StatefulSet", "ranker")["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def _set_state(docs: Docs, value: str | None) -> None:
    env = _server(docs)["env"]
    env[:] = [e for e in env if e["name"] != "RANKER_STATE"]
    if value is not None:
        env.append({"name": "RANKER_STATE", "value": value})


def _state_url(docs: Docs) -> str:
    (url,) = [e["value"] for e in _server(docs)["env"] if e["name"] == "RANKER_STATE"]
    return str(url)


def _replace_in_state(old: str, new: str) -> Any:
    def mutate(docs: Docs) -> None:
        url = _state_url(docs)
        assert old in url, url
        _set_state(docs, url.replace(old, new))

    return mutate


def _set_arg(flag: str, value: str | None) -> Any:
    def mutate(docs: Docs) -> None:
        args = _server(docs)["args"]
        args[:] = [a for a in args if not a.startswith(f"--{flag}=")]
        if value is not None:
            args.append(f"--{flag}={value}")

    return mutate


def _set_property(key: str, value: str) -> Any:
    def mutate(docs: Docs) -> None:
        data = _find(docs, "ConfigMap", "ranker-kafka-config")["data"]
        lines = [
            ln for ln in data["server.properties"].splitlines() if not ln.startswith(key + "=")
        ]
        data["server.properties"] = "\n".join([*lines, f"{key}={value}", ""])

    return mutate


def _kafka(docs: Docs) -> dict[str, Any]:
    return _find(docs, "StatefulSet", "ranker-kafka")


def _state_on_empty_dir(docs: Docs) -> None:
    server = _find(docs, "StatefulSet", "ranker")
    del server["spec"]["volumeClaimTemplates"]
    server["spec"]["template"]["spec"]["volumes"].append({"name": "state", "emptyDir": {}})


def _kafka_open_to_namespace(docs: Docs) -> None:
    policy = _find(docs, "NetworkPolicy", "ranker-kafka")
    policy["spec"]["ingress"][0]["from"].append(
        {"namespaceSelector": {"matchLabels": {"team": "any"}}}
    )


def _ranker_without_kafka_egress(docs: Docs) -> None:
    egress = _find(docs, "NetworkPolicy", "ranker")["spec"]["egress"]
    egress[:] = [
        rule
        for rule in egress
        if not any(
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            == "ranker-kafka"
            for peer in rule.get("to", [])
        )
    ]


def _set_env(name: str, value: str | None) -> Any:
    def mutate(docs: Docs) -> None:
        env = _server(docs)["env"]
        env[:] = [e for e in env if e["name"] != name]
        if value is not None:
            env.append({"name": name, "value": value})

    return mutate


def _peer_port_open_to_monitoring(docs: Docs) -> None:
    ingress = _find(docs, "NetworkPolicy", "ranker")["spec"]["ingress"]
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    ingress.append(
        {
            "from": [{"namespaceSelector": monitoring}],
            "ports": [{"port": "state-peer", "protocol": "TCP"}],
        }
    )


def _ranker_without_peer_egress(docs: Docs) -> None:
    egress = _find(docs, "NetworkPolicy", "ranker")["spec"]["egress"]
    egress[:] = [rule for rule in egress if {"port": 9094, "protocol": "TCP"} not in rule["ports"]]


def _remove(kind: str, name: str) -> Any:
    def mutate(docs: Docs) -> None:
        docs.remove(_find(docs, kind, name))

    return mutate


def _probe(which: str, probe: dict[str, Any] | None) -> Any:
    def mutate(docs: Docs) -> None:
        server = _server(docs)
        if probe is None:
            del server[which]
        else:
            server[which] = probe

    return mutate


def _embedded(replicas: int, keep_autoscaler: bool) -> Any:
    def mutate(docs: Docs) -> None:
        _set_state(docs, None)
        _find(docs, "StatefulSet", "ranker")["spec"]["replicas"] = replicas
        if not keep_autoscaler:
            docs.remove(_find(docs, "HorizontalPodAutoscaler", "ranker"))

    return mutate


def _set(kind: str, name: str, path: str, value: Any) -> Any:
    def mutate(docs: Docs) -> None:
        node = _find(docs, kind, name)
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(kind: str, name: str, path: str) -> Any:
    def mutate(docs: Docs) -> None:
        node = _find(docs, kind, name)
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


HEALTH_PROBE = "/usr/local/bin/grpc_health_probe"


@pytest.mark.parametrize(
    ("mutate", "want"),
    [
        # The shared state's durability, as the server is told it.
        (_replace_in_state("replication=3", "replication=1"), "replication 1, want at least 3"),
        (_replace_in_state("min_insync=2", "min_insync=1"), "min_insync 1, want at least 2"),
        (_replace_in_state("min_insync=2", "min_insync=3"), "leaves no broker free to fail"),
        (_replace_in_state("/ranker-features?", "/?"), "no topic"),
        (
            _replace_in_state("ranker-kafka-0.ranker-kafka:9092", "kafka:9092"),
            "kafka:9092 is not a node of a Kafka StatefulSet",
        ),
        (
            _replace_in_state("ranker-kafka-2.", "ranker-kafka-3."),
            "ranker-kafka-3.ranker-kafka:9092 is not a node",
        ),
        (_set_arg("state-dir", None), "--state-dir unset"),
        (_state_on_empty_dir, "is not on a volume claim"),
        (_set_arg("max-recv-bytes", None), "sets no --max-recv-bytes"),
        (_set_arg("max-recv-bytes", str(16 << 20)), "is below 6 x --max-recv-bytes"),
        # The Kafka cluster.
        (_set("StatefulSet", "ranker-kafka", "spec.replicas", 2), "2 nodes cannot hold"),
        (
            lambda docs: _kafka(docs)["spec"]["template"]["spec"]["containers"][0].update(
                image="apache/kafka:latest"
            ),
            f"want apache/kafka:{KAFKA_VERSION}",
        ),
        (_delete("StatefulSet", "ranker-kafka", "spec.volumeClaimTemplates"), "no volumeClaim"),
        (_delete("Service", "ranker-kafka", "spec.clusterIP"), "no headless Service"),
        (
            _set("PodDisruptionBudget", "ranker-kafka", "spec.maxUnavailable", 2),
            "one PodDisruptionBudget with maxUnavailable 1",
        ),
        (_set_property("default.replication.factor", "1"), "default.replication.factor=1"),
        (_set_property("min.insync.replicas", "1"), "min.insync.replicas=1"),
        (
            _set_property("unclean.leader.election.enable", "true"),
            "unclean.leader.election.enable=true",
        ),
        (_set_property("auto.create.topics.enable", "true"), "auto.create.topics.enable=true"),
        (_set_property("log.retention.ms", "3600000"), "log.retention.ms=3600000"),
        (_set_property("log.retention.ms", "never"), "log.retention.ms=never"),
        # The topic's retention, as the server is told it.
        (
            _replace_in_state("retention=168h", "retention=12h"),
            "retention 12h, want a duration of at least 24h",
        ),
        (_replace_in_state("retention=168h", "retention=7d"), "retention 7d, want a duration"),
        # Booting from a peer's snapshot.
        (_set_env("RANKER_STATE_PEER_LISTEN", None), "serves no snapshot to its peers"),
        (_set_env("RANKER_STATE_PEERS", None), "names no --state-peers"),
        (_set_env("RANKER_STATE_PEER_LISTEN", "0.0.0.0:9464"), "is the metrics port"),
        (
            _set_env("RANKER_STATE_PEERS", "http://ranker-0.ranker:9094"),
            "--state-peers http://ranker-0.ranker:9094: want http://ranker-<n>.ranker-peers:9094",
        ),
        (
            _set_env("RANKER_STATE_PEERS", "http://ranker-0.ranker-peers:9464"),
            "--state-peers http://ranker-0.ranker-peers:9464: want",
        ),
        (_delete("StatefulSet", "ranker", "spec.serviceName"), "no headless Service None"),
        (_peer_port_open_to_monitoring, "to the state snapshot port 9094: only ranker pods"),
        (_ranker_without_peer_egress, "does not let its replicas reach each other's"),
        (_set_property("message.max.bytes", str(1 << 20)), "message.max.bytes=1048576 is below"),
        (_set_property("replica.fetch.max.bytes", str(1 << 20)), "replica.fetch.max.bytes=1048576"),
        (_kafka_open_to_namespace, "not only the ranker and Kafka pods"),
        (_remove("NetworkPolicy", "ranker-kafka"), "no NetworkPolicy limits who reaches it"),
        (_ranker_without_kafka_egress, "does not let it reach the broker port"),
        # Probes.
        (_probe("startupProbe", None), "no startupProbe"),
        (
            _probe("startupProbe", {"grpc": {"port": 50051}, "periodSeconds": 10}),
            "allows 30s (periodSeconds x failureThreshold)",
        ),
        (
            _probe("startupProbe", {"tcpSocket": {"port": "grpc"}, "failureThreshold": 60}),
            "startupProbe does not ask gRPC health",
        ),
        (_probe("readinessProbe", {"grpc": {"port": 50051}}), "readinessProbe does not ask"),
        (_probe("livenessProbe", {"grpc": {"port": 50051}}), "livenessProbe asks gRPC health"),
        # Scaling.
        (
            _set("HorizontalPodAutoscaler", "ranker", "spec.scaleTargetRef.kind", "Deployment"),
            "scales Deployment ranker, which this overlay does not have",
        ),
        (_remove("PodDisruptionBudget", "ranker"), "no PodDisruptionBudget selects"),
        (_embedded(3, keep_autoscaler=False), "embedded state (no --state) on up to 3 replicas"),
        (_embedded(1, keep_autoscaler=True), "embedded state (no --state) on up to 30 replicas"),
        (lambda docs: _set_state(docs, "etcd://x:2379"), "not kafka://, redis:// or empty"),
    ],
)
def test_invariants_refuse_a_broken_deployment(mutate: Any, want: str) -> None:
    docs = _base()
    mutate(docs)
    got = invariants.errors(docs, KAFKA_VERSION)
    assert any(want in error for error in got), f"got {got}, want one containing {want!r}"


def test_the_committed_base_holds_the_invariants() -> None:
    got = invariants.errors(_base(), KAFKA_VERSION)
    assert got == [], got


def test_one_embedded_replica_without_autoscaler_holds() -> None:
    docs = _base()
    _embedded(1, keep_autoscaler=False)(docs)
    got = invariants.errors(docs, KAFKA_VERSION)
    assert got == [], got


def test_one_kafka_replica_needs_no_peers_and_the_default_retention_holds() -> None:
    docs = _base()
    _set("StatefulSet", "ranker", "spec.replicas", 1)(docs)
    _remove("HorizontalPodAutoscaler", "ranker")(docs)
    _set_env("RANKER_STATE_PEER_LISTEN", None)(docs)
    _set_env("RANKER_STATE_PEERS", None)(docs)
    _replace_in_state("&retention=168h", "")(docs)
    got = invariants.errors(docs, KAFKA_VERSION)
    assert got == [], got


@pytest.mark.parametrize(
    ("value", "want"),
    [("168h", 168 * 3600.0), ("1h30m", 5400.0), ("90s", 90.0), ("7d", None), ("", None)],
)
def test_go_durations_are_read_as_the_server_reads_them(value: str, want: float | None) -> None:
    assert invariants.go_duration_seconds(value) == want


def test_probes_over_mtls_count_as_health_probes() -> None:
    """Prod asks the same health services with grpc_health_probe over mTLS."""
    docs = _base()
    server = _server(docs)
    server["startupProbe"] = {
        "exec": {"command": [HEALTH_PROBE, "-addr=127.0.0.1:50051", "-tls"]},
        "periodSeconds": 10,
        "failureThreshold": 60,
    }
    server["readinessProbe"] = {
        "exec": {"command": [HEALTH_PROBE, "-service=ranker.v1.RankingService", "-tls"]}
    }
    assert invariants.errors(docs, KAFKA_VERSION) == []
    server["livenessProbe"] = {"exec": {"command": [HEALTH_PROBE, "-tls"]}}
    assert any("livenessProbe asks" in e for e in invariants.errors(docs, KAFKA_VERSION))


def test_kafka_release_is_read_from_the_pom(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><dependencies>'
        "<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId>"
        "<version>1.7.36</version></dependency>"
        "<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>"
        "<version>9.9.9</version></dependency></dependencies></project>"
    )
    assert invariants.kafka_release(pom) == "9.9.9"
    pom.write_text('<project xmlns="http://maven.apache.org/POM/4.0.0"/>')
    with pytest.raises(SystemExit, match=r"no org\.apache\.kafka"):
        invariants.kafka_release(pom)
