"""Status from facts: one explicit, frozen input per domain in, `DomainStatus` out.

Pure but for a memo: `Report.build()` recomputes a domain's status only when its `Facts`
changed (compared field by field, so unchanged objects are recognised by identity at once),
which keeps a pass over many unchanged domains cheap. The status writer then writes the files.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.desired import Desired, Want
from reconciler.paths import Layout
from reconciler.plan import Ended, Live, pending_restart, state_of
from reconciler.scan import FileIssue
from reconciler.status import DomainStatus, FileError, State, iso


@dataclass(frozen=True)
class LiveFacts:
    """What the supervisor knows of one owned VM."""

    live: Live
    started_at: float
    vnc: str | None
    run_state: str | None
    rebooting: bool = False
    """A user's reboot is pending: qemud starts it afresh when the guest powers off."""


@dataclass(frozen=True)
class Facts:
    """Everything one domain's status depends on."""

    uuid: uuidlib.UUID
    want: Want | None
    vm: LiveFacts | None
    ended: Ended | None
    restarts: int
    failure: str | None
    waiting: str | None
    """Why its start waits (a `Blocked` action of this pass), if it does."""
    retry_pending: bool
    """Whether a restart back-off is still running (it changes the state shown)."""


def _error(issue: FileIssue) -> FileError:
    """A file issue as the status file's error object."""
    return FileError(file=issue.file, line=issue.line, message=issue.message)


@dataclass
class Report:
    """Builds every domain's status; remembers the last one per uuid with its facts."""

    layout: Layout
    _memo: dict[uuidlib.UUID, tuple[Facts, DomainStatus]] = field(default_factory=dict)

    def build(self, desired: Desired, facts: list[Facts], now: float) -> list[DomainStatus]:
        """The statuses of every valid or owned domain, clash loser and invalid file."""
        stamp = iso(now) or ""
        out: list[DomainStatus] = []
        memo: dict[uuidlib.UUID, tuple[Facts, DomainStatus]] = {}
        for fact in facts:
            old = self._memo.get(fact.uuid)
            status = old[1] if old is not None and old[0] == fact else self._domain(fact, stamp,
                                                                                    now)
            memo[fact.uuid] = (fact, status)
            out.append(status)
        self._memo = memo
        kept = {(w.uuid, str(w.file)) for w in desired.wants.values() if w.kept is not None}
        kept_files = {f for _, f in kept}
        for conflict in desired.conflicts:
            if (conflict.uuid, str(conflict.loser)) in kept:
                continue  # a running loser keeps its VM; its own status says why
            issue = conflict.issue(conflict.loser)
            out.append(DomainStatus(
                name=conflict.name, uuid=str(conflict.uuid), file=str(conflict.loser),
                desired=conflict.desired, state="conflict", reason=_where(issue), updated_at=stamp,
                errors=(_error(issue),)))
        for bad in desired.invalid:
            if str(bad.path) in kept_files:
                continue  # its VM keeps running the definition in use; its status lists these
            first = bad.errors[0] if bad.errors else None
            reason = "the file is invalid: " + _where(first) if first else "the file is invalid"
            out.append(DomainStatus(
                name=bad.path.stem, file=str(bad.path), state="invalid", reason=reason,
                errors=tuple(_error(i) for i in bad.errors), updated_at=stamp))
        return out

    def _domain(self, fact: Facts, stamp: str, now: float) -> DomainStatus:
        """Build the status of one valid or owned domain from its facts."""
        want, vm = fact.want, fact.vm
        live = vm.live if vm is not None else None
        state, reason = state_of(live, fact.ended, want, now)
        if fact.failure is not None and state in ("stopped", "crashed", "unresponsive"):
            reason = fact.failure
        errors = tuple(_error(i) for i in want.errors) if want is not None else ()
        shown: State = state
        if want is not None and live is None:
            if want.blocked is not None:
                shown, reason = "conflict", want.blocked
            elif fact.waiting is not None and reason is None:
                reason = fact.waiting
        if reason is None and want is not None:
            if want.kept is not None:
                first = want.errors[0] if want.errors else None
                reason = want.kept + (f" ({_where(first)})" if first else "")
            elif errors:
                reason = "see errors: " + _where(want.errors[0])
        if (reason is None and live is not None and live.phase == "paused" and vm is not None
                and vm.run_state not in (None, "paused", "running")):
            reason = f"QEMU paused it: {vm.run_state}" + _PAUSES.get(vm.run_state or "", "")
        elif reason is None and live is not None and live.phase == "paused":
            reason = ("paused through QMP (a 'stop' command, not qemud); resume it with: "
                      f"{self.layout.command()} monitor {live.name} "
                      f"'{{\"execute\": \"cont\"}}'")
        if reason is None and vm is not None and vm.rebooting and live is not None:
            reason = ("reboot pending: the power button was pressed; it starts afresh when the "
                      f"guest powers off (`{self.layout.command()} restart {live.name}` does it "
                      "now)")
        if reason is None and live is not None and live.phase == "stopping" and want is None:
            reason = "its domain file is gone"
        name = live.name if live is not None else (want.name if want else str(fact.uuid))
        paths = self.layout.vm(name, str(fact.uuid))
        return DomainStatus(
            name=name, uuid=str(fact.uuid), file=_file(want, live),
            desired=want.domain.desired.state if want else "stopped",
            state=shown,
            reason=reason,
            pid=live.pid or None if live is not None else None,
            qmp=str(paths.qmp_socket) if live is not None else None,
            vnc=vm.vnc if vm is not None else None,
            console_log=str(paths.console_log), log=str(paths.log_file),
            started_at=iso(vm.started_at) if vm is not None else None,
            restarts=fact.restarts,
            next_retry_at=(iso(fact.ended.restart.next_retry_at)
                           if fact.retry_pending and fact.ended is not None else None),
            pending_restart=pending_restart(live, want),
            errors=errors, updated_at=stamp)


_PAUSES = {
    "internal-error": " (the accelerator failed: see the VM log; a stop and start clears it)",
    "io-error": " (a disk reported an I/O error: check its image and free space, then "
                "'reconcile stop' and 'start')",
    "guest-panicked": " (the guest kernel panicked)",
    "shutdown": " (the guest shut down and QEMU waits)",
    "suspended": " (the guest suspended itself to RAM; a key press or QMP 'system_wakeup' "
                 "wakes it)",
}
"""What a user can do about QEMU's own reasons for pausing a guest."""


def _file(want: Want | None, live: Live | None) -> str | None:
    """The domain file to show: the wanted one, else the one the VM was started from."""
    path: Path | None = want.file if want is not None else (live.file if live else None)
    return str(path) if path is not None else None


def _where(issue: FileIssue | None) -> str:
    """`file:line: message` of an issue (the line left out when unknown)."""
    if issue is None:
        return ""
    at = f"{issue.file}:{issue.line}" if issue.line is not None else issue.file
    return f"{at}: {issue.message}"
