"""The reconciler: scan -> plan -> act -> publish, in one asyncio event loop that owns all state.

`Reconciler.run_pass()` is the whole of `reconcile --once`; the daemon (`serve`) only decides
*when* to run a pass: a watchdog event on the config directory (debounced), a periodic resync, a
QEMU exit or QMP event, SIGHUP. Actions run as tasks, concurrently; a pass never waits for a
slow stop, and the planner sees VMs that are starting or stopping as busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

import model
from reconciler.errors import AdoptError, QemuError, ReconcilerError, StartError
from reconciler.paths import Layout
from reconciler.plan import (
    Action,
    Adopt,
    Clean,
    Ended,
    Live,
    Observed,
    Phase,
    Start,
    Stop,
    Wait,
    Want,
    pending_restart,
    plan,
    state_of,
)
from reconciler.policy import ExitKind, RestartState, after_exit, should_restart
from reconciler.qemu import (
    Exit,
    Primitives,
    QemuProcess,
    QmpEvent,
    Timeouts,
    identify_qemu,
    process_age,
    read_pidfile,
)
from reconciler.qemu import Phase as ProcPhase
from reconciler.scan import FileIssue, FileKey, Scan, Scanner, is_domain_file
from reconciler.status import (
    DomainStatus,
    FileError,
    StatusWriter,
    iso,
    read_status,
    write_atomic,
)

MEMORY_FILE = "exits.json"
DAEMON_LOCK = "daemon.lock"
"""Held by the daemon for its whole life; holds its pid (for `reconcile --once` to signal)."""
SETTLED_FILE = "settled"
"""Wall-clock start of the daemon's last pass after which no action was under way."""
DEFINITION_FILE = "domain.xml"
"""Copy of the definition a VM was started with, in its runtime folder (like libvirt's status XML)."""

ADOPT_RETRY = 30.0
"""Seconds before trying again to adopt a QEMU whose monitor did not answer."""

QUIET_PERIOD = 0.25
"""Seconds a domain file must stay missing before its VM is stopped (editors save by rename)."""


class LockTimeoutError(ReconcilerError):
    """Another reconciler kept the config directory busy for longer than we may wait."""

    def __init__(self, path: Path, waited: float) -> None:
        self.path = path
        self.waited = waited
        super().__init__(f"{path}: another reconciler has been acting on this directory for "
                         f"{waited:g}s; try again later, or stop the other one")


class DirLock:
    """An flock on a file in the run directory: one reconciler acts on a directory at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def acquire(self, timeout: float) -> None:
        """Wait (without blocking the event loop) up to `timeout` s for the lock."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LockTimeoutError(self.path, timeout)
            await asyncio.sleep(0.05)

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def owner(self) -> int | None:
        """The pid holding the lock right now, read from the kernel (`/proc/locks`); None if free.

        Asking the kernel (not a pid written in the file) means a stale or reused pid is never
        reported, and looking never takes the lock, so it cannot disturb its holder.
        """
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        try:
            with open("/proc/locks", encoding="ascii", errors="replace") as locks:
                for line in locks:
                    # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146344 0 EOF"; waiters have "->"
                    parts = line.split()
                    if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == where:
                        return int(parts[4])
        except (OSError, ValueError):
            return None
        return None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock right now (never takes it to find out)."""
        if self._fd is not None:
            return False
        holder = self.owner()
        return holder is not None and holder != os.getpid()


@dataclass
class _Vm:
    """What the reconciler knows about one VM it owns."""

    proc: QemuProcess
    domain: model.Domain | None
    file: Path | None
    started_at: float
    vnc: str | None = None
    stopping: bool = False
    """A stop is under way (set when it is planned, so the status says so at once)."""


@dataclass(frozen=True)
class PassResult:
    """What one pass decided and saw; `reconcile --once` derives its exit code from it."""

    actions: tuple[Action, ...]
    statuses: tuple[DomainStatus, ...]


@dataclass
class Reconciler:
    """Turns a config directory into running QEMU processes, and reports what happened.

    All methods must run on one event loop. `clock` is wall-clock time (status timestamps and
    back-off deadlines); `primitives` and `timeouts` go to every `QemuProcess`.
    """

    layout: Layout
    clock: Callable[[], float] = time.time
    primitives: Primitives | None = None
    timeouts: Timeouts | None = None
    out: TextIO = field(default_factory=lambda: sys.stderr)
    quiet_period: float = QUIET_PERIOD
    vms: dict[uuidlib.UUID, _Vm] = field(default_factory=dict)
    ended: dict[uuidlib.UUID, Ended] = field(default_factory=dict)
    restarts: dict[uuidlib.UUID, int] = field(default_factory=dict)
    failures: dict[uuidlib.UUID, str] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: dict[uuidlib.UUID, asyncio.Task[None]] = field(default_factory=dict)
    _missing: dict[uuidlib.UUID, tuple[float, Want]] = field(default_factory=dict)
    _scan: Scan | None = None
    _stop_reasons: dict[uuidlib.UUID, str] = field(default_factory=dict)
    _adopt_retry: dict[uuidlib.UUID, float] = field(default_factory=dict)
    _memo: dict[uuidlib.UUID, tuple[object, tuple[object, object], DomainStatus]] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        self.scanner = Scanner(self.layout.config_dir)
        self.writer = StatusWriter(self.layout.status_dir)
        self.lock = DirLock(self.layout.run_dir / "reconcile.lock")

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        """One human line per action, to stderr (systemd's journal picks it up)."""
        self.out.write(f"reconcile: {text}\n")
        self.out.flush()

    def _orphans(self) -> frozenset[uuidlib.UUID]:
        """Runtime folders on disk that no owned VM accounts for."""
        found = set()
        try:
            names = os.listdir(self.layout.run_dir)
        except FileNotFoundError:
            return frozenset()
        for name in names:
            if not _is_runtime_folder(name):
                continue
            uuid = uuidlib.UUID(name)
            if uuid in self.vms or uuid in self._tasks:
                continue
            if self._adopt_retry.get(uuid, 0.0) > self.clock():
                continue  # its QEMU would not answer a moment ago: see ADOPT_RETRY
            found.add(uuid)
        return frozenset(found)

    def _phase(self, vm: _Vm) -> Phase:
        """The planner's view of a process wrapper's phase."""
        proc = vm.proc
        if proc.phase is ProcPhase.STOPPING or vm.stopping:
            return "stopping"
        if proc.phase is ProcPhase.ACTIVE:
            return "paused" if proc.run_state not in (None, "running") else "running"
        return "starting"

    def _desired(self, scan: Scan, now: float) -> dict[uuidlib.UUID, Want]:
        """Wanted domains from a scan; a vanished file counts only after the quiet period."""
        desired = {u: Want(u, c.name, c.path, c.key, c.parsed.domain)
                   for u, c in scan.domains.items()}
        previous = dict(self._scan.domains) if self._scan is not None else {}
        for uuid, cand in previous.items():
            if uuid in desired or uuid in self._missing:
                continue
            self._missing[uuid] = (now, Want(uuid, cand.name, cand.path, cand.key,
                                             cand.parsed.domain))
        for uuid in list(self._missing):
            since, want = self._missing[uuid]
            if uuid in desired:
                del self._missing[uuid]
            elif now - since < self.quiet_period:
                desired[uuid] = want
                self._wake_later(since + self.quiet_period)
            else:
                del self._missing[uuid]
        return desired

    def _wake_later(self, when: float) -> None:
        """Arrange a pass at wall-clock time `when` (for back-offs and quiet periods)."""
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, when - self.clock()) + 0.01, self.wake.set)

    # ------------------------------------------------------------------ the pass

    async def run_pass(self, *, dry_run: bool = False) -> PassResult:
        """Scan, plan, start the actions (as tasks), publish status. The same code as --once."""
        now = self.clock()
        running_files = {u: vm.file for u, vm in self.vms.items() if vm.file is not None}
        scan = self.scanner.scan(running_files)
        desired = self._desired(scan, now)
        self._scan = scan
        if dry_run:
            return PassResult(tuple(self._dry_plan(desired, now)), ())
        actions = self._plan(desired, now)
        adopt = [a for a in actions if isinstance(a, Adopt)]
        if adopt:
            # adoption first and inline (it is quick): the plan and the status then see the
            # adopted VMs as they are, never as stopped for a moment
            await asyncio.gather(*(self._act(a, desired) for a in adopt))
            actions = [*adopt, *(a for a in self._plan(desired, now)
                                 if not isinstance(a, Adopt))]
        for action in actions:
            if isinstance(action, Wait):
                self._wake_later(action.until)
            elif not isinstance(action, Adopt) and action.uuid not in self._tasks:
                task = asyncio.get_running_loop().create_task(self._act(action, desired))
                self._tasks[action.uuid] = task
                if isinstance(action, Stop) and action.uuid in self.vms:
                    self.vms[action.uuid].stopping = True  # published below, not after the stop
        await asyncio.sleep(0)  # let new start tasks register their VMs: published as starting
        statuses = self.publish(desired)
        return PassResult(tuple(actions), tuple(statuses))

    def _dry_plan(self, desired: dict[uuidlib.UUID, Want], now: float) -> list[Action]:
        """The plan `--dry-run` prints: runtime folders judged read-only, never adopted.

        A folder whose pidfile names this VM's live QEMU is shown as an adoption and that VM is
        planned as running; any other folder is shown as stale. Nothing is connected to,
        signalled, written or removed.
        """
        live = self._live()
        found: list[Action] = []
        for uuid in sorted(self._orphans()):
            pid = read_pidfile(self.layout.pidfile(str(uuid)))
            problem = identify_qemu(pid, str(uuid)) if pid is not None else "no valid pidfile"
            want = desired.get(uuid)
            if problem is not None:
                found.append(Clean(uuid, problem))
                continue
            name = want.name if want else str(uuid)
            assert pid is not None
            found.append(Adopt(uuid))
            live[uuid] = Live(uuid, name, pid, "running", want.domain if want else None)
        return found + plan(desired, Observed(live, dict(self.ended)), now)

    def _plan(self, desired: dict[uuidlib.UUID, Want], now: float) -> list[Action]:
        """`plan()` on what is known right now about owned VMs, exits and runtime folders."""
        return plan(desired, Observed(self._live(), dict(self.ended), self._orphans()), now)

    def _live(self) -> dict[uuidlib.UUID, Live]:
        """The planner's view of every owned VM."""
        return {u: self._live_of(u, vm) for u, vm in self.vms.items()}

    def _live_of(self, uuid: uuidlib.UUID, vm: _Vm) -> Live:
        """The planner's view of one owned VM."""
        return Live(uuid, vm.proc.name, vm.proc.pid or 0, self._phase(vm), vm.domain)

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until every action under way has finished (used by --once and tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=timeout)
            if timeout is not None:
                break

    async def _act(self, action: Action, desired: dict[uuidlib.UUID, Want]) -> None:
        """Carry out one action; errors become status, never exceptions out of the loop."""
        try:
            if isinstance(action, Adopt):
                await self._adopt(action.uuid, desired.get(action.uuid))
            elif isinstance(action, Start):
                await self._start(action, desired[action.uuid])
            elif isinstance(action, Stop):
                await self._stop(action)
        except AdoptError as exc:
            # a live QEMU of ours whose monitor does not answer: leave it alone, say so, and
            # try again later instead of blocking every pass on its timeout
            self.say(str(exc))
            self.failures[action.uuid] = str(exc)
            self._adopt_retry[action.uuid] = self.clock() + ADOPT_RETRY
            self._wake_later(self._adopt_retry[action.uuid])
        except (ReconcilerError, model.ModelError, OSError) as exc:
            self.say(str(exc))
            self.failures[action.uuid] = str(exc)
        except Exception as exc:  # a bug must not kill the loop: report it like any failure
            self.say(f"internal error while carrying out {action}: {exc!r}")
            self.failures[action.uuid] = f"internal error: {exc!r} (please report it)"
        finally:
            self._tasks.pop(action.uuid, None)
            self.wake.set()

    async def _adopt(self, uuid: uuidlib.UUID, want: Want | None) -> None:
        """Take over the QEMU of a runtime folder, or clean the folder if it is stale."""
        vm_dir = self.layout.vm_dir(str(uuid))
        domain: model.Domain | None = None
        with contextlib.suppress(model.ModelError):
            domain = model.parse_file(vm_dir / DEFINITION_FILE).domain
        name = domain.name if domain else (want.name if want else str(uuid))
        paths = self.layout.vm(name, str(uuid))
        proc = await QemuProcess.adopt(
            name, str(uuid), paths, timeouts=self.timeouts, primitives=self.primitives,
            on_exit=lambda e: self._exited(uuid, e), on_event=lambda e: self._event(uuid, e))
        if proc is None:
            self.say(f"{name}: removed stale runtime folder {vm_dir}")
            return
        file = want.file if want else None
        started = self.clock() - (process_age(proc.pid) or 0.0) if proc.pid else self.clock()
        self.vms[uuid] = _Vm(proc, domain or (want.domain if want else None), file, started,
                             await _vnc_of(proc))
        self.say(f"{name}: adopted running QEMU pid {proc.pid}")

    async def _start(self, action: Start, want: Want) -> None:
        """Start one VM from its current definition; a failure is recorded with QEMU's words."""
        domain = want.domain
        paths = self.layout.vm(want.name, str(want.uuid))
        runtime = model.Runtime(paths.qmp_socket, paths.pidfile, paths.console_log)
        argv = model.command_line(domain, runtime)
        proc = QemuProcess(want.name, str(want.uuid), argv, paths, timeouts=self.timeouts,
                           primitives=self.primitives,
                           on_exit=lambda e: self._exited(want.uuid, e),
                           on_event=lambda e: self._event(want.uuid, e))
        vm = _Vm(proc, domain, want.file, self.clock())
        self.vms[want.uuid] = vm
        self.say(f"{want.name}: starting ({action.reason})")
        try:
            await proc.start()
        except StartError as exc:
            self.vms.pop(want.uuid, None)
            self._record_end(want.uuid, domain, ExitKind.CRASH, uptime=0.0,
                             message=_start_message(exc), key=want.key)
            self.say(f"{want.name}: {exc}")
            return
        # Book the restart before the next await: from here on a pass publishes it as running.
        if action.restart:
            self.restarts[want.uuid] = self.restarts.get(want.uuid, 0) + 1
            self._save_memory()
        self.failures.pop(want.uuid, None)
        vm.started_at = self.clock()
        model_xml = model.to_xml(domain)
        with contextlib.suppress(OSError):
            write_atomic(paths.vm_dir / DEFINITION_FILE, model_xml, durable=False)
        if domain.devices.graphics:
            vm.vnc = await _vnc_of(proc)
        self.say(f"{want.name}: running, pid {proc.pid}")

    async def _stop(self, action: Stop) -> None:
        """Stop one VM gracefully within its shutdown timeout."""
        vm = self.vms.get(action.uuid)
        if vm is None:
            return
        timeout = vm.domain.desired.shutdown_timeout if vm.domain else 60
        want = self._scan.domains.get(action.uuid) if self._scan else None
        if want is not None:
            timeout = want.parsed.domain.desired.shutdown_timeout
        self.say(f"{action.name}: stopping ({action.reason})")
        self._stop_reasons[action.uuid] = action.reason
        exit_info = await vm.proc.stop(reason=action.reason.replace(" ", "-"),
                                       shutdown_timeout=timeout)
        self.say(f"{action.name}: stopped ({exit_info.describe()})")

    # ------------------------------------------------------------------ events

    def _event(self, uuid: uuidlib.UUID, event: QmpEvent) -> None:
        """A QMP lifecycle event: republish status promptly."""
        del uuid, event
        self.wake.set()

    def _exited(self, uuid: uuidlib.UUID, exit_info: Exit) -> None:
        """A VM's QEMU is gone: remember how, decide about restarting, wake a pass."""
        vm = self.vms.pop(uuid, None)
        domain = vm.domain if vm else None
        cand = self._scan.domains.get(uuid) if self._scan else None
        key = cand.key if cand else None
        if cand is not None:
            domain = cand.parsed.domain if domain is None else domain
        name = vm.proc.name if vm else str(uuid)
        self.say(f"{name}: QEMU exited ({exit_info.describe()}, {exit_info.kind.value})")
        if exit_info.kind is ExitKind.STOPPED:
            message = f"stopped by qemud ({self._stop_reasons.pop(uuid, 'requested')})"
        else:
            message = _EXIT_MESSAGES[exit_info.kind] + f" ({exit_info.describe()})"
        self._record_end(uuid, domain, exit_info.kind, uptime=exit_info.uptime,
                         message=message, key=key)
        self.wake.set()

    def _record_end(self, uuid: uuidlib.UUID, domain: model.Domain | None, kind: ExitKind, *,
                    uptime: float, message: str, key: FileKey | None) -> None:
        """Fold an exit (or failed start) into the restart bookkeeping of `uuid`."""
        now = self.clock()
        previous = self.ended.get(uuid)
        prev_state = previous.restart if previous else RestartState()
        if kind is ExitKind.STOPPED or domain is None:
            restart, state = False, RestartState()
        else:
            restart = should_restart(domain.desired.restart, domain.on_poweroff,
                                     domain.on_crash, kind)
            state = after_exit(prev_state, exited_at=now, uptime=uptime) if restart else \
                replace(prev_state, next_retry_at=None)
        self.ended[uuid] = Ended(kind, now, state, not restart, key, message)
        self._save_memory()
        if restart and state.next_retry_at is not None:
            self._wake_later(state.next_retry_at)

    # ------------------------------------------------------------------ status

    def publish(self, desired: dict[uuidlib.UUID, Want]) -> list[DomainStatus]:
        """Compute every domain's status from what is known now and write the files."""
        now = self.clock()
        stamp = iso(now) or ""
        scan = self._scan
        out: list[DomainStatus] = []
        seen: set[uuidlib.UUID] = set()
        for uuid, want in desired.items():
            seen.add(uuid)
            out.append(self._status(uuid, want, stamp, now))
        for uuid, vm in self.vms.items():
            if uuid not in seen:
                out.append(self._status(uuid, None, stamp, now, vm))
        if scan is not None:
            for conflict in scan.conflicts:
                out.append(DomainStatus(
                    name=conflict.name, uuid=str(conflict.uuid), file=str(conflict.loser),
                    state="conflict", reason=conflict.message(), updated_at=stamp,
                    errors=(FileError(file=str(conflict.loser), message=conflict.message()),)))
            for bad in scan.invalid:
                out.append(DomainStatus(
                    name=bad.path.stem, file=str(bad.path), state="invalid",
                    reason="the file is invalid; fix the errors listed",
                    errors=tuple(_file_error(i) for i in bad.errors), updated_at=stamp))
        self.writer.publish(out, now)
        return out

    def _status(self, uuid: uuidlib.UUID, want: Want | None, stamp: str, now: float,
                vm: _Vm | None = None) -> DomainStatus:
        """The status of one valid domain (or of an owned VM whose file is gone), memoised.

        Recomputed only when something it depends on changed, so a pass over many unchanged
        domains stays cheap.
        """
        vm = vm or self.vms.get(uuid)
        ended = self.ended.get(uuid)
        cand = self._scan.domains.get(uuid) if self._scan is not None else None
        retry = ended.restart.next_retry_at if ended is not None else None
        sig = (
            (want.file, want.key) if want else None,
            (vm.proc.pid, self._phase(vm), vm.started_at) if vm else None,
            ended, self.restarts.get(uuid), self.failures.get(uuid),
            cand.errors if cand else None, self._scan.conflicts if self._scan else None,
            retry is not None and retry > now,
        )
        memo = self._memo.get(uuid)
        refs = (want.domain if want else None, vm.domain if vm else None)
        if memo is not None and memo[0] == sig and memo[1][0] is refs[0] and memo[1][1] is refs[1]:
            return memo[2]
        status = self._compute_status(uuid, want, stamp, now, vm)
        self._memo[uuid] = (sig, refs, status)
        return status

    def _compute_status(self, uuid: uuidlib.UUID, want: Want | None, stamp: str, now: float,
                        vm: _Vm | None) -> DomainStatus:
        """Build the status of one domain from scratch (see `_status`)."""
        live = self._live_of(uuid, vm) if vm is not None else None
        ended = self.ended.get(uuid)
        state, reason = state_of(live, ended, want, now)
        if uuid in self.failures and state in ("stopped", "crashed"):
            reason = self.failures[uuid]
        name = want.name if want else (vm.proc.name if vm else str(uuid))
        paths = self.layout.vm(name, str(uuid))
        errors: tuple[FileError, ...] = ()
        if self._scan is not None and uuid in self._scan.domains:
            cand = self._scan.domains[uuid]
            errors = tuple(_file_error(i) for i in cand.errors)
            errors += tuple(FileError(file=str(c.winner), message=c.message())
                            for c in self._scan.conflicts if c.winner == cand.path)
        if errors and reason is None and any(e.file == str(want.file if want else "")
                                             for e in errors):
            reason = "the file is invalid; the last valid definition stays in effect"
        retry = ended.restart.next_retry_at if ended and not ended.held else None
        vnc = vm.vnc if vm is not None else None
        return DomainStatus(
            name=name, uuid=str(uuid), file=str(want.file) if want else None,
            desired=want.domain.desired.state if want else "stopped",
            state=state, reason=reason,
            pid=vm.proc.pid if vm else None,
            qmp=str(paths.qmp_socket) if vm else None,
            vnc=vnc,
            console_log=str(paths.console_log), log=str(paths.log_file),
            started_at=iso(vm.started_at) if vm else None,
            restarts=self.restarts.get(uuid, 0),
            next_retry_at=iso(retry) if retry is not None and retry > now else None,
            pending_restart=pending_restart(live, want),
            errors=errors, updated_at=stamp)

    # ------------------------------------------------------------------ entry points

    def prepare(self) -> None:
        """Create (or check) the private directories and recall what earlier runs learnt.

        Raises `UnsafeDirectoryError` for a directory that is not private.
        """
        self.layout.ensure()
        self._load_memory()

    @property
    def _memory_file(self) -> Path:
        """Where exits, back-offs and restart counts survive the reconciler (`run/exits.json`)."""
        return self.layout.run_dir / MEMORY_FILE

    def _save_memory(self) -> None:
        """Persist `ended` and `restarts`, so holds and back-offs outlive this process.

        Domains whose files are gone (and that run no VM) are forgotten, so the file stays as
        small as the directory.
        """
        if self._scan is not None:
            known = set(self._scan.domains) | set(self.vms) | set(self._missing)
            for table in (self.ended, self.restarts):
                for uuid in [u for u in table if u not in known]:
                    del table[uuid]
        data = {
            str(uuid): {
                "kind": e.kind.value, "at": e.at, "failures": e.restart.failures,
                "next_retry_at": e.restart.next_retry_at, "held": e.held, "message": e.message,
                "key": [e.key.mtime_ns, e.key.size, e.key.inode] if e.key else None,
                "restarts": self.restarts.get(uuid, 0),
            } for uuid, e in self.ended.items()
        }
        for uuid, count in self.restarts.items():
            data.setdefault(str(uuid), {"restarts": count})
        with contextlib.suppress(OSError):
            write_atomic(self._memory_file, json.dumps(data, indent=1).encode())

    def _load_memory(self) -> None:
        """Read what `_save_memory` wrote; a missing or damaged file means a fresh start."""
        try:
            data = json.loads(self._memory_file.read_bytes())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        for raw, rec in data.items():
            try:
                uuid = uuidlib.UUID(raw)
                self.restarts[uuid] = int(rec.get("restarts", 0))
                if "kind" not in rec:
                    continue
                key = FileKey(*rec["key"]) if rec.get("key") else None
                state = RestartState(int(rec["failures"]), rec.get("next_retry_at"))
                self.ended[uuid] = Ended(ExitKind(rec["kind"]), float(rec["at"]), state,
                                         bool(rec["held"]), key, str(rec.get("message", "")))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue

    async def once(self, *, lock_timeout: float = 120.0, dry_run: bool = False
                   ) -> PassResult:
        """`reconcile --once`: passes until every action has finished; returns the last one.

        When a daemon serves the directory, it owns the VMs (and their only QMP connection):
        instead of acting twice, this asks the daemon for a full pass, waits (bounded) until a
        pass that began after the request has settled, and reports the daemon's status files.
        """
        self.prepare()
        daemon = DirLock(self.layout.run_dir / DAEMON_LOCK)
        if not dry_run and (delegated := await self._delegate(daemon, lock_timeout)):
            return delegated
        await self.lock.acquire(lock_timeout)
        try:
            if not dry_run and daemon.held_elsewhere():  # a daemon started while we waited
                self.lock.release()  # it needs this lock for the pass we are about to ask for
                delegated = await self._delegate(daemon, lock_timeout)
                if delegated is not None:
                    return delegated
                await self.lock.acquire(lock_timeout)
            result = await self.run_pass(dry_run=dry_run)
            if dry_run:
                return result
            for _ in range(10):
                if not self._tasks:
                    break
                await self.settle()
                result = await self.run_pass()
            return result
        finally:
            await self.detach_all()
            self.lock.release()

    async def _delegate(self, daemon: DirLock, timeout: float) -> PassResult | None:
        """Have the daemon run a full pass (SIGUSR1) and wait for it to settle; see `once`.

        Returns None, having done nothing, when no daemon holds the directory.
        """
        pid = daemon.owner()
        if pid is None or pid == os.getpid():
            return None
        asked = time.time()
        self.say(f"a daemon (pid {pid}) serves this directory; asking it for a full pass")
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError as exc:
            raise DaemonServesError(self.layout.config_dir) from exc
        deadline = time.monotonic() + timeout
        marker = self.layout.run_dir / SETTLED_FILE
        while True:
            with contextlib.suppress(OSError, ValueError):
                if float(marker.read_text().strip() or 0) >= asked:
                    break
            if time.monotonic() >= deadline:
                raise LockTimeoutError(marker, timeout)
            await asyncio.sleep(0.02)
        current = read_status(self.layout.status_dir)
        return PassResult((), current.domains if current else ())

    async def serve(self, *, resync: float = 30.0, debounce: float = 0.05) -> None:
        """The daemon: run passes when woken, until SIGTERM or SIGINT; VMs keep running after.

        Wake-ups: watchdog events in the config and run directories (debounced by `debounce`
        seconds of quiet), QEMU exits and QMP events, back-off deadlines, SIGHUP (which also
        drops the parse cache), and a full resync every `resync` seconds as a safety net.
        """
        self.prepare()
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        pending: list[asyncio.TimerHandle] = []

        def debounced() -> None:
            """Runs on the loop: (re)arm the quiet-period timer that wakes a pass."""
            for handle in pending:
                handle.cancel()
            pending[:] = [loop.call_later(debounce, self.wake.set)]

        def rescan() -> None:
            """SIGHUP: forget the parse cache and what was published; run a full pass."""
            self.say("SIGHUP: full rescan")
            self.scanner = Scanner(self.layout.config_dir)
            self.writer = StatusWriter(self.layout.status_dir)  # rewrites every status file
            self.wake.set()

        def requested() -> None:
            """SIGUSR1 from `reconcile --once`: run a full pass now (it waits for it to settle)."""
            self.wake.set()

        def notify() -> None:
            """Runs on the observer thread: only post a wake-up into the loop."""
            loop.call_soon_threadsafe(debounced)

        # handlers first: `reconcile --once` signals the lock's holder as soon as it sees one
        handlers = {signal.SIGHUP: rescan, signal.SIGUSR1: requested,
                    signal.SIGTERM: stopping.set, signal.SIGINT: stopping.set}
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        daemon_lock = DirLock(self.layout.run_dir / DAEMON_LOCK)
        try:
            if not daemon_lock.try_acquire():
                raise AlreadyRunningError(daemon_lock.path)
            observer = watch([self.layout.config_dir, self.layout.run_dir], notify)
            self.say(f"watching {self.layout.config_dir} (pid {os.getpid()})")
            try:
                await self._serve(stopping, resync)
            finally:
                self.say("exiting; VMs keep running and are adopted by the next reconciler")
                observer.stop()
                await self.detach_all()
                self.lock.release()
                observer.join(timeout=2)
        finally:
            for signum in handlers:
                loop.remove_signal_handler(signum)
            daemon_lock.release()

    async def _serve(self, stopping: asyncio.Event, resync: float) -> None:
        """The daemon's loop: a pass per wake-up (or per `resync` seconds) until `stopping`."""
        self.wake.set()
        while not stopping.is_set():
            waiter = asyncio.ensure_future(self.wake.wait())
            stopper = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter, stopper}, timeout=resync,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stopping.is_set():
                break
            self.wake.clear()
            while not self.lock.try_acquire():
                if stopping.is_set():
                    return
                await asyncio.sleep(0.05)
            began = self.clock()
            await self.run_pass()
            if not self._tasks:
                self.lock.release()
                self._mark_settled(began)  # all asked for before `began` is done

    def _mark_settled(self, since: float) -> None:
        """Record that everything asked for since `since` (wall clock) is done (`run/settled`)."""
        with contextlib.suppress(OSError):
            write_atomic(self.layout.run_dir / SETTLED_FILE, f"{since!r}\n".encode())

    async def detach_all(self) -> None:
        """Let go of every VM without stopping it (they are adopted next time)."""
        for task in list(self._tasks.values()):
            task.cancel()
        for vm in list(self.vms.values()):
            await vm.proc.detach()
        self.vms.clear()


class AlreadyRunningError(ReconcilerError):
    """A reconciler daemon already serves this directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"another reconcile daemon already serves this directory (lock {path}); "
                         "it applies every change by itself ('reconcile status' shows its work)")


class DaemonServesError(ReconcilerError):
    """`reconcile --once` on a directory a daemon serves: the daemon owns its VMs."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        super().__init__(f"a reconcile daemon serves {config_dir} and applies every change by "
                         "itself; see 'reconcile status', or stop the daemon to use --once")


def watch(directories: list[Path], wake: Callable[[], None]) -> BaseObserver:
    """Start a watchdog observer calling `wake()` (from its thread) on any event in `directories`.

    Only domain files count in the config directory; any entry counts in the run directory
    (a runtime folder appearing means another reconciler started a VM).
    """
    handler = _Handler(wake, directories[0])
    observer = Observer()
    for directory in directories:
        observer.schedule(handler, str(directory), recursive=False)
    observer.start()
    return observer


def _is_runtime_folder(name: str) -> bool:
    """Whether a run-directory entry is a VM's runtime folder (named by its canonical uuid).

    Everything else there (locks, exits.json and its temporary files) is the reconciler's own
    bookkeeping, and touching it must not wake another pass.
    """
    try:
        return str(uuidlib.UUID(name)) == name
    except ValueError:
        return False


class _Handler(FileSystemEventHandler):
    """Forwards relevant watchdog events as wake-ups; runs on the observer thread."""

    def __init__(self, wake: Callable[[], None], config_dir: Path) -> None:
        self._wake = wake
        self._config_dir = str(config_dir)

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Wake the loop for a domain file event, or a runtime folder appearing or going."""
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            if not path:
                continue
            name = os.path.basename(path)
            if os.path.dirname(path) == self._config_dir:
                relevant = is_domain_file(name)
            else:
                relevant = _is_runtime_folder(name)
            if relevant:
                self._wake()
                return


_EXIT_MESSAGES = {
    ExitKind.POWEROFF: "the guest powered itself off",
    ExitKind.HOST_SHUTDOWN: "QEMU was shut down from outside qemud",
    ExitKind.CRASH: "QEMU crashed or was killed",
    ExitKind.PANIC: "the guest kernel panicked",
    ExitKind.STOPPED: "stopped by qemud",
}


async def _vnc_of(proc: QemuProcess) -> str | None:
    """`host:port` of a VM's VNC server (from QMP, so automatic ports are right), or None."""
    try:
        info = await proc.query_vnc()
    except QemuError:
        return None
    return f"{info.host}:{info.port}" if info is not None else None


def _start_message(exc: StartError) -> str:
    """The user-facing reason of a failed start: QEMU's own words first."""
    if exc.qemu_message:
        last = exc.qemu_message.strip().splitlines()[-1]
        return "failed to start: " + re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ", "", last)
    return f"failed to start: {exc.reason}"


def _file_error(issue: FileIssue) -> FileError:
    """A scanner issue as the status file's error object."""
    return FileError(file=issue.file, line=issue.line, message=issue.message)


def exit_code(result: PassResult) -> int:
    """0 when everything converged; 1 when any domain is invalid, in conflict or failed."""
    bad = {"invalid", "conflict", "crashed", "crash-loop"}
    if any(s.state in bad for s in result.statuses):
        return 1
    if any(s.desired == "running" and s.state != "running" for s in result.statuses):
        return 1
    return 0
