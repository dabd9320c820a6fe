"""The model-sync sidecar (deploy/model-sync/sync.py) against a fake bucket:
a directory tree served by a stand-in for the AWS CLI that lists and copies
from it and logs each call."""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import REPO

SYNC = REPO / "deploy/model-sync/sync.py"

# `aws s3 ls URI` and `aws s3 cp --recursive --only-show-errors SRC DST`, as
# the AWS CLI answers them, over ROOT/<bucket>/<key>; each call is appended to
# ROOT/calls. A file named FAIL in a version breaks its copy.
FAKE_AWS = """\
import shutil, sys
from pathlib import Path
root = Path(ROOT)
args = sys.argv[1:]
with open(root / "calls", "a") as log:
    log.write(" ".join(args) + "\\n")
def local(uri):
    return root / uri.removeprefix("s3://")
if args[:2] == ["s3", "ls"] and len(args) == 3:
    uri = args[2]
    base, prefix = (local(uri), "") if uri.endswith("/") else (local(uri).parent, local(uri).name)
    entries = sorted(p for p in base.glob("*") if p.name.startswith(prefix))
    for p in entries:
        if p.is_dir():
            print(f"{'PRE':>30} {p.name}/")
        else:
            print(f"2026-11-26 02:30:00 {p.stat().st_size:>10} {p.name}")
    sys.exit(0 if entries else 1)
if args[:4] == ["s3", "cp", "--recursive", "--only-show-errors"] and len(args) == 6:
    src, dst = local(args[4]), Path(args[5])
    if (src / "FAIL").exists():
        print(f"download failed: {args[4]}FAIL: Access Denied", file=sys.stderr)
        sys.exit(1)
    shutil.copytree(src, dst)
    sys.exit(0)
print(f"unexpected call: {args}", file=sys.stderr)
sys.exit(252)
"""


def _load_sync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("model_sync", SYNC)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["model_sync"] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


sync = _load_sync()


class Bucket:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "s3"
        self.dir = self.root / "models-bucket"
        self.dir.mkdir(parents=True)
        self.aws = tmp_path / "aws"
        self.aws.write_text(f"#!{sys.executable}\nROOT = {str(self.root)!r}\n{FAKE_AWS}")
        self.aws.chmod(0o755)

    def publish(self, model: str, version: str, *, complete: bool = True) -> None:
        d = self.dir / model / version
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"x" * 1000)
        if complete:
            (d / "metadata.json").write_text(f'{{"version": "{version}"}}')

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def env(self, models: Path, experiment: Path, keep: int) -> dict[str, str]:
        return {
            "MODEL_BUCKET": "s3://models-bucket",
            "MODEL_DIR": str(models),
            "KEEP_VERSIONS": str(keep),
            "EXPERIMENT_CONFIG": str(experiment),
            "AWS_CLI": str(self.aws),
        }


def _experiment(tmp_path: Path, pins: dict[str, str]) -> Path:
    path = tmp_path / "experiment.yaml"
    variants = [
        {"name": f"v{i}", "model": model, "version": version, "weight": 1}
        for i, (model, version) in enumerate(pins.items())
    ]
    path.write_text(repr({"experiment": {"name": "e", "salt": "s", "variants": variants}}))
    return path  # a Python dict literal of str and int is valid YAML flow style


def _syncer(
    bucket: Bucket, tmp_path: Path, keep: int, pins: dict[str, str], server_metrics: str = ""
) -> tuple[Any, Path]:
    models = tmp_path / "models"
    env = bucket.env(models, _experiment(tmp_path, pins), keep)
    env["SERVER_METRICS_URL"] = server_metrics
    return sync.Syncer(sync.Settings.from_env(env), sync.Stats()), models


@pytest.fixture
def server_metrics() -> Iterator[dict[str, str]]:
    """A stand-in for the server's /metrics: set ["body"]; ["url"] serves it."""
    page = {"body": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page["body"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page["url"] = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    yield page
    server.shutdown()
    server.server_close()


def _listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


@pytest.mark.parametrize(
    ("names", "want"),
    [
        (["v9", "v10", "v1"], ["v10", "v9", "v1"]),
        (["20261125T023000", "20261126T023000"], ["20261126T023000", "20261125T023000"]),
        (["v2", "v02b", "v2a"], ["v02b", "v2a", "v2"]),
        (["backup", "v1"], ["v1", "backup"]),
    ],
)
def test_versions_are_ordered_as_the_server_orders_them(names: list[str], want: list[str]) -> None:
    got = sync.newest_first(names)
    assert got == want, f"got {got}, want {want}"


@pytest.mark.parametrize(
    ("present", "keep", "pinned", "want"),
    [
        ({"v1", "v2", "v3", "v4", "v10"}, 3, set(), {"v10", "v4", "v3"}),
        ({"v1", "v2", "v3", "v4"}, 2, {"v1"}, {"v4", "v3", "v1"}),
        ({"v1", "v2"}, 3, set(), {"v1", "v2"}),
        ({"v1", "v2", "v3"}, 1, {"v9"}, {"v3"}),  # a pin not present keeps nothing extra
        ({"v1", "v2", "v3"}, 1, {"v3"}, {"v3"}),
    ],
)
def test_versions_to_keep(present: set[str], keep: int, pinned: set[str], want: set[str]) -> None:
    got = sync.versions_to_keep(present, keep, pinned)
    assert got == want, f"got {got}, want {want}"


def test_copies_the_newest_complete_versions_and_the_pinned_ones(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    for v in ["v1", "v2", "v3", "v4", "v5"]:
        bucket.publish("news", v)
    bucket.publish("news", "v6", complete=False)  # still uploading
    bucket.publish("news-canary", "v1")
    (bucket.dir / ".mlflow").mkdir()
    (bucket.dir / ".mlflow/mlflow.db").write_text("x")
    syncer, models = _syncer(bucket, tmp_path, keep=2, pins={"news": "v1"})

    assert syncer.round()

    assert _listing(models) == {"news", "news-canary"}
    assert _listing(models / "news") == {"v5", "v4", "v1"}
    assert _listing(models / "news-canary") == {"v1"}
    assert (models / "news/v5/metadata.json").is_file()
    # Prefix listings only, never the whole bucket; of the older versions only
    # the pinned one is looked into.
    assert not [c for c in bucket.calls() if c.startswith("s3 ls --recursive")]
    looked_into = {
        c.split("/")[-2] for c in bucket.calls() if c.endswith("metadata.json") and "/news/" in c
    }
    assert looked_into == {"v6", "v5", "v4", "v1"}, looked_into

    text = syncer.stats.exposition()
    assert 'model_sync_versions{model="news"} 3' in text
    assert "model_sync_copied_versions_total 4" in text
    version_bytes = 1000 + len('{"version": "v1"}')
    assert f"model_sync_copied_bytes_total {4 * version_bytes}" in text
    assert "model_sync_failures_total 0" in text


def test_a_second_round_copies_nothing_again(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    for v in ["v1", "v2"]:
        bucket.publish("news", v)
    syncer, _ = _syncer(bucket, tmp_path, keep=3, pins={})
    assert syncer.round()
    before = len(bucket.calls())
    assert syncer.round()
    again = bucket.calls()[before:]
    assert again == ["s3 ls s3://models-bucket/", "s3 ls s3://models-bucket/news/"], again


def test_prunes_old_versions_but_keeps_the_pinned_one(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    for v in ["v1", "v2", "v3", "v4", "v5"]:
        bucket.publish("news", v)
    syncer, models = _syncer(bucket, tmp_path, keep=5, pins={"news": "v2"})
    assert syncer.round()
    assert len(_listing(models / "news")) == 5

    syncer, models = _syncer(bucket, tmp_path, keep=2, pins={"news": "v2"})
    assert syncer.round()

    assert _listing(models / "news") == {"v5", "v4", "v2"}  # no dot-directory left either
    text = syncer.stats.exposition()
    assert "model_sync_pruned_versions_total 2" in text
    assert 'model_sync_versions{model="news"} 3' in text


def test_never_prunes_the_version_the_server_serves(
    tmp_path: Path, server_metrics: dict[str, str]
) -> None:
    bucket = Bucket(tmp_path)
    for v in ["v1", "v2", "v3", "v4"]:
        bucket.publish("news", v)
    syncer, models = _syncer(bucket, tmp_path, keep=4, pins={})
    assert syncer.round()
    # v3 and v4 were refused: v2 serves.
    server_metrics["body"] = (
        "# TYPE ranker_model_serving_info gauge\n"
        'ranker_model_serving_info{model="news",version="v2"} 1\n'
        'ranker_model_serving_info{model="news-canary",version="v4"} 1\n'
    )
    syncer, models = _syncer(
        bucket, tmp_path, keep=1, pins={}, server_metrics=server_metrics["url"]
    )

    assert syncer.round()

    assert _listing(models / "news") == {"v4", "v2"}


def test_unreachable_server_metrics_prune_nothing(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    for v in ["v1", "v2", "v3"]:
        bucket.publish("news", v)
    syncer, models = _syncer(bucket, tmp_path, keep=3, pins={})
    assert syncer.round()
    syncer, models = _syncer(
        bucket, tmp_path, keep=1, pins={}, server_metrics="http://127.0.0.1:9/metrics"
    )

    assert syncer.round()  # the server may still be starting: not a failed round

    assert _listing(models / "news") == {"v1", "v2", "v3"}


def test_an_unreadable_experiment_config_prunes_nothing(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    for v in ["v1", "v2", "v3"]:
        bucket.publish("news", v)
    syncer, models = _syncer(bucket, tmp_path, keep=3, pins={})
    assert syncer.round()
    syncer, models = _syncer(bucket, tmp_path, keep=1, pins={})
    (tmp_path / "experiment.yaml").write_text("experiment: {variants: [")

    assert not syncer.round()

    assert _listing(models / "news") == {"v1", "v2", "v3"}
    text = syncer.stats.exposition()
    assert "model_sync_failures_total 1" in text
    assert "model_sync_last_success_timestamp_seconds 0.0" in text


def test_a_failed_copy_leaves_no_version_and_counts_a_failure(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    bucket.publish("news", "v1")
    bucket.publish("news", "v2")
    (bucket.dir / "news/v2/FAIL").write_text("")
    syncer, models = _syncer(bucket, tmp_path, keep=3, pins={})

    assert not syncer.round()

    assert _listing(models / "news") == {"v1"}
    assert "model_sync_failures_total 1" in syncer.stats.exposition()


def test_the_command_cleans_leftovers_and_runs_a_round(tmp_path: Path) -> None:
    bucket = Bucket(tmp_path)
    bucket.publish("news", "v1")
    models = tmp_path / "models"
    (models / "news/.incoming-v2").mkdir(parents=True)  # a copy cut short by a restart
    (models / "news/.deleting-v0").mkdir()
    env = {**os.environ, **bucket.env(models, tmp_path / "absent.yaml", 3)}

    done = subprocess.run([sys.executable, str(SYNC), "--once"], env=env, capture_output=True)

    assert done.returncode == 0, done.stderr
    assert _listing(models / "news") == {"v1"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"KEEP_VERSIONS": "0"}, "KEEP_VERSIONS=0 is below 1"),
        ({"KEEP_VERSIONS": "three"}, "KEEP_VERSIONS='three' is not a whole number"),
        ({"MODEL_BUCKET": ""}, "MODEL_BUCKET is not set"),
    ],
)
def test_bad_settings_name_the_variable(
    tmp_path: Path, override: dict[str, str], message: str
) -> None:
    env = {**os.environ, **Bucket(tmp_path).env(tmp_path, tmp_path / "e.yaml", 3), **override}
    done = subprocess.run([sys.executable, str(SYNC)], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_metrics_are_served_over_http() -> None:
    stats = sync.Stats()
    stats.present["news"] = 2
    server = sync.serve_metrics("127.0.0.1:0", stats)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "# TYPE model_sync_last_success_timestamp_seconds gauge" in body
    assert 'model_sync_versions{model="news"} 2' in body


def test_alerts_and_dashboard_use_metrics_the_sync_exports() -> None:
    exported = set(re.findall(r"^# TYPE (\S+)", sync.Stats().exposition(), re.MULTILINE))
    used: set[str] = set()
    for path in [*REPO.glob("deploy/prometheus/*.yaml"), *REPO.glob("deploy/grafana/*.json")]:
        used |= set(re.findall(r"\b(model_sync_[a-z_]+)", path.read_text()))
    assert used, "no model_sync_ metrics referenced"
    assert used <= exported, sorted(used - exported)
