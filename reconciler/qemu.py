"""One VM's QEMU process: start it, watch it, talk QMP to it, stop it, adopt it.

The stages mirror QEMU's own ``python/qemu/machine``:

``prepare``
    check the command line and the runtime folder ``<run>/<uuid>/``.
``launch``
    spawn QEMU paused (``-S``) in its own session, detached from qemud, with
    stdin on /dev/null and stdout+stderr appended to ``<log>/<name>.log``.
    Its QMP socket is bound and listening before the spawn and handed to
    QEMU as a descriptor (``-chardev socket,fd=N``, as libvirt does).
``attach``
    connect to that socket at once (the connection waits in its backlog
    until QEMU greets: no polling), listen to lifecycle events
    (`reconciler.monitor.Monitor`).
``resume``
    ``cont``: the guest starts running.
``stop``
    ``system_powerdown``, then ``quit``, then SIGTERM, then SIGKILL.
``cleanup``
    remove the runtime folder once QEMU is gone (done automatically on exit).

`QemuProcess.adopt` takes over a QEMU left running by an earlier qemud.

Exits are noticed without polling: a pidfd (``os.pidfd_open``) registered
with ``loop.add_reader`` becomes readable when the process terminates (a
zombie counts), for children and adopted processes alike.  Signals are sent
through that pidfd, so only the very process that was started or verified at
adoption can ever be signalled, even if its pid is reused.

Everything runs on the caller's asyncio event loop; OS primitives (clocks,
spawning, QMP connection) come from `Primitives` so tests can replace them.
The VM log gets libvirt-style lifecycle lines::

    2026-11-25 15:30:00.123+0000: starting: qemu-system-x86_64 -name guest=t1 ...
    2026-11-25 15:30:00.125+0000: started pid 4242
    2026-11-25 15:30:09.001+0000: stopping reason=config-changed: system_powerdown ...
    2026-11-25 15:30:10.002+0000: exited status=0 kind=stopped
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import shlex
import shutil
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from qemu.qmp import QMPClient, QMPError
from qemu.qmp.message import Message

from reconciler.errors import (
    AdoptError,
    InvalidArgvError,
    InvalidIdentifierError,
    MonitorError,
    MonitorTimeoutError,
    PhaseError,
    StartError,
    StopError,
)
from reconciler.monitor import (
    LIFECYCLE_EVENTS,
    Monitor,
    QmpConnector,
    QmpEvent,
    RunStatus,
    VncInfo,
    connect_qmp,
)
from reconciler.paths import VmPaths, canonical_uuid, check_socket_path, ensure_private_dir
from reconciler.policy import ExitKind, classify_exit
from reconciler.process import (
    WatchedProcess,
    argv_value,
    describe_status,
    find_qemu,
    identify_qemu,
    is_our_child,
    listening_socket,
    pass_monitor_fd,
    pidfd_exited,
    process_age,
    read_cmdline,
    read_pidfile,
    remove_runtime_dir,
    spawn_detached,
)
from reconciler.vmlog import VmLog, format_log_line

__all__ = [
    "LIFECYCLE_EVENTS",
    "RAN_FILE",
    "STOP_FILE",
    "Exit",
    "Phase",
    "Primitives",
    "QemuProcess",
    "QmpEvent",
    "RunStatus",
    "Timeouts",
    "VncInfo",
    "connect_qmp",
    "describe_status",
    "find_qemu",
    "format_log_line",
    "identify_qemu",
    "process_age",
    "read_cmdline",
    "read_pidfile",
    "spawn_detached",
]

logger = logging.getLogger(__name__)

RAN_FILE = "ran"
"""Touched in the runtime folder once the guest runs: evidence that QEMU really ran, so a folder
left without its QEMU or pidfile is an exit nobody saw (not a start cut short)."""
STOP_FILE = "stop-requested"
"""Touched when qemud begins to stop the VM: its QEMU's exit is qemud's doing."""


# --------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------


class Phase(enum.Enum):
    """Where a `QemuProcess` is in its life."""

    NEW = "new"
    PREPARED = "prepared"
    LAUNCHED = "launched"
    ATTACHED = "attached"
    #: QEMU is up and managed; `QemuProcess.run_state` says if vCPUs run.
    ACTIVE = "active"
    STOPPING = "stopping"
    EXITED = "exited"
    #: The wrapper let go of a QEMU that keeps running (see `QemuProcess.detach`).
    DETACHED = "detached"


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds, in seconds, for everything that waits on QEMU."""

    #: From launch to QEMU's QMP greeting.
    attach: float = 10.0
    #: Any single QMP command.
    qmp: float = 5.0
    #: Exit after a successful QMP ``quit``.
    quit: float = 5.0
    #: Exit after SIGTERM.
    term: float = 5.0
    #: Exit after SIGKILL.
    kill: float = 5.0
    #: After the process is gone, how long to wait for the monitor's last events.
    monitor_eof: float = 1.0


@dataclass(frozen=True)
class Exit:
    """How and when a QEMU process ended.

    ``returncode``/``signal`` are None when unknown (an adopted process is not
    qemud's child, so its status cannot be read); ``at`` is wall-clock time
    (`Primitives.wall_clock`), ``uptime`` seconds since QEMU started.
    ``shutdown_reason`` is QEMU's SHUTDOWN ``reason`` (``guest-shutdown``,
    ``host-qmp-quit``, ``host-signal``, ...) if that event was seen.
    """

    pid: int
    returncode: int | None
    signal: int | None
    kind: ExitKind
    at: float
    uptime: float
    shutdown_reason: str | None = None
    shutdown_guest: bool = False

    def describe(self) -> str:
        """Render the status as in the log: ``status=0``, ``signal=SIGKILL`` or ``status=unknown``."""
        return describe_status(self.returncode, self.signal)


# --------------------------------------------------------------------------
# OS primitives (injectable)
# --------------------------------------------------------------------------

#: Start ``argv`` detached with stdout/stderr on the given fd, passing it the listed
#: descriptors (at their numbers), on the given host CPUs (None: any); return its pid.
Spawner = Callable[[Sequence[str], int, Sequence[int], frozenset[int] | None,
                    Mapping[str, str] | None], int]
"""(argv, log fd, fds to pass, host CPUs or None, environment added or None) -> pid."""


@dataclass(frozen=True)
class Primitives:
    """The OS facilities `QemuProcess` uses, with the real ones as defaults."""

    #: Monotonic seconds, for uptimes and deadlines.
    clock: Callable[[], float] = time.monotonic
    #: Wall-clock epoch seconds, for log lines and `Exit.at`.
    wall_clock: Callable[[], float] = time.time
    spawn: Spawner = field(default=spawn_detached)
    connect_qmp: QmpConnector = field(default=connect_qmp)
    #: Confine one thread (a Linux task id) to some host CPUs.
    set_affinity: Callable[[int, frozenset[int]], None] = os.sched_setaffinity
    #: The task ids of a process's threads.
    threads: Callable[[int], list[int]] = field(default=lambda pid: sorted(
        int(t) for t in os.listdir(f"/proc/{pid}/task")))


# --------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------


class QemuProcess:
    """One QEMU process of one VM, from launch (or adoption) to exit.

    Not thread-safe: use it from the event loop that launched or adopted it.
    ``on_exit`` is called exactly once, on the loop, with the `Exit` of a VM
    that was started successfully or adopted (a failed start raises
    `StartError` instead); ``on_event`` gets each lifecycle `QmpEvent`.
    """

    def __init__(
        self,
        name: str,
        vm_uuid: str,
        argv: Sequence[str],
        paths: VmPaths,
        *,
        timeouts: Timeouts | None = None,
        primitives: Primitives | None = None,
        on_exit: Callable[[Exit], None] | None = None,
        on_event: Callable[[QmpEvent], None] | None = None,
        cpus: frozenset[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Describe a VM's QEMU; nothing happens until `start` (or use `adopt`).

        ``cpus``: the host CPUs QEMU may run on (``<vcpu cpuset>``), None for any; ``env``:
        variables added to QEMU's environment (``<qemu:env>``).
        """
        self.name = name
        self.uuid = canonical_uuid(vm_uuid)
        self.argv: list[str] = list(argv)
        self.cpus = cpus
        self.env = dict(env) if env else None
        self.paths = paths
        self.timeouts = timeouts or Timeouts()
        self.primitives = primitives or Primitives()
        self.phase = Phase.NEW
        self.pid: int | None = None
        #: Last known QEMU run state (query-status, STOP/RESUME events), if any.
        self.run_state: str | None = None
        self.exit: Exit | None = None
        self._on_exit = on_exit
        self._on_event = on_event
        self._proc: WatchedProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_seen: asyncio.Future[None] | None = None
        self._exit_done: asyncio.Future[Exit] | None = None
        self._finalizer: asyncio.Task[None] | None = None
        self._monitor: Monitor | None = None
        self._listener: socket.socket | None = None
        self._log_offset = 0
        self._report_exit = False
        self._requested_stop = False
        self._stop_task: asyncio.Task[Exit] | None = None
        self._hurry: asyncio.Event | None = None
        self._shutdown_seen = False
        self._shutdown_guest = False
        self._shutdown_reason: str | None = None
        self._panicked = False

    def __repr__(self) -> str:
        """Show name, pid and phase for logs and debugging."""
        return f"<QemuProcess {self.name} pid={self.pid} phase={self.phase.value}>"

    # ---------------------------------------------------------------- logging

    def _log(self, text: str) -> None:
        """Append a lifecycle line to the VM log; never raises (see `VmLog`)."""
        VmLog(self.paths.log_file, self.name, self.primitives.wall_clock).write(text)

    def qemu_output(self) -> str:
        """What QEMU printed since this launch, without qemud's lifecycle lines (at most 4 KiB)."""
        return VmLog(self.paths.log_file, self.name, self.primitives.wall_clock).qemu_output(
            self._log_offset)

    # ---------------------------------------------------------------- stages

    def prepare(self) -> None:
        """Check the command line and make the runtime folder ready.

        The argv must name this VM's ``-uuid``, ``-pidfile`` and QMP socket and
        must not ``-daemonize`` (raises `InvalidArgvError`); ``-S`` is appended
        so QEMU starts paused.  The folder is created private (0700) and
        emptied of leftovers; if it still belongs to a live QEMU of this VM,
        `StartError` is raised instead of touching it.
        """
        if self.phase is not Phase.NEW:
            raise PhaseError(self.name, "prepare()", self.phase.value)
        found_uuid = argv_value(self.argv, "uuid")
        try:
            same_uuid = found_uuid is not None and canonical_uuid(found_uuid) == self.uuid
        except InvalidIdentifierError:
            same_uuid = False
        if not same_uuid:
            raise InvalidArgvError(self.name, f"missing '-uuid {self.uuid}'")
        if argv_value(self.argv, "pidfile") != str(self.paths.pidfile):
            raise InvalidArgvError(self.name, f"missing '-pidfile {self.paths.pidfile}'")
        if not any(f"path={self.paths.qmp_socket}" in arg for arg in self.argv):
            raise InvalidArgvError(
                self.name, f"no QMP chardev with path={self.paths.qmp_socket}"
            )
        if "-daemonize" in self.argv or "--daemonize" in self.argv:
            raise InvalidArgvError(self.name, "-daemonize would hide QEMU's pid")
        if "-S" not in self.argv:
            self.argv.append("-S")
        check_socket_path(self.paths.qmp_socket)
        left_behind = self.paths.vm_dir.exists()
        ensure_private_dir(self.paths.vm_dir)
        old_pid = read_pidfile(self.paths.pidfile)
        if left_behind and (old_pid is None
                            or identify_qemu(old_pid, self.uuid, self.paths.vm_dir) is not None):
            # a folder left behind: is its QEMU alive anyway (even without a pidfile)?
            old_pid = find_qemu(self.uuid, self.paths.vm_dir)
        if old_pid is not None:
            raise StartError(
                self.name,
                stage="prepare",
                reason=f"QEMU pid {old_pid} of this VM is still running; adopt or stop it first",
                log_file=self.paths.log_file,
                pid=old_pid,
            )
        for leftover in self.paths.vm_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        self._listener = listening_socket(self.paths.qmp_socket)
        self.phase = Phase.PREPARED

    async def launch(self) -> None:
        """Spawn QEMU (paused) and start watching for its exit.

        Logs ``starting: <argv>`` and ``started pid N``.  On failure to spawn,
        cleans the runtime folder and raises `StartError`.
        """
        if self.phase is not Phase.PREPARED:
            raise PhaseError(self.name, "launch()", self.phase.value)
        assert self._listener is not None
        self._loop = asyncio.get_running_loop()
        monitor_fd = self._listener.fileno()
        argv = pass_monitor_fd(self.argv, self.paths.qmp_socket, monitor_fd)
        self._log(f"starting: {shlex.join(argv)}")
        self._log_offset = VmLog(self.paths.log_file, self.name, self.primitives.wall_clock).size()
        try:
            log_fd = os.open(
                self.paths.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as err:
            self.cleanup()
            raise StartError(
                self.name, stage="launch", reason=f"cannot open the log: {err}",
                log_file=self.paths.log_file,
            ) from err
        spawning = self._loop.run_in_executor(
            None, self.primitives.spawn, argv, log_fd, (monitor_fd,), self.cpus, self.env)
        try:
            try:
                pid = await asyncio.shield(spawning)
            except asyncio.CancelledError:
                # the spawn goes on in its thread with our descriptors: let it finish before
                # they are closed; its QEMU stays paused (-S) for the next reconciler to adopt
                await asyncio.wait({spawning})
                raise
            pidfd = os.pidfd_open(pid)
        except OSError as err:
            self._log(f"failed to start: {err}")
            self.cleanup()
            raise StartError(
                self.name,
                stage="launch",
                reason=f"cannot execute {self.argv[0]}: {err.strerror or err}",
                log_file=self.paths.log_file,
            ) from err
        finally:
            os.close(log_fd)
            self._close_listener()  # QEMU holds it now: its exit resets our connection
        self._watch(pid, pidfd, is_child=True, started_at=self.primitives.clock())
        self._log(f"started pid {pid}")
        self.phase = Phase.LAUNCHED

    async def attach(self) -> None:
        """Connect QMP and listen to lifecycle events; the monitor answers on return.

        The socket was listening before QEMU started, so the connection is made at once and
        waits for QEMU's greeting, at most `Timeouts.attach`.  If QEMU exits first, raises
        `StartError` quoting what QEMU printed (e.g. ``Could not open '/nope.img': No such
        file or directory``); on timeout or a failed handshake, kills the process it launched.
        Either way the runtime folder is removed.
        """
        if self.phase is not Phase.LAUNCHED:
            raise PhaseError(self.name, "attach()", self.phase.value)
        assert self._exit_seen is not None and self._loop is not None
        exited = self._exit_seen
        connecting: asyncio.Future[QMPClient] = asyncio.ensure_future(
            self.primitives.connect_qmp(self.paths.qmp_socket, self.name))
        either: set[asyncio.Future[Any]] = {connecting, exited}
        await asyncio.wait(either, timeout=self.timeouts.attach,
                           return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            await asyncio.wait({connecting})
        error = None if connecting.cancelled() else connecting.exception()
        if connecting.cancelled() or error is not None:
            if error is not None:
                # QEMU dying resets the connection a moment before its pidfd says so
                await asyncio.wait({exited}, timeout=self.timeouts.monitor_eof)
            if exited.done():
                await self._fail("attach", "QEMU exited before its monitor came up")
            if error is None:
                await self._fail("attach", f"QMP socket {self.paths.qmp_socket} did not answer "
                                 f"within {self.timeouts.attach:g}s")
            await self._fail("attach", f"cannot talk QMP on {self.paths.qmp_socket}: {error}",
                             error)
        self._listen(connecting.result())
        self.phase = Phase.ATTACHED

    async def set_balloon(self, target: int) -> None:
        """Set the balloon target to ``target`` bytes (QMP ``balloon``) before `resume`.

        On failure kills the process it launched, cleans up and raises `StartError`.
        """
        if self.phase is not Phase.ATTACHED:
            raise PhaseError(self.name, "set_balloon()", self.phase.value)
        try:
            await self.execute("balloon", {"value": target})
        except MonitorError as err:
            await self._fail("balloon", f"'balloon' failed: {err.reason} {err.qemu_message or ''}"
                             .strip(), err)
        self._log(f"balloon target {target} bytes (<currentMemory>)")

    async def pin(self, vcpus: Mapping[int, frozenset[int]], iothreads: Mapping[int, frozenset[int]],
                  emulator: frozenset[int] | None) -> None:
        """Pin threads to host CPUs (`<cputune>`) before `resume`, as libvirt does.

        vCPU threads come from QMP ``query-cpus-fast``, I/O threads (``iothreadN``) from
        ``query-iothreads``; the emulator's pin applies to every other thread. On failure kills
        the process it launched, cleans up and raises `StartError`.
        """
        if self.phase is not Phase.ATTACHED:
            raise PhaseError(self.name, "pin()", self.phase.value)
        try:
            cpus: Any = await self.execute("query-cpus-fast")
            threads: Any = await self.execute("query-iothreads") if iothreads else []
        except MonitorError as err:
            await self._fail("pin", f"cannot list QEMU's threads: {err.reason}", err)
        by_vcpu: dict[int, int] = {c["cpu-index"]: c["thread-id"] for c in cpus}
        by_io: dict[int, int] = {int(str(t["id"]).removeprefix("iothread")): t["thread-id"]
                                 for t in threads if str(t["id"]).startswith("iothread")}
        plan: list[tuple[str, int, frozenset[int]]] = []
        for index, allowed in sorted(vcpus.items()):
            if index in by_vcpu:
                plan.append((f"vCPU {index}", by_vcpu[index], allowed))
        for index, allowed in sorted(iothreads.items()):
            if index in by_io:
                plan.append((f"I/O thread {index}", by_io[index], allowed))
        if emulator is not None and self.pid is not None:
            special = {*by_vcpu.values(), *by_io.values()}
            try:
                tids = self.primitives.threads(self.pid)
            except OSError as err:
                await self._fail("pin", f"cannot list QEMU's threads: {err}", err)
            plan += [("emulator", tid, emulator) for tid in tids if tid not in special]
        for what, tid, allowed in plan:
            try:
                self.primitives.set_affinity(tid, allowed)
            except ProcessLookupError:
                continue  # a short-lived worker thread that ended meanwhile
            except OSError as err:
                await self._fail("pin", f"cannot pin the {what} thread to host CPUs "
                                 f"{','.join(map(str, sorted(allowed)))}: {err.strerror}", err)
        if plan:
            self._log("pinned " + "; ".join(
                f"{what} to {','.join(map(str, sorted(allowed)))}"
                for what, _, allowed in plan if what != "emulator")
                + ("; emulator threads" if emulator is not None else ""))

    def _mark(self, marker: str) -> None:
        """Touch `marker` in the runtime folder (a tiny write; a failure only loses the hint)."""
        with contextlib.suppress(OSError):
            (self.paths.vm_dir / marker).touch(mode=0o600)

    async def resume(self) -> None:
        """Let the guest run (QMP ``cont``); from now on exits go to ``on_exit``.

        On failure kills the process it launched, cleans up and raises `StartError`.
        """
        if self.phase is not Phase.ATTACHED:
            raise PhaseError(self.name, "resume()", self.phase.value)
        try:
            await self.execute("cont")
        except MonitorError as err:
            await self._fail("resume", f"'cont' failed: {err.reason}", err)
        self.run_state = "running"
        self._report_exit = True
        self.phase = Phase.ACTIVE
        self._mark(RAN_FILE)

    async def start(self) -> None:
        """Run prepare, launch, attach and resume; the guest is running on return.

        On any failure the process just launched (and only that one) is
        killed, the runtime folder removed, and `StartError` raised.
        """
        self.prepare()
        await self.launch()
        await self.attach()
        await self.resume()

    async def abort(self, reason: str, cause: BaseException | None = None) -> NoReturn:
        """Give up a start under way: kill what was launched, clean up, raise `StartError`."""
        await self._fail(self.phase.value, reason, cause)

    async def _fail(self, stage: str, reason: str, cause: BaseException | None = None) -> NoReturn:
        """Abort a start: kill our process if alive, await its exit, clean up, raise."""
        if self._exit_seen is not None and not self._exit_seen.done():
            self._log(f"stopping reason=start-failed: {reason}; sending SIGKILL")
            self._send_signal(signal.SIGKILL)
        if self._exit_done is not None:
            await asyncio.wait({self._exit_done}, timeout=self.timeouts.kill)
        self.cleanup()
        status = self.exit
        if status is not None:
            reason = f"{reason} ({status.describe()})"
        raise StartError(
            self.name,
            stage=stage,
            reason=reason,
            log_file=self.paths.log_file,
            pid=self.pid,
            returncode=status.returncode if status else None,
            signal=status.signal if status else None,
            qemu_message=self.qemu_output(),
        ) from cause

    # ---------------------------------------------------------------- adoption

    @classmethod
    async def adopt(
        cls,
        name: str,
        vm_uuid: str,
        paths: VmPaths,
        *,
        timeouts: Timeouts | None = None,
        primitives: Primitives | None = None,
        on_exit: Callable[[Exit], None] | None = None,
        on_event: Callable[[QmpEvent], None] | None = None,
        balloon: int | None = None,
    ) -> QemuProcess | None:
        """Take over the QEMU a previous qemud left running in ``paths.vm_dir``.

        A QEMU never resumed (``prelaunch``: its reconciler died before ``cont``) gets the rest
        of its start: the balloon target ``balloon`` (``<currentMemory>``) if given, then
        ``cont``.

        The pidfile's pid must be a live (non-zombie) ``qemu-system-*`` whose
        command line has ``-uuid <vm_uuid>`` (see `identify_qemu`).  If so,
        reconnects QMP, reads ``query-status`` and returns an ACTIVE wrapper.
        Otherwise the folder is stale: it is removed *without signalling
        anything* and None is returned.  A verified QEMU whose monitor does
        not answer is left alone and `AdoptError` is raised.  Once the pid is
        verified, its exit is reported through ``on_exit`` even if it happens
        during adoption; the wrapper is then returned EXITED.
        """
        self = cls(
            name, vm_uuid, [], paths,
            timeouts=timeouts, primitives=primitives, on_exit=on_exit, on_event=on_event,
        )
        if not paths.vm_dir.exists():
            return None
        pid = read_pidfile(paths.pidfile)
        if pid is None or identify_qemu(pid, self.uuid, paths.vm_dir) is not None:
            # no pidfile, or it names no QEMU of ours: is one alive all the same (its
            # reconciler killed before QEMU wrote the pidfile)? Then it is adopted, not lost.
            pid = find_qemu(self.uuid, self.paths.vm_dir) or pid
        pidfd: int | None = None
        problem: str | None
        if pid is None:
            problem = f"no valid pidfile {paths.pidfile} and no QEMU of this VM is running"
        else:
            try:
                # Open the pidfd first: if the pid is the same process after the
                # checks below, the checks were about the process the pidfd holds.
                pidfd = os.pidfd_open(pid)
            except OSError:
                problem = f"pid {pid} does not exist"
            else:
                problem = identify_qemu(pid, self.uuid, paths.vm_dir)
                if problem is None and pidfd_exited(pidfd):
                    problem = f"pid {pid} exited while being checked"
        if problem is not None:
            if pidfd is not None:
                os.close(pidfd)
            self._log(f"removing stale runtime folder {paths.vm_dir}: {problem}")
            remove_runtime_dir(paths.vm_dir)
            return None
        assert pid is not None
        assert pidfd is not None
        self._loop = asyncio.get_running_loop()
        self.argv = read_cmdline(pid) or []
        age = process_age(pid) or 0.0
        self._watch(
            pid, pidfd, is_child=is_our_child(pidfd), started_at=self.primitives.clock() - age
        )
        self._report_exit = True  # an exit from here on is the VM's, adopted or not yet
        try:
            client = await asyncio.wait_for(
                self.primitives.connect_qmp(paths.qmp_socket, name), self.timeouts.qmp
            )
        except (QMPError, OSError, TimeoutError) as err:
            if await self._exited_while_adopting(err):
                return self
            await self.detach()
            reason = f"its QMP socket {paths.qmp_socket} does not answer ({str(err) or 'timeout'})"
            raise AdoptError(name, pid=pid, socket=paths.qmp_socket, reason=reason) from err
        self._listen(client)
        try:
            status = await self.query_status()
        except MonitorError as err:
            if await self._exited_while_adopting(err):
                return self
            await self.detach()
            raise AdoptError(name, pid=pid, socket=paths.qmp_socket, reason=str(err)) from err
        if status.status == "guest-panicked":
            self._panicked = True
        elif status.status == "shutdown":
            self._shutdown_seen = True
        elif status.status == "prelaunch":
            # started paused (-S) by a reconciler that died before its `cont`: finish the start
            try:
                if balloon is not None:
                    await self.execute("balloon", {"value": balloon})
                await self.execute("cont")
            except MonitorError as err:
                if await self._exited_while_adopting(err):
                    return self
                await self.detach()
                raise AdoptError(name, pid=pid, socket=paths.qmp_socket,
                                 reason=f"it was never resumed and 'cont' failed: {err}") from err
            self.run_state = "running"
            self._log(f"adopting pid {pid}: resumed a QEMU that was never started (prelaunch)")
        self.phase = Phase.ACTIVE
        self._mark(RAN_FILE)
        self._log(f"adopted pid {pid} (run state {status.status})")
        return self

    async def _exited_while_adopting(self, err: BaseException) -> bool:
        """After a failed adoption step: True once the exit is handled if QEMU died meanwhile.

        A lost connection (not a timeout) is often QEMU going away: its pidfd says so a moment
        later, so that moment is waited for. The exit has reached ``on_exit`` on return.
        """
        assert self._exit_seen is not None
        if not isinstance(err, TimeoutError | MonitorTimeoutError):
            await asyncio.wait({self._exit_seen}, timeout=self.timeouts.monitor_eof)
        if not self._exit_seen.done():
            return False
        await self.wait()
        return True

    async def detach(self) -> None:
        """Let go of QEMU without stopping it: close QMP, stop watching the pid.

        The process keeps running and can be adopted later; nothing is
        signalled and the runtime folder is kept.  ``on_exit`` will not be
        called.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()
        await self._close_monitor()
        self._report_exit = False
        if self.phase is not Phase.EXITED:
            self.phase = Phase.DETACHED

    # ---------------------------------------------------------------- exit watching

    def _watch(self, pid: int, pidfd: int, *, is_child: bool, started_at: float) -> None:
        """Hold the process by ``pidfd``; `_finalize` runs once it has terminated."""
        assert self._loop is not None
        self.pid = pid
        self._proc = WatchedProcess(pid, pidfd, is_child=is_child, started_at=started_at,
                                    loop=self._loop)
        self._exit_seen = self._proc.exited
        self._exit_done = self._loop.create_future()
        self._exit_seen.add_done_callback(self._on_terminated)

    def _on_terminated(self, _: asyncio.Future[None]) -> None:
        """Loop callback: the process terminated (and was not let go); finish up in a task."""
        if self._loop is not None and self._proc is not None and self._exit_done is not None:
            self._finalizer = self._loop.create_task(self._finalize())

    async def _finalize(self) -> None:
        """Turn a terminated process into an `Exit`: reap, drain events, clean, report.

        Always resolves the exit future, even if a step fails.
        """
        assert self._exit_done is not None and self.pid is not None and self._proc is not None
        exit_info: Exit | None = None
        try:
            returncode, signum = self._proc.reap()
            at = self.primitives.wall_clock()
            uptime = max(0.0, self.primitives.clock() - self._proc.started_at)
            await self._drain_monitor()
            kind = classify_exit(
                requested_stop=self._requested_stop,
                shutdown_seen=self._shutdown_seen,
                shutdown_guest=self._shutdown_guest,
                panicked=self._panicked,
                returncode=returncode,
                signal=signum,
            )
            exit_info = Exit(
                pid=self.pid,
                returncode=returncode,
                signal=signum,
                kind=kind,
                at=at,
                uptime=uptime,
                shutdown_reason=self._shutdown_reason,
                shutdown_guest=self._shutdown_guest,
            )
            self._proc.close()
            self.cleanup()
            self._log(f"exited {exit_info.describe()} kind={kind.value}")
        finally:
            if exit_info is None:  # a step above failed: still report something
                exit_info = Exit(self.pid, None, None, ExitKind.CRASH, time.time(), 0.0)
                logger.error("VM %s: could not fully handle the exit of pid %s", self.name, self.pid)
            self.exit = exit_info
            self.phase = Phase.EXITED
            self.run_state = None
            if not self._exit_done.done():
                self._exit_done.set_result(exit_info)
        if self._report_exit and self._on_exit is not None:
            try:
                self._on_exit(exit_info)
            except Exception:
                logger.exception("VM %s: on_exit callback failed", self.name)

    async def wait(self) -> Exit:
        """Wait until QEMU has exited and been cleaned up; return how it ended."""
        if self.exit is not None:
            return self.exit
        if self._exit_done is None or self.phase is Phase.DETACHED:
            raise PhaseError(self.name, "wait()", self.phase.value)
        return await asyncio.shield(self._exit_done)

    async def _wait_exit(self, timeout: float, *, hurry: asyncio.Event | None = None) -> bool:
        """Wait up to ``timeout`` s for the exit to be fully handled; True if it was.

        Returns early (False) once ``hurry`` is set.
        """
        if self._exit_done is None:
            return True
        waits: set[asyncio.Future[Any]] = {self._exit_done}
        hurried: asyncio.Future[Any] | None = None
        if hurry is not None:
            hurried = asyncio.ensure_future(hurry.wait())
            waits.add(hurried)
        try:
            await asyncio.wait(waits, timeout=max(0.0, timeout),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if hurried is not None:
                hurried.cancel()
        return self._exit_done.done()

    def _send_signal(self, signum: int) -> bool:
        """Signal our process through its pidfd; False if it is already gone or unknown."""
        return self._proc is not None and self._proc.signal(signum)

    # ---------------------------------------------------------------- QMP

    def _listen(self, client: QMPClient) -> None:
        """Make ``client`` our monitor; its lifecycle events go to `_handle_event`."""
        self._monitor = Monitor(self.name, self.paths.qmp_socket, client,
                                timeout=self.timeouts.qmp, on_message=self._handle_event)

    def _handle_event(self, message: Message) -> None:
        """Record one QMP event's effect on the exit classification and run state."""
        name = str(message.get("event", ""))
        raw_data = message.get("data")
        data: Mapping[str, object] = raw_data if isinstance(raw_data, Mapping) else {}
        if name == "SHUTDOWN":
            self._shutdown_seen = True
            self._shutdown_guest = bool(data.get("guest", False))
            self._shutdown_reason = str(data.get("reason", "")) or None
            self._log(
                f"event SHUTDOWN guest={str(self._shutdown_guest).lower()} "
                f"reason={self._shutdown_reason}"
            )
        elif name == "GUEST_PANICKED":
            self._panicked = True
            self._log(f"event GUEST_PANICKED action={data.get('action')}")
        elif name == "STOP":
            self.run_state = "paused"
            if self._loop is not None and self.phase is Phase.ACTIVE:
                # STOP says nothing of why: QEMU's run state does (io-error, internal-error, ...)
                self._loop.create_task(self._refresh_run_state())
        elif name == "RESUME":
            self.run_state = "running"
        if name in LIFECYCLE_EVENTS and self._on_event is not None:
            try:
                self._on_event(QmpEvent(name, dict(data), self.primitives.wall_clock()))
            except Exception:
                logger.exception("VM %s: on_event callback failed", self.name)

    async def _refresh_run_state(self) -> None:
        """Read QEMU's run state after a STOP (it says why: io-error, internal-error, ...).

        Best effort: a monitor that does not answer leaves the state at ``paused``. Tells
        ``on_event`` again so the status shows the reason at once.
        """
        with contextlib.suppress(MonitorError):
            status = await self.query_status()
            if status.status not in ("paused", "running") and self._on_event is not None:
                self._log(f"paused by QEMU: {status.status}")
                with contextlib.suppress(Exception):
                    self._on_event(QmpEvent("STOP", {"status": status.status},
                                            self.primitives.wall_clock()))

    async def _drain_monitor(self) -> None:
        """After exit: read the monitor to EOF (bounded), handle the last events, close it."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            await monitor.drain(self.timeouts.monitor_eof)

    async def _close_monitor(self) -> None:
        """Stop event handling (processing what is queued) and disconnect QMP."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            await monitor.close()

    def _connected_monitor(self, command: str) -> Monitor:
        """Our monitor, or `MonitorError` naming ``command`` when there is none."""
        if self._monitor is None:
            raise MonitorError(self.name, command=command, socket=self.paths.qmp_socket,
                               reason="monitor not connected")
        return self._monitor

    async def execute(
        self, command: str, arguments: Mapping[str, object] | None = None,
        *, timeout: float | None = None,
    ) -> object:
        """Run one QMP command and return its result, within `Timeouts.qmp` (or ``timeout``).

        Raises `MonitorTimeoutError` if QEMU does not answer in time (e.g. it is
        SIGSTOPped) and `MonitorError` if it answers with an error (carrying
        QEMU's message and error class) or the connection is gone.
        """
        return await self._connected_monitor(command).execute(command, arguments,
                                                              timeout=timeout)

    async def query_status(self) -> RunStatus:
        """QEMU's run state via ``query-status``; also refreshes `run_state`."""
        status = await self._connected_monitor("query-status").query_status()
        self.run_state = status.status
        return status

    async def query_vnc(self) -> VncInfo | None:
        """The VNC server's address via ``query-vnc``; None if the VM has no VNC display."""
        return await self._connected_monitor("query-vnc").query_vnc()

    # ---------------------------------------------------------------- stopping

    async def stop(self, *, reason: str, shutdown_timeout: float, graceful: bool = True) -> Exit:
        """Stop QEMU and return its `Exit` (kind STOPPED unless it died otherwise first).

        Steps, each logged with ``reason`` and skipped once QEMU is gone:
        QMP ``system_powerdown`` then wait ``shutdown_timeout`` s for the guest
        (skipped if not ``graceful``); QMP ``quit`` then wait `Timeouts.quit`;
        SIGTERM (+SIGCONT, so a stopped QEMU can act on it) then wait
        `Timeouts.term`; SIGKILL then wait `Timeouts.kill`.  A monitor that
        does not answer in `Timeouts.qmp` is given up on and signals follow.
        Raises `StopError` if QEMU survives SIGKILL.  Concurrent calls share
        one stop; a call that is not ``graceful`` cuts short the ACPI wait of
        one under way (``reconcile stop --force`` during a graceful stop).
        """
        if self.exit is not None:
            return self.exit
        if self._exit_done is None or self.phase is Phase.DETACHED:
            raise PhaseError(self.name, "stop()", self.phase.value)
        if self._hurry is None:
            self._hurry = asyncio.Event()
        if not graceful:
            self._hurry.set()
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop(reason, shutdown_timeout, graceful)
            )
        return await asyncio.shield(self._stop_task)

    async def _stop(self, reason: str, shutdown_timeout: float, graceful: bool) -> Exit:
        """The stop sequence behind `stop`."""
        self._requested_stop = True
        self.phase = Phase.STOPPING
        self._mark(STOP_FILE)
        monitor_ok = self._monitor_connected()
        if graceful and monitor_ok:
            self._log(
                f"stopping reason={reason}: system_powerdown, waiting up to "
                f"{shutdown_timeout:g}s for the guest to power off"
            )
            try:
                await self.execute("system_powerdown")
            except MonitorTimeoutError as err:
                self._log(f"stopping reason={reason}: {err.reason}; giving up on QMP")
                monitor_ok = False
            except MonitorError as err:
                self._log(f"stopping reason={reason}: system_powerdown failed: {err.reason}")
            else:
                if await self._wait_exit(shutdown_timeout, hurry=self._hurry):
                    return self._stopped()
                self._log(
                    f"stopping reason={reason}: guest did not power off within "
                    f"{shutdown_timeout:g}s" if not (self._hurry and self._hurry.is_set())
                    else f"stopping reason={reason}: forced: not waiting for the guest"
                )
        if monitor_ok and self._monitor_connected() and not self._exit_seen_done():
            self._log(f"stopping reason={reason}: quit")
            try:
                await self.execute("quit")
            except MonitorTimeoutError as err:
                self._log(f"stopping reason={reason}: {err.reason}; giving up on QMP")
            except MonitorError as err:
                # The reply is often lost because QEMU exits right away.
                if await self._wait_exit(self.timeouts.quit):
                    return self._stopped()
                self._log(f"stopping reason={reason}: quit failed: {err.reason}")
            else:
                if await self._wait_exit(self.timeouts.quit):
                    return self._stopped()
                self._log(
                    f"stopping reason={reason}: still running {self.timeouts.quit:g}s after quit"
                )
        if await self._wait_exit(0):
            return self._stopped()
        self._log(f"stopping reason={reason}: SIGTERM")
        if self._send_signal(signal.SIGTERM):
            self._send_signal(signal.SIGCONT)
        if await self._wait_exit(self.timeouts.term):
            return self._stopped()
        self._log(
            f"stopping reason={reason}: still running {self.timeouts.term:g}s after SIGTERM; "
            "SIGKILL"
        )
        self._send_signal(signal.SIGKILL)
        if await self._wait_exit(self.timeouts.kill):
            return self._stopped()
        assert self.pid is not None
        raise StopError(self.name, pid=self.pid, waited=self.timeouts.kill)

    def _monitor_connected(self) -> bool:
        """True if a QMP session is up (not closed by QEMU or by us)."""
        return self._monitor is not None and self._monitor.connected

    def _exit_seen_done(self) -> bool:
        """True once the process has terminated (even if not yet finalized)."""
        return self._exit_seen is not None and self._exit_seen.done()

    def _stopped(self) -> Exit:
        """The final `Exit` once `_wait_exit` confirmed it."""
        assert self.exit is not None
        return self.exit

    # ---------------------------------------------------------------- cleanup

    def _close_listener(self) -> None:
        """Close our copy of the QMP listening socket (QEMU keeps its own); idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def cleanup(self) -> None:
        """Remove the runtime folder (QMP socket, pidfile, the folder itself).

        Idempotent.  Refuses (does nothing) while the process is still alive,
        so a live QEMU never loses its pidfile.
        """
        self._close_listener()
        if self._proc is not None and self._proc.alive():
            logger.warning("VM %s: not cleaning %s: QEMU still alive", self.name, self.paths.vm_dir)
            return
        remove_runtime_dir(self.paths.vm_dir)

