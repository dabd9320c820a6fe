"""A full disk under the embedded feature state, on a real (tmpfs) file
system: writes are refused while it is full, Rank keeps serving, writes
resume when space returns, a SIGTERM while full and the restart after it
work, and every acknowledged event is in the state exactly once.

Once, a failed append left a partial line that later appends turned into a
corrupt one ("line 46: invalid character"), and a SIGTERM while full left a
log the restart refused ("ends in a partial line, but a later segment
exists"): the pod crash-looped until someone edited the log by hand."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ranker.serving.client import RankerClient
from ranker.serving.process import ServerProcess
from ranker_client import RankerError
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import scrape_metrics, stateful_server

pytestmark = pytest.mark.e2e  # runs the Go server binary

# Small enough to fill in a second, large enough for the catalog, a
# snapshot and some batches.
TMPFS_BYTES = 1 << 20
ARTICLES = 20
BATCH = 40  # impressions per RecordEvents call
START = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for the test and unmounted after it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs at {mount} ({done.stderr.strip()}): this test needs root "
            "(or CAP_SYS_ADMIN) to give the state a disk that fills up; `make test` runs as root"
        )
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(ballast: Path) -> None:
    """Write zeros to `ballast` until the file system is full."""
    chunk = b"\0" * 4096
    with ballast.open("ab", buffering=0) as f:  # unbuffered: nothing left to flush at close
        while True:
            try:
                f.write(chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                break


def free(ballast: Path, nbytes: int) -> None:
    """Give back `nbytes` of the ballast (all of it when it holds less)."""
    size = ballast.stat().st_size
    os.truncate(ballast, max(size - nbytes, 0))


def catalog() -> list[pb.Article]:
    out = []
    for i in range(ARTICLES):
        a = pb.Article(
            id=f"a{i}",
            category="news",
            subcategory=f"s{i % 3}",
            title=f"title {i}",
            word_count=300,
        )
        a.publish_time.FromDatetime(START - timedelta(hours=2))
        out.append(a)
    return out


def batch(n: int) -> list[pb.Impression]:
    """Batch n: BATCH impressions of distinct ids, for reader u{n % 5}."""
    out = []
    for j in range(BATCH):
        e = pb.Impression(
            event_id=f"e{n}-{j}",
            request_id=f"r{n}-{j // ARTICLES}",  # a page view shows each article once
            user_id=f"u{n % 5}",
            article_id=f"a{j % ARTICLES}",
        )
        e.time.FromDatetime(START + timedelta(seconds=n))
        out.append(e)
    return out


def state_events(server: ServerProcess) -> int:
    match = re.search(r'^ranker_state_size\{kind="events"\} (\S+)$', scrape_metrics(server), re.M)
    assert match, "ranker_state_size{kind=events} not exported"
    return int(float(match[1]))


class Recorder:
    """Records numbered batches, keeping what was acknowledged and what was
    refused (to retry)."""

    def __init__(self, client: RankerClient) -> None:
        self.client = client
        self.acknowledged: set[int] = set()
        self.refused: set[int] = set()
        self.messages: list[str] = []

    def record(self, n: int) -> bool:
        try:
            reply = self.client.record_events(batch(n))
        except RankerError as err:
            self.refused.add(n)
            self.messages.append(f"{err.code.name}: {err.message}")
            return False
        # A retried batch a restart did not lose would be all duplicates.
        assert reply.accepted + reply.duplicates == BATCH, reply
        assert not reply.rejected, reply.rejected
        self.acknowledged.add(n)
        self.refused.discard(n)
        return True

    def until_refused(self, first: int, most: int = 500) -> int:
        """Record batches first, first+1, ... until one is refused; the next number."""
        for n in range(first, first + most):
            if not self.record(n):
                return n + 1
        raise AssertionError(f"{most} batches acknowledged on a full disk")


def test_a_full_disk_refuses_writes_loses_nothing_acknowledged_and_restarts(
    server_binary: Path, model_dir: Path, ort_lib: Path, small_disk: Path
) -> None:
    state = small_disk / "state"
    ballast = small_disk / "ballast"
    lateness = "--event-lateness=48h"  # every id stays known: retries count once
    server = stateful_server(server_binary, model_dir, ort_lib, state, lateness).start()
    try:
        with RankerClient(server.target) as client:
            assert client.upsert_articles(catalog()).accepted == ARTICLES
            rec = Recorder(client)
            assert rec.record(0)
            fill(ballast)
            free(ballast, 64 << 10)  # room for a few batches
            n = rec.until_refused(1)
            assert len(rec.acknowledged) >= 2, rec.messages
            # The refusal names the state log and the OS error, and is a
            # status the client retries.
            assert re.search(r"UNAVAILABLE: state: state log.*events\.\d+\.jsonl", rec.messages[-1])
            assert "no space left on device" in rec.messages[-1]
            # Rank serves from memory meanwhile.
            reply = client.rank("u1", [f"a{i}" for i in range(5)])
            assert len(reply.candidates) == 5
            assert not reply.feature_state_error
            for _ in range(3):  # still full: still refused, nothing appended after garbage
                assert not rec.record(n)
                n += 1
            # Space returns: the refused batches are retried, more recorded.
            free(ballast, 1 << 30)
            for m in sorted(rec.refused):
                assert rec.record(m), rec.messages[-1]
            for _ in range(3):
                assert rec.record(n), rec.messages[-1]
                n += 1
            assert state_events(server) == BATCH * len(rec.acknowledged)
            # Full again, and a SIGTERM while full: the snapshot fails.
            fill(ballast)
            n = rec.until_refused(n)
            acknowledged = BATCH * len(rec.acknowledged)
            assert state_events(server) == acknowledged
        assert server.stop() == 0, server.log
    finally:
        server.stop()  # a no-op after the stop above; after a failure, no server is left behind
        log = server.log
        server.close()
    # The snapshot at the stop could not be written: the previous state of
    # the directory (the log) is what the restart reads.
    assert "state log close failed" in log, log[-2000:]
    assert "no space left on device" in log.split("state log close failed")[1], log[-2000:]

    # The restart works on the still full disk, with every acknowledged
    # event once.
    with stateful_server(server_binary, model_dir, ort_lib, state, lateness) as again:
        assert state_events(again) == acknowledged, again.log[-2000:]
        with RankerClient(again.target) as client:
            assert client.rank("u1", ["a1"]).candidates
            # Retried acknowledged batches are duplicates; once space
            # returns, writes resume.
            assert client.record_events(batch(0)).duplicates == BATCH
            free(ballast, 1 << 30)
            rec = Recorder(client)
            for m in range(n, n + 3):
                assert rec.record(m), rec.messages
        assert state_events(again) == acknowledged + 3 * BATCH
    # And once more from the snapshot a clean stop writes with space.
    with stateful_server(server_binary, model_dir, ort_lib, state, lateness) as third:
        assert state_events(third) == acknowledged + 3 * BATCH, third.log[-2000:]
