"""Start and stop the Go ranking server as a real process on a real socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from ranker.serving.client import SERVICE_NAME, RankerClient, TLSOptions


def ort_library_path() -> Path:
    """The onnxruntime C library shipped inside the installed onnxruntime wheel:
    the Go server loads this very file, so both languages run the same build."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libraries = sorted(capi.glob("libonnxruntime.so.*"))
    if not libraries:
        raise FileNotFoundError(f"no libonnxruntime.so.* in {capi}")
    return libraries[-1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerExited(RuntimeError):
    """The server process ended before it became healthy."""

    def __init__(self, returncode: int, log: str) -> None:
        super().__init__(f"server exited with code {returncode}:\n{log}")
        self.returncode = returncode
        self.log = log


class ServerProcess:
    """The ranker-server binary listening on 127.0.0.1:<free port>.

    Its log goes to a file so a test can read what it said, including why it
    refused to start.
    """

    def __init__(
        self,
        binary: Path,
        model: Path | None,
        *,
        ort_lib: Path,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        tls: TLSOptions | None = None,
    ) -> None:
        """`tls` is how to reach a server started with --tls-cert, for the
        health checks that wait for it."""
        self.backend = next(
            (a.split("=", 1)[1] for a in extra_args if a.startswith("--backend=")), "native"
        )
        # Open for the life of the process, closed in __exit__.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="ranker-server-", suffix=".log", delete=False
        )
        self._command = (binary, model, ort_lib, tuple(extra_args))
        self._pick_ports()
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None
        self.tls = tls

    def _pick_ports(self) -> None:
        """Free ports for the gRPC and metrics listeners, and the command."""
        binary, model, ort_lib, extra_args = self._command
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        self._args = [
            str(binary),
            f"--listen={self.target}",
            *([f"--model={model}"] if model is not None else []),
            f"--ort-lib={ort_lib}",
            f"--metrics-listen={self.metrics_url.removeprefix('http://').removesuffix('/metrics')}",
            # No balancer sits in front of a local process to move traffic
            # away after SIGTERM; extra_args may set a delay again.
            "--drain-delay=0s",
            *extra_args,
        ]

    @property
    def pid(self) -> int:
        """The running server's process id."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text()

    def start(self, timeout: float = 30.0) -> ServerProcess:
        # A free port may be taken by another process between free_port()
        # and the server's listen: start again on new ports, a few times.
        for _ in range(2):
            try:
                return self._start(timeout)
            except ServerExited as exited:
                if "address already in use" not in exited.log:
                    raise
                self._log.truncate(0)
                self._log.seek(0)
                self._pick_ports()
        return self._start(timeout)

    def _start(self, timeout: float) -> ServerProcess:
        self._proc = subprocess.Popen(
            self._args, stdout=self._log, stderr=subprocess.STDOUT, env=self._env
        )
        deadline = time.monotonic() + timeout
        with RankerClient(self.target, tls=self.tls) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise ServerExited(code, self.log)
                try:
                    # The ranking service, not the whole server: the server
                    # is alive (SERVING) while it still waits for a model.
                    if client.health(SERVICE_NAME) == "SERVING":
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not healthy after {timeout}s:\n{self.log}")

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Run a server expected to refuse to start; its exit code and log."""
        try:
            proc = subprocess.run(
                self._args,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._env,
                timeout=timeout,
                check=False,
            )
            return proc.returncode, self.log
        finally:
            self.close()

    def terminate(self) -> None:
        """SIGTERM without waiting: the shutdown can be watched as it runs."""
        assert self._proc is not None, "not started"
        self._proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process ends within `timeout` seconds."""
        assert self._proc is not None, "not started"
        return self._proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as Kubernetes does, then wait for the graceful exit."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def __enter__(self) -> ServerProcess:
        try:
            return self.start()
        except BaseException:
            # __exit__ does not run when __enter__ fails: stop and close here,
            # or the log file is left open.
            self.stop()
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        """Remove the log file (read `log` first)."""
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
