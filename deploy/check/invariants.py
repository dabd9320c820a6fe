"""The deployment's invariants, over each built overlay's objects together
(`kustomize build` output): what schemas cannot say.

- Scaling never splits the truth: a ranker that keeps its own embedded state
  runs exactly one replica with no autoscaler; otherwise it shares a state.
- The shared Kafka state is durable by the documented standard: the --state
  URL asks for replication >= 3 and min.insync >= 2 (one broker may fail),
  its bootstrap names the nodes of a Kafka StatefulSet of the overlay, whose
  brokers default to the same, never elect an unclean leader, create no topic
  on use, keep records at least MIN_RETENTION_SECONDS (the URL's retention
  and the brokers' default alike), take the largest record a call makes, run
  the Kafka release the tests run, are disrupted one at a time, and accept
  only the ranker and each other; the snapshot (--state-dir) lives on a
  volume that outlives the pod.
- A replica without a snapshot the topic continues boots from a peer's: with
  more than one replica, every replica serves its snapshot
  (--state-peer-listen, not on the metrics port) to the other ranker pods
  only, and names its peers (--state-peers) by their StatefulSet DNS names
  on that port.
- Probes: a startup probe on gRPC health whose budget covers the catch-up,
  readiness on the ranking service's health, liveness that never asks health
  (it would kill a pod that is catching up or waiting for its model).
- Every autoscaler and disruption budget of the ranker finds it.

usage: invariants.py --kafka-pom tests/kafka/pom.xml MANIFEST...
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

SERVER_CONTAINER = "ranker"
RANKING_HEALTH_SERVICE = "ranker.v1.RankingService"
KAFKA_IMAGE = "apache/kafka"
# The durability standard: a write is acknowledged (acks=all) on at least
# MIN_INSYNC of at least MIN_REPLICATION replicas, so one broker may fail
# without losing an acknowledged write or refusing new ones.
MIN_REPLICATION = 3
MIN_INSYNC = 2
# The time a replica may take to load its snapshot and replay the topic's
# tail before it must report healthy: stated, to be replaced by measured
# figures of the shared design.
CATCH_UP_BUDGET_SECONDS = 600
# The shortest time the topic may keep records: a replica down for a day
# (a drained node, a weekend's incident) still catches up from its own
# snapshot rather than needing a peer's. The server's own floor is lower
# (six snapshot intervals, one hour): that only keeps the peers' snapshots
# inside the topic.
MIN_RETENTION_SECONDS = 24 * 3600
# What the server gives a topic whose URL names no retention (kafkastate's
# DefaultRetention).
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
# One call is one record: its items take at most this many bytes per byte of
# the request (JSON's \u00XX escape of one byte is six).
RECORD_BYTES_PER_REQUEST_BYTE = 6
# Kubernetes' probe defaults.
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_FAILURE_THRESHOLD = 3

Doc = dict[str, Any]


def kafka_release(pom: Path) -> str:
    """The version of org.apache.kafka:kafka_2.13 the pom pins."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    for dep in ET.parse(pom).getroot().iterfind(".//m:dependency", ns):
        if dep.findtext("m:groupId", namespaces=ns) == "org.apache.kafka" and (
            dep.findtext("m:artifactId", namespaces=ns) or ""
        ).startswith("kafka_"):
            version = dep.findtext("m:version", namespaces=ns)
            if version:
                return version
    raise SystemExit(f"{pom}: no org.apache.kafka:kafka_<scala> dependency with a version")


def _name(doc: Doc) -> str:
    return str(doc.get("metadata", {}).get("name", ""))


def _pod(workload: Doc) -> Doc:
    return workload.get("spec", {}).get("template", {}).get("spec", {})  # type: ignore[no-any-return]


def _pod_labels(workload: Doc) -> dict[str, str]:
    return workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})  # type: ignore[no-any-return]


def _selects(match_labels: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in (match_labels or {}).items())


def _container(workload: Doc, name: str) -> Doc | None:
    return next((c for c in _pod(workload).get("containers", []) if c.get("name") == name), None)


def server_flags(container: Doc) -> dict[str, str]:
    """The server's flags as the container sets them: --flag=value
    arguments and RANKER_FLAG environment variables (the server reads both)."""
    flags = {}
    for env in container.get("env", []):
        name = env.get("name", "")
        if name.startswith("RANKER_") and "value" in env:
            flags[name.removeprefix("RANKER_").lower().replace("_", "-")] = str(env["value"])
    for arg in container.get("args", []):
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            flags[key] = value
    return flags


def properties(text: str) -> dict[str, str]:
    """A Java properties file's key=value lines (comments and blanks skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_duration_seconds(value: str) -> float | None:
    """A Go duration ("168h", "1h30m") in seconds, or None if it is not one."""
    parts = _DURATION_PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _DURATION_UNIT[u] for n, u in parts)


def retention_seconds(query: dict[str, str]) -> float | None:
    """How long a topic the server creates keeps records (inf: forever),
    or None when the URL's retention is not a duration."""
    value = query.get("retention")
    if value is None:
        return DEFAULT_RETENTION_SECONDS
    if value == "forever":
        return math.inf
    return go_duration_seconds(value)


def _retention_ms_ok(value: str | None) -> bool:
    ms = _int(value)
    return ms == -1 or (ms is not None and ms >= MIN_RETENTION_SECONDS * 1000)


def _listen_port(listen: str) -> int | None:
    return _int(listen.rpartition(":")[2]) if ":" in listen else None


def _asks_health(probe: Doc) -> bool:
    if "grpc" in probe:
        return True
    command = probe.get("exec", {}).get("command", [])
    return any("grpc_health_probe" in part for part in command)


def _health_service(probe: Doc) -> str | None:
    """The gRPC health service a probe asks for ("" is the server as a
    whole), or None when it does not ask gRPC health."""
    if "grpc" in probe:
        return str(probe["grpc"].get("service", ""))
    command = probe.get("exec", {}).get("command", [])
    if not any("grpc_health_probe" in part for part in command):
        return None
    for part in command:
        if part.startswith("-service="):
            return str(part.removeprefix("-service="))
    return ""


def probe_errors(container: Doc) -> list[str]:
    errors = []
    startup = container.get("startupProbe")
    if startup is None:
        errors.append(
            "the ranker has no startupProbe: liveness would run while it loads and catches up"
        )
    elif not _asks_health(startup):
        errors.append("the ranker's startupProbe does not ask gRPC health")
    else:
        budget = startup.get("periodSeconds", DEFAULT_PERIOD_SECONDS) * startup.get(
            "failureThreshold", DEFAULT_FAILURE_THRESHOLD
        )
        if budget < CATCH_UP_BUDGET_SECONDS:
            errors.append(
                f"the ranker's startupProbe allows {budget}s (periodSeconds x failureThreshold), "
                f"less than the {CATCH_UP_BUDGET_SECONDS}s catch-up budget"
            )
    readiness = container.get("readinessProbe")
    if readiness is None or _health_service(readiness) != RANKING_HEALTH_SERVICE:
        errors.append(
            f"the ranker's readinessProbe does not ask gRPC health of {RANKING_HEALTH_SERVICE}"
        )
    liveness = container.get("livenessProbe")
    if liveness is not None and _asks_health(liveness):
        errors.append(
            "the ranker's livenessProbe asks gRPC health: it would restart a pod that is "
            "catching up or waiting for its model (check the port)"
        )
    return errors


def _volume_outlives_pod(workload: Doc, container: Doc, path: str) -> bool:
    mount = next(
        (m for m in container.get("volumeMounts", []) if m.get("mountPath") == path.rstrip("/")),
        None,
    )
    if mount is None:
        return False
    claims = {_name(t) for t in workload.get("spec", {}).get("volumeClaimTemplates", [])}
    if mount.get("name") in claims:
        return True
    volume = next(
        (v for v in _pod(workload).get("volumes", []) if v.get("name") == mount.get("name")), None
    )
    return volume is not None and "persistentVolumeClaim" in volume


def kafka_errors(
    url: str,
    server: Doc,
    container: Doc,
    flags: dict[str, str],
    docs: list[Doc],
    kafka_version: str,
) -> list[str]:
    errors = []
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    topic = parts.path.strip("/")
    if not topic:
        errors.append(f"--state {url}: no topic")
    replication, insync = _int(query.get("replication")), _int(query.get("min_insync"))
    if replication is None or replication < MIN_REPLICATION:
        errors.append(
            f"--state {url}: replication {query.get('replication')}, "
            f"want at least {MIN_REPLICATION}"
        )
    if insync is None or insync < MIN_INSYNC:
        errors.append(
            f"--state {url}: min_insync {query.get('min_insync')}, want at least {MIN_INSYNC}"
        )
    if replication is not None and insync is not None and insync >= replication:
        errors.append(
            f"--state {url}: min_insync {insync} of replication {replication} "
            "leaves no broker free to fail"
        )
    retention = retention_seconds(query)
    if retention is None or retention < MIN_RETENTION_SECONDS:
        errors.append(
            f"--state {url}: retention {query.get('retention')}, want a duration of at least "
            f"{MIN_RETENTION_SECONDS // 3600}h (or forever)"
        )
    state_dir = flags.get("state-dir", "")
    if not state_dir:
        errors.append(
            "--state-dir unset: every restart would replay the topic from its first record"
        )
    elif not _volume_outlives_pod(server, container, state_dir):
        errors.append(
            f"--state-dir {state_dir} is not on a volume claim: "
            "the snapshot would be lost with the pod"
        )

    clusters = {
        _name(d): d
        for d in docs
        if d.get("kind") == "StatefulSet"
        and any(
            c.get("image", "").startswith(KAFKA_IMAGE + ":") for c in _pod(d).get("containers", [])
        )
    }
    hosts = [h for h in parts.netloc.split(",") if h]
    if not hosts:
        errors.append(f"--state {url}: no bootstrap brokers")
    named: set[str] = set()
    for host in hosts:
        node = host.rsplit(":", 1)[0].split(".")
        sts, _, ordinal = node[0].rpartition("-")
        cluster = clusters.get(sts)
        if (
            cluster is None
            or len(node) < 2
            or node[1] != cluster["spec"].get("serviceName")
            or not ordinal.isdigit()
            or int(ordinal) >= cluster["spec"].get("replicas", 1)
        ):
            errors.append(
                f"--state {url}: {host} is not a node of a Kafka StatefulSet in this overlay"
            )
        else:
            named.add(sts)
    for sts in sorted(named):
        errors += cluster_errors(clusters[sts], docs, server, replication, flags, kafka_version)
    return errors


def cluster_errors(
    cluster: Doc,
    docs: list[Doc],
    server: Doc,
    replication: int | None,
    flags: dict[str, str],
    kafka_version: str,
) -> list[str]:
    name = f"Kafka {_name(cluster)}"
    errors = []
    replicas = cluster["spec"].get("replicas", 1)
    if replication is not None and replicas < replication:
        errors.append(f"{name}: {replicas} nodes cannot hold replication {replication}")
    (broker,) = [
        c for c in _pod(cluster)["containers"] if c.get("image", "").startswith(KAFKA_IMAGE + ":")
    ]
    if broker["image"] != f"{KAFKA_IMAGE}:{kafka_version}":
        errors.append(
            f"{name}: image {broker['image']}, want {KAFKA_IMAGE}:{kafka_version} "
            "(the release tests/kafka/pom.xml pins)"
        )
    if not cluster["spec"].get("volumeClaimTemplates"):
        errors.append(f"{name}: no volumeClaimTemplates: the log would be lost with the pod")

    service = next(
        (
            d
            for d in docs
            if d.get("kind") == "Service" and _name(d) == cluster["spec"].get("serviceName")
        ),
        None,
    )
    if service is None or service.get("spec", {}).get("clusterIP") != "None":
        errors.append(
            f"{name}: no headless Service {cluster['spec'].get('serviceName')} for its nodes' names"
        )

    labels = _pod_labels(cluster)
    budgets = [
        d
        for d in docs
        if d.get("kind") == "PodDisruptionBudget"
        and _selects(d.get("spec", {}).get("selector", {}).get("matchLabels"), labels)
    ]
    if [b["spec"].get("maxUnavailable") for b in budgets] != [1]:
        errors.append(f"{name}: want one PodDisruptionBudget with maxUnavailable 1")

    config = _broker_properties(cluster, broker, docs)
    if config is None:
        errors.append(f"{name}: no server.properties from a ConfigMap mounted in {broker['name']}")
    else:
        want: dict[str, Callable[[str | None], bool]] = {
            "default.replication.factor": lambda v: (_int(v) or 0) >= MIN_REPLICATION,
            "min.insync.replicas": lambda v: (_int(v) or 0) >= MIN_INSYNC,
            "unclean.leader.election.enable": lambda v: v == "false",
            "auto.create.topics.enable": lambda v: v == "false",
            "log.retention.ms": _retention_ms_ok,
        }
        for key, ok in want.items():
            if not ok(config.get(key)):
                errors.append(f"{name}: server.properties {key}={config.get(key)}")
        recv = _int(flags.get("max-recv-bytes"))
        message = _int(config.get("message.max.bytes"))
        if recv is None:
            errors.append(
                "the ranker sets no --max-recv-bytes: "
                "the largest record (message.max.bytes) derives from it"
            )
        elif message is None or message < RECORD_BYTES_PER_REQUEST_BYTE * recv:
            errors.append(
                f"{name}: message.max.bytes={config.get('message.max.bytes')} is below "
                f"{RECORD_BYTES_PER_REQUEST_BYTE} x --max-recv-bytes "
                f"({RECORD_BYTES_PER_REQUEST_BYTE * recv})"
            )
        fetch = _int(config.get("replica.fetch.max.bytes"))
        if message is not None and (fetch is None or fetch < message):
            errors.append(
                f"{name}: replica.fetch.max.bytes={config.get('replica.fetch.max.bytes')} "
                "is below message.max.bytes"
            )

    errors += _network_errors(cluster, server, docs)
    return errors


def _broker_properties(cluster: Doc, broker: Doc, docs: list[Doc]) -> dict[str, str] | None:
    mounted = {m.get("name") for m in broker.get("volumeMounts", [])}
    for volume in _pod(cluster).get("volumes", []):
        if volume.get("name") in mounted and "configMap" in volume:
            configmap = next(
                (
                    d
                    for d in docs
                    if d.get("kind") == "ConfigMap" and _name(d) == volume["configMap"].get("name")
                ),
                None,
            )
            if configmap is not None and "server.properties" in configmap.get("data", {}):
                return properties(configmap["data"]["server.properties"])
    return None


def _port_numbers(workload: Doc) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in _pod(workload).get("containers", [])
        for p in c.get("ports", [])
        if "name" in p
    }


def _network_errors(cluster: Doc, server: Doc, docs: list[Doc]) -> list[str]:
    name = f"Kafka {_name(cluster)}"
    kafka_labels, server_labels = _pod_labels(cluster), _pod_labels(server)
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    errors = []
    guarding = [
        p
        for p in policies
        if _selects(p["spec"].get("podSelector", {}).get("matchLabels"), kafka_labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not guarding:
        errors.append(f"{name}: no NetworkPolicy limits who reaches it")
    for policy in guarding:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if not peers:
                errors.append(f"{name}: NetworkPolicy {_name(policy)} admits every source")
            for peer in peers or []:
                selector = peer.get("podSelector", {}).get("matchLabels")
                if set(peer) != {"podSelector"} or not (
                    _selects(selector, server_labels) or _selects(selector, kafka_labels)
                ):
                    errors.append(
                        f"{name}: NetworkPolicy {_name(policy)} admits {peer}, "
                        "not only the ranker and Kafka pods"
                    )
    ports = _port_numbers(cluster)
    broker_port = ports.get("kafka")
    allowed = False
    for policy in policies:
        if not _selects(policy["spec"].get("podSelector", {}).get("matchLabels"), server_labels):
            continue
        for rule in policy["spec"].get("egress", []):
            to_kafka = any(
                _selects(peer.get("podSelector", {}).get("matchLabels"), kafka_labels)
                for peer in rule.get("to", [])
            )
            rule_ports = {p.get("port") for p in rule.get("ports", [])}
            if to_kafka and (not rule_ports or broker_port in rule_ports or "kafka" in rule_ports):
                allowed = True
    if not allowed:
        errors.append(f"{name}: the ranker's NetworkPolicy does not let it reach the broker port")
    return errors


def peer_errors(server: Doc, flags: dict[str, str], docs: list[Doc]) -> list[str]:
    """A replica without a snapshot the topic continues boots from a
    peer's: each serves its own on a port of its own, reachable from the
    other ranker pods only, and names the others by their DNS names."""
    name = f"{server['kind']} {_name(server)}"
    listen = flags.get("state-peer-listen", "")
    port = _listen_port(listen)
    peers = [p.strip() for p in flags.get("state-peers", "").split(",") if p.strip()]
    if port is None:
        return [
            f"{name} runs several replicas but serves no snapshot to its peers "
            "(--state-peer-listen): a new replica could not boot once retention deleted "
            "the topic's first records"
        ]
    errors = []
    if port == _listen_port(flags.get("metrics-listen", "")):
        errors.append(
            f"--state-peer-listen {listen} is the metrics port: Prometheus would reach "
            "every reader's history"
        )
    if not peers:
        errors.append(f"{name} runs several replicas but names no --state-peers")
    service = server["spec"].get("serviceName")
    headless = any(
        d.get("kind") == "Service"
        and _name(d) == service
        and d.get("spec", {}).get("clusterIP") == "None"
        for d in docs
    )
    if not headless:
        errors.append(f"{name}: no headless Service {service} for its replicas' DNS names")
    for peer in peers:
        parts = urlsplit(peer)
        host = (parts.hostname or "").split(".")
        sts, _, ordinal = host[0].rpartition("-")
        if (
            parts.scheme != "http"
            or parts.port != port
            or sts != _name(server)
            or not ordinal.isdigit()
            or len(host) < 2
            or host[1] != service
        ):
            errors.append(
                f"--state-peers {peer}: want http://{_name(server)}-<n>.{service}:{port} "
                "(a replica's snapshot port)"
            )
    errors += _peer_network_errors(server, port, docs)
    return errors


def _peer_network_errors(server: Doc, port: int, docs: list[Doc]) -> list[str]:
    labels = _pod_labels(server)
    names = {n for n, p in _port_numbers(server).items() if p == port}

    def covers(rule: Doc) -> bool:
        rule_ports = [p.get("port") for p in rule.get("ports", [])]
        return not rule_ports or any(p == port or p in names for p in rule_ports)

    errors = []
    admitted = reached = False
    for policy in docs:
        if policy.get("kind") != "NetworkPolicy" or not _selects(
            policy["spec"].get("podSelector", {}).get("matchLabels"), labels
        ):
            continue
        for rule in policy["spec"].get("ingress", []):
            if not covers(rule):
                continue
            sources = rule.get("from") or [{}]
            for source in sources:
                if set(source) != {"podSelector"} or not _selects(
                    source["podSelector"].get("matchLabels"), labels
                ):
                    errors.append(
                        f"NetworkPolicy {_name(policy)} admits {source or 'every source'} to the "
                        f"state snapshot port {port}: only ranker pods may read every "
                        "reader's history"
                    )
                else:
                    admitted = True
        for rule in policy["spec"].get("egress", []):
            if covers(rule) and any(
                _selects(t.get("podSelector", {}).get("matchLabels"), labels)
                for t in rule.get("to", [])
            ):
                reached = True
    if not admitted or not reached:
        errors.append(
            f"the ranker's NetworkPolicy does not let its replicas reach each other's "
            f"state snapshot port {port} (ingress from and egress to ranker pods)"
        )
    return errors


def errors(docs: list[Doc], kafka_version: str) -> list[str]:
    """Every broken invariant of one overlay's objects, each named."""
    servers = [
        d
        for d in docs
        if d.get("kind") in ("Deployment", "StatefulSet")
        and _container(d, SERVER_CONTAINER) is not None
    ]
    if len(servers) != 1:
        return [f"want one workload with a {SERVER_CONTAINER} container, found {len(servers)}"]
    (server,) = servers
    container = _container(server, SERVER_CONTAINER)
    assert container is not None
    kind, name = server["kind"], _name(server)
    found = probe_errors(container)

    autoscalers = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"]
    workloads = {(d.get("kind"), _name(d)) for d in docs}
    for hpa in autoscalers:
        target = hpa["spec"]["scaleTargetRef"]
        if (target.get("kind"), target.get("name")) not in workloads:
            found.append(
                f"HorizontalPodAutoscaler {_name(hpa)} scales "
                f"{target.get('kind')} {target.get('name')}, which this overlay does not have"
            )
    mine = [
        h
        for h in autoscalers
        if (h["spec"]["scaleTargetRef"].get("kind"), h["spec"]["scaleTargetRef"].get("name"))
        == (kind, name)
    ]
    if not any(
        d.get("kind") == "PodDisruptionBudget"
        and _selects(d.get("spec", {}).get("selector", {}).get("matchLabels"), _pod_labels(server))
        for d in docs
    ):
        found.append(f"no PodDisruptionBudget selects the {kind} {name} pods")

    flags = server_flags(container)
    state = flags.get("state", "")
    most = max(
        [server["spec"].get("replicas", 1)] + [h["spec"].get("maxReplicas", 1) for h in mine]
    )
    if state.startswith("kafka://"):
        found += kafka_errors(state, server, container, flags, docs, kafka_version)
        if most > 1:
            found += peer_errors(server, flags, docs)
    elif not state:
        if most > 1:
            found.append(
                f"{kind} {name} keeps an embedded state (no --state) on up to {most} replicas: "
                "each would count only the events it received (share a state, or run one replica)"
            )
    elif not state.startswith("redis://"):
        found.append(f"--state {state}: not kafka://, redis:// or empty")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kafka-pom",
        type=Path,
        required=True,
        help="tests/kafka/pom.xml: the Kafka release the tests run, which the image must match",
    )
    parser.add_argument("manifests", type=Path, nargs="+")
    args = parser.parse_args(argv)
    version = kafka_release(args.kafka_pom)
    failed = 0
    for path in args.manifests:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        found = errors(docs, version)
        for error in found:
            print(f"{path}: {error}")
        failed += len(found)
        print(f"{path}: deployment invariants {'broken' if found else 'hold'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
