"""Model sync: the sidecar that fills the server's model root from object storage.

Every SYNC_INTERVAL_SECONDS it lists the model prefixes of MODEL_BUCKET and,
for each model, its version prefixes (never every object), and copies the
newest KEEP_VERSIONS complete versions (metadata.json present: the publisher
uploads it last) plus every version the experiment config pins, if missing.
Each version is copied into a dot-directory and renamed into place when
whole; the server skips dot-names, so it never sees half a version.

Then it prunes: in each model directory it keeps the newest KEEP_VERSIONS
versions and the pinned ones, and deletes the rest by renaming each to a
dot-name first (the server stops seeing it at once) and removing it after.
It never deletes the version the server reports serving
(ranker_model_serving_info on SERVER_METRICS_URL; a refused newer version
leaves an older one serving). If the experiment config cannot be read or the
server's metrics cannot be scraped nothing is pruned, as a pin or the serving
version may be unknown.

Metrics for Prometheus on METRICS_LISTEN (/metrics): the last successful
round, failed rounds, bytes copied, versions copied and pruned, versions
present per model.

The AWS CLI (AWS_CLI, default `aws`) does the listing and copying.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STAGING = ".incoming-"
DELETING = ".deleting-"


@dataclass(frozen=True)
class Settings:
    bucket: str
    model_dir: Path
    keep: int
    interval: float
    experiment_config: Path | None
    metrics_listen: str
    server_metrics_url: str
    aws: str

    @staticmethod
    def from_env(env: dict[str, str]) -> Settings:
        def required(name: str) -> str:
            if not env.get(name):
                raise ValueError(f"{name} is not set")
            return env[name]

        def number(name: str, default: str, minimum: int) -> int:
            raw = env.get(name, default)
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a whole number") from None
            if value < minimum:
                raise ValueError(f"{name}={value} is below {minimum}")
            return value

        experiment = env.get("EXPERIMENT_CONFIG", "")
        return Settings(
            bucket=required("MODEL_BUCKET").rstrip("/"),
            model_dir=Path(required("MODEL_DIR")),
            keep=number("KEEP_VERSIONS", "3", 1),
            interval=number("SYNC_INTERVAL_SECONDS", "30", 1),
            experiment_config=Path(experiment) if experiment else None,
            metrics_listen=env.get("METRICS_LISTEN", "127.0.0.1:9465"),
            server_metrics_url=env.get("SERVER_METRICS_URL", ""),
            aws=env.get("AWS_CLI", "aws"),
        )


def _digit_run(s: str) -> int:
    i = 0
    while i < len(s) and s[i].isdigit():
        i += 1
    return i


def version_less(a: str, b: str) -> bool:
    """The server's version order (registry.VersionLess): runs of digits
    compare as numbers (v9 < v10), the rest as text."""
    while a and b:
        da, db = _digit_run(a), _digit_run(b)
        if da and db:
            na, nb = a[:da].lstrip("0"), b[:db].lstrip("0")
            if len(na) != len(nb):
                return len(na) < len(nb)
            if na != nb:
                return na < nb
            a, b = a[da:], b[db:]
            continue
        if a[0] != b[0]:
            return a[0] < b[0]
        a, b = a[1:], b[1:]
    return len(a) < len(b)


def newest_first(versions: set[str] | list[str]) -> list[str]:
    """Versions ordered as the server orders them, newest first."""

    def newer_first(a: str, b: str) -> int:
        return -1 if version_less(b, a) else (1 if version_less(a, b) else 0)

    return sorted(versions, key=functools.cmp_to_key(newer_first))


def versions_to_keep(present: set[str], keep: int, protected: set[str]) -> set[str]:
    """The versions of one model that stay: the newest `keep` and every
    protected (pinned or serving) one present."""
    return set(newest_first(present)[:keep]) | (protected & present)


SERVING = re.compile(r'^ranker_model_serving_info\{model="([^"]*)",version="([^"]*)"\}', re.M)


def read_serving(url: str) -> dict[str, set[str]]:
    """The versions the server reports serving, by model (none without a URL)."""
    if not url:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
    except (OSError, urllib.error.URLError) as e:
        raise ValueError(f"{url}: {e}") from e
    serving: dict[str, set[str]] = {}
    for model, version in SERVING.findall(text):
        serving.setdefault(model, set()).add(version)
    return serving


def read_pins(config: Path | None) -> dict[str, set[str]]:
    """Model versions the experiment's variants pin, by model name."""
    if config is None:
        return {}
    try:
        doc = yaml.safe_load(config.read_text())
    except FileNotFoundError:
        return {}  # no experiment runs
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{config}: {e}") from e
    experiment = (doc or {}).get("experiment") or {}
    pins: dict[str, set[str]] = {}
    for i, variant in enumerate(experiment.get("variants") or []):
        if not isinstance(variant, dict) or not isinstance(variant.get("model"), str):
            raise ValueError(f"{config}: experiment.variants[{i}].model is missing")
        if version := variant.get("version"):
            pins.setdefault(variant["model"], set()).add(str(version))
    return pins


@dataclass
class Stats:
    """What /metrics reports; guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    last_success: float = 0.0
    failures: int = 0
    bytes_copied: int = 0
    copied: int = 0
    pruned: int = 0
    present: dict[str, int] = field(default_factory=dict)

    def exposition(self) -> str:
        with self.lock:
            lines = [
                "# HELP model_sync_last_success_timestamp_seconds Last successful round.",
                "# TYPE model_sync_last_success_timestamp_seconds gauge",
                f"model_sync_last_success_timestamp_seconds {self.last_success}",
                "# HELP model_sync_failures_total Sync rounds that failed.",
                "# TYPE model_sync_failures_total counter",
                f"model_sync_failures_total {self.failures}",
                "# HELP model_sync_copied_bytes_total Bytes of model versions copied.",
                "# TYPE model_sync_copied_bytes_total counter",
                f"model_sync_copied_bytes_total {self.bytes_copied}",
                "# HELP model_sync_copied_versions_total Model versions copied.",
                "# TYPE model_sync_copied_versions_total counter",
                f"model_sync_copied_versions_total {self.copied}",
                "# HELP model_sync_pruned_versions_total Model versions deleted as too old.",
                "# TYPE model_sync_pruned_versions_total counter",
                f"model_sync_pruned_versions_total {self.pruned}",
                "# HELP model_sync_versions Model versions present in the model root, by model.",
                "# TYPE model_sync_versions gauge",
            ]
            for model, n in sorted(self.present.items()):
                label = model.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'model_sync_versions{{model="{label}"}} {n}')
        return "\n".join(lines) + "\n"


def log(level: str, msg: str, **fields: object) -> None:
    print(json.dumps({"level": level, "msg": msg, **fields}), file=sys.stderr, flush=True)


class Syncer:
    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.s = settings
        self.stats = stats

    def _aws(self, *args: str) -> str:
        done = subprocess.run([self.s.aws, *args], capture_output=True, text=True)
        # `aws s3 ls` exits 1, saying nothing, when no key has the prefix.
        if done.returncode == 1 and args[:2] == ("s3", "ls") and not done.stderr.strip():
            return ""
        if done.returncode != 0:
            raise RuntimeError(
                f"aws {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout

    def _prefixes(self, uri: str) -> list[str]:
        """The sub-prefixes ("directories") directly under uri, dot-names skipped."""
        names = []
        for line in self._aws("s3", "ls", uri).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "PRE" and not parts[1].startswith("."):
                names.append(parts[1].rstrip("/"))
        return names

    def _complete(self, model: str, version: str) -> bool:
        listing = self._aws("s3", "ls", f"{self.s.bucket}/{model}/{version}/metadata.json")
        return any(line.split()[-1:] == ["metadata.json"] for line in listing.splitlines())

    def _copy(self, model: str, version: str) -> None:
        directory = self.s.model_dir / model
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f"{STAGING}{version}"
        shutil.rmtree(staging, ignore_errors=True)
        self._aws(
            "s3", "cp", "--recursive", "--only-show-errors",
            f"{self.s.bucket}/{model}/{version}/", str(staging),
        )  # fmt: skip
        if not (staging / "metadata.json").is_file():
            raise RuntimeError(f"{model}/{version}: copied without metadata.json")
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        staging.rename(directory / version)
        with self.stats.lock:
            self.stats.bytes_copied += size
            self.stats.copied += 1
        log("info", "version copied", model=model, version=version, bytes=size)

    def _wanted(self, model: str, remote: list[str], local: set[str], pins: set[str]) -> list[str]:
        """Remote versions to copy: among the newest `keep` complete ones
        (counting those already here) and the pinned ones, those missing."""
        wanted, complete = [], 0
        for version in newest_first(remote):
            if complete == self.s.keep:
                break
            if version in local:
                complete += 1
            elif self._complete(model, version):
                complete += 1
                wanted.append(version)
        for version in newest_first(pins & set(remote)):
            if version not in local and version not in wanted and self._complete(model, version):
                wanted.append(version)
        return wanted

    def _prune(self, model: str, protected: set[str]) -> None:
        directory = self.s.model_dir / model
        present = {p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")}
        keep = versions_to_keep(present, self.s.keep, protected)
        for version in newest_first(present - keep):
            doomed = directory / f"{DELETING}{version}"
            (directory / version).rename(doomed)  # out of the server's sight at once
            shutil.rmtree(doomed)
            with self.stats.lock:
                self.stats.pruned += 1
            log("info", "version pruned", model=model, version=version)
        with self.stats.lock:
            self.stats.present[model] = len(keep)

    def clean_leftovers(self) -> None:
        """Removes half-copied and half-deleted versions a killed run left."""
        for p in self.s.model_dir.glob("*/.*"):
            if p.is_dir() and p.name.startswith((STAGING, DELETING)):
                shutil.rmtree(p)

    def round(self) -> bool:
        ok = True
        try:
            pins: dict[str, set[str]] | None = read_pins(self.s.experiment_config)
        except ValueError as e:
            log("error", "experiment config unreadable: nothing is pruned", error=str(e))
            pins, ok = None, False
        try:
            serving: dict[str, set[str]] | None = read_serving(self.s.server_metrics_url)
        except ValueError as e:
            # Not a failed round: the server may still be starting.
            log("warn", "serving versions unknown: nothing is pruned", error=str(e))
            serving = None
        try:
            models = self._prefixes(f"{self.s.bucket}/")
        except RuntimeError as e:
            log("error", "listing the bucket failed", error=str(e))
            models, ok = [], False
        for model in models:
            directory = self.s.model_dir / model
            try:
                remote = self._prefixes(f"{self.s.bucket}/{model}/")
                local = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
                model_pins = (pins or {}).get(model, set())
                for version in self._wanted(model, remote, local, model_pins):
                    try:
                        self._copy(model, version)
                    except (RuntimeError, OSError) as e:
                        # The versions after it are still worth having.
                        log("error", "copy failed", model=model, version=version, error=str(e))
                        shutil.rmtree(directory / f"{STAGING}{version}", ignore_errors=True)
                        ok = False
                if pins is not None and serving is not None and directory.is_dir():
                    self._prune(model, model_pins | serving.get(model, set()))
            except (RuntimeError, OSError) as e:
                log("error", "sync failed", model=model, error=str(e))
                ok = False
        with self.stats.lock:
            if ok:
                self.stats.last_success = time.time()
            else:
                self.stats.failures += 1
        return ok


def serve_metrics(listen: str, stats: Stats) -> http.server.ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = stats.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not news

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_env(dict(os.environ))
    except ValueError as e:
        print(f"model-sync: {e}", file=sys.stderr)
        return 2
    stats = Stats()
    syncer = Syncer(settings, stats)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    syncer.clean_leftovers()
    if argv == ["--once"]:
        return 0 if syncer.round() else 1
    serve_metrics(settings.metrics_listen, stats)
    while True:
        syncer.round()
        time.sleep(settings.interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
