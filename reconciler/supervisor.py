"""The supervisor: the VMs qemud owns, one worker per VM, and the process layer they drive.

Like the kubelet's pod workers, each uuid has at most one worker task, which serialises that
VM's adopt, start and stop. `deliver()` hands each worker the latest action the planner decided
for its uuid; a worker that is busy keeps only the newest undelivered action (or none, if the
latest plan has none) and runs it when its operation ends, so a stop is never "held" and a VM
being torn down is never started again before its teardown has finished. Exits arrive through
the process layer's callback (a pidfd under it) and are folded into `History` at once.

The process layer (`ProcessLayer`) is the only side-effecting part: the real one wraps
`QemuProcess`; the stateful tests use a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import model
from model.firmware import choose as choose_firmware
from model.memory import needs_hugepages
from reconciler import hugepages, memlock, sidecars, uefi
from reconciler.desired import Desired, Identify, Owned, Want
from reconciler.errors import AdoptError, MonitorError, ReconcilerError, StartError
from reconciler.history import History
from reconciler.paths import Layout, ensure_private_dir
from reconciler.plan import Action, Adopt, Live, Phase, Start, Stop, claims
from reconciler.policy import ExitKind
from reconciler.qemu import (
    Exit,
    Primitives,
    QemuProcess,
    QmpEvent,
    Timeouts,
    VncInfo,
    process_age,
)
from reconciler.vmlog import VmLog

START_GRACE = 15.0
"""Seconds a reconciler that exits (SIGTERM, end of --once or of a verb) lets starts under way
finish, so that no guest is left paused between QEMU's launch and its `cont`."""
ADOPT_RETRY = 30.0
"""Seconds before trying again to adopt a QEMU whose monitor did not answer."""

DEFINITION_FILE = "domain.xml"
"""Copy of the definition a VM runs, in its runtime folder (like libvirt's status XML)."""
SOURCE_FILE = "source"
"""The path of the domain file a VM was started from, in its runtime folder."""
RESTART_FILE = "restart-pending"
SOURCE_INODE_FILE = "source-inode"
"""The inode of the domain file a VM was started from: a fresh reconciler knows that file after
a rename (an invalid file then keeps the definition in use)."""
"""In a VM's runtime folder while a user's reboot or restart waits for the guest to power off:
the next reconciler knows that power-off is qemud's doing (like libvirt's fake-reboot flag)."""

EXIT_MESSAGES = {
    ExitKind.POWEROFF: "the guest powered itself off",
    ExitKind.HOST_SHUTDOWN: "QEMU was shut down from outside qemud",
    ExitKind.CRASH: "QEMU crashed or was killed",
    ExitKind.PANIC: "the guest kernel panicked",
    ExitKind.STOPPED: "stopped by qemud",
}


# --------------------------------------------------------------------------- the process layer


class Handle(Protocol):
    """A live QEMU the process layer started or adopted."""

    @property
    def pid(self) -> int | None:
        """Its process id."""

    @property
    def run_state(self) -> str | None:
        """QEMU's last known run state (running, paused, prelaunch, ...)."""

    async def stop(self, *, reason: str, shutdown_timeout: float, graceful: bool = True) -> Exit:
        """Stop it (powerdown, quit, SIGTERM, SIGKILL); the exit callback fires too."""

    async def detach(self) -> None:
        """Let go of it without stopping it."""

    async def query_vnc(self) -> VncInfo | None:
        """Where its VNC server listens, if it has one."""

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      *, timeout: float | None = None) -> object:
        """Run one QMP command (`MonitorError` when it fails or no monitor answers)."""


ExitCallback = Callable[[Exit], None]
EventCallback = Callable[[QmpEvent], None]


class ProcessLayer(Protocol):
    """Everything the supervisor does to processes and runtime folders."""

    async def start(self, uuid: uuidlib.UUID, domain: model.Domain, file: Path | None,
                    on_exit: ExitCallback, on_event: EventCallback) -> Handle:
        """Start a VM and let it run; raises `StartError` (nothing left running) on failure.

        The definition and its file are persisted in the runtime folder before QEMU is
        launched, so a reconciler killed at any later instant leaves them to the next one.
        """

    async def adopt(self, uuid: uuidlib.UUID, name: str, on_exit: ExitCallback,
                    on_event: EventCallback) -> Handle | None:
        """Take over the QEMU of a runtime folder; None if the folder was stale (removed).

        Raises `AdoptError` for a live QEMU of this VM whose monitor does not answer.
        """

    def runtime_folders(self) -> list[uuidlib.UUID]:
        """The uuids that have a runtime folder."""

    def save_definition(self, uuid: uuidlib.UUID, domain: model.Domain, file: Path | None) -> None:
        """Persist the definition a VM runs and its file (raises OSError)."""

    def load_definition(self, uuid: uuidlib.UUID) -> tuple[model.Domain | None, Path | None]:
        """What `save_definition` persisted; (None, None) when missing or unreadable."""

    def source_inode(self, uuid: uuidlib.UUID) -> int | None:
        """The inode its domain file had when `save_definition` ran (a rename keeps it)."""

    def age(self, pid: int) -> float | None:
        """Seconds since process `pid` started, if known."""

    def mark_restart(self, uuid: uuidlib.UUID, pending: bool) -> None:
        """Record (or clear) a pending reboot/restart in the runtime folder (raises OSError)."""

    def restart_marked(self, uuid: uuidlib.UUID) -> bool:
        """Whether a pending reboot/restart is recorded for `uuid`."""


@dataclass
class QemuLayer:
    """The real process layer: `QemuProcess` in the layout's runtime folders."""

    layout: Layout
    timeouts: Timeouts | None = None
    primitives: Primitives | None = None

    async def start(self, uuid: uuidlib.UUID, domain: model.Domain, file: Path | None,
                    on_exit: ExitCallback, on_event: EventCallback) -> Handle:
        """Start QEMU for `domain` (the stages of `QemuProcess.start`), persisting it first."""
        paths = self.layout.vm(domain.name, str(uuid))
        huge = await asyncio.to_thread(hugepages.host) if needs_hugepages(domain) else None
        runtime = model.Runtime(paths.qmp_socket, paths.pidfile, paths.console_log,
                                state_dir=self.layout.state_dir(str(uuid)), hugepages=huge)
        firmware = uefi.descriptors() if model.uses_uefi(domain) else None
        cpus = model.host_cpus(domain)
        usable = os.sched_getaffinity(0)
        pins = [("<vcpu cpuset>", cpus)]
        if domain.cputune is not None:
            tune = domain.cputune
            pins += [(f"<vcpupin vcpu='{v}'>", c) for v, c in tune.vcpupins]
            pins += [("<emulatorpin>", tune.emulatorpin)]
            pins += [(f"<iothreadpin iothread='{t}'>", c) for t, c in tune.iothreadpins]
        for what, wanted in pins:
            if wanted is not None and not wanted <= usable:
                missing = ",".join(str(c) for c in sorted(wanted - usable))
                raise StartError(domain.name, stage="prepare", log_file=paths.log_file,
                                 reason=f"{what} names host CPUs {missing}, which qemud may "
                                 f"not use here (it may use {_cpu_list(usable)}); fix the cpuset")
        cars: list[sidecars.Running] = []  # sidecars: stopped once QEMU has exited
        on_exit = sidecars.after(cars, on_exit)
        started, absent = await asyncio.to_thread(model.without_missing, domain, os.path.exists)
        for disk in absent:  # startupPolicy='optional': the drive starts empty, as libvirt
            VmLog(paths.log_file, domain.name, time.time).write(
                f"{disk.target_dev}: {disk.source} is missing; startupPolicy='optional': "
                "starting with the drive empty")
        try:  # hugepages the host has not mounted or reserved: refused before QEMU runs
            argv = model.command_line(started, runtime, firmware)
        except model.RenderError as exc:
            raise StartError(domain.name, stage="prepare", log_file=paths.log_file,
                             reason=str(exc)) from exc
        unlockable = memlock.problem(domain)
        if unlockable is not None:  # <locked/>: QEMU would exit with "locking memory failed"
            raise StartError(domain.name, stage="prepare", log_file=paths.log_file,
                             reason=unlockable)
        proc = QemuProcess(domain.name, str(uuid), argv, paths,
                           timeouts=self.timeouts, primitives=self.primitives,
                           on_exit=on_exit, on_event=on_event, cpus=cpus,
                           env=model.environment(domain))
        try:
            proc.prepare()
        except OSError as exc:  # e.g. a full /run: a failed start, reported and retried
            raise StartError(domain.name, stage="prepare", log_file=paths.log_file,
                             reason=f"cannot prepare {paths.vm_dir}: {exc}") from exc
        try:
            choice = choose_firmware(domain, firmware, runtime.state_dir)
            if choice is not None:
                uefi.ensure_vars(choice)
            self.save_definition(uuid, domain, file)
        except OSError as exc:
            proc.cleanup()
            raise StartError(domain.name, stage="prepare", log_file=paths.log_file,
                             reason=f"cannot prepare its runtime or state folder: {exc}"
                             ) from exc
        # ---- sidecars (reconciler/sidecars.py): up, sockets listening, before QEMU launches
        try:
            cars += await asyncio.to_thread(self._start_sidecars, domain, runtime, paths.log_file)
        except (OSError, sidecars.SidecarError) as exc:
            proc.cleanup()
            raise StartError(domain.name, stage="prepare", log_file=paths.log_file,
                             reason=f"a helper process did not start: {exc}") from exc
        # ---- end sidecars
        try:
            await proc.launch()
            await proc.attach()
            target = model.balloon_target(domain)
            if target is not None:  # <currentMemory>: set before the guest runs, as libvirt does
                await proc.set_balloon(target)
            if domain.cputune is not None:  # <cputune> pins, before the guest runs, as libvirt
                await proc.pin(dict(domain.cputune.vcpupins), dict(domain.cputune.iothreadpins),
                               domain.cputune.emulatorpin)
            await proc.resume()
        except StartError:
            sidecars.stop(cars)  # sidecars: QEMU is gone already
            raise  # what was launched is gone already
        except Exception as exc:  # never leave a launched QEMU behind, paused and monitored
            try:
                await proc.abort(f"unexpected error: {exc!r}", exc)
            finally:
                sidecars.stop(cars)  # sidecars
        sidecars.watch(cars, VmLog(paths.log_file, domain.name, time.time))  # sidecars
        return proc

    @staticmethod
    def _start_sidecars(domain: model.Domain, runtime: model.Runtime,
                        log_file: Path) -> list[sidecars.Running]:
        """Start the sidecars of `domain`, their output into the VM log (blocking)."""
        if not sidecars.specs(domain, runtime):
            return []
        log_fd = sidecars.open_log(log_file)
        try:
            return sidecars.start_all(domain, runtime, log_fd)
        finally:
            os.close(log_fd)

    async def adopt(self, uuid: uuidlib.UUID, name: str, on_exit: ExitCallback,
                    on_event: EventCallback) -> Handle | None:
        """Adopt the QEMU of `uuid`'s runtime folder (see `QemuProcess.adopt`), and its sidecars."""
        domain, _ = self.load_definition(uuid)
        cars: list[sidecars.Running] = []  # sidecars: found from their pidfiles, stopped with QEMU
        on_exit = sidecars.after(cars, on_exit)
        handle = await QemuProcess.adopt(name, str(uuid), self.layout.vm(name, str(uuid)),
                                         timeouts=self.timeouts, primitives=self.primitives,
                                         on_exit=on_exit, on_event=on_event,
                                         balloon=model.balloon_target(domain) if domain else None)
        folder = self.layout.vm_dir(str(uuid))
        stopped: list[int] = []
        if (handle is not None and domain is not None  # ---- sidecars (not after a cleanup)
                and folder.is_dir()):
            runtime = model.Runtime(self.layout.qmp_socket(str(uuid)),
                                    self.layout.pidfile(str(uuid)), Path(os.devnull),
                                    state_dir=self.layout.state_dir(str(uuid)))
            # a live QEMU's sidecars are its own, pidfile or not: adopted, never stopped here
            found, missing = await asyncio.to_thread(sidecars.adopt_all, domain, runtime)
            cars += found
            log = VmLog(self.layout.log_file(name), name, time.time)
            for car in missing:
                log.write(f"the sidecar for {car} is not running (adopted QEMU without it); "
                          "restart the VM (reconcile restart NAME) to get it back")
            sidecars.watch(found, log)
        elif handle is None:  # a stale folder: what a start interrupted before QEMU ran goes too
            stopped = await asyncio.to_thread(sidecars.stop_strays, folder)
        for pid in stopped:
            VmLog(self.layout.log_file(name), name, time.time).write(sidecars.stray_line(pid))
        return handle

    def runtime_folders(self) -> list[uuidlib.UUID]:
        """Entries of the run directory named by a canonical uuid."""
        try:
            names = os.listdir(self.layout.run_dir)
        except FileNotFoundError:
            return []
        return [uuidlib.UUID(n) for n in names if is_runtime_folder(n)]

    def save_definition(self, uuid: uuidlib.UUID, domain: model.Domain, file: Path | None) -> None:
        """Write the definition into the runtime folder (raises OSError), a copy into the state.

        The copy outlives the run: a VM that crashed while no reconciler ran, whose file is
        invalid now, is restarted from it once its runtime folder is gone (best effort: a
        failure to write it does not fail the start).
        """
        _write_definition(self.layout.vm_dir(str(uuid)), domain, file)
        with contextlib.suppress(OSError, ReconcilerError):
            state = self.layout.state_dir(str(uuid))
            ensure_private_dir(state)
            _write_definition(state, domain, file)

    def source_inode(self, uuid: uuidlib.UUID) -> int | None:
        """The inode recorded in `source-inode` (see `save_definition`), if readable."""
        for folder in self._definition_folders(uuid):
            with contextlib.suppress(OSError, ValueError):
                return int((folder / SOURCE_INODE_FILE).read_bytes())
        return None

    def load_source(self, uuid: uuidlib.UUID) -> Path | None:
        """The domain file recorded in `uuid`'s runtime folder (`source`), if readable."""
        with contextlib.suppress(OSError):
            raw = (self.layout.vm_dir(str(uuid)) / SOURCE_FILE).read_bytes()
            return Path(os.fsdecode(raw)) if raw else None
        return None

    def load_definition(self, uuid: uuidlib.UUID) -> tuple[model.Domain | None, Path | None]:
        """Read back `domain.xml` and `source`: the runtime folder's, else the state copy.

        Anything unreadable counts as missing.
        """
        for folder in self._definition_folders(uuid):
            domain: model.Domain | None = None
            with contextlib.suppress(model.ModelError):
                domain = model.parse_file(folder / DEFINITION_FILE).domain
            if domain is None:
                continue
            file: Path | None = None
            with contextlib.suppress(OSError):
                raw = (folder / SOURCE_FILE).read_bytes()
                file = Path(os.fsdecode(raw)) if raw else None
            return domain, file
        return None, None

    def _definition_folders(self, uuid: uuidlib.UUID) -> tuple[Path, Path]:
        """Where a definition is persisted: the runtime folder, then the state folder."""
        return self.layout.vm_dir(str(uuid)), self.layout.state_dir(str(uuid))

    def age(self, pid: int) -> float | None:
        """Process age from /proc."""
        return process_age(pid)

    def mark_restart(self, uuid: uuidlib.UUID, pending: bool) -> None:
        """Create or remove `restart-pending` in the runtime folder (gone with it on exit)."""
        marker = self.layout.vm_dir(str(uuid)) / RESTART_FILE
        if pending:
            marker.touch(mode=0o600)
        else:
            marker.unlink(missing_ok=True)

    def restart_marked(self, uuid: uuidlib.UUID) -> bool:
        """Whether `restart-pending` is in the runtime folder."""
        return (self.layout.vm_dir(str(uuid)) / RESTART_FILE).exists()


def _write_definition(folder: Path, domain: model.Domain, file: Path | None) -> None:
    """`domain.xml`, `source` and `source-inode` in `folder` (atomic rename, no fsync)."""
    from reconciler.status import write_atomic
    write_atomic(folder / DEFINITION_FILE, model.to_xml(domain), durable=False)
    write_atomic(folder / SOURCE_FILE, os.fsencode(str(file or "")), durable=False)
    inode = b""
    with contextlib.suppress(OSError):
        inode = str(os.stat(file).st_ino).encode() if file is not None else b""
    write_atomic(folder / SOURCE_INODE_FILE, inode, durable=False)


def _cpu_list(cpus: Iterable[int]) -> str:
    """Host CPU numbers as libvirt writes a cpuset: ``0-3,6``."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and "-" not in out[-1] and int(out[-1]) == cpu - 1:
            out[-1] = f"{out[-1]}-{cpu}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == cpu - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


def is_runtime_folder(name: str) -> bool:
    """Whether a run-directory entry is a VM's runtime folder (named by its canonical uuid).

    Everything else there (locks, exits.json and its temporary files) is the reconciler's own
    bookkeeping.
    """
    try:
        return str(uuidlib.UUID(name)) == name
    except ValueError:
        return False


# --------------------------------------------------------------------------- the supervisor


@dataclass(eq=False)
class Vm:
    """One VM the supervisor owns, from the moment a worker starts or adopts it until it exits."""

    name: str
    domain: model.Domain | None
    file: Path | None
    started_at: float
    phase: Phase = "starting"
    """starting, running (see `Supervisor.phase`), stopping or unresponsive."""
    handle: Handle | None = None
    pid: int | None = None
    vnc: str | None = None
    stop_reason: str | None = None
    retry_at: float | None = None
    """For an unresponsive VM: when to try adopting it again."""
    exited: bool = False
    latest: model.Domain | None = None
    """The newest valid definition of its file (it may differ only where no restart is needed,
    or be pending): its shutdown timeout applies when the VM is stopped after the file is gone."""


@dataclass
class _Worker:
    """The one task that acts on one uuid, and the newest action waiting for it.

    `requests` are one-shot user operations (power verbs), run in order before the pending
    action; each resolves its future with the operation's result or exception.
    """

    pending: Action | None = None
    task: asyncio.Task[None] | None = None
    operations: int = 0
    requests: list[tuple[Callable[[], Awaitable[object]], asyncio.Future[object]]] = field(
        default_factory=list)
    current: Action | None = None
    """The action being carried out right now, if any."""


@dataclass
class Supervisor:
    """Owns the live VMs and their workers; carries out the planner's actions.

    All methods run on one event loop. `say` gets one human line per event; `wake` asks for a
    pass; `wake_at` for a pass at a wall-clock time; `clock` is wall-clock time.
    """

    layer: ProcessLayer
    history: History
    clock: Callable[[], float]
    say: Callable[[str], None]
    wake: Callable[[], None]
    wake_at: Callable[[float], None]
    identify: Identify = os.path.normpath
    vms: dict[uuidlib.UUID, Vm] = field(default_factory=dict)
    desired: Desired = field(default_factory=lambda: Desired({}))
    forced: set[uuidlib.UUID] = field(default_factory=set)
    """VMs whose next (or current) stop skips the ACPI wait (`reconcile stop --force`)."""
    rebooting: set[uuidlib.UUID] = field(default_factory=set)
    """VMs whose next exit is a reboot's power-off: qemud's doing, started again at once."""
    restarting: set[uuidlib.UUID] = field(default_factory=set)
    """VMs a user's restart or reboot is bringing back (from its stop until it runs again)."""
    incumbents: dict[uuidlib.UUID, Owned] = field(default_factory=dict)
    """VMs that do not run right now but come back as they were: crashed and due a restart by
    policy, or stopped by a user's restart or reboot. Until they run again they keep what an
    owned VM keeps: their definition (when their file is invalid now), their file's place in
    a name or uuid clash and their writable disks, so nothing else takes them meanwhile."""
    _workers: dict[uuidlib.UUID, _Worker] = field(default_factory=dict)
    _change: asyncio.Event | None = None

    # ------------------------------------------------------------------ views

    def owned(self) -> dict[uuidlib.UUID, Owned]:
        """Every owned VM as the desired set sees it, and the incumbents (not live)."""
        out = {u: Owned(u, vm.name, vm.file, vm.domain) for u, vm in self.vms.items()}
        for uuid, own in self.incumbents.items():
            out.setdefault(uuid, own)
        return out

    def running_files(self) -> dict[uuidlib.UUID, Path]:
        """The file each owned VM (or incumbent) was started from, by uuid.

        Clash winners keep their place, also while they are being restarted.
        """
        files = {u: vm.file for u, vm in self.vms.items() if vm.file is not None}
        for uuid, own in self.incumbents.items():
            if own.file is not None:
                files.setdefault(uuid, own.file)
        return files

    def phase(self, vm: Vm) -> Phase:
        """The planner's phase of a VM: paused when QEMU says its vCPUs do not run."""
        if vm.phase != "running":
            return vm.phase
        state = vm.handle.run_state if vm.handle is not None else None
        return "running" if state in (None, "running") else "paused"

    def live(self) -> dict[uuidlib.UUID, Live]:
        """The planner's view of every owned VM."""
        return {u: self.live_of(u, vm) for u, vm in self.vms.items()}

    def live_of(self, uuid: uuidlib.UUID, vm: Vm) -> Live:
        """The planner's view of one owned VM."""
        return Live(uuid, vm.name, vm.pid or 0, self.phase(vm), vm.domain, vm.file)

    def orphans(self) -> frozenset[uuidlib.UUID]:
        """Runtime folders that no owned VM accounts for (to adopt before planning)."""
        return frozenset(u for u in self.layer.runtime_folders()
                         if u not in self.vms and not self.busy(u))

    def retry_adoptions(self) -> None:
        """Try again to adopt each unresponsive VM that is due, by its worker, without waiting.

        A QEMU whose monitor hangs may take the whole QMP timeout to fail again: the pass does
        not wait for that. The VM stays registered as unresponsive meanwhile, so its uuid,
        name, file and disks stay claimed.
        """
        now = self.clock()
        for uuid, vm in list(self.vms.items()):
            if vm.phase == "unresponsive" and (vm.retry_at or 0.0) <= now and not self.busy(uuid):
                self._dispatch(uuid, Adopt(uuid))

    def busy(self, uuid: uuidlib.UUID) -> bool:
        """Whether a worker is acting on `uuid` right now."""
        worker = self._workers.get(uuid)
        return worker is not None and worker.task is not None

    @property
    def working(self) -> bool:
        """Whether any worker is acting."""
        return any(w.task is not None for w in self._workers.values())

    def operations(self, uuid: uuidlib.UUID) -> int:
        """How many operations the worker of `uuid` has finished (for tests)."""
        worker = self._workers.get(uuid)
        return worker.operations if worker else 0

    def follow(self, desired: Desired) -> None:
        """Adopt what the desired set says about owned VMs: the file each is wanted by now.

        A VM whose definition moved to another file (a rename, or its old file now defines
        another domain while a second file still defines it) belongs to that file from now
        on, so its old file's new identity is not kept waiting for it. Persisted for restarts.
        """
        self.desired = desired
        for uuid, own in list(self.incumbents.items()):
            want = desired.wants.get(uuid)
            ended = self.history.ended.get(uuid)
            if (uuid in self.vms or want is None or not want.running
                    or (uuid not in self.restarting and (ended is None or ended.held))):
                del self.incumbents[uuid]  # running again, gone, wanted stopped or given up
            elif want.kept is None and want.file != own.file:
                self.incumbents[uuid] = replace(own, file=want.file)
        for uuid, vm in self.vms.items():
            want = desired.wants.get(uuid)
            if want is not None and want.kept is None:
                vm.latest = want.domain
            if want is None or want.kept is not None or want.file == vm.file or vm.domain is None:
                continue  # a kept definition never moves a VM to another file
            vm.file = want.file
            try:
                self.layer.save_definition(uuid, vm.domain, want.file)
            except OSError as exc:
                self.say(f"{vm.name}: cannot record its new domain file {want.file} in its "
                         f"runtime folder ({exc})")

    # ------------------------------------------------------------------ delivering work

    async def adopt_all(self, uuids: Iterable[uuidlib.UUID]) -> None:
        """Adopt the QEMUs of these runtime folders (each by its worker); wait until done."""
        tasks = [self._dispatch(u, Adopt(u)) for u in uuids]
        if tasks:
            await asyncio.gather(*(asyncio.shield(t) for t in tasks if t is not None))

    def deliver(self, actions: Iterable[Action], desired: Desired) -> None:
        """Give each worker the latest Start or Stop for its uuid (see the module doc).

        A busy worker whose uuid has no action in this plan loses its pending Start or Stop:
        the newest plan is the only work that is ever delivered.
        """
        self.desired = desired
        work: dict[uuidlib.UUID, Action] = {}
        for action in actions:
            if isinstance(action, Start | Stop):
                work.setdefault(action.uuid, action)  # one per uuid; a Stop is never displaced
        for uuid, worker in self._workers.items():
            if worker.task is not None and uuid not in work and not isinstance(
                    worker.pending, Adopt):  # an adoption is not the plan's to withdraw
                worker.pending = None
        for uuid, action in work.items():
            self._dispatch(uuid, action)

    def submit(self, uuid: uuidlib.UUID, operation: Callable[[], Awaitable[object]]
               ) -> asyncio.Future[object]:
        """Run `operation` in `uuid`'s worker after its current operation; its outcome.

        Serialised with the starts, stops and adoptions of that uuid; an exception of the
        operation is the future's (the caller reports it), never the worker's.
        """
        worker = self._workers.setdefault(uuid, _Worker())
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        worker.requests.append((operation, future))
        if worker.task is None:
            worker.task = asyncio.get_running_loop().create_task(self._work(uuid, worker))
        return future

    async def execute(self, uuid: uuidlib.UUID, command: str) -> object:
        """Run one QMP command on `uuid`'s live QEMU (`MonitorError` when it is not live)."""
        vm = self.vms.get(uuid)
        if vm is None or vm.handle is None:
            raise MonitorError(vm.name if vm else str(uuid), command=command,
                               socket=Path("-"), reason="the VM is not running")
        return await vm.handle.execute(command)

    async def stop_now(self, uuid: uuidlib.UUID, reason: str) -> None:
        """Stop `uuid`'s VM as a Stop action would (run it in the worker: `submit`)."""
        vm = self.vms.get(uuid)
        if vm is not None:
            await self._stop(uuid, Stop(uuid, vm.name, reason))

    def mark_restart(self, uuid: uuidlib.UUID) -> None:
        """A user's reboot or restart is pending: the VM's next power-off is qemud's doing.

        Recorded in its runtime folder too, so a daemon restarted meanwhile still starts the VM
        again when the guest powers off (instead of taking that for the guest's own decision).
        """
        self.rebooting.add(uuid)
        self._record_restart(uuid, True)

    def unmark_restart(self, uuid: uuidlib.UUID) -> None:
        """The pending reboot is called off: a later power-off is the guest's own again."""
        self.rebooting.discard(uuid)
        self._record_restart(uuid, False)

    def _record_restart(self, uuid: uuidlib.UUID, pending: bool) -> None:
        """Write (or remove) the pending restart in the runtime folder; a failure is said."""
        try:
            self.layer.mark_restart(uuid, pending)
        except OSError as exc:
            self.say(f"cannot {'record' if pending else 'remove'} the pending restart of {uuid} "
                     f"in its runtime folder ({exc})" + ("; a daemon restarted before the "
                                                         "guest powers off forgets it"
                                                         if pending else ""))

    def force_stop(self, uuid: uuidlib.UUID) -> None:
        """Have `uuid`'s stop skip the ACPI wait: the next one, and one already waiting."""
        self.forced.add(uuid)
        vm = self.vms.get(uuid)
        if vm is not None and vm.handle is not None and vm.phase == "stopping":
            handle = vm.handle

            async def hurry() -> None:
                """Escalate the stop under way (the worker awaits the same sequence)."""
                with contextlib.suppress(ReconcilerError):
                    await handle.stop(reason="forced", shutdown_timeout=0, graceful=False)
            asyncio.get_running_loop().create_task(hurry())

    def _changed(self) -> None:
        """Tell `until` waiters that something about the VMs changed."""
        change, self._change = self._change, None
        if change is not None:
            change.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most `timeout` s) until `predicate()` holds after some change; whether it did.

        Woken by every finished worker operation and every exit, never by polling.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._change is None:
                self._change = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), remaining)
        return True

    def _dispatch(self, uuid: uuidlib.UUID, action: Action) -> asyncio.Task[None] | None:
        """Queue `action` as `uuid`'s newest work; start its worker if it is idle."""
        worker = self._workers.setdefault(uuid, _Worker())
        worker.pending = action
        if worker.task is None:
            worker.task = asyncio.get_running_loop().create_task(self._work(uuid, worker))
            # the status shows the operation from this very pass, not once it has begun
            if isinstance(action, Start):
                self._book_start(uuid, action)
            elif (isinstance(action, Stop) and (vm := self.vms.get(uuid)) is not None
                  and vm.handle is not None and vm.phase == "running"):
                vm.phase, vm.stop_reason = "stopping", action.reason
        return worker.task

    async def _work(self, uuid: uuidlib.UUID, worker: _Worker) -> None:
        """The worker: run the pending action, then the next one, until none is left."""
        try:
            while worker.pending is not None or worker.requests:
                if worker.requests:
                    operation, future = worker.requests.pop(0)
                    await _settle(future, operation)
                else:
                    action, worker.pending = worker.pending, None
                    assert action is not None
                    worker.current = action
                    try:
                        await self._act(uuid, action)
                    finally:
                        worker.current = None
                worker.operations += 1
                self._changed()
        finally:
            worker.task = None
            for _, future in worker.requests:
                future.cancel()
            worker.requests.clear()
            if uuid not in self.vms and worker.pending is None:
                self._workers.pop(uuid, None)
            self._changed()
            self.wake()

    async def _act(self, uuid: uuidlib.UUID, action: Action) -> None:
        """Carry out one action; every failure becomes status and a log line, never an exception."""
        try:
            if isinstance(action, Adopt):
                await self._adopt(uuid)
            elif isinstance(action, Start):
                await self._start(uuid, action)
            elif isinstance(action, Stop):
                await self._stop(uuid, action)
        except asyncio.CancelledError:
            raise
        except (ReconcilerError, model.ModelError, OSError) as exc:
            self.say(str(exc))
            self.history.fail(uuid, str(exc))
        except Exception as exc:  # a bug must not kill the loop: report it like any failure
            self.say(f"internal error while carrying out {action}: {exc!r}")
            self.history.fail(uuid, f"internal error: {exc!r} (please report it)")

    # ------------------------------------------------------------------ adopt

    async def _adopt(self, uuid: uuidlib.UUID) -> None:
        """Take over the QEMU of a runtime folder, or let the layer clean a stale one.

        An exit during adoption reaches `_exited` like any other (recorded, restarted by
        policy); the VM is registered once adopted, before the VNC query, so an exit during
        that query is handled too. An unresponsive VM being retried keeps its entry (and its
        claims) until the outcome replaces it.
        """
        previous = self.vms.get(uuid)  # an unresponsive VM due a retry
        domain, file = self.layer.load_definition(uuid)
        want = self.desired.wants.get(uuid)
        if domain is None and want is not None:
            domain = want.domain
        if file is None and want is not None:
            file = want.file
        name = domain.name if domain else (want.name if want else str(uuid))
        vm = Vm(name, domain, file, self.clock(), phase="running")
        try:
            handle = await self.layer.adopt(uuid, name, self._on_exit(uuid, vm),
                                            self._on_event(uuid))
        except (ReconcilerError, OSError) as exc:
            # a live QEMU of ours whose monitor does not answer (or whose adoption failed
            # otherwise): leave it alone, keep its uuid busy (nothing else may start for it,
            # nothing may take its disks), say so, and try again later
            pid = exc.pid if isinstance(exc, AdoptError) else None
            retry = self.clock() + ADOPT_RETRY
            started = (previous.started_at if previous else
                       self.clock() - (self.layer.age(pid) or 0.0 if pid else 0.0))
            self.vms[uuid] = Vm(name, domain, file, started, phase="unresponsive", pid=pid,
                                retry_at=retry)
            self.say(str(exc))
            self.history.fail(uuid, str(exc))
            self.wake_at(retry)
            return
        if handle is None or vm.exited:
            if previous is not None and self.vms.get(uuid) is previous:
                del self.vms[uuid]
            if handle is None:
                self.say(f"{name}: removed stale runtime folder of {uuid}")
            return  # an exit during adoption has been recorded by `_exited`
        vm.handle, vm.pid = handle, handle.pid
        if domain is not None and self.layer.load_definition(uuid) != (domain, file):
            try:  # an older reconciler's folder: record what it runs for the next one
                self.layer.save_definition(uuid, domain, file)
            except OSError as exc:
                self.say(f"{name}: cannot record its definition in its runtime folder ({exc})")
        if handle.pid:
            vm.started_at = self.clock() - (self.layer.age(handle.pid) or 0.0)
        self.vms[uuid] = vm
        self.history.failures.pop(uuid, None)
        if self.layer.restart_marked(uuid):
            self.rebooting.add(uuid)  # a reboot or restart asked of an earlier reconciler
        self.say(f"{name}: adopted running QEMU pid {handle.pid}")
        if domain is not None and domain.devices.graphics:
            vm.vnc = await _vnc_of(handle)

    # ------------------------------------------------------------------ start

    def _book_start(self, uuid: uuidlib.UUID, action: Start) -> None:
        """Register a VM as starting the moment its start is dispatched (status shows it)."""
        want = self.desired.wants.get(uuid)
        if want is None or uuid in self.vms:
            return
        self.vms[uuid] = Vm(want.name, want.domain, want.file, self.clock())

    def _may_start(self, uuid: uuidlib.UUID, want: Want) -> str | None:
        """Why `want` may not start right now (another live QEMU holds a claim), or None."""
        mine = set(claims(uuid, want.name, want.file, want.domain, self.identify))
        for other, vm in self.vms.items():
            if other == uuid:
                continue
            if mine & set(claims(other, vm.name, vm.file, vm.domain, self.identify)):
                return f"'{vm.name}' still holds its identity, file or disk"
        return None

    async def _start(self, uuid: uuidlib.UUID, action: Start) -> None:
        """Start one VM from the latest wanted definition; a failure is recorded with QEMU's words.

        Re-checked here, at the moment of starting: the VM is still wanted to run, not blocked,
        not live already, and no other live QEMU holds its uuid, name, file or writable disks.
        """
        want = self.desired.wants.get(uuid)
        booked = self.vms.get(uuid)
        if booked is not None and (booked.handle is not None or booked.phase != "starting"):
            return  # live already (or adopted meanwhile): nothing to start
        if want is None or not want.running or want.blocked is not None:
            self._unbook(uuid, booked)
            return
        reason = self._may_start(uuid, want)
        if reason is not None:
            self._unbook(uuid, booked)
            self.say(f"{want.name}: not starting yet: {reason}")
            return
        vm = booked if booked is not None else Vm(want.name, want.domain, want.file, self.clock())
        vm.name, vm.domain, vm.file = want.name, want.domain, want.file
        self.vms[uuid] = vm
        self.say(f"{want.name}: starting ({action.reason})")
        try:
            handle = await self.layer.start(uuid, want.domain, want.file,
                                            self._on_exit(uuid, vm), self._on_event(uuid))
        except asyncio.CancelledError:
            self._unbook(uuid, vm)
            raise
        except Exception as exc:  # never leave a VM "starting" for ever: a failed start
            self._unbook(uuid, vm)
            message = (start_message(exc) if isinstance(exc, StartError)
                       else f"failed to start: {exc}")
            self.history.record_end(uuid, want.domain, ExitKind.CRASH, uptime=0.0,
                                    message=message, key=want.key, now=self.clock())
            self._schedule_retry(uuid)
            self.say(f"{want.name}: {exc}")
            return
        vm.handle, vm.pid = handle, handle.pid
        if vm.exited:
            return  # it died the instant it started; the exit is recorded already
        vm.phase = "running"
        vm.started_at = self.clock()
        self.history.record_start(uuid, restart=action.restart)
        self.say(f"{want.name}: running, pid {handle.pid}")
        if want.domain.devices.graphics:
            vm.vnc = await _vnc_of(handle)

    def _unbook(self, uuid: uuidlib.UUID, vm: Vm | None) -> None:
        """Forget a VM registered for a start that did not happen."""
        if vm is not None and self.vms.get(uuid) is vm and vm.handle is None:
            del self.vms[uuid]

    # ------------------------------------------------------------------ stop

    async def _stop(self, uuid: uuidlib.UUID, action: Stop) -> None:
        """Stop one VM gracefully within the shutdown timeout of its latest known definition."""
        vm = self.vms.get(uuid)
        if vm is None or vm.handle is None or vm.phase not in ("running", "stopping"):
            return
        want = self.desired.wants.get(uuid)
        domain = want.domain if want is not None else (vm.latest or vm.domain)
        timeout = domain.desired.shutdown_timeout if domain is not None else 60
        # whether the guest can hear a power button is the running QEMU's affair, not the
        # edited file's: a file that dropped <acpi/> (a pending restart) must not pull the plug
        running = vm.domain or domain
        graceful = uuid not in self.forced and (running is None or running.features.acpi)
        self.say(f"{vm.name}: stopping ({action.reason})")
        vm.phase, vm.stop_reason = "stopping", action.reason
        try:
            exit_info = await vm.handle.stop(reason=action.reason.replace(" ", "-"),
                                             shutdown_timeout=timeout, graceful=graceful)
        except BaseException:
            if not vm.exited:  # still alive: not "stopping" for ever; the next pass decides
                vm.phase = "running"
            raise
        self.say(f"{vm.name}: stopped ({exit_info.describe()})")

    # ------------------------------------------------------------------ exits and events

    def _on_exit(self, uuid: uuidlib.UUID, vm: Vm) -> ExitCallback:
        """The exit callback of one VM's process (called once, on the loop)."""
        return lambda exit_info: self._exited(uuid, vm, exit_info)

    def _on_event(self, uuid: uuidlib.UUID) -> EventCallback:
        """The QMP event callback of one VM: republish promptly."""
        del uuid
        return lambda event: self.wake()

    def _exited(self, uuid: uuidlib.UUID, vm: Vm, exit_info: Exit) -> None:
        """A VM's QEMU is gone: record how, decide about restarting, wake a pass."""
        vm.exited = True
        if self.vms.get(uuid) is vm:
            del self.vms[uuid]
        self.forced.discard(uuid)
        if uuid in self.rebooting:
            self.rebooting.discard(uuid)
            if exit_info.kind in (ExitKind.POWEROFF, ExitKind.STOPPED):
                # the guest powered off for the reboot: qemud's doing, started again at once
                vm.stop_reason = vm.stop_reason or "reboot requested"
                exit_info = replace(exit_info, kind=ExitKind.STOPPED)
        want = self.desired.wants.get(uuid)
        domain = vm.domain or (want.domain if want else None)
        key = want.key if want is not None else None
        self.say(f"{vm.name}: QEMU exited ({exit_info.describe()}, {exit_info.kind.value})")
        if exit_info.kind is ExitKind.STOPPED:
            message = f"stopped by qemud ({vm.stop_reason or 'requested'})"
        else:
            message = EXIT_MESSAGES[exit_info.kind] + f" ({exit_info.describe()})"
        ended = self.history.record_end(uuid, domain, exit_info.kind, uptime=exit_info.uptime,
                                        message=message, key=key, now=self.clock())
        if domain is not None and (uuid in self.restarting or (
                exit_info.kind is not ExitKind.STOPPED and not ended.held)):
            self.incumbents[uuid] = Owned(uuid, vm.name, vm.file, domain, live=False)
        self._schedule_retry(uuid)
        self._changed()
        self.wake()

    def _schedule_retry(self, uuid: uuidlib.UUID) -> None:
        """Arrange a pass when `uuid`'s restart back-off runs out."""
        ended = self.history.ended.get(uuid)
        if ended is not None and not ended.held and ended.restart.next_retry_at is not None:
            self.wake_at(ended.restart.next_retry_at)

    # ------------------------------------------------------------------ letting go

    async def settle(self) -> None:
        """Wait until no worker is acting."""
        while True:
            tasks = [w.task for w in self._workers.values() if w.task is not None]
            if not tasks:
                return
            await asyncio.wait(tasks)

    async def detach_all(self, start_grace: float = START_GRACE) -> None:
        """Let go of every VM without stopping it (the next reconciler adopts them).

        A start under way is let finish first (at most `start_grace` s): cancelled between
        QEMU's launch and its `cont`, it would leave a paused guest until some reconciler
        runs again. Everything else (a graceful stop's wait, pending work) is cancelled; the
        VMs keep running as they are.
        """
        starting = [w.task for w in self._workers.values()
                    if w.task is not None and isinstance(w.current, Start)]
        for worker in self._workers.values():
            worker.pending = None  # nothing new begins meanwhile
        if starting:
            await asyncio.wait(starting, timeout=start_grace)
        for worker in list(self._workers.values()):
            if worker.task is not None:
                worker.task.cancel()
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        for vm in list(self.vms.values()):
            if vm.handle is not None:
                with contextlib.suppress(Exception):
                    await vm.handle.detach()
        self.vms.clear()
        self._workers.clear()


async def _settle(future: asyncio.Future[object],
                  operation: Callable[[], Awaitable[object]]) -> None:
    """Run a submitted operation and put its outcome in `future` (cancellation passes)."""
    try:
        result = await operation()
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(result)


async def _vnc_of(handle: Handle) -> str | None:
    """`host:port` of a VM's VNC server (from QMP, so automatic ports are right), or None."""
    try:
        info = await handle.query_vnc()
    except ReconcilerError:
        return None
    return f"{info.host}:{info.port}" if info is not None else None


def start_message(exc: StartError) -> str:
    """The user-facing reason of a failed start: QEMU's own words first."""
    if exc.qemu_message:
        last = exc.qemu_message.strip().splitlines()[-1]
        return "failed to start: " + re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ", "", last)
    return f"failed to start: {exc.reason}"


def owned_uuids(vms: Mapping[uuidlib.UUID, Vm]) -> frozenset[uuidlib.UUID]:
    """The uuids of a VM table (for forgetting history of domains that are gone)."""
    return frozenset(vms)
