"""DirLock: one reconciler acts on a directory at a time; its holder is found without taking it.

The holder here is another process using `DirLock` itself (an OFD lock, its pid written in the
file after taking it); the kernel (`F_OFD_GETLK`) says whether it is held at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from reconciler.lock import DAEMON_LOCK, daemon_serves
from reconciler.loop import DirLock

HOLD = """
import sys, time
from pathlib import Path
from reconciler.lock import DirLock
assert DirLock(Path(sys.argv[1]), record_pid=sys.argv[2] == "pid").try_acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_stale_pid_in_an_unlocked_file_is_not_an_owner(tmp_path: Path) -> None:
    path = tmp_path / "daemon.lock"
    path.write_text(f"{os.getpid()}\n")  # left by a daemon that died: nobody holds the lock
    assert DirLock(path).owner() is None


def test_the_holder_is_another_process_found_by_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "daemon.lock"
    lock = DirLock(path)
    assert lock.owner() is None and not lock.held_elsewhere()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "pid"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert lock.owner() == holder.pid
        assert lock.held_elsewhere() and lock.held()
        assert not lock.try_acquire()
        assert lock.owner() == holder.pid  # looking never took it
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while lock.owner() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock.owner() is None and not lock.held_elsewhere() and not lock.held()


def test_our_own_lock_is_not_held_elsewhere(tmp_path: Path) -> None:
    lock = DirLock(tmp_path / "reconcile.lock", record_pid=True)
    assert lock.try_acquire()
    try:
        assert lock.owner() == os.getpid()
        assert not lock.held_elsewhere()
        other = DirLock(tmp_path / "reconcile.lock")
        assert not other.try_acquire()  # OFD lock: a second open file description must wait
        assert not other.held_elsewhere()  # ... but it is this process that holds it
    finally:
        lock.release()
    assert DirLock(tmp_path / "reconcile.lock").owner() is None


def test_daemon_serves_asks_the_kernel_about_the_daemon_lock(tmp_path: Path) -> None:
    assert not daemon_serves(tmp_path)  # no lock file at all
    lock = DirLock(tmp_path / DAEMON_LOCK, record_pid=True)
    assert lock.try_acquire()
    try:
        assert daemon_serves(tmp_path) and lock.held()
    finally:
        lock.release()
    assert not daemon_serves(tmp_path)  # the file stays, with a pid in it: not held


def test_probing_a_lock_imports_nothing_heavy(tmp_path: Path) -> None:
    code = f"""
import sys
from pathlib import Path
from reconciler.lock import daemon_serves
assert not daemon_serves(Path({str(tmp_path)!r}))
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'pydantic', 'watchdog'))
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_lock_held_without_a_pid_is_held_elsewhere(tmp_path: Path) -> None:
    """The pass lock records no pid (`--dry-run` writes nothing); the kernel still knows.

    Reviewed: `stop --force` without a daemon waited silently behind a plain `stop`, because
    this said "not held" for want of a pid.
    """
    path = tmp_path / "reconcile.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "nopid"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert DirLock(path).held_elsewhere()
        assert path.read_bytes() == b""
    finally:
        holder.kill()
        holder.wait()
