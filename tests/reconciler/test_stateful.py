"""The whole reconciler, model-checked: Hypothesis drives files, passes, QEMUs and daemons.

A `RuleBasedStateMachine` over a fake process layer (`FakeWorld`, our own boundary) and a fake
clock. Rules write valid and invalid domain files, rename and delete them, change names and
uuids, create clashes and shared disks, run passes (the same code as `reconcile --once`), let
starts and stops finish (or not yet), kill and pause QEMUs, send SIGHUP, restart the daemon
politely or by SIGKILL mid-operation. The promise is checked at every step:

- never two live QEMUs for one uuid or one writable disk image (checked at every start);
- a VM is stopped only when the pass that decided it saw no file wanting it as it runs: no
  file whose last valid content defines its uuid and name with state running, none deleted
  within the quiet period (checked at every stop);
- after the quiet period and the back-offs everything converges: every domain whose status
  wants it running runs (exactly one QEMU, not left paused by us), every QEMU is owned and
  shown with its pid.

`just soak` runs it with many more examples (QEMUD_SOAK_EXAMPLES).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import uuid as uuidlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import model
from reconciler import power
from reconciler.desired import writable_disks
from reconciler.errors import AdoptError, StartError
from reconciler.loop import ADOPT_RETRY, QUIET_PERIOD, Reconciler
from reconciler.paths import Layout
from reconciler.policy import ExitKind
from reconciler.power import Verb, carry_out
from reconciler.qemu import Exit, VncInfo
from reconciler.status import DomainStatus, read_status
from reconciler.supervisor import EventCallback, ExitCallback, Handle

PATHS = ("a.xml", "b.xml", "c.xml", "d.xml")
NAMES = ("n1", "n2", "n3")
UUIDS = (uuidlib.UUID("11111111-1111-4111-8111-111111111111"),
         uuidlib.UUID("22222222-2222-4222-8222-222222222222"), None)
DISKS = (None, "/img/d1.img", "/img/d2.img")


@dataclass(frozen=True)
class Spec:
    """What a valid domain file says, as the test knows it."""

    name: str
    uuid: uuidlib.UUID
    state: str
    disk: str | None
    readonly: bool

    def xml(self, explicit_uuid: bool) -> str:
        """The domain file's text."""
        uuid = f"<uuid>{self.uuid}</uuid>" if explicit_uuid else ""
        disk = ""
        if self.disk is not None:
            disk = (f"<disk type='file' device='disk'><source file='{self.disk}'/>"
                    f"<target dev='vda' bus='virtio'/>{'<readonly/>' if self.readonly else ''}"
                    "</disk>")
        return (f"<domain type='qemu'><name>{self.name}</name>{uuid}"
                "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os>"
                f"<features><acpi/></features><devices>{disk}</devices><metadata>"
                f"<qemud:desired xmlns:qemud='urn:qemud:1' state='{self.state}' "
                "shutdown-timeout='5'/></metadata></domain>")


@dataclass
class FileModel:
    """One path as the test wrote it: its current content and its last valid content there."""

    valid: Spec | None
    last_valid: Spec | None


@dataclass
class FakeQemu:
    """One fake QEMU process."""

    pid: int
    uuid: uuidlib.UUID
    domain: model.Domain
    state: str = "prelaunch"
    alive: bool = True
    on_exit: ExitCallback | None = None
    hung: bool = False
    """Its monitor does not answer (SIGSTOPped): adoption fails and leaves it alone."""


class FakeHandle:
    """`Handle` over a `FakeQemu`."""

    def __init__(self, world: FakeWorld, qemu: FakeQemu) -> None:
        self.world = world
        self.qemu = qemu

    @property
    def pid(self) -> int | None:
        return self.qemu.pid

    @property
    def run_state(self) -> str | None:
        return self.qemu.state

    async def stop(self, *, reason: str, shutdown_timeout: float, graceful: bool = True) -> Exit:
        self.world.stop_timeouts.append(shutdown_timeout)
        self.world.check_stop(self.qemu, reason)
        await self.world.gate()
        return self.world.end(self.qemu, ExitKind.STOPPED)

    async def detach(self) -> None:
        self.qemu.on_exit = None

    async def query_vnc(self) -> VncInfo | None:
        return None

    async def execute(self, command: str, arguments: object = None, *,
                      timeout: float | None = None) -> object:
        self.world.commands.append((self.qemu.pid, command))
        if command == "system_powerdown" and not self.qemu.hung:
            self.world.end(self.qemu, ExitKind.POWEROFF)  # the guest powers off
        return {}


@dataclass
class FakeWorld:
    """Fake processes and runtime folders shared by every reconciler of one test run."""

    oracle: Callable[[uuidlib.UUID, str], str | None]
    procs: dict[int, FakeQemu] = field(default_factory=dict)
    folders: dict[uuidlib.UUID, int] = field(default_factory=dict)
    definitions: dict[uuidlib.UUID, tuple[model.Domain, Path | None]] = field(default_factory=dict)
    inodes: dict[uuidlib.UUID, int | None] = field(default_factory=dict)
    gates: list[asyncio.Future[None]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    fail_next_start: bool = False
    fail_starts: int = 0
    """How many of the next starts fail (besides `fail_next_start`)."""
    exit_during_adoption: bool = False
    """The next adopted QEMU exits while it is being adopted (after its pid was verified)."""
    slow_hung_adoption: bool = False
    """Adopting a hung QEMU takes until the test lets it finish (the real QMP timeout)."""
    next_pid: int = 1000
    stops: int = 0
    commands: list[tuple[int, str]] = field(default_factory=list)
    stop_timeouts: list[float] = field(default_factory=list)
    marks: set[uuidlib.UUID] = field(default_factory=set)
    """Pending restarts recorded in runtime folders (gone with the folder, as on disk)."""

    def live(self) -> list[FakeQemu]:
        """The fake QEMUs that run."""
        return [q for q in self.procs.values() if q.alive]

    async def gate(self) -> None:
        """Wait until the test lets the operation under way finish."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates.append(future)
        await future

    def release(self) -> None:
        """Let every operation under way finish."""
        gates, self.gates = self.gates, []
        for future in gates:
            if not future.done():
                future.set_result(None)

    def end(self, qemu: FakeQemu, kind: ExitKind) -> Exit:
        """The fake QEMU exits: its folder goes, its owner (if any) hears of it once."""
        exit_info = Exit(qemu.pid, 0, None, kind, 0.0, 1.0)
        if qemu.alive:
            qemu.alive = False
            if self.folders.get(qemu.uuid) == qemu.pid:
                del self.folders[qemu.uuid]
                self.marks.discard(qemu.uuid)
            callback, qemu.on_exit = qemu.on_exit, None
            if callback is not None:
                callback(exit_info)
        return exit_info

    def check_start(self, uuid: uuidlib.UUID, domain: model.Domain) -> None:
        """The promise at every start: no second QEMU for one uuid or one writable image."""
        disks = {p for _, p in writable_disks(domain)}
        for other in self.live():
            if other.uuid == uuid:
                self.violations.append(f"second QEMU for {uuid}")
            shared = disks & {p for _, p in writable_disks(other.domain)}
            if shared:
                self.violations.append(f"{domain.name} started on {shared} used by "
                                       f"{other.domain.name}")

    def check_stop(self, qemu: FakeQemu, reason: str) -> None:
        """The promise at every stop: the pass that decided it saw nothing wanting the VM."""
        self.stops += 1
        if reason in USER_STOPS:
            return  # a user asked for this one (restart): not the desired state's doing
        problem = self.oracle(qemu.uuid, qemu.domain.name)
        if problem is not None:
            self.violations.append(f"stopped {qemu.domain.name} ({reason}): {problem}")


USER_STOPS = frozenset({"restart-requested"})
"""Stop reasons that come from a user's power verb, not from the desired state."""


class FakeLayer:
    """`ProcessLayer` over a `FakeWorld`."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    async def start(self, uuid: uuidlib.UUID, domain: model.Domain, file: Path | None,
                    on_exit: ExitCallback, on_event: EventCallback) -> Handle:
        world = self.world
        world.check_start(uuid, domain)
        world.next_pid += 1
        qemu = FakeQemu(world.next_pid, uuid, domain)
        world.procs[qemu.pid] = qemu
        world.folders[uuid] = qemu.pid
        world.definitions[uuid] = (domain, file)
        if world.fail_next_start or world.fail_starts > 0:
            world.fail_next_start = False
            world.fail_starts -= 1
            world.end(qemu, ExitKind.CRASH)
            raise StartError(domain.name, stage="attach", reason="fake failure",
                             log_file=Path("/dev/null"))
        await world.gate()  # a daemon killed here leaves it in prelaunch (QEMU's -S)
        if not qemu.alive:
            raise StartError(domain.name, stage="resume", reason="died", log_file=Path("/dev/null"))
        qemu.state, qemu.on_exit = "running", on_exit
        return FakeHandle(world, qemu)

    async def adopt(self, uuid: uuidlib.UUID, name: str, on_exit: ExitCallback,
                    on_event: EventCallback) -> Handle | None:
        pid = self.world.folders.get(uuid)
        qemu = self.world.procs.get(pid) if pid is not None else None
        if qemu is None or not qemu.alive:
            self.world.folders.pop(uuid, None)
            return None
        if self.world.exit_during_adoption:
            # the real layer watches the verified pid and reports its exit from then on
            self.world.exit_during_adoption = False
            qemu.on_exit = on_exit
            self.world.end(qemu, ExitKind.CRASH)
            return FakeHandle(self.world, qemu)
        if qemu.hung:
            if self.world.slow_hung_adoption:
                await self.world.gate()  # QMP's timeout runs out
            raise AdoptError(name, pid=qemu.pid, socket=Path("/dev/null"), reason="no answer")
        if qemu.state == "prelaunch":
            qemu.state = "running"  # the real layer resumes a QEMU that was never `cont`ed
        qemu.on_exit = on_exit
        return FakeHandle(self.world, qemu)

    def runtime_folders(self) -> list[uuidlib.UUID]:
        return list(self.world.folders)

    def save_definition(self, uuid: uuidlib.UUID, domain: model.Domain, file: Path | None) -> None:
        self.world.definitions[uuid] = (domain, file)
        try:
            self.world.inodes[uuid] = os.stat(file).st_ino if file is not None else None
        except OSError:
            self.world.inodes[uuid] = None

    def load_definition(self, uuid: uuidlib.UUID) -> tuple[model.Domain | None, Path | None]:
        return self.world.definitions.get(uuid, (None, None))

    def source_inode(self, uuid: uuidlib.UUID) -> int | None:
        return self.world.inodes.get(uuid)

    def age(self, pid: int) -> float | None:
        return 0.0

    def mark_restart(self, uuid: uuidlib.UUID, pending: bool) -> None:
        if pending:
            self.world.marks.add(uuid)
        else:
            self.world.marks.discard(uuid)

    def restart_marked(self, uuid: uuidlib.UUID) -> bool:
        return uuid in self.world.marks


class ReconcilerMachine(RuleBasedStateMachine):
    """Files, passes, QEMUs and daemons, with the promise as invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.root = Path(os.environ.get("QEMUD_STATEFUL_TMP", "/tmp")) / f"qsm-{os.getpid()}"
        self._counter = getattr(ReconcilerMachine, "_runs", 0) + 1
        ReconcilerMachine._runs = self._counter  # type: ignore[attr-defined]
        self.dir = self.root / str(self._counter)
        self.layout = Layout.under(self.dir)
        self.now = 1_000_000.0
        self.files: dict[str, FileModel] = {}
        self.deleted: dict[str, tuple[float, Spec | None]] = {}
        self.snapshot: tuple[dict[str, FileModel], dict[str, tuple[float, Spec | None]], float] = (
            {}, {}, self.now)
        self.world = FakeWorld(self.protects)
        self.power: list[asyncio.Task[str]] = []
        self.rec = self._new_reconciler()

    # -------------------------------------------------------------- plumbing

    def _new_reconciler(self) -> Reconciler:
        """A reconciler on the same directory and the same fake world (a daemon (re)start)."""
        rec = Reconciler(self.layout, clock=lambda: self.now, out=io.StringIO(),
                         layer=FakeLayer(self.world))
        rec.prepare()
        return rec

    def run(self, coro: Coroutine[object, object, object]) -> None:
        """Run a coroutine on the machine's loop, then let every ready task run."""
        self.loop.run_until_complete(coro)
        self.drain()

    def drain(self) -> None:
        """Let tasks run until nothing is ready (operations wait on gates)."""
        for _ in range(30):
            self.loop.run_until_complete(asyncio.sleep(0))

    def finish_all(self) -> None:
        """Let operations finish, and the ones queued behind them, until every worker is idle."""
        for _ in range(10):
            self.world.release()
            self.drain()
            if not self.rec.supervisor.working:
                return
        raise AssertionError("a worker is still busy after every operation was let finish")

    def protects(self, uuid: uuidlib.UUID, name: str) -> str | None:
        """Why stopping (uuid, name) is forbidden by the last pass's view of the files, or None.

        Forbidden: some file's last valid content wants this very uuid and name running (or
        did, deleted within the quiet period), and every file's last valid content that
        defines the uuid agrees (files clashing on a uuid may disagree: then the running VM's
        own file decides, and either outcome is legal).
        """
        files, deleted, at = self.snapshot
        if any(f.last_valid is not None and f.last_valid.uuid == uuid
               and (f.last_valid.name, f.last_valid.state) != (name, "running")
               for f in files.values()):
            return None
        for path, fm in files.items():
            lv = fm.last_valid
            if lv is not None and (lv.uuid, lv.name, lv.state) == (uuid, name, "running"):
                return f"{path} still wants it running (last valid content)"
        for path, (when, lv) in deleted.items():
            if at - when < QUIET_PERIOD and lv is not None and (lv.uuid, lv.name, lv.state) == (
                    uuid, name, "running"):
                return f"{path} was deleted only {at - when:.2f}s before the pass"
        return None

    def _write(self, path: str, text: str, spec: Spec | None) -> None:
        """Write a domain file atomically (editor-style) and record it in the model."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / path
        tmp = self.dir / f".{path}.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)
        old = self.files.get(path)
        self.files[path] = FileModel(spec, spec if spec is not None else (old.last_valid if old
                                                                           else None))
        self.deleted.pop(path, None)

    # -------------------------------------------------------------- rules: files

    @rule(path=st.sampled_from(PATHS), name=st.sampled_from(NAMES),
          uuid=st.sampled_from(UUIDS), running=st.booleans(), disk=st.sampled_from(DISKS),
          readonly=st.booleans())
    def write_valid(self, path: str, name: str, uuid: uuidlib.UUID | None, running: bool,
                    disk: str | None, readonly: bool) -> None:
        real = uuid if uuid is not None else model.uuid_for_name(name)
        spec = Spec(name, real, "running" if running else "stopped", disk, readonly)
        self._write(path, spec.xml(uuid is not None), spec)

    @rule(path=st.sampled_from(PATHS))
    def write_invalid(self, path: str) -> None:
        self._write(path, "<domain type='qemu'><name>broken</name><memory>lots</memory>", None)

    @rule(path=st.sampled_from(PATHS))
    def delete(self, path: str) -> None:
        if path in self.files:
            (self.dir / path).unlink()
            self.deleted[path] = (self.now, self.files.pop(path).last_valid)

    @rule(src=st.sampled_from(PATHS), dst=st.sampled_from(PATHS))
    def rename(self, src: str, dst: str) -> None:
        if src == dst or src not in self.files:
            return
        os.replace(self.dir / src, self.dir / dst)
        moved = self.files.pop(src)
        self.deleted[src] = (self.now, moved.last_valid)
        self.files[dst] = FileModel(moved.valid, moved.valid)
        self.deleted.pop(dst, None)

    # -------------------------------------------------------------- rules: the reconciler

    @rule()
    def run_pass(self) -> None:
        self.snapshot = ({p: FileModel(f.valid, f.last_valid) for p, f in self.files.items()},
                         dict(self.deleted), self.now)
        self.run(self.rec.run_pass())

    @rule(dt=st.sampled_from((0.1, 0.3, 2.0, 400.0)))
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @rule()
    def finish_operations(self) -> None:
        self.world.release()
        self.drain()

    @rule()
    def sighup(self) -> None:
        self.rec.reload()

    @rule(kill=st.booleans())
    def restart_daemon(self, kill: bool) -> None:
        """A polite restart (SIGTERM: detach) or a SIGKILL at any instant of an operation."""
        old = self.rec
        if kill:
            for worker in list(old.supervisor._workers.values()):
                if worker.task is not None:
                    worker.task.cancel()
            self.drain()
        else:
            # a start under way that does not finish within the grace is left prelaunch (the
            # next reconciler resumes it); `test_a_reconciler_that_exits_lets_starts_finish`
            # checks the grace itself
            self.run(old.detach_all(start_grace=0))
        for qemu in self.world.procs.values():
            qemu.on_exit = None  # nobody listens to QEMUs the dead daemon watched
        self.rec = self._new_reconciler()

    # -------------------------------------------------------------- rules: QEMUs

    @rule(index=st.integers(0, 5))
    def kill_qemu(self, index: int) -> None:
        live = self.world.live()
        if live:
            qemu = live[index % len(live)]

            async def die() -> None:
                self.world.end(qemu, ExitKind.CRASH)
            self.run(die())

    @rule(index=st.integers(0, 5))
    def pause_qemu(self, index: int) -> None:
        live = [q for q in self.world.live() if q.state == "running"]
        if live:
            live[index % len(live)].state = "paused"  # e.g. an I/O error: qemud leaves it so

    @rule(index=st.integers(0, 5), hung=st.booleans())
    def hang_qemu(self, index: int, hung: bool) -> None:
        """SIGSTOP (or SIGCONT) a QEMU: only an adoption notices (its monitor stays silent)."""
        live = self.world.live()
        if live:
            live[index % len(live)].hung = hung

    @rule()
    def delete_status_dir(self) -> None:
        shutil.rmtree(self.layout.status_dir, ignore_errors=True)

    @rule()
    def fail_next_start(self) -> None:
        self.world.fail_next_start = True

    @rule()
    def exit_during_next_adoption(self) -> None:
        self.world.exit_during_adoption = True

    @rule(index=st.integers(0, 5), verb=st.sampled_from(("restart", "reboot", "reset")))
    def power_verb(self, index: int, verb: Verb) -> None:
        """`reconcile restart|reboot|reset NAME`, carried out beside the passes (background)."""
        names = sorted(vm.name for vm in self.rec.vms.values())
        if names:
            name = names[index % len(names)]
            self.power.append(self.loop.create_task(
                carry_out(self.rec, verb, name, lambda text: None)))
            self.drain()

    # -------------------------------------------------------------- checks

    @invariant()
    def promise_kept(self) -> None:
        assert not self.world.violations, self.world.violations
        uuids = [q.uuid for q in self.world.live()]
        assert len(uuids) == len(set(uuids)), f"two QEMUs for one uuid: {uuids}"

    @precondition(lambda self: bool(self.files))
    @rule()
    def converge(self) -> None:
        """Quiet period and back-offs over, operations allowed to finish: everything converges."""
        self.world.fail_next_start = False
        for qemu in self.world.procs.values():
            qemu.hung = False
        for _ in range(12):
            self.now += 400.0
            self.run_pass()
            self.finish_all()
        self.run_pass()
        self.finish_all()
        statuses = self.rec.publish(self.rec.supervisor.desired, [], self.now)
        live = {q.uuid: q for q in self.world.live()}
        for status in statuses:
            if status.uuid is None or status.state in ("invalid", "conflict"):
                continue
            uuid = uuidlib.UUID(status.uuid)
            if status.desired == "running":
                assert status.state in ("running", "paused"), status
                assert uuid in live and live[uuid].pid == status.pid, (status, live)
            if uuid in live:
                assert live[uuid].state != "prelaunch", f"{status.name} left in prelaunch"
        shown = {uuidlib.UUID(s.uuid) for s in statuses if s.uuid and s.pid}
        assert set(live) <= shown, f"QEMUs nobody shows: {set(live) - shown}"
        assert set(live) == set(self.rec.vms), "every QEMU is owned by the reconciler"
        on_disk = read_status(self.layout.status_dir)
        assert on_disk is not None and {d.uuid for d in on_disk.domains} == {
            s.uuid for s in statuses}, "the status files say what the reconciler knows"

    def teardown(self) -> None:
        self.world.release()
        self.drain()
        for task in self.power:
            task.cancel()
        self.drain()
        self.loop.run_until_complete(self.rec.detach_all())
        self.loop.close()


ReconcilerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("QEMUD_SOAK_EXAMPLES", "60")),
    stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_reconciler_model = ReconcilerMachine.TestCase
test_reconciler_model = pytest.mark.timeout(900)(test_reconciler_model)


# ---------------------------------------------------------------- sequences found by review


U1, U2 = UUIDS[0], UUIDS[1]
assert U1 is not None and U2 is not None


@contextlib.contextmanager
def machine() -> Iterator[ReconcilerMachine]:
    """A fresh machine for a hand-written sequence, torn down after it (failed or not)."""
    m = ReconcilerMachine()
    try:
        yield m
    finally:
        m.teardown()


def status_of(m: ReconcilerMachine, name: str) -> DomainStatus:
    """The status the reconciler would publish now for domain `name`."""
    return next(s for s in m.rec.publish(m.rec.supervisor.desired, [], m.now) if s.name == name)


def settle(m: ReconcilerMachine, rounds: int = 4, dt: float = 2.0) -> None:
    """Passes with time moving on and every operation let finish."""
    for _ in range(rounds):
        m.now += dt
        m.run_pass()
        m.finish_all()


def test_a_clash_winner_missing_for_a_moment_does_not_rename_the_loser() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        m.write_valid("b.xml", "n2", U2, True, None, False)
        settle(m)
        m.write_valid("b.xml", "n1", U2, True, None, False)  # edited into a name clash: kept
        settle(m)
        pids = sorted(q.pid for q in m.world.live())
        (m.dir / "a.xml").unlink()  # git checkout: the winner's file is gone for a moment
        m.now += 0.05
        m.run_pass()
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m, 6, 400.0)
        assert m.world.stops == 0 and sorted(q.pid for q in m.world.live()) == pids


def test_a_uuid_clashing_copy_never_takes_over_while_the_original_is_missing() -> None:
    with machine() as m:
        m.write_valid("a.xml", "web", U1, True, None, False)
        settle(m)
        m.write_valid("b.xml", "web2", U1, True, None, False)  # a clone keeping the uuid: loses
        settle(m)
        (m.dir / "a.xml").unlink()
        m.now += 0.05
        m.run_pass()
        m.write_valid("a.xml", "web", U1, True, None, False)
        settle(m, 6, 400.0)
        assert m.world.stops == 0 and [q.domain.name for q in m.world.live()] == ["web"]


def test_a_vm_from_an_older_qemud_is_kept_while_its_unknown_file_may_be_the_invalid_one() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        domain, _ = m.world.definitions[U1]
        m.write_invalid("a.xml")
        m.restart_daemon(kill=False)
        m.world.definitions[U1] = (domain, None)  # an older runtime folder: no `source`
        settle(m)
        assert m.world.stops == 0 and len(m.world.live()) == 1


def test_an_image_goes_to_the_domain_that_can_use_it_now() -> None:
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, "/img/d1.img", False)
        m.write_valid("a.xml", "two", U2, True, "/img/d2.img", False)
        settle(m)
        m.write_valid("a.xml", "two", U2, True, "/img/d1.img", False)  # pending restart only
        settle(m)
        one = next(q for q in m.world.live() if q.uuid == U1)

        async def crash() -> None:
            m.world.end(one, ExitKind.CRASH)
        m.run(crash())
        settle(m, 6, 400.0)
        assert {q.uuid for q in m.world.live()} == {U1, U2}  # d1 is free: 'one' runs again
        assert not m.world.violations


def test_a_start_that_fails_in_any_way_is_a_failed_start_never_starting_for_ever() -> None:
    with machine() as m:
        layer = m.rec.supervisor.layer
        assert isinstance(layer, FakeLayer)
        real_start = layer.start
        calls: list[str] = []

        async def broken(*args: object, **kw: object) -> Handle:
            calls.append("start")
            if len(calls) == 1:
                raise OSError(28, "No space left on device")  # e.g. a full /run
            return await real_start(*args, **kw)  # type: ignore[arg-type]
        layer.start = broken  # type: ignore[method-assign]
        m.write_valid("a.xml", "n1", U1, True, None, False)
        m.run_pass()
        m.finish_all()
        assert not m.rec.vms and "No space left" in (m.rec.history.ended[U1].message)
        settle(m, 3, 400.0)  # after the back-off: started for real
        assert len(calls) == 2 and [q.uuid for q in m.world.live()] == [U1]


def test_an_adoption_that_fails_in_any_way_keeps_the_uuid_busy() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, "/img/d1.img", False)
        settle(m)
        m.restart_daemon(kill=True)
        layer = m.rec.supervisor.layer
        assert isinstance(layer, FakeLayer)

        async def broken(*args: object, **kw: object) -> Handle | None:
            raise OSError(5, "Input/output error")
        layer.adopt = broken  # type: ignore[method-assign]
        m.write_valid("b.xml", "n2", U2, True, "/img/d1.img", False)  # wants the same image
        m.now += 1
        m.run_pass()
        m.finish_all()
        assert m.rec.vms[U1].phase == "unresponsive"
        assert len(m.world.live()) == 1 and not m.world.violations  # no second QEMU, no disk


def test_a_deleted_run_directory_is_made_again_not_fatal() -> None:
    from reconciler.daemon import _take

    with machine() as m:
        m.rec.prepare()
        shutil.rmtree(m.layout.run_dir)
        assert _take(m.rec) and m.layout.run_dir.is_dir()
        m.rec.lock.release()


def test_a_vm_paused_by_qemu_shows_why_and_what_to_do() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        m.world.live()[0].state = "io-error"  # QEMU stopped the vCPUs (werror=stop)
        m.run_pass()
        status = status_of(m, "n1")
        assert status.state == "paused" and status.reason is not None
        assert status.reason.startswith("QEMU paused it: io-error (a disk reported")


def test_a_vm_paused_through_qmp_says_so_and_how_to_resume_it() -> None:
    """A user's `stop` on the users' monitor: qemud leaves the guest paused and says why."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        m.world.live()[0].state = "paused"
        m.run_pass()
        status = status_of(m, "n1")
        assert status.state == "paused" and status.reason is not None
        assert status.reason.startswith("paused through QMP")
        assert f"reconcile --config-dir {m.layout.config_dir} monitor n1" in status.reason
        assert '"cont"' in status.reason
        assert m.world.live()[0].state == "paused"  # left as the user put it


def test_a_vm_whose_file_became_another_domain_stays_with_the_copy_that_still_defines_it() -> None:
    with machine() as m:
        m.write_valid("c.xml", "n3", None, True, None, False)
        settle(m)
        m.write_valid("d.xml", "n3", None, True, None, False)  # a copy: same derived uuid, loses
        settle(m)
        pid = m.world.live()[0].pid
        m.write_valid("c.xml", "n3", U2, True, None, False)  # c.xml becomes another domain
        settle(m, 6, 400.0)
        assert m.world.stops == 0 and [q.pid for q in m.world.live()] == [pid]
        assert not m.world.violations


def test_a_vm_that_crashed_keeps_its_last_good_definition_across_a_reload() -> None:
    """Crashed, waiting for its restart back-off, file broken meanwhile, then SIGHUP: the
    reload does not change what the broken file means; the VM restarts from its last valid
    definition, as it would have without the reload."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        m.kill_qemu(0)
        m.write_invalid("a.xml")
        m.run_pass()
        m.sighup()
        settle(m, 4, 400.0)
        assert [q.uuid for q in m.world.live()] == [U1]
        assert m.rec.history.restarts.get(U1) == 1


def test_an_exit_during_adoption_is_recorded_and_restarted_not_left_unresponsive() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        m.restart_daemon(kill=False)
        m.world.exit_during_adoption = True
        m.run_pass()
        assert U1 not in m.rec.vms or m.rec.vms[U1].phase != "unresponsive"
        assert m.rec.history.ended[U1].kind is ExitKind.CRASH
        settle(m, 3, 400.0)
        assert [q.uuid for q in m.world.live()] == [U1]
        assert m.rec.history.restarts.get(U1) == 1


def test_retrying_a_hung_adoption_does_not_hold_up_the_pass() -> None:
    """A SIGSTOPped QEMU: its retried adoption runs in its worker while passes go on, and its
    uuid and disk stay claimed meanwhile (a clash on its disk does not start)."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, "/img/shared.qcow2", False)
        settle(m)
        m.world.live()[0].hung = True
        m.restart_daemon(kill=False)
        m.run_pass()
        assert m.rec.vms[U1].phase == "unresponsive"
        m.world.slow_hung_adoption = True
        m.write_valid("b.xml", "n2", U2, True, "/img/shared.qcow2", False)
        m.now += ADOPT_RETRY + 1
        m.loop.run_until_complete(asyncio.wait_for(m.rec.run_pass(), 5))  # not blocked
        m.drain()
        assert m.rec.supervisor.busy(U1) and m.rec.vms[U1].phase == "unresponsive"
        m.loop.run_until_complete(asyncio.wait_for(m.rec.run_pass(), 5))
        m.drain()
        assert [q.uuid for q in m.world.live()] == [U1], "nothing else took its disk"
        m.world.release()
        m.drain()
        assert not m.rec.supervisor.busy(U1) and m.rec.vms[U1].phase == "unresponsive"
        assert not m.world.violations


def test_power_verbs_go_through_the_worker_and_restart_from_the_current_definition() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        first = m.world.live()[0].pid
        m.power_verb(0, "reset")
        settle(m)
        assert (first, "system_reset") in m.world.commands and m.world.live()[0].pid == first
        m.write_valid("a.xml", "n1", U1, True, "/img/new.qcow2", False)  # a pending restart
        settle(m)
        assert m.world.live()[0].pid == first
        m.power_verb(0, "restart")
        settle(m)
        [now] = m.world.live()
        assert now.pid != first and writable_disks(now.domain)  # the new definition
        assert m.power[-1].done() and m.power[-1].result() == f"n1: running, pid {now.pid}"
        m.power_verb(0, "reboot")
        settle(m)
        [again] = m.world.live()
        assert again.pid != now.pid and m.power[-1].result() == f"n1: running, pid {again.pid}"
        assert m.rec.history.restarts.get(U1, 0) == 0, "a reboot's power-off is not a crash"
        assert not m.world.violations


# ---------------------------------------------------------------- review of the power verbs


def test_restart_of_a_clash_winner_brings_back_the_same_vm() -> None:
    """`web` runs from b.xml; a.xml, added later with the same name and another uuid, lost.
    `restart web` (its stop ending before any pass) brings back the same VM, not a.xml's."""
    with machine() as m:
        m.write_valid("b.xml", "web", U1, True, None, False)
        settle(m)
        m.write_valid("a.xml", "web", U2, True, None, False)
        settle(m)
        m.power_verb(0, "restart")
        m.finish_all()
        settle(m)
        assert [q.uuid for q in m.world.live()] == [U1]
        assert m.power[-1].result().startswith("web: running, pid")


def test_reboot_or_crash_of_a_clash_winner_brings_back_the_same_vm() -> None:
    with machine() as m:
        m.write_valid("b.xml", "web", U1, True, None, False)
        settle(m)
        m.write_valid("a.xml", "web", U2, True, None, False)
        settle(m)
        m.power_verb(0, "reboot")
        settle(m)
        assert [q.uuid for q in m.world.live()] == [U1]
        m.kill_qemu(0)
        settle(m, 6, 400.0)
        assert [q.uuid for q in m.world.live()] == [U1], "a crash handed the name to a.xml"


def test_restart_of_a_disk_holder_keeps_its_disk() -> None:
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, "/img/d1.img", False)
        settle(m)
        m.write_valid("a.xml", "two", U2, True, "/img/d1.img", False)  # blocked: 'one' runs
        settle(m)
        m.power_verb(0, "restart")
        m.finish_all()
        settle(m)
        assert [q.uuid for q in m.world.live()] == [U1], "restart gave the disk to 'two'"
        m.kill_qemu(0)
        settle(m, 6, 400.0)
        assert [q.uuid for q in m.world.live()] == [U1], "a crash gave the disk to 'two'"
        assert not m.world.violations


def test_restart_of_a_disk_conflict_loser_says_why_at_once() -> None:
    """'two' may not start while 'one' holds their disk: `restart two` says so at once (it
    used to wait its whole start timeout and say nothing)."""
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, "/img/d1.img", False)
        settle(m)
        m.write_valid("a.xml", "two", U2, True, "/img/d1.img", False)
        settle(m)
        task = m.loop.create_task(power.carry_out(m.rec, "restart", "two", lambda text: None))
        m.drain()
        assert task.done()
        with pytest.raises(power.PowerError, match=r"it may not start now: disk image /img/d1.img"):
            task.result()
        assert [q.uuid for q in m.world.live()] == [U1]


def test_the_log_says_each_file_error_once_not_again_at_every_change() -> None:
    with machine() as m:
        m.write_invalid("a.xml")
        settle(m, 1)
        m.write_invalid("b.xml")
        settle(m, 1)
        log = m.rec.out.getvalue()  # type: ignore[attr-defined]
        assert log.count("a.xml:") == 1 and log.count("b.xml:") == 1, log


def test_a_pending_reboot_shows_in_the_status() -> None:
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, None, False)
        settle(m)
        m.world.live()[0].hung = True  # the guest ignores the power button for now
        m.power_verb(0, "reboot")
        m.run_pass()
        status = status_of(m, "one")
        assert status.state == "running" and status.reason is not None
        assert status.reason.startswith("reboot pending: the power button was pressed")


def test_a_restart_whose_new_start_fails_says_why() -> None:
    """It used to end in a KeyError (the start failed, so no VM was there to name a pid)."""
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, None, False)
        settle(m)
        m.world.fail_starts = 100  # its image is locked by some other program, say
        task = m.loop.create_task(power.carry_out(m.rec, "restart", "one", lambda text: None))
        settle(m, 3, 0.1)
        assert task.done()
        with pytest.raises(power.PowerError, match=r"it did not start again: .*fake failure"):
            task.result()
        assert not m.world.violations


def test_a_second_restart_under_way_is_refused_and_the_first_keeps_its_claims() -> None:
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, "/img/d1.img", False)
        settle(m)
        m.world.live()[0].hung = True  # the stop takes its time: the first restart is under way
        first = m.loop.create_task(power.carry_out(m.rec, "restart", "one", lambda text: None))
        m.drain()
        assert not first.done() and U1 in m.rec.supervisor.restarting
        second = m.loop.create_task(power.carry_out(m.rec, "restart", "one", lambda text: None))
        m.drain()
        with pytest.raises(power.PowerError, match="already under way"):
            second.result()
        assert U1 in m.rec.supervisor.restarting  # the refused one did not drop the claim
        m.finish_all()
        settle(m, 6, 400.0)
        assert first.done() and first.result().startswith("one: running, pid")
        assert not m.world.violations


def test_a_verb_on_the_name_of_a_clash_loser_says_it_lost() -> None:
    with machine() as m:
        m.write_valid("b.xml", "one", U1, True, None, False)
        m.write_valid("c.xml", "other", U1, True, None, False)  # same uuid, loses to b.xml
        settle(m)
        with pytest.raises(power.PowerError, match=r"its file lost a clash: uuid .* is also used"):
            power.find_vm(m.rec, "other")


def test_after_a_daemon_restart_with_an_invalid_file_a_crash_or_restart_comes_back() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        m.write_invalid("a.xml")
        m.restart_daemon(kill=False)
        settle(m)
        m.kill_qemu(0)
        settle(m, 6, 400.0)
        assert [q.uuid for q in m.world.live()] == [U1], "a crash was not restarted"
        m.power_verb(0, "restart")
        m.finish_all()
        settle(m, 6, 100.0)
        assert [q.uuid for q in m.world.live()] == [U1], "restart stopped it for good"


def test_a_reboot_that_gave_up_leaves_a_later_power_off_to_the_guest() -> None:
    """Reviewed: a reboot whose button press was missed stayed armed, and a power-off hours
    later was turned into a start. Once the command gives up, the reboot is called off."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        q = m.world.live()[0]
        q.hung = True  # the guest takes longer than shutdown-timeout (5 s) to power off
        m.power_verb(0, "reboot")
        m.loop.run_until_complete(asyncio.wait({m.power[-1]}, timeout=8))
        assert "the reboot is called off" in str(m.power[-1].exception())
        assert U1 not in m.rec.supervisor.rebooting
        assert not (m.rec.layout.vm_dir(str(U1)) / "restart-pending").exists()
        m.run_pass()
        assert not (status_of(m, "n1").reason or "").startswith("reboot pending")
        q.hung = False

        async def late_poweroff() -> None:
            m.world.end(q, ExitKind.POWEROFF)
        m.run(late_poweroff())
        settle(m, 6, 400.0)
        assert m.world.live() == [], "the guest's own power-off became a start"


def spy_on_stops(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record whether each stop of a fake QEMU is graceful (an ACPI wait) or not (quit)."""
    graceful: list[bool] = []
    real = FakeHandle.stop

    async def spy(self: FakeHandle, *, reason: str, shutdown_timeout: float,
                  graceful_: bool = True, **kw: bool) -> Exit:
        """Note the kind of stop, then stop as the fake does."""
        flag = kw.get("graceful", graceful_)
        graceful.append(flag)
        return await real(self, reason=reason, shutdown_timeout=shutdown_timeout, graceful=flag)

    monkeypatch.setattr(FakeHandle, "stop", spy)
    return graceful


def test_a_forced_stop_that_does_not_happen_leaves_no_hard_stop_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop --force` whose stop never comes (the file says running again): the verb fails and
    a plain stop a day later still waits for the guest."""
    graceful = spy_on_stops(monkeypatch)
    monkeypatch.setattr(power, "STOP_WAIT", 0.2)
    with machine() as m:
        m.write_valid("a.xml", "web", U1, True, None, False)
        settle(m)
        task = m.loop.create_task(carry_out(m.rec, "stop-force", "web", lambda text: None))
        m.loop.run_until_complete(asyncio.wait({task}, timeout=5))
        assert isinstance(task.exception(), power.PowerError)
        assert U1 not in m.rec.supervisor.forced
        m.now += 86400
        m.write_valid("a.xml", "web", U1, False, None, False)  # a plain stop
        settle(m)
        assert graceful == [True], graceful


def test_stop_force_by_uuid_never_turns_onto_the_clash_loser_that_takes_the_name() -> None:
    """`stop --force web` edits b.xml (the VM that runs); the daemon may stop that VM before
    the request comes, and a.xml (same name, lost the clash) then takes the name and starts.
    The request names b's uuid, so it ends at once and a's VM is left alone."""
    with machine() as m:
        m.write_valid("b.xml", "web", U2, True, None, False)
        settle(m)
        m.write_valid("a.xml", "web", U1, True, None, False)  # loses: b's VM runs
        settle(m)
        m.write_valid("b.xml", "web", U2, False, None, False)  # the CLI's edit, applied first
        settle(m)
        running = {u for u, vm in m.rec.supervisor.vms.items() if vm.phase == "running"}
        assert running == {U1}  # the loser took the name once b's VM was stopped
        task = m.loop.create_task(carry_out(m.rec, "stop-force", "web", lambda text: None,
                                            uuid=U2))
        settle(m, 2, 0.1)
        assert task.result() == "web: not running"
        assert U1 in m.rec.supervisor.vms and not m.world.violations


def test_a_reconciler_that_exits_lets_starts_under_way_finish() -> None:
    """SIGTERM (or the end of --once, or of a verb) while a VM is between QEMU's launch and its
    `cont`: the start is let finish, so no guest is left paused until a reconciler runs again."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        m.run_pass()
        [qemu] = m.world.live()
        assert qemu.state == "prelaunch"  # launched, waiting for its `cont`
        leaving = m.loop.create_task(m.rec.detach_all())
        m.drain()
        assert not leaving.done(), "it let go of a start under way"
        m.world.release()
        m.drain()
        m.loop.run_until_complete(asyncio.wait_for(leaving, 5))
        assert qemu.alive and qemu.state == "running"


def test_a_reboot_marker_never_turns_a_crash_into_a_restart_by_qemud() -> None:
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        m.world.live()[0].hung = True  # the guest ignores the button
        m.power_verb(0, "reboot")
        m.loop.run_until_complete(asyncio.wait({m.power[-1]}, timeout=8))
        m.kill_qemu(0)  # then it crashes
        m.run_pass()
        assert m.rec.history.ended[U1].kind is ExitKind.CRASH


def test_deleting_a_file_stops_its_vm_within_the_latest_definitions_timeout() -> None:
    """The shutdown timeout edited after the start (no restart needed) applies when the file
    is deleted: the newest valid definition of the file, not the one the VM started with."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        spec = m.files["a.xml"].valid
        assert spec is not None
        m._write("a.xml", spec.xml(True).replace("shutdown-timeout='5'",
                                                 "shutdown-timeout='2'"), spec)
        settle(m)
        assert m.world.stops == 0
        m.delete("a.xml")
        settle(m, 4, 400.0)
        assert m.world.stop_timeouts == [2]


def test_a_pending_reboot_survives_a_daemon_restart() -> None:
    """reboot; the guest is slower than the timeout; the daemon restarts; then the guest powers
    off: the new daemon knows that power-off is the reboot's and starts the VM again."""
    with machine() as m:
        m.write_valid("a.xml", "n1", U1, True, None, False)
        settle(m)
        q = m.world.live()[0]
        q.hung = True
        m.power_verb(0, "reboot")
        m.loop.run_until_complete(asyncio.wait({m.power[-1]}, timeout=8))
        assert m.power[-1].exception() is not None
        m.restart_daemon(kill=False)
        settle(m)
        q.hung = False

        async def poweroff() -> None:
            m.world.end(q, ExitKind.POWEROFF)
        m.run(poweroff())
        settle(m, 4, 400.0)
        live = m.world.live()
        assert [x.uuid for x in live] == [U1] and live[0].pid != q.pid


def test_stop_force_of_a_vm_whose_file_is_invalid_says_why_before_doing_anything() -> None:
    """Reviewed: it printed "stopping at once", then refused; `stop` pointed at it meanwhile."""
    with machine() as m:
        m.write_valid("a.xml", "web", U1, True, None, False)
        settle(m)
        pid = m.world.live()[0].pid
        m.write_invalid("a.xml")
        settle(m)
        said: list[str] = []
        task = m.loop.create_task(carry_out(m.rec, "stop-force", "web", said.append))
        settle(m, 2)
        with pytest.raises(power.PowerError, match="its file is invalid, so the VM keeps running"):
            task.result()
        assert said == []  # nothing claimed that did not happen
        assert [q.pid for q in m.world.live()] == [pid]


def test_a_stop_presses_the_button_of_a_guest_running_with_acpi_whatever_the_file_says_now(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewed: a file that dropped <acpi/> (a pending restart) turned the graceful stop of a
    guest running with ACPI into a QMP quit: the plug pulled on a guest that would shut down."""
    graceful = spy_on_stops(monkeypatch)
    with machine() as m:
        m.write_valid("a.xml", "web", U1, True, None, False)
        settle(m)
        text = (m.dir / "a.xml").read_text().replace("<features><acpi/></features>", "")
        m._write("a.xml", text, m.files["a.xml"].valid)
        settle(m)
        m._write("a.xml", text.replace("state='running'", "state='stopped'"),
                 m.files["a.xml"].valid)
        settle(m, 6, 400.0)
        assert graceful == [True]
