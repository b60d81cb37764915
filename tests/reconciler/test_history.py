"""History: a crash no reconciler saw is recorded like any crash, and its restart is counted;
the host's boot time comes from /proc/stat."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import pytest

import model
from reconciler.history import UNSEEN_CRASH, History
from reconciler.loop import boot_time
from reconciler.policy import ExitKind
from reconciler.scan import FileKey

U = uuidlib.UUID("33333333-3333-4333-8333-333333333333")
KEY = FileKey(1, 2, 3)


def domain(restart: str) -> model.Domain:
    """A domain with this restart policy."""
    return model.parse(f"""<domain type='qemu'><name>h</name><uuid>{U}</uuid>
  <memory unit='MiB'>32</memory><os><type arch='x86_64' machine='pc'>hvm</type></os>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running' restart='{restart}'/>
  </metadata></domain>""".encode()).domain


@pytest.mark.parametrize(("restart", "started_ago", "held", "failures", "retry_in"), [
    ("on-failure", 3600.0, False, 1, 1.0),  # a long run: a new streak, the first back-off
    ("always", 3600.0, False, 1, 1.0),
    ("on-failure", 10.0, False, 1, 1.0),  # a short run extends a streak (none here)
    ("never", 3600.0, True, 1, None),  # never restarted, shown as crashed
])
def test_an_unseen_crash_follows_the_restart_policy(
        tmp_path: Path, restart: str, started_ago: float, held: bool, failures: int,
        retry_in: float | None) -> None:
    history = History(tmp_path / "exits.json")
    now = 1_000_000.0
    ended = history.record_unseen_crash(U, domain(restart), pid=4242,
                                        started_at=now - started_ago, key=KEY, now=now)
    assert (ended.kind, ended.held, ended.key) == (ExitKind.CRASH, held, KEY)
    retry = ended.restart.next_retry_at
    assert (retry - now if retry is not None else None) == retry_in
    if not held:
        assert ended.restart.failures == failures
    assert ended.message.startswith(f"{UNSEEN_CRASH} (pid 4242, started 1970-01-")
    assert history.ended[U] is ended and history.dirty


def test_an_unseen_crash_extends_a_streak_and_its_restart_is_counted(tmp_path: Path) -> None:
    history = History(tmp_path / "exits.json")
    dom = domain("on-failure")
    history.record_end(U, dom, ExitKind.CRASH, uptime=1.0, message="m", key=KEY, now=100.0)
    ended = history.record_unseen_crash(U, dom, pid=1, started_at=101.0, key=KEY, now=105.0)
    assert (ended.restart.failures, ended.restart.next_retry_at) == (2, 107.0)
    history.record_start(U, restart=True)  # what the plan's restart after it does
    assert history.restarts[U] == 1
    data = history.encode()
    assert data is not None
    history.write(data)
    again = History.load(tmp_path / "exits.json")
    assert again.restarts[U] == 1 and again.ended[U].message == ended.message


@pytest.mark.parametrize(("text", "expected"), [
    ("cpu  1 2 3\nbtime 1764740000\nprocesses 5\n", 1764740000.0),
    ("cpu  1 2 3\n", None),
    ("btime x\n", None),
    ("btime\n", None),
])
def test_boot_time_reads_btime(tmp_path: Path, text: str, expected: float | None) -> None:
    stat = tmp_path / "stat"
    stat.write_text(text)
    assert boot_time(stat) == expected


def test_boot_time_of_this_host_is_in_the_past() -> None:
    import time

    booted = boot_time()
    assert booted is not None and 0 < booted < time.time()
    assert boot_time(Path("/nonexistent/stat")) is None
