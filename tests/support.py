"""Helpers shared by the cross-language tests: publishing model versions into
a model root, golden rows as request matrices, the experiment fixture, and
reading the server's Prometheus metrics."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ranker.export import artifact
from ranker.export.golden import golden_matrix, read_golden
from ranker.export.version import export_first_trees, republish
from ranker.serving.process import ServerProcess, free_port

REPO = Path(__file__).resolve().parent.parent

# Two variants on two models, and a shadow: what the experiment tests load.
EXPERIMENT = """
experiment:
  name: homepage
  salt: test-salt
  variants:
    - {name: control, model: news, weight: 50}
    - {name: treatment, model: news-b, weight: 50}
  shadow: {model: news-b, max_in_flight: 2}
"""


def add_version(src: Path, root: Path, name: str, version: str, *, broken: bool = False) -> None:
    """Publish a copy of `src` as root/name/version the way the export does
    (stage, then rename); `broken` truncates its ONNX file."""

    def truncate_onnx(staging: Path) -> None:
        onnx = staging / artifact.MODEL_ONNX
        onnx.write_bytes(onnx.read_bytes()[:1000])

    republish(src, root, name, version, truncate_onnx if broken else None)


def golden_rows(model_dir: Path, n: int, case: str | None = None) -> npt.NDArray[np.float32]:
    """The first `n` golden rows of a version (of one `case`, if given) as a matrix."""
    rows = [r for r in read_golden(model_dir) if case is None or r.case == case]
    return golden_matrix(rows[:n])


def export_smaller(model_dir: Path, root: Path, name: str, version: str, trees: int) -> None:
    """A genuinely different model: the first `trees` trees, exported for real."""
    export_first_trees(model_dir, root, name, version, trees)


def experiment_server(
    binary: Path, root: Path, config: Path, ort_lib: Path, *extra_args: str
) -> ServerProcess:
    """The server over a model root with an experiment config (not started)."""
    return ServerProcess(
        binary,
        None,
        ort_lib=ort_lib,
        extra_args=[f"--model-root={root}", f"--experiment-config={config}", *extra_args],
    )


def stateful_server(
    binary: Path, model_dir: Path, ort_lib: Path, state: Path, *extra_args: str
) -> ServerProcess:
    """The server with its durable feature state in `state` (not started)."""
    return ServerProcess(
        binary, model_dir, ort_lib=ort_lib, extra_args=[f"--state-dir={state}", *extra_args]
    )


def scrape_metrics(server: ServerProcess) -> str:
    """The server's /metrics page."""
    with urllib.request.urlopen(server.metrics_url, timeout=5) as reply:
        return str(reply.read().decode())


def metric_value(text: str, name: str) -> str:
    """The value of the first series of metric `name` in a /metrics page."""
    match = re.search(rf"^{name}\S* (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not exported"
    return match[1]


class RedisServer:
    """redis-server on a free loopback port. By default without persistence
    (the server is then started with --state-redis-volatile); `durable`
    appends every write to an append-only file synced before Redis answers
    (appendonly yes, appendfsync always), what acknowledgement needs, in a
    directory of its own, so that `kill` and `start` again keep the data."""

    def __init__(self, *, durable: bool = False) -> None:
        binary = os.environ.get("RANKER_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: `make test-e2e` installs it "
                "(apt-get install redis-server), or set RANKER_REDIS_SERVER"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.durable = durable
        self._dir = tempfile.TemporaryDirectory(prefix="ranker-redis-")
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
        self._args = [
            binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name),
            *("--save", "", "--appendonly", "no"),
            *persistence,  # later arguments win
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def server_args(self) -> list[str]:
        """The ranker-server flags for this Redis as its state."""
        return [f"--state={self.url}", *([] if self.durable else ["--state-redis-volatile"])]

    def start(self) -> None:
        """Start redis-server (again, after `kill`) and wait for its PING."""
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def command(self, *args: str) -> bytes:
        """Send one command (RESP) and return the raw first reply."""
        payload = f"*{len(args)}\r\n".encode()
        for a in args:
            payload += f"${len(a.encode())}\r\n{a}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            s.sendall(payload)
            return s.recv(1 << 16)

    def kill(self) -> None:
        """kill -9: no chance to save anything."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._dir.cleanup()


class KafkaCluster:
    """A real Apache Kafka cluster on loopback (tests/kafka/kafka-local): one
    or three KRaft nodes with their data in a temporary directory."""

    def __init__(self, directory: Path, nodes: int = 1) -> None:
        default = REPO / "tests" / "kafka" / "kafka-local"
        self.script = os.environ.get("RANKER_KAFKA_LOCAL") or str(default)
        self.directory = directory
        out = subprocess.run(
            [self.script, "start", str(directory), str(nodes)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"kafka-local start failed: {out.stderr.strip()}")
        self.bootstrap = out.stdout.strip().splitlines()[-1]

    def state_url(self, topic: str, replication: int = 1, min_insync: int = 1) -> str:
        """The server's --state for a topic on this cluster."""
        return f"kafka://{self.bootstrap}/{topic}?replication={replication}&min_insync={min_insync}"

    def kill(self, node: int) -> None:
        """kill -9 one node (1-based)."""
        self._run("kill", str(node))

    def restart(self, node: int) -> None:
        self._run("restart", str(node))

    def stop(self) -> None:
        self._run("stop")

    def _run(self, command: str, *args: str) -> None:
        subprocess.run([self.script, command, str(self.directory), *args], check=True, timeout=300)
