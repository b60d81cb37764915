"""The directory locks: one reconciler acts on a directory at a time, and anyone can ask who.

`DirLock` is an open-file-description lock (`F_OFD_SETLK`) on a file in the run directory. The
daemon holds `DAEMON_LOCK` for its whole life (with its pid in it, for `reconcile --once` to
signal); a pass holds `PASS_LOCK` while it acts. Asking whether a lock is held (`owner`, `held`)
never takes it. This module imports nothing heavy (asyncio only inside `acquire`): the
read-only commands (`reconcile status`) ask it whether a daemon serves the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from pathlib import Path

from reconciler.errors import ReconcilerError

DAEMON_LOCK = "daemon.lock"
"""Held by the daemon for its whole life; holds its pid (for `reconcile --once` to signal)."""
PASS_LOCK = "reconcile.lock"
"""Held while a pass acts, by the daemon or by `reconcile --once`."""
STATUS_UNWRITTEN = "status-unwritten"
"""In the runtime folder, made when a reconciler starts: its mtime is 0 while the status files
are written, and when their writing began to fail otherwise (a read-only or full status folder;
setting it needs no room, so even a disk out of inodes is told), its text the first reason when
there was room for it. `reconcile status` and `--once` then say the table may be out of date."""
LAST_PASS = "last-pass"
"""Touched by every pass of a reconciler: a daemon that holds its lock but has not touched it for
several resync periods is hung (`reconcile status` warns)."""

_FLOCK = "hhqqi4x"
"""`struct flock` on Linux x86-64: l_type, l_whence, l_start, l_len, l_pid (and padding)."""


class LockTimeoutError(ReconcilerError):
    """Another reconciler kept the config directory busy for longer than we may wait."""

    def __init__(self, path: Path, waited: float) -> None:
        self.path = path
        self.waited = waited
        super().__init__(f"{path}: another reconciler has been acting on this directory for "
                         f"{waited:g}s; try again later, or stop the other one")


class DirLock:
    """An open-file-description lock (`F_OFD_SETLK`) on a file in the run directory.

    With `record_pid`, the holder writes its pid into the file after taking the lock (the
    daemon's lock: `reconcile --once` signals it); `owner()` asks the kernel (`F_OFD_GETLK`,
    which never takes the lock) whether anybody holds it before believing that pid. Without
    it, taking the lock changes nothing in the file (`--dry-run` writes nothing).
    """

    def __init__(self, path: Path, *, record_pid: bool = False) -> None:
        self.path = path
        self.record_pid = record_pid
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free and record our pid in it; never blocks."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, 0, 0, 0, 0))
        except OSError:
            os.close(fd)
            return False
        if self.record_pid:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    async def acquire(self, timeout: float) -> None:
        """Wait (without blocking the event loop) up to `timeout` s for the lock."""
        import asyncio  # here: `reconcile status` probes locks and must not import asyncio

        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LockTimeoutError(self.path, timeout)
            await asyncio.sleep(0.02)

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def owner(self) -> int | None:
        """The pid holding the lock right now, or None when nobody holds it.

        The kernel says whether it is held (`F_OFD_GETLK`); the pid is what the holder wrote.
        A holder that has not written its pid yet is waited for briefly.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            for _ in range(50):
                if not _locked(fd):
                    return None
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                if text.isdigit():
                    return int(text)
                time.sleep(0.002)
            return None
        except OSError:
            return None
        finally:
            os.close(fd)

    def held(self) -> bool:
        """Whether any open file description holds the lock right now (ours included).

        One question to the kernel: never takes the lock, never waits for a pid.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return _locked(fd)
        except OSError:
            return False
        finally:
            os.close(fd)

    def held_elsewhere(self) -> bool:
        """Whether another holder has the lock right now (never takes it to find out).

        The kernel's word (`F_OFD_GETLK`): the pass lock records no pid, and is held elsewhere
        all the same. A recorded pid that is ours means this process holds it (through another
        `DirLock`), which is not elsewhere.
        """
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not _locked(fd):
                return False
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return not (text.isdigit() and int(text) == os.getpid())
        except OSError:
            return False
        finally:
            os.close(fd)


def _locked(fd: int) -> bool:
    """Whether anybody holds a lock that conflicts with a write lock on the file of `fd`."""
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, 0, 0, 0, 0)
    kind: int = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe))[0]
    return kind != fcntl.F_UNLCK


def daemon_serves(run_dir: Path) -> bool:
    """Whether a reconciler daemon holds the daemon lock of this run directory right now."""
    return DirLock(run_dir / DAEMON_LOCK).held()
