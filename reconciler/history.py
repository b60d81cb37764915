"""What happened to each VM: its last exit (or failed start), restart count and back-off.

`History` is the one owner of this memory. It survives the reconciler in `run/exits.json`
(atomic rename, no fsync: it is runtime state, rewritten on every change). A write that fails
(full disk, read-only directory) is reported by `save()` and retried on the next one; the
in-memory history is never lost because of it.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from model import Domain
from reconciler.plan import Ended
from reconciler.policy import HEALTHY_UPTIME, ExitKind, RestartState, after_exit, should_restart
from reconciler.scan import FileKey
from reconciler.status import iso, remove_left_over_temp_files, write_atomic

MEMORY_FILE = "exits.json"
UNSEEN_CRASH = "QEMU crashed or was killed while no reconciler was running"
UNSEEN_EXIT = ("QEMU exited while no reconciler was running (cleanly: the guest powered off, or "
               "QEMU was told to quit)")


@dataclass
class History:
    """Exits, restart counts and start failures per uuid, persisted in `path`."""

    path: Path
    write_file: Callable[[Path, bytes], None] = field(
        default=lambda p, d: write_atomic(p, d, durable=False))
    ended: dict[uuidlib.UUID, Ended] = field(default_factory=dict)
    restarts: dict[uuidlib.UUID, int] = field(default_factory=dict)
    failures: dict[uuidlib.UUID, str] = field(default_factory=dict)
    """The last failed action of a VM (start, adoption), shown as its reason until it starts."""
    dirty: bool = False
    """Something changed since the last successful save."""
    swept: bool = False
    """The temporary files a killed writer left next to `path` were removed (first write)."""

    def record_end(self, uuid: uuidlib.UUID, domain: Domain | None, kind: ExitKind, *,
                   uptime: float, message: str, key: FileKey | None, now: float) -> Ended:
        """Fold an exit (or failed start) into the restart bookkeeping of `uuid`; return it.

        An exit qemud caused (STOPPED) or of a VM whose definition is unknown never restarts
        and resets the back-off; otherwise the domain's restart policy decides.
        """
        previous = self.ended.get(uuid)
        prev_state = previous.restart if previous else RestartState()
        if kind is ExitKind.STOPPED or domain is None:
            restart, state = False, RestartState()
        else:
            restart = should_restart(domain.desired.restart, domain.on_poweroff,
                                     domain.on_crash, kind)
            state = (after_exit(prev_state, exited_at=now, uptime=uptime) if restart
                     else replace(prev_state, next_retry_at=None))
        ended = Ended(kind, now, state, not restart, key, message)
        self.ended[uuid] = ended
        self.dirty = True
        return ended

    def record_unseen_crash(self, uuid: uuidlib.UUID, domain: Domain | None, *, pid: int,
                            started_at: float, key: FileKey | None, now: float) -> Ended:
        """A QEMU that died while no reconciler watched it: recorded as a crash, like any other.

        Only an unclean death is known for sure (QEMU removes its pidfile when it exits
        cleanly: a guest power-off, a `quit`; killed or crashed, it leaves it behind), so the
        caller passes the pid and start time (the pidfile's mtime) of such a leftover. The exit
        time is unknown: the uptime used for the back-off is the longest it can have been.
        The restart policy decides, and the restart that follows is counted.
        """
        message = (f"{UNSEEN_CRASH} (pid {pid}, started "
                   f"{iso(started_at)}; it left its pidfile behind)")
        return self.record_end(uuid, domain, ExitKind.CRASH, uptime=max(0.0, now - started_at),
                               message=message, key=key, now=now)

    def record_unseen_exit(self, uuid: uuidlib.UUID, domain: Domain | None, *,
                           exited_at: float, key: FileKey | None, now: float) -> Ended:
        """A QEMU that exited by itself, cleanly, while no reconciler watched: a power-off.

        The daemon would have seen the guest's power-off (or an outside `quit`) and applied the
        restart policy to it; so does this, so that a VM ends up the same with or without a
        daemon running at the time. The uptime is unknown (treated as healthy).
        """
        message = f"{UNSEEN_EXIT}, at {iso(exited_at)}"
        return self.record_end(uuid, domain, ExitKind.POWEROFF, uptime=HEALTHY_UPTIME,
                               message=message, key=key, now=now)

    def record_start(self, uuid: uuidlib.UUID, *, restart: bool) -> None:
        """A VM is running: count an automatic restart, clear its last failure."""
        if restart:
            self.restarts[uuid] = self.restarts.get(uuid, 0) + 1
            self.dirty = True
        self.failures.pop(uuid, None)

    def allow_start(self, uuid: uuidlib.UUID) -> None:
        """A user asked for a (re)start now: forget the hold and back-off of `uuid`'s last exit."""
        if self.ended.pop(uuid, None) is not None:
            self.dirty = True
        self.failures.pop(uuid, None)

    def fail(self, uuid: uuidlib.UUID, message: str) -> None:
        """Remember why the last action on `uuid` failed (shown in its status)."""
        self.failures[uuid] = message

    def forget_except(self, known: Iterable[uuidlib.UUID]) -> None:
        """Drop every uuid not in `known` (their files are gone and they run nothing)."""
        keep = set(known)
        for table in (self.ended, self.restarts, self.failures):
            for uuid in [u for u in table if u not in keep]:
                del table[uuid]
                self.dirty = True

    def save(self) -> OSError | None:
        """Write `exits.json` if anything changed; return the error instead of raising."""
        data = self.encode()
        if data is None:
            return None
        error = self.write(data)
        if error is not None:
            self.dirty = True  # written again next time
        return error

    def encode(self) -> bytes | None:
        """The contents of `exits.json` if anything changed since the last encode, else None.

        Clears `dirty`: a caller whose `write` fails sets it again.
        """
        if not self.dirty:
            return None
        data: dict[str, dict[str, object]] = {
            str(uuid): {
                "kind": e.kind.value, "at": e.at, "failures": e.restart.failures,
                "next_retry_at": e.restart.next_retry_at, "held": e.held, "message": e.message,
                "key": [e.key.mtime_ns, e.key.size, e.key.inode] if e.key else None,
                "restarts": self.restarts.get(uuid, 0),
            } for uuid, e in self.ended.items()
        }
        for uuid, count in self.restarts.items():
            data.setdefault(str(uuid), {"restarts": count})
        self.dirty = False
        return json.dumps(data, indent=1).encode()

    def write(self, data: bytes) -> OSError | None:
        """Write `data` (from `encode`) to `exits.json`; the error instead of raising.

        Touches nothing but the file (and, the first time, the temporary files of a writer
        killed while writing it), so it may run in a worker thread.
        """
        if not self.swept:
            remove_left_over_temp_files(self.path.parent, self.path.name)
            self.swept = True
        try:
            self.write_file(self.path, data)
        except OSError as exc:
            return exc
        return None

    @classmethod
    def load(cls, path: Path) -> History:
        """Read what `save` wrote; a missing or damaged file (or entry) means a fresh start.

        A damaged file or entry leaves the history `dirty`, so the next save rewrites the file
        with what was understood (a damaged file is never read again and again).
        """
        history = cls(path)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return history
        except (OSError, ValueError):
            history.dirty = True
            return history
        if not isinstance(data, dict):
            history.dirty = True
            return history
        damaged = False
        for raw, rec in data.items():
            try:
                uuid = uuidlib.UUID(raw)
                history.restarts[uuid] = int(rec.get("restarts", 0))
                if "kind" not in rec:
                    continue
                key = FileKey(*rec["key"]) if rec.get("key") else None
                state = RestartState(int(rec["failures"]), rec.get("next_retry_at"))
                history.ended[uuid] = Ended(ExitKind(rec["kind"]), float(rec["at"]), state,
                                            bool(rec["held"]), key, str(rec.get("message", "")))
            except (ValueError, TypeError, KeyError, AttributeError):
                damaged = True
                continue
        history.dirty = damaged
        return history
