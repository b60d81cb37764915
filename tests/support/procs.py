"""Finding, checking and killing processes through /proc, for tests that start real processes.

Every function reads /proc afresh and never caches: a process may exit, or a pid be reused,
between two calls. Nothing here raises because a process vanished while it was being looked at.

Command lines are matched as raw bytes: ``needle`` (a `str`, `bytes` or `Path`; text is encoded
with `os.fsencode`) matches a process when it occurs anywhere in the NUL-separated
``/proc/PID/cmdline``. Matching is a plain substring test, so a caller that wants "a path below
``base``" must pass ``f"{base}/"`` itself; passing ``base`` also matches ``base`` itself and any
sibling that merely starts with the same characters.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

GONE_STATES = frozenset("ZXx")
"""/proc states of a process that has exited: zombie (Z) and dead (X; ``x`` on Linux 2.6.33-3.13)."""


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from ``/proc/PID/stat`` (R, S, D, T, t, Z, X, ...).

    Returns None if the process does not exist (or its stat cannot be read or parsed). The state
    is found after the *last* ``)``, so a command name holding spaces or parentheses cannot
    confuse it; the file is read as bytes, so a command name that is not UTF-8 cannot either.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    state = stat[stat.rfind(b")") + 2:][:1]
    return state.decode("ascii", "replace") if state else None


def alive(pid: int) -> bool:
    """True if ``pid`` exists and has not exited: not a zombie (Z) nor dead (X or x).

    An exited process that its parent has not reaped yet counts as not alive, so this is the
    check to use for "has it stopped running", whoever its parent is.
    """
    state = proc_state(pid)
    return state is not None and state not in GONE_STATES


def cmdline_of(pid: int) -> bytes:
    """The raw ``/proc/PID/cmdline`` of ``pid`` (NUL-separated arguments).

    Returns ``b""`` if the process does not exist or cannot be read; a zombie's is empty too.
    """
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def pids_mentioning(needle: str | bytes | Path, *, include_zombies: bool = False) -> list[int]:
    """Sorted pids of the processes whose command line contains ``needle``, never this process.

    By default only processes that are `alive` are returned; with ``include_zombies=True`` one
    that has exited but is not reaped yet is returned too (useful to ``waitpid`` it). Since a
    zombie's command line is empty, that only makes a difference for a process that exits
    between the two reads. See the module docstring for how ``needle`` is matched.
    """
    pattern = needle if isinstance(needle, bytes) else os.fsencode(needle)
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        if pattern in cmdline_of(pid) and (include_zombies or alive(pid)):
            found.append(pid)
    return sorted(found)


def kill_mentioning(needle: str | bytes | Path, *, timeout: float = 0.0) -> list[int]:
    """SIGKILL every live process (never this one) whose command line contains ``needle``.

    Returns the sorted pids that were signalled; one that vanished before it could be signalled
    is left out. Any other error from `os.kill` (such as PermissionError) propagates.

    With ``timeout=0`` (the default) this is a single sweep and does not wait for the processes
    to go. With ``timeout > 0`` it sweeps again every 50 ms, killing whatever matches by then
    (including children forked meanwhile), and returns as soon as a sweep finds no live match,
    or after ``timeout`` seconds even if one remains: callers that must be sure check
    `pids_mentioning` afterwards.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_mentioning(needle)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.add(pid)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return sorted(killed)
