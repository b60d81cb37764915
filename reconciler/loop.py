"""The reconciler: scan -> desired set -> plan -> supervisor -> status, on one asyncio loop.

`Reconciler.run_pass()` is the whole of `reconcile --once`; the daemon (`reconciler.daemon`)
only decides *when* to run a pass. The pieces, each in its own module:

- `scan.Scanner`: the config directory, one stat per unchanged file;
- `desired.DesiredSet`: the one owner of what is wanted (last good, clashes, identity, disks);
- `plan.plan`: pure, desired + observed -> actions;
- `supervisor.Supervisor`: owned VMs, one worker per VM, the process layer;
- `history.History`: exits, restarts, back-off (`run/exits.json`);
- `report.Report` + `status.StatusWriter`: the status files.

Nothing a pass writes may kill it: a failed status, history or definition write is reported
(daemon log and, where possible, status) and retried by the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import model
from reconciler.daemon import AlreadyRunningError, DaemonServesError, delegate, serve
from reconciler.desired import Desired, DesiredSet, DiskIdentity
from reconciler.history import MEMORY_FILE, History
from reconciler.hostfacts import host_key
from reconciler.lock import (
    DAEMON_LOCK,
    LAST_PASS,
    PASS_LOCK,
    STATUS_UNWRITTEN,
    DirLock,
    LockTimeoutError,
)
from reconciler.paths import Layout, untrusted_file
from reconciler.plan import (
    Action,
    Adopt,
    Blocked,
    Clean,
    Ended,
    Live,
    Observed,
    Start,
    Stop,
    Wait,
    plan,
)
from reconciler.qemu import RAN_FILE, STOP_FILE, Primitives, Timeouts, identify_qemu, read_pidfile
from reconciler.report import Facts, LiveFacts, Report
from reconciler.scan import Scan, Scanner
from reconciler.status import DomainStatus, StatusWriter, read_status
from reconciler.supervisor import (
    ADOPT_RETRY,
    RESTART_FILE,
    START_GRACE,
    ProcessLayer,
    QemuLayer,
    Supervisor,
    Vm,
)
from reconciler.vmlog import format_log_line

__all__ = [
    "ADOPT_RETRY",
    "DAEMON_LOCK",
    "MEMORY_FILE",
    "QUIET_PERIOD",
    "WRITE_RETRY",
    "AlreadyRunningError",
    "DaemonServesError",
    "DirLock",
    "LockTimeoutError",
    "PassResult",
    "Reconciler",
    "exit_code",
]

QUIET_PERIOD = 0.25
"""Seconds a domain file must stay missing before its VM is stopped (editors save by rename)."""
WRITE_RETRY = 2.0
"""Seconds after a failed status or history write (full disk, read-only directory) before a
pass writes them again: the status is right soon after the space is back, without an event."""


def boot_time(stat: Path = Path("/proc/stat")) -> float | None:
    """When the host booted (the kernel's `btime`, wall clock), None if it cannot be read."""
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class PassResult:
    """What one pass decided and saw; `reconcile --once` derives its exit code from it."""

    actions: tuple[Action, ...]
    statuses: tuple[DomainStatus, ...]


@dataclass
class Reconciler:
    """Turns a config directory into running QEMU processes, and reports what happened.

    All methods must run on one event loop. `clock` is wall-clock time (status timestamps and
    back-off deadlines); `primitives` and `timeouts` go to every `QemuProcess`; `layer`
    replaces the whole process layer (tests).
    """

    layout: Layout
    clock: Callable[[], float] = time.time
    primitives: Primitives | None = None
    timeouts: Timeouts | None = None
    out: TextIO = field(default_factory=lambda: sys.stderr)
    quiet_period: float = QUIET_PERIOD
    layer: ProcessLayer | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    passes: int = 0
    linger_until: float | None = None
    """When a domain file missing for a moment (the quiet period) stops counting, if one is."""
    """How many passes have run (tests wait on it instead of sleeping)."""
    booted_at: Callable[[], float | None] = boot_time
    """When the host booted (wall clock), None if unknown: see `_leftovers`."""
    timestamps: bool = False
    """Start each line on `out` with the time, as the VM log does (a daemon not under systemd,
    whose journal stamps lines itself)."""
    say_file_errors: bool = True
    """Say each file problem on `out` (the daemon log); `reconcile --once` prints them in its
    report on stdout instead, so they are not printed twice."""

    def __post_init__(self) -> None:
        self.scanner = self._scanner()
        self.writer = StatusWriter(self.layout.status_dir)
        self.lock = DirLock(self.layout.run_dir / PASS_LOCK)
        self.identify = DiskIdentity()
        self.desired_set = DesiredSet(self.quiet_period, self.identify)
        self.report = Report(self.layout)
        self.history = History(self.layout.run_dir / MEMORY_FILE)
        self.supervisor = Supervisor(
            self.layer or QemuLayer(self.layout, self.timeouts, self.primitives),
            self.history, self.clock, self.say, self.wake.set, self._wake_later, self.identify)
        self._said: dict[str, str] = {}
        self._reported: Desired | None = None

    # ------------------------------------------------------------------ helpers

    @property
    def vms(self) -> dict[uuidlib.UUID, Vm]:
        """The VMs this reconciler owns right now."""
        return self.supervisor.vms

    @property
    def failures(self) -> dict[uuidlib.UUID, str]:
        """The last failure of each VM (start, adoption)."""
        return self.history.failures

    def say(self, text: str) -> None:
        """One human line per action, to stderr (systemd's journal picks it up)."""
        line = f"reconcile: {text}"
        try:
            self.out.write(format_log_line(self.clock(), line) if self.timestamps
                           else line + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed or full stderr must not stop the reconciler

    def _say_once(self, topic: str, lines: list[str], *, only_new: bool = False) -> None:
        """Say `lines` unless they are what was said last about `topic` (no repeats every pass).

        With `only_new`, only the lines that were not among the last ones are said (a change to
        one file does not repeat every other file's errors).
        """
        text = "\n".join(lines)
        previous = self._said.get(topic)
        if previous != text:
            self._said[topic] = text
            before = set(previous.split("\n")) if only_new and previous else set()
            for line in lines:
                if line not in before:
                    self.say(line)

    def _wake_later(self, when: float) -> None:
        """Arrange a pass at wall-clock time `when` (for back-offs and quiet periods)."""
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, when - self.clock()) + 0.01, self.wake.set)

    def reload(self) -> None:
        """SIGHUP: reread every file and republish everything on the next pass.

        What a file means does not change by a reload: the scanner keeps each invalid file's
        last valid definition, and the desired set falls back on the definition in use of
        every running VM, which the supervisor holds (and persisted for restarts).
        """
        self.scanner = self.scanner.reloaded()
        self.writer = StatusWriter(self.layout.status_dir)
        self.identify.forget()
        self._reported = None
        self.desired_set = DesiredSet(self.quiet_period, self.identify)
        self._said.clear()

    def _scanner(self) -> Scanner:
        """A fresh scanner of the config directory (refusing untrusted files with --system)."""
        return Scanner(self.layout.config_dir,
                       distrust=untrusted_file if self.layout.system_instance else None,
                       linger=self.quiet_period, now=self.clock, host_key=host_key)

    # ------------------------------------------------------------------ the pass

    async def run_pass(self, *, dry_run: bool = False) -> PassResult:
        """Scan, decide, deliver the actions to the VMs' workers, publish status.

        Adoption of runtime folders nobody owns runs first and inline, so the plan and the
        status see adopted VMs as they are, never as stopped for a moment.
        """
        self.passes += 1
        now = self.clock()
        scan = await self._scan()
        desired = self.desired_set.update(scan, self.supervisor.owned(), now)
        if desired.wake_at is not None:
            self._wake_later(desired.wake_at)
        self._report_files(desired)
        if dry_run:
            return PassResult(tuple(self._dry_plan(desired, now)), ())
        self.supervisor.follow(desired)
        orphans = self.supervisor.orphans()
        if orphans:
            leftovers = self._leftovers(orphans)
            seen = {uuid: self.history.ended.get(uuid) for uuid in leftovers}
            await self.supervisor.adopt_all(sorted(orphans))
            # clashes are resolved in favour of running VMs: judge again with the adopted ones
            scan = await self._scan()
            desired = self.desired_set.update(scan, self.supervisor.owned(), now)
            self.supervisor.follow(desired)
            self._record_unseen_crashes(leftovers, seen, desired, now)
        self.supervisor.retry_adoptions()
        self.linger_until = desired.wake_at
        actions = self._plan(desired, now)
        for action in actions:
            if isinstance(action, Wait):
                self._wake_later(action.until)
        self.supervisor.deliver(actions, desired)
        adopted = [Adopt(u) for u in sorted(orphans)]
        statuses = await self._publish(desired, actions, now)
        return PassResult((*adopted, *actions), tuple(statuses))

    def _leftovers(self, orphans: frozenset[uuidlib.UUID]
                   ) -> dict[uuidlib.UUID, tuple[int | None, float]]:
        """Runtime folders that tell of an exit no reconciler saw, if adoption finds QEMU gone.

        Maps uuid to (pid, time): a pidfile written since the host booted (pid and its mtime)
        means a crash, as QEMU removes its pidfile whenever it exits by itself; a folder without
        pidfile (pid None, the folder's mtime: when the pidfile went) means QEMU exited by
        itself, cleanly (the guest powered off, or a `quit` from outside), but only when the
        guest is known to have run (`RAN_FILE`) and qemud was not stopping or restarting it
        (`STOP_FILE`, the restart marker). Anything from before the boot is left by a host that
        went down with its VMs: no exit of theirs.
        """
        booted = self.booted_at()
        found: dict[uuidlib.UUID, tuple[int | None, float]] = {}
        for uuid in orphans:
            path = self.layout.pidfile(str(uuid))
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                folder = self.layout.vm_dir(str(uuid))
                try:
                    mtime = os.stat(folder).st_mtime
                    if (not (folder / RAN_FILE).exists() or (folder / STOP_FILE).exists()
                            or (folder / RESTART_FILE).exists()):
                        continue
                except OSError:
                    continue
                if booted is None or mtime >= booted:
                    found[uuid] = (None, mtime)
                continue
            except OSError:
                continue
            pid = read_pidfile(path)
            if pid is not None and (booted is None or mtime >= booted):
                found[uuid] = (pid, mtime)
        return found

    def _record_unseen_crashes(self, leftovers: dict[uuidlib.UUID, tuple[int | None, float]],
                               seen: dict[uuidlib.UUID, Ended | None], desired: Desired,
                               now: float) -> None:
        """Record the exits of the leftovers whose QEMU adoption found gone (folder removed).

        A crash (pidfile left) is recorded as one; a clean exit (no pidfile) as a power-off,
        as the daemon would have seen it. A VM adopted after all, or whose exit adoption saw
        and recorded itself, is left alone; so is one no file wants running any more (it is
        stopped, as wanted). The restart policy then decides as for any exit, and a restart
        is counted.
        """
        for uuid, (pid, since) in sorted(leftovers.items()):
            want = desired.wants.get(uuid)
            if (uuid in self.supervisor.vms or want is None or not want.running
                    or self.history.ended.get(uuid) is not seen.get(uuid)):
                continue
            if pid is None:
                ended = self.history.record_unseen_exit(uuid, want.domain, exited_at=since,
                                                        key=want.key, now=now)
            else:
                ended = self.history.record_unseen_crash(uuid, want.domain, pid=pid,
                                                         started_at=since, key=want.key,
                                                         now=now)
            self.say(f"{want.name}: {ended.message}")
            retry = ended.restart.next_retry_at
            if not ended.held and retry is not None:
                self._wake_later(retry)

    async def _scan(self) -> Scan:
        """Scan the config directory off the event loop (stat every file, parse changed ones).

        Parsing twenty new files takes the loop thread ~15 ms of CPU; in a worker thread the
        loop keeps answering QMP meanwhile. Only one pass runs at a time, so the scanner is
        never used by two threads at once.
        """
        running = self.supervisor.running_files()
        owned: dict[str | int, model.Parsed] = {
            str(own.file): model.Parsed(own.domain, str(own.file))
            for own in self.supervisor.owned().values()
            if own.file is not None and own.domain is not None}
        orphans = self.supervisor.orphans()
        # crashed VMs due a restart whose runtime folder is gone: their definition's copy
        recovering = {u for u, ended in self.history.ended.items()
                      if not ended.held and u not in self.supervisor.vms}

        def scan() -> Scan:
            """The scan, with every persisted definition known (orphans' read here)."""
            known = dict(owned)
            layer = self.supervisor.layer
            for uuid in sorted(orphans | recovering):
                domain, file = layer.load_definition(uuid)
                if domain is not None and file is not None:
                    parsed = model.Parsed(domain, str(file))
                    known.setdefault(str(file), parsed)
                    inode = layer.source_inode(uuid)
                    if inode is not None:
                        known.setdefault(inode, parsed)  # the same file, renamed since
            return self.scanner.scan(running, known)

        return await asyncio.get_running_loop().run_in_executor(None, scan)

    def _plan(self, desired: Desired, now: float) -> list[Action]:
        """`plan()` on what is known right now about owned VMs and exits (no orphans left)."""
        observed = Observed(self.supervisor.live(), dict(self.history.ended))
        return plan(desired.wants, observed, now, gone=desired.gone, identify=self.identify)

    def _dry_plan(self, desired: Desired, now: float) -> list[Action]:
        """The plan `--dry-run` prints: runtime folders judged read-only, never adopted.

        A folder whose pidfile names this VM's live QEMU is shown as an adoption and that VM is
        planned as running; any other folder is shown as stale. Nothing is connected to,
        signalled, written or removed.
        """
        live = self.supervisor.live()
        found: list[Action] = []
        for uuid in sorted(self.supervisor.orphans()):
            pid = read_pidfile(self.layout.pidfile(str(uuid)))
            problem = (identify_qemu(pid, str(uuid), self.layout.vm_dir(str(uuid)))
                       if pid is not None else "no valid pidfile")
            if problem is not None:
                found.append(Clean(uuid, problem))
                continue
            assert pid is not None
            want = desired.wants.get(uuid)
            found.append(Adopt(uuid))
            live[uuid] = Live(uuid, want.name if want else str(uuid), pid, "running",
                              want.domain if want else None, want.file if want else None)
        observed = Observed(live, dict(self.history.ended))
        return found + plan(desired.wants, observed, now, gone=desired.gone,
                            identify=self.identify)

    def _report_files(self, desired: Desired) -> None:
        """Say each file problem once, as `file:line: message`, in the daemon log."""
        if desired is self._reported or not self.say_file_errors:
            return  # the same desired set as last pass: nothing new to say
        self._reported = desired
        lines: list[str] = []
        for bad in desired.invalid:
            lines += [_where(i.file, i.line, i.message) for i in bad.errors]
        for conflict in desired.conflicts:
            issue = conflict.issue(conflict.loser)
            lines.append(_where(issue.file, issue.line, issue.message))
        for want in desired.wants.values():
            lines += [_where(i.file, i.line, i.message) for i in want.errors]
        self._say_once("files", lines, only_new=True)

    def publish(self, desired: Desired, actions: list[Action], now: float
                ) -> list[DomainStatus]:
        """Compute every domain's status from what is known now and write the files.

        Also saves the history; write failures go to the daemon log (once per change) and are
        retried by the next pass.
        """
        statuses, history_data = self._statuses(desired, actions, now)
        return self._published(*self._write_out(statuses, now, history_data))

    async def _publish(self, desired: Desired, actions: list[Action], now: float
                       ) -> list[DomainStatus]:
        """`publish`, with the files written in a worker thread (the loop stays free)."""
        statuses, history_data = self._statuses(desired, actions, now)
        written = await asyncio.get_running_loop().run_in_executor(
            None, self._write_out, statuses, now, history_data)
        return self._published(*written)

    def _statuses(self, desired: Desired, actions: list[Action], now: float
                  ) -> tuple[list[DomainStatus], bytes | None]:
        """Every domain's status, and the history to save (None if unchanged); on the loop."""
        sup, history = self.supervisor, self.history
        waiting = {a.uuid: a.reason for a in actions if isinstance(a, Blocked)}
        facts: list[Facts] = []
        seen: set[uuidlib.UUID] = set()

        def fact(uuid: uuidlib.UUID) -> Facts:
            """The facts of one domain's status."""
            vm = sup.vms.get(uuid)
            ended = history.ended.get(uuid)
            retry = ended.restart.next_retry_at if ended is not None else None
            live = (LiveFacts(sup.live_of(uuid, vm), vm.started_at, vm.vnc,
                              vm.handle.run_state if vm.handle else None,
                              uuid in sup.rebooting)
                    if vm is not None else None)
            return Facts(uuid, desired.wants.get(uuid), live, ended, history.restarts.get(uuid, 0),
                         history.failures.get(uuid), waiting.get(uuid),
                         retry is not None and retry > now)

        for uuid in desired.wants:
            seen.add(uuid)
            facts.append(fact(uuid))
        for uuid in sup.vms:
            if uuid not in seen:
                facts.append(fact(uuid))
        statuses = self.report.build(desired, facts, now)
        history.forget_except({*desired.wants, *sup.vms, *(c.uuid for c in desired.conflicts)})
        return statuses, history.encode()

    def _write_out(self, statuses: list[DomainStatus], now: float, history_data: bytes | None
                   ) -> tuple[list[DomainStatus], list[str], OSError | None]:
        """Write the status files and the history; touches nothing the loop uses meanwhile."""
        writer = self.writer
        out = writer.publish(statuses, now)
        saved = self.history.write(history_data) if history_data is not None else None
        with contextlib.suppress(OSError):  # the heartbeat `reconcile status` checks
            (self.layout.run_dir / LAST_PASS).touch(mode=0o600)
        marker = self.layout.run_dir / STATUS_UNWRITTEN
        with contextlib.suppress(OSError):  # what `status` says while the table cannot be kept
            failing_since = marker.stat().st_mtime
            if writer.errors and not failing_since:
                os.utime(marker, (now, now))  # needs neither a block nor an inode
                with contextlib.suppress(OSError):  # the reason, when there is room for it
                    marker.write_text(f"{writer.errors[0]}\n")
                    os.utime(marker, (now, now))
            elif not writer.errors and failing_since:
                marker.write_bytes(b"")
                os.utime(marker, (0, 0))
        return out, list(writer.errors), saved

    def _published(self, out: list[DomainStatus], problems: list[str], saved: OSError | None
                   ) -> list[DomainStatus]:
        """Report write failures (once per change) and arrange a pass that writes again.

        A failed write is retried by the next pass, and one comes within `WRITE_RETRY` s even
        when nothing else happens (only the daemon's loop has a timer to arm).
        """
        if saved is not None:
            self.history.dirty = True
            problems.append(f"cannot write {self.history.path}: {saved.strerror or saved}; "
                            "exits and back-offs are kept in memory and written again next pass")
        failing = bool(self._said.get("writes"))
        self._say_once("writes", problems)
        if failing and not problems:
            self.say(f"status files written again in {self.layout.status_dir}")
        if problems:
            with contextlib.suppress(RuntimeError):  # no running loop (a synchronous caller)
                self._wake_later(self.clock() + WRITE_RETRY)
        return out

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until every action under way has finished (used by --once and tests)."""
        if timeout is None:
            await self.supervisor.settle()
        else:
            await asyncio.wait({asyncio.ensure_future(self.supervisor.settle())},
                               timeout=timeout)

    # ------------------------------------------------------------------ entry points

    def prepare(self, *, dry_run: bool = False) -> None:
        """Create (or check) the private directories and recall what earlier runs learnt.

        Raises `UnsafeDirectoryError` for a directory that is not private. A dry run writes
        nothing more than the directories.
        """
        self.layout.ensure()
        marker = self.layout.run_dir / STATUS_UNWRITTEN  # made now, while there is room: a
        with contextlib.suppress(OSError):  # disk out of inodes must still be able to say so
            if not dry_run and not marker.exists():
                marker.touch(mode=0o600)
                os.utime(marker, (0, 0))  # mtime 0: the status files are being written
        loaded = History.load(self.history.path)
        self.history.ended, self.history.restarts = loaded.ended, loaded.restarts
        self.history.dirty = loaded.dirty  # a damaged exits.json is rewritten by the first pass

    async def once(self, *, lock_timeout: float = 120.0, dry_run: bool = False
                   ) -> PassResult:
        """`reconcile --once`: passes until every action has finished; returns the last one.

        When a daemon serves the directory, it owns the VMs (and their only QMP connection):
        instead of acting twice, this asks the daemon for a full pass, waits (bounded) until a
        pass that began after the request has settled, and reports the daemon's status files.
        """
        self.prepare(dry_run=dry_run)
        daemon = DirLock(self.layout.run_dir / DAEMON_LOCK)
        if not dry_run and await delegate(self, daemon, lock_timeout):
            return self._daemon_result()
        await self.lock.acquire(lock_timeout)
        try:
            if not dry_run and daemon.held_elsewhere():  # a daemon started while we waited
                self.lock.release()  # it needs this lock for the pass we are about to ask for
                if await delegate(self, daemon, lock_timeout):
                    return self._daemon_result()
                await self.lock.acquire(lock_timeout)
            result = await self.run_pass(dry_run=dry_run)
            if dry_run:
                return result
            for _ in range(10):
                # a pass that started or stopped anything is followed by one that reports how
                # it went, even when it is over already (a start can fail before `working`);
                # a file missing for a moment is waited out (the quiet period), then applied
                acted = any(isinstance(a, Start | Stop) for a in result.actions)
                linger = self.linger_until
                if not acted and not self.supervisor.working and linger is None:
                    break
                if linger is not None and not acted and not self.supervisor.working:
                    await asyncio.sleep(max(0.0, linger - self.clock()))
                await self.settle()
                result = await self.run_pass()
            return result
        finally:
            await self.detach_all()
            self.lock.release()

    def _daemon_result(self) -> PassResult:
        """The daemon's statuses, as `once` reports them after delegating."""
        current = read_status(self.layout.status_dir)
        return PassResult((), current.domains if current else ())

    async def serve(self, *, resync: float = 30.0, debounce: float = 0.05) -> None:
        """The daemon (see `reconciler.daemon.serve`)."""
        await serve(self, resync=resync, debounce=debounce)

    async def detach_all(self, start_grace: float = START_GRACE) -> None:
        """Let go of every VM without stopping it, starts under way let finish first (bounded).

        See `Supervisor.detach_all`; the VMs are adopted by the next reconciler.
        """
        await self.supervisor.detach_all(start_grace)


def _where(file: str, line: int | None, message: str) -> str:
    """`file:line: message` (the line left out when unknown)."""
    return f"{file}:{line}: {message}" if line is not None else f"{file}: {message}"


def exit_code(result: PassResult) -> int:
    """0 when everything converged; 1 when any file is invalid or in conflict, or a VM failed."""
    bad = {"invalid", "conflict", "crashed", "crash-loop", "unresponsive"}
    if any(s.state in bad or s.errors for s in result.statuses):
        return 1
    if any(s.desired == "running" and s.state != "running" for s in result.statuses):
        return 1
    return 0
