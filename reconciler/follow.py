"""Print a log file, or follow it like `tail -F`: what `reconcile logs` does.

Only the standard library, and no asyncio: `reconcile logs` starts fast. Following polls (a
log grows a line at a time; a quarter of a second is soon enough for a person) and copes simply
with the two ways logs are rotated: renamed away and created anew (the new file is read from
its start) or truncated in place, logrotate's `copytruncate` (read again from the start). QEMU
keeps its log open, so only `copytruncate` rotates a running VM's log without losing lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CHUNK = 65536
POLL = 0.25
"""Seconds between two looks at a followed file that has nothing new."""


def tail_offset(fd: int, lines: int) -> int:
    """The offset where the last `lines` lines of an open file start (0 for all of it).

    A last line without its newline counts as a line, as for `tail -n`.
    """
    end = os.fstat(fd).st_size
    if lines <= 0:
        return end
    pos = end
    wanted = lines + 1  # the newline ending the last line does not start a line
    if end and os.pread(fd, 1, end - 1) != b"\n":
        wanted -= 1
    while pos > 0:
        start = max(0, pos - CHUNK)
        block = os.pread(fd, pos - start, start)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x0A:
                wanted -= 1
                if wanted == 0:
                    return start + i + 1
        pos = start
    return 0


def _copy(fd: int, write: Callable[[bytes], None]) -> int:
    """Copy from the file's position to its end into `write`; return how many bytes."""
    total = 0
    while chunk := os.read(fd, CHUNK):
        write(chunk)
        total += len(chunk)
    return total


def print_tail(path: Path, write: Callable[[bytes], None], lines: int | None = None) -> None:
    """Write the file (only its last `lines` lines if given) to `write`.

    Raises FileNotFoundError (and other OSErrors) from opening it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if lines is not None:
            os.lseek(fd, tail_offset(fd, lines), os.SEEK_SET)
        _copy(fd, write)
    finally:
        os.close(fd)


def follow(path: Path, write: Callable[[bytes], None], note: Callable[[str], None], *,
           lines: int | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Write the file, then everything appended to it, for ever (until KeyboardInterrupt).

    A missing file is waited for. When `path` names another file (renamed away, made anew),
    the rest of the old one is written and the new one is read from its start; when it
    shrank (truncated), it is read again from its start. Each of these is told to `note`.
    `sleep` waits between looks (tests pass one that changes the file instead).
    """
    fd: int | None = None
    ident: tuple[int, int] | None = None
    waiting = False
    try:
        while True:
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if not waiting:
                        note(f"waiting for {path} to appear")
                        waiting = True
                    sleep(POLL)
                    continue
                st = os.fstat(fd)
                ident = (st.st_dev, st.st_ino)
                if lines is not None:
                    os.lseek(fd, tail_offset(fd, lines), os.SEEK_SET)
                    lines = None  # only the first file is cut; a new one is read whole
            if _copy(fd, write):
                continue
            try:
                now = os.stat(path)
                replaced = (now.st_dev, now.st_ino) != ident
            except FileNotFoundError:
                replaced = False  # renamed away, not made anew yet: the old file may still grow
            if replaced:
                _copy(fd, write)  # what was written to the old file before it went
                os.close(fd)
                fd = None
                note(f"{path} was replaced; following the new file")
                continue
            if os.lseek(fd, 0, os.SEEK_CUR) > os.fstat(fd).st_size:
                os.lseek(fd, 0, os.SEEK_SET)
                note(f"{path} was truncated; reading it from the start")
                continue
            sleep(POLL)
    finally:
        if fd is not None:
            os.close(fd)
