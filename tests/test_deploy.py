"""The deployment files agree with the server they deploy."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ranker.serving.client import RankerClient
from ranker.serving.process import ServerProcess
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import EXPERIMENT, REPO, add_version, experiment_server, scrape_metrics

DEPLOY = REPO / "deploy"

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary


def _served_metric_names(server: ServerProcess) -> set[str]:
    text = scrape_metrics(server)
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+)", text, re.MULTILINE)}


def test_alerts_and_dashboard_use_metrics_the_server_exports(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    add_version(model_dir, root, "news", "v1")
    add_version(model_dir, root, "news-b", "v1")
    config = tmp_path / "experiment.yaml"
    config.write_text(EXPERIMENT)
    with experiment_server(
        server_binary, root, config, ort_lib, f"--exposure-dir={tmp_path / 'x'}"
    ) as server:
        with RankerClient(server.target) as client:
            for i in range(20):  # every labelled series appears once observed
                client.rank(
                    pb.RankRequest(
                        request_id=str(i),
                        user_id=str(i),
                        feature_names=["x"],
                        candidates=[
                            pb.Candidate(id="a", features=[1.0]),
                            pb.Candidate(id="b", features=[2.0]),
                        ],
                    )
                )
        time.sleep(0.5)  # shadow scorings finish on the side
        served = _served_metric_names(server)
    used: set[str] = set()
    for path in [*DEPLOY.glob("prometheus/*.yaml"), *DEPLOY.glob("grafana/*.json")]:
        used |= set(re.findall(r"\b(ranker_[a-z_]+)", path.read_text()))
    assert used, "no ranker_ metrics referenced"
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert base <= served, sorted(base - served)


def test_deployed_experiment_config_is_accepted_by_the_server(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    configmap = yaml.safe_load((DEPLOY / "k8s/base/configmap-experiment.yaml").read_text())
    config = tmp_path / "experiment.yaml"
    config.write_text(configmap["data"]["experiment.yaml"])
    experiment = yaml.safe_load(config.read_text())["experiment"]
    root = tmp_path / "models"
    for name in {v["model"] for v in experiment["variants"]}:
        add_version(model_dir, root, name, "v1")
    with experiment_server(server_binary, root, config, ort_lib) as running:
        assert '"experiment"' in running.log
        assert experiment["name"] in running.log


def _overlay_args(overlay: str) -> list[str]:
    """The server arguments an overlay's JSON patches add."""
    kustomization = yaml.safe_load(
        (DEPLOY / f"k8s/overlays/{overlay}/kustomization.yaml").read_text()
    )
    args = []
    for patch in kustomization.get("patches", []):
        ops = yaml.safe_load(patch.get("patch", "[]")) or []
        if not isinstance(ops, list):  # a strategic merge patch, not JSON operations
            continue
        for op in ops:
            if op["path"] == "/spec/template/spec/containers/0/args/-":
                args.append(op["value"])
    return args


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_deployment_args_are_server_flags(server_binary: Path, overlay: str) -> None:
    usage = subprocess.run([str(server_binary), "--help"], capture_output=True, text=True).stderr
    server = yaml.safe_load((DEPLOY / "k8s/base/statefulset.yaml").read_text())
    container = server["spec"]["template"]["spec"]["containers"][0]
    overlay_args = _overlay_args(overlay)
    assert overlay_args, f"{overlay} adds no server arguments"
    for arg in container["args"] + overlay_args:
        flag = arg.split("=", 1)[0]
        assert f"  {flag}" in usage.replace("  -", "  --"), flag
    for env in container["env"]:
        if env["name"].startswith("RANKER_"):
            flag = "--" + env["name"].removeprefix("RANKER_").lower().replace("_", "-")
            assert f"  {flag}" in usage.replace("  -", "  --"), env["name"]
