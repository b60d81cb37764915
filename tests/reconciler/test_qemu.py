"""The QEMU process wrapper against real, bare QEMU (TCG, no guest kernel)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.errors import InvalidArgvError, StartError
from reconciler.paths import Layout, VmPaths
from reconciler.policy import ExitKind
from reconciler.process import WatchedProcess, listening_socket, pass_monitor_fd
from reconciler.qemu import (
    Exit,
    Phase,
    Primitives,
    QemuProcess,
    QmpEvent,
    Timeouts,
    format_log_line,
    identify_qemu,
    read_cmdline,
    read_pidfile,
    spawn_detached,
)
from tests.support.guest import READY_LINE, Guest
from tests.support.procs import alive, pids_mentioning

QEMU = shutil.which("qemu-system-x86_64")
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Short waits so the whole file runs in seconds; still generous for TCG.
FAST = Timeouts(attach=10.0, qmp=1.0, quit=2.0, term=2.0, kill=2.0, monitor_eof=1.0)

needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test coroutine on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A private qemud layout in a short /tmp dir; kills any QEMU a test leaked."""
    # pytest's tmp_path is too deep for a 107-byte socket path.
    base = Path(tempfile.mkdtemp(prefix="qd", dir="/tmp"))
    lay = Layout.under(base)
    lay.ensure()
    yield lay
    leaked = pids_mentioning(base, include_zombies=True)
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    shutil.rmtree(base, ignore_errors=True)
    assert not leaked, f"test leaked processes {leaked}"


def make_argv(paths: VmPaths, name: str, vm_uuid: str, *extra: str) -> list[str]:
    """A bare QEMU command line shaped like the model builds it."""
    return [
        "qemu-system-x86_64",
        "-name", f"guest={name}",
        "-uuid", vm_uuid,
        "-machine", "pc",
        "-accel", "tcg",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-m", "64",
        "-pidfile", str(paths.pidfile),
        "-chardev", f"socket,id=charmonitor,path={paths.qmp_socket},server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        *extra,
    ]


def new_vm(
    layout: Layout, *extra: str, name: str = "t1", timeouts: Timeouts = FAST, **kwargs: Any
) -> QemuProcess:
    """A wrapper for a fresh VM (not started)."""
    vm_uuid = str(uuid.uuid4())
    paths = layout.vm(name, vm_uuid)
    return QemuProcess(
        name, vm_uuid, make_argv(paths, name, vm_uuid, *extra), paths, timeouts=timeouts, **kwargs
    )


# --------------------------------------------------------------------------
# No QEMU needed
# --------------------------------------------------------------------------


def test_format_log_line_is_libvirt_style() -> None:
    assert format_log_line(0.123, "started pid 7") == "1970-01-01 00:00:00.123+0000: started pid 7\n"


@pytest.mark.parametrize(("arg", "expected"), [
    ("socket,id=charmonitor,path=/r/u/qmp.sock,server=on,wait=off",
     "socket,id=charmonitor,fd=7,server=on,wait=off"),
    ("socket,id=charmonitor,server=on,wait=off,path=/r/u/qmp.sock",
     "socket,id=charmonitor,server=on,wait=off,fd=7"),
    # another socket chardev, or a path that only starts like ours, is left alone
    ("socket,id=charchannel0,path=/r/u/qga.sock,server=on,wait=off",
     "socket,id=charchannel0,path=/r/u/qga.sock,server=on,wait=off"),
    ("socket,id=x,path=/r/u/qmp.sock2,server=on", "socket,id=x,path=/r/u/qmp.sock2,server=on"),
    ("file=/r/u/qmp.sock", "file=/r/u/qmp.sock"),
])
def test_pass_monitor_fd_rewrites_only_the_monitor_chardev(arg: str, expected: str) -> None:
    assert pass_monitor_fd(["-chardev", arg], Path("/r/u/qmp.sock"), 7) == ["-chardev", expected]


def test_pass_monitor_fd_matches_a_comma_escaped_path() -> None:
    arg = "socket,id=charmonitor,path=/r/a,,b/qmp.sock,server=on,wait=off"
    assert pass_monitor_fd([arg], Path("/r/a,b/qmp.sock"), 9) == [
        "socket,id=charmonitor,fd=9,server=on,wait=off"]


def test_listening_socket_is_private_and_accepts_before_anyone_calls_accept(
        tmp_path: Path) -> None:
    import socket

    path = tmp_path / "qmp.sock"
    path.write_text("stale")
    with listening_socket(path) as listener:
        assert path.stat().st_mode & 0o777 == 0o600
        assert not os.get_inheritable(listener.fileno())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # queued in the backlog: QEMU greets when it is ready


def test_watched_process_sees_the_end_signals_only_its_process_and_reaps() -> None:
    async def scenario() -> tuple[bool, tuple[int | None, int | None], bool]:
        child = subprocess.Popen(["sleep", "30"])
        child.returncode = 0  # the pidfd reaps it, not Popen
        proc = WatchedProcess(child.pid, os.pidfd_open(child.pid), is_child=True,
                              started_at=0.0, loop=asyncio.get_running_loop())
        assert proc.alive() and not proc.exited.done()
        assert proc.signal(signal.SIGTERM)
        await asyncio.wait_for(proc.exited, 5)
        status = proc.reap()
        again = proc.signal(signal.SIGTERM)  # gone: never reaches a reused pid
        proc.close()
        proc.close()
        return proc.alive(), status, again

    alive_after, status, again = run(scenario())
    assert not alive_after and status == (None, signal.SIGTERM) and not again


def test_read_pidfile(tmp_path: Path) -> None:
    pidfile = tmp_path / "qemu.pid"
    assert read_pidfile(pidfile) is None
    pidfile.write_text("1234\n")
    assert read_pidfile(pidfile) == 1234
    for garbage in ("", "abc", "-5", "0", "12 34"):
        pidfile.write_text(garbage)
        assert read_pidfile(pidfile) is None


@pytest.mark.parametrize(
    ("drop", "problem"),
    [
        ("-uuid", "missing '-uuid"),
        ("-pidfile", "missing '-pidfile"),
        ("-chardev", "no QMP chardev"),
    ],
)
def test_prepare_rejects_argv_without_essentials(layout: Layout, drop: str, problem: str) -> None:
    vm = new_vm(layout)
    i = vm.argv.index(drop)
    del vm.argv[i : i + 2]
    with pytest.raises(InvalidArgvError, match=problem) as info:
        vm.prepare()
    assert info.value.vm == "t1"


def test_prepare_rejects_daemonize(layout: Layout) -> None:
    vm = new_vm(layout, "-daemonize")
    with pytest.raises(InvalidArgvError, match="daemonize"):
        vm.prepare()


def test_prepare_appends_S_once_and_makes_private_dir(layout: Layout) -> None:
    vm = new_vm(layout, "-S")
    os.umask(0o022)
    vm.paths.vm_dir.mkdir(mode=0o700)
    (vm.paths.vm_dir / "qmp.sock").write_text("leftover")
    (vm.paths.vm_dir / "qemu.pid").write_text("leftover")
    vm.prepare()
    assert vm.argv.count("-S") == 1
    assert vm.paths.vm_dir.stat().st_mode & 0o777 == 0o700
    # leftovers gone; only the monitor socket QEMU will be given, bound and listening
    assert list(vm.paths.vm_dir.iterdir()) == [vm.paths.qmp_socket]
    assert stat.S_ISSOCK(vm.paths.qmp_socket.stat().st_mode)
    assert vm.phase is Phase.PREPARED
    vm.cleanup()
    assert not vm.paths.vm_dir.exists()


def test_launch_of_missing_binary_is_start_error(layout: Layout) -> None:
    vm = new_vm(layout)
    vm.argv[0] = "/nonexistent/qemu-system-x86_64"
    with pytest.raises(StartError) as info:
        run(vm.start())
    err = info.value
    assert err.stage == "launch"
    assert "/nonexistent/qemu-system-x86_64" in str(err)
    assert not vm.paths.vm_dir.exists()


def test_adopt_with_no_runtime_dir_is_none(layout: Layout) -> None:
    vm_uuid = str(uuid.uuid4())
    assert run(QemuProcess.adopt("t1", vm_uuid, layout.vm("t1", vm_uuid))) is None


def test_adopt_with_dead_pid_cleans_up(layout: Layout) -> None:
    vm_uuid = str(uuid.uuid4())
    paths = layout.vm("t1", vm_uuid)
    paths.vm_dir.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    paths.pidfile.write_text(f"{dead.pid}\n")
    assert run(QemuProcess.adopt("t1", vm_uuid, paths)) is None
    assert not paths.vm_dir.exists()
    assert "removing stale runtime folder" in paths.log_file.read_text()


def test_adopt_of_live_non_qemu_pid_cleans_without_signalling(layout: Layout) -> None:
    vm_uuid = str(uuid.uuid4())
    paths = layout.vm("t1", vm_uuid)
    paths.vm_dir.mkdir(mode=0o700)
    (paths.vm_dir / "qmp.sock").write_text("not a socket")
    # A shell whose command line even carries "-uuid <uuid>": only its
    # executable gives it away as not QEMU.
    sleeper = subprocess.Popen(
        ["bash", "-c", "sleep 60; true", "fake", "-uuid", vm_uuid], start_new_session=True
    )
    try:
        # Popen may return before the kernel has finished exec'ing bash.
        deadline = time.monotonic() + 2
        while "-uuid" not in Path(f"/proc/{sleeper.pid}/cmdline").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        paths.pidfile.write_text(f"{sleeper.pid}\n")
        assert run(QemuProcess.adopt("t1", vm_uuid, paths)) is None
        assert not paths.vm_dir.exists()
        time.sleep(0.1)
        assert sleeper.poll() is None, "adopt must never signal a process it did not verify"
        assert "not qemu-system-*" in paths.log_file.read_text()
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait()


# --------------------------------------------------------------------------
# Real QEMU
# --------------------------------------------------------------------------


@needs_qemu
@pytest.mark.qemu
def test_start_query_and_stop_when_guest_ignores_powerdown(layout: Layout) -> None:
    exits: list[Exit] = []
    events: list[QmpEvent] = []
    vm = new_vm(layout, on_exit=exits.append, on_event=events.append)
    umask = os.umask(0o022)
    os.umask(umask)

    async def scenario() -> tuple[Exit, float]:
        await vm.start()
        assert vm.phase is Phase.ACTIVE
        assert vm.pid is not None
        assert read_pidfile(vm.paths.pidfile) == vm.pid
        assert b"-S" in Path(f"/proc/{vm.pid}/cmdline").read_bytes().split(b"\0")
        # QEMU creates its socket and pidfile private, whatever our umask is
        assert stat.S_IMODE(os.stat(vm.paths.qmp_socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(vm.paths.pidfile).st_mode) == 0o600
        assert os.umask(umask) == umask, "spawning must restore the reconciler's umask"
        status = await vm.query_status()
        assert (status.status, status.running) == ("running", True)
        assert await vm.query_vnc() is None
        # A bare machine has no OS to act on the ACPI power button.
        t0 = time.monotonic()
        ended = await vm.stop(reason="test", shutdown_timeout=1.0)
        return ended, time.monotonic() - t0

    ended, took = run(scenario())
    assert 1.0 <= took < 1.0 + FAST.quit
    assert ended.kind is ExitKind.STOPPED
    assert (ended.returncode, ended.signal) == (0, None)
    assert ended.shutdown_reason == "host-qmp-quit"
    assert exits == [ended]
    assert [e.name for e in events if e.name == "SHUTDOWN"] == ["SHUTDOWN"]
    assert vm.phase is Phase.EXITED
    assert not vm.paths.vm_dir.exists()
    assert not alive(ended.pid)
    log = vm.paths.log_file.read_text()
    for expected in (
        f"started pid {ended.pid}",
        "stopping reason=test: system_powerdown, waiting up to 1s",
        "stopping reason=test: guest did not power off within 1s",
        "stopping reason=test: quit",
        "exited status=0 kind=stopped",
    ):
        assert expected in log
    assert log.splitlines()[0].split(": ", 1)[1].startswith("starting: qemu-system-x86_64 -name")


@needs_qemu
@pytest.mark.qemu
def test_start_failure_reports_qemu_message_and_cleans_up(layout: Layout) -> None:
    exits: list[Exit] = []
    vm = new_vm(
        layout, "-drive", "file=/nonexistent.img,format=raw,if=none,id=d0", on_exit=exits.append
    )
    with pytest.raises(StartError) as info:
        run(vm.start())
    err = info.value
    assert err.stage == "attach"
    assert err.returncode == 1
    assert "Could not open '/nonexistent.img': No such file or directory" in err.qemu_message
    assert "Could not open '/nonexistent.img'" in str(err)
    assert str(vm.paths.log_file) in str(err)
    assert not vm.paths.vm_dir.exists()
    assert "Could not open '/nonexistent.img'" in vm.paths.log_file.read_text()
    assert exits == [], "a failed start is reported by StartError, not on_exit"


@needs_qemu
@pytest.mark.qemu
def test_attach_timeout_kills_only_what_it_started(layout: Layout) -> None:
    async def never_answers(socket_path: Path, name: str) -> Any:
        await asyncio.Event().wait()  # a greeting that never comes

    vm = new_vm(
        layout,
        timeouts=Timeouts(attach=0.5, qmp=0.5, kill=2.0),
        primitives=Primitives(connect_qmp=never_answers),
    )
    with pytest.raises(StartError, match=r"did not answer within 0\.5s") as info:
        run(vm.start())
    assert info.value.signal == signal.SIGKILL
    assert vm.pid is not None and not alive(vm.pid)
    assert not vm.paths.vm_dir.exists()
    assert "stopping reason=start-failed" in vm.paths.log_file.read_text()


@needs_qemu
@pytest.mark.qemu
def test_a_failed_qmp_handshake_kills_what_it_started(layout: Layout) -> None:
    async def refuses(socket_path: Path, name: str) -> Any:
        raise ConnectionRefusedError("injected")

    vm = new_vm(layout, primitives=Primitives(connect_qmp=refuses))
    with pytest.raises(StartError, match=r"cannot talk QMP on .*injected") as info:
        run(vm.start())
    assert info.value.signal == signal.SIGKILL
    assert vm.pid is not None and not alive(vm.pid)
    assert not vm.paths.vm_dir.exists()


@needs_qemu
@pytest.mark.qemu
def test_abort_after_attach_kills_what_it_launched_and_frees_the_folder(layout: Layout) -> None:
    """An unexpected error between launch and resume never leaves a paused QEMU behind."""
    vm = new_vm(layout)

    async def scenario() -> None:
        vm.prepare()
        await vm.launch()
        await vm.attach()
        await vm.abort("unexpected error: injected")

    with pytest.raises(StartError, match="injected") as info:
        run(scenario())
    assert info.value.signal == signal.SIGKILL
    assert vm.pid is not None and not alive(vm.pid)
    assert not vm.paths.vm_dir.exists()


@needs_qemu
@pytest.mark.qemu
def test_qemu_runs_on_the_host_cpus_it_was_given_and_the_daemon_keeps_its_own(
        layout: Layout) -> None:
    mine = os.sched_getaffinity(0)
    one = frozenset({min(mine)})
    vm = new_vm(layout, cpus=one)

    async def scenario() -> set[int]:
        await vm.start()
        assert vm.pid is not None
        try:
            return os.sched_getaffinity(vm.pid)
        finally:
            await vm.stop(reason="test", shutdown_timeout=0.1, graceful=False)

    assert run(scenario()) == set(one)
    assert os.sched_getaffinity(0) == mine


@needs_qemu
@pytest.mark.qemu
def test_qemu_gets_its_monitor_socket_bound_and_private(layout: Layout) -> None:
    vm = new_vm(layout)

    async def scenario() -> tuple[list[str], int]:
        await vm.start()
        assert vm.pid is not None
        try:
            mode = vm.paths.qmp_socket.stat().st_mode & 0o777
            return read_cmdline(vm.pid) or [], mode
        finally:
            await vm.stop(reason="test", shutdown_timeout=0.1, graceful=False)

    cmdline, mode = run(scenario())
    chardev = next(arg for arg in cmdline if arg.startswith("socket,id=charmonitor"))
    assert chardev.startswith("socket,id=charmonitor,fd=") and "path=" not in chardev
    assert mode == 0o600
    assert "starting: " in vm.paths.log_file.read_text()


@needs_qemu
@pytest.mark.qemu
def test_sigkill_is_seen_within_a_second_as_crash(layout: Layout) -> None:
    exits: list[Exit] = []
    vm = new_vm(layout, on_exit=exits.append)

    async def scenario() -> tuple[Exit, float]:
        await vm.start()
        assert vm.pid is not None
        os.kill(vm.pid, signal.SIGKILL)
        t0 = time.monotonic()
        ended = await vm.wait()
        return ended, time.monotonic() - t0

    ended, took = run(scenario())
    assert took < 1.0
    assert ended.kind is ExitKind.CRASH
    assert (ended.returncode, ended.signal) == (None, signal.SIGKILL)
    assert exits == [ended]
    assert not vm.paths.vm_dir.exists()
    assert "exited signal=SIGKILL kind=crash" in vm.paths.log_file.read_text()


@needs_qemu
@pytest.mark.qemu
def test_outside_sigterm_is_host_shutdown(layout: Layout) -> None:
    vm = new_vm(layout)

    async def scenario() -> Exit:
        await vm.start()
        assert vm.pid is not None
        os.kill(vm.pid, signal.SIGTERM)
        return await vm.wait()

    ended = run(scenario())
    assert ended.kind is ExitKind.HOST_SHUTDOWN
    assert ended.returncode == 0
    assert ended.shutdown_reason == "host-signal"


@needs_qemu
@pytest.mark.qemu
def test_start_refuses_when_the_vm_is_already_running(layout: Layout) -> None:
    vm = new_vm(layout)

    async def scenario() -> None:
        await vm.start()
        twin = QemuProcess(vm.name, vm.uuid, make_argv(vm.paths, vm.name, vm.uuid), vm.paths)
        with pytest.raises(StartError, match="still running; adopt or stop it first"):
            twin.prepare()
        assert vm.paths.qmp_socket.exists()
        await vm.stop(reason="test", shutdown_timeout=0)

    run(scenario())


@needs_qemu
@pytest.mark.qemu
def test_detach_then_adopt_in_a_fresh_wrapper(layout: Layout) -> None:
    first = new_vm(layout)

    async def scenario() -> Exit:
        await first.start()
        await first.detach()  # what a restarting reconciler leaves behind
        assert first.phase is Phase.DETACHED
        assert first.pid is not None and alive(first.pid)
        adopted = await QemuProcess.adopt(first.name, first.uuid, first.paths, timeouts=FAST)
        assert adopted is not None
        assert adopted.pid == first.pid
        assert adopted.phase is Phase.ACTIVE
        assert adopted.run_state == "running"
        assert (await adopted.query_status()).running
        return await adopted.stop(reason="test", shutdown_timeout=0.5)

    ended = run(scenario())
    assert ended.kind is ExitKind.STOPPED
    # Still our child here, so its status is known.
    assert ended.returncode == 0
    assert not first.paths.vm_dir.exists()
    assert f"adopted pid {ended.pid} (run state running)" in first.paths.log_file.read_text()


_LAUNCHER = """
import asyncio, json, sys
from pathlib import Path
from reconciler.paths import Layout
from reconciler.qemu import QemuProcess

async def main() -> None:
    base, name, vm_uuid, argv = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    vm = QemuProcess(name, vm_uuid, argv, Layout.under(Path(base)).vm(name, vm_uuid))
    await vm.start()
    print(vm.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def launch_from_doomed_reconciler(layout: Layout, name: str, vm_uuid: str) -> int:
    """Start a VM from a separate Python process, SIGKILL that process, return QEMU's pid."""
    argv = make_argv(layout.vm(name, vm_uuid), name, vm_uuid)
    reconciler = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(layout.config_dir), name, vm_uuid, json.dumps(argv)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reconciler.stdout is not None
        pid = int(reconciler.stdout.readline())
    finally:
        reconciler.kill()
        reconciler.wait()
    return pid


@needs_qemu
@pytest.mark.qemu
def test_qemu_survives_sigkilled_reconciler_and_is_adopted(layout: Layout) -> None:
    name, vm_uuid = "t2", str(uuid.uuid4())
    paths = layout.vm(name, vm_uuid)
    pid = launch_from_doomed_reconciler(layout, name, vm_uuid)
    assert alive(pid), "QEMU must outlive the reconciler that started it"
    assert identify_qemu(pid, vm_uuid) is None
    assert identify_qemu(pid, vm_uuid, paths.vm_dir) is None
    # another qemud instance's folder: the same uuid (derived from one name) is not the same VM
    other = identify_qemu(pid, vm_uuid, layout.run_dir.parent / "elsewhere" / vm_uuid)
    assert other is not None and "another qemud" in other

    async def scenario() -> Exit:
        adopted = await QemuProcess.adopt(name, vm_uuid, paths, timeouts=FAST)
        assert adopted is not None and adopted.pid == pid
        assert (await adopted.query_status()).status == "running"
        t0 = time.monotonic()
        ended = await adopted.stop(reason="test", shutdown_timeout=0.5)
        assert time.monotonic() - t0 < 0.5 + FAST.quit
        return ended

    ended = run(scenario())
    assert ended.pid == pid
    assert ended.kind is ExitKind.STOPPED
    assert (ended.returncode, ended.signal) == (None, None), "not our child: status unknown"
    assert ended.shutdown_reason == "host-qmp-quit"
    assert not alive(pid)
    assert not paths.vm_dir.exists()


@needs_qemu
@pytest.mark.qemu
def test_exit_of_adopted_non_child_is_seen_within_a_second(layout: Layout) -> None:
    name, vm_uuid = "t3", str(uuid.uuid4())
    pid = launch_from_doomed_reconciler(layout, name, vm_uuid)
    exits: list[Exit] = []

    async def scenario() -> tuple[Exit, float]:
        adopted = await QemuProcess.adopt(
            name, vm_uuid, layout.vm(name, vm_uuid), timeouts=FAST, on_exit=exits.append
        )
        assert adopted is not None
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        ended = await adopted.wait()
        return ended, time.monotonic() - t0

    ended, took = run(scenario())
    assert took < 1.0
    assert ended.kind is ExitKind.CRASH  # no SHUTDOWN event, status unreadable
    assert (ended.returncode, ended.signal) == (None, None)
    assert exits == [ended]
    assert not layout.vm_dir(vm_uuid).exists()


@needs_qemu
@pytest.mark.qemu
def test_adopt_refuses_a_qemu_of_another_vm(layout: Layout) -> None:
    other = new_vm(layout, name="other")

    async def scenario() -> None:
        await other.start()
        assert other.pid is not None
        vm_uuid = str(uuid.uuid4())
        paths = layout.vm("t1", vm_uuid)
        paths.vm_dir.mkdir(mode=0o700)
        paths.pidfile.write_text(f"{other.pid}\n")
        assert await QemuProcess.adopt("t1", vm_uuid, paths) is None
        assert not paths.vm_dir.exists()
        assert "is the QEMU of another VM" in paths.log_file.read_text()
        assert (await other.query_status()).running, "the other VM must be untouched"
        await other.stop(reason="test", shutdown_timeout=0)

    run(scenario())


@needs_qemu
@pytest.mark.qemu
def test_stop_of_sigstopped_qemu_is_bounded(layout: Layout) -> None:
    vm = new_vm(layout, timeouts=Timeouts(qmp=0.5, quit=1.0, term=2.0, kill=2.0))

    async def scenario() -> tuple[Exit, float]:
        await vm.start()
        assert vm.pid is not None
        os.kill(vm.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        ended = await vm.stop(reason="test", shutdown_timeout=1.0)
        return ended, time.monotonic() - t0

    ended, took = run(scenario())
    # system_powerdown times out (0.5 s), QMP is given up, SIGTERM+SIGCONT ends it.
    assert took < 0.5 + 2.0
    assert ended.kind is ExitKind.STOPPED
    assert not alive(ended.pid)
    log = vm.paths.log_file.read_text()
    assert "no answer within 0.5s" in log
    assert "giving up on QMP" in log
    assert "stopping reason=test: SIGTERM" in log
    assert "stopping reason=test: quit" not in log


_IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(layout: Layout) -> None:
    # A stand-in process without a monitor that ignores SIGTERM: only SIGKILL ends it.
    def spawn_stubborn(argv: Any, log_fd: int, pass_fds: Any, cpus: Any, env: Any) -> int:
        return spawn_detached([sys.executable, "-c", _IGNORES_SIGTERM, str(layout.run_dir)], log_fd)

    exits: list[Exit] = []
    vm = new_vm(
        layout,
        timeouts=Timeouts(qmp=0.5, term=0.5, kill=2.0),
        primitives=Primitives(spawn=spawn_stubborn),
        on_exit=exits.append,
    )

    async def scenario() -> tuple[Exit, float]:
        vm.prepare()
        await vm.launch()
        await asyncio.sleep(0.2)  # let it install its SIGTERM handler
        t0 = time.monotonic()
        ended = await vm.stop(reason="test", shutdown_timeout=1.0)
        return ended, time.monotonic() - t0

    ended, took = run(scenario())
    assert 0.5 <= took < 0.5 + 2.0
    assert ended.kind is ExitKind.STOPPED
    assert (ended.returncode, ended.signal) == (None, signal.SIGKILL)
    assert exits == [], "not started successfully, so on_exit stays silent"
    log = vm.paths.log_file.read_text()
    assert "system_powerdown" not in log, "no monitor: straight to signals"
    assert "still running 0.5s after SIGTERM; SIGKILL" in log
    assert "exited signal=SIGKILL kind=stopped" in log
    assert not vm.paths.vm_dir.exists()


@needs_qemu
@pytest.mark.qemu
def test_concurrent_stops_share_one_sequence(layout: Layout) -> None:
    vm = new_vm(layout)

    async def scenario() -> tuple[Exit, Exit]:
        await vm.start()
        first, second = await asyncio.gather(
            vm.stop(reason="a", shutdown_timeout=0), vm.stop(reason="b", shutdown_timeout=0)
        )
        return first, second

    first, second = run(scenario())
    assert first is second
    assert "reason=b" not in vm.paths.log_file.read_text()


# --------------------------------------------------------------------------
# With the real test guest (kernel + initramfs)
# --------------------------------------------------------------------------


def guest_vm(layout: Layout, guest: Guest, append: str, *extra: str, **kwargs: Any) -> QemuProcess:
    """A wrapper booting the test guest with ACPI, console on a file."""
    vm_uuid = str(uuid.uuid4())
    paths = layout.vm("g1", vm_uuid)
    argv = make_argv(
        paths,
        "g1",
        vm_uuid,
        "-m",
        "256",
        "-kernel",
        str(guest.kernel),
        "-initrd",
        str(guest.initrd),
        "-append",
        append,
        "-chardev",
        f"file,id=s0,path={paths.console_log}",
        "-device",
        "isa-serial,chardev=s0",
        *extra,
    )
    return QemuProcess("g1", vm_uuid, argv, paths, timeouts=FAST, **kwargs)


async def wait_ready(vm: QemuProcess, timeout: float = 30.0) -> None:
    """Wait until the guest printed its ready line on the console."""
    deadline = time.monotonic() + timeout
    while READY_LINE not in vm.paths.console_log.read_text(errors="replace"):
        assert vm.exit is None, f"QEMU exited: {vm.exit}"
        assert time.monotonic() < deadline, "guest not ready"
        await asyncio.sleep(0.05)


@needs_qemu
@pytest.mark.qemu
@pytest.mark.guest
def test_graceful_stop_lets_the_guest_power_itself_off(layout: Layout, guest: Guest) -> None:
    vm = guest_vm(layout, guest, guest.cmdline())

    async def scenario() -> Exit:
        await vm.start()
        await wait_ready(vm)  # the guest opens its power button device before this line
        return await vm.stop(reason="test", shutdown_timeout=20.0)

    ended = run(scenario(), timeout=60)
    console = vm.paths.console_log.read_text(errors="replace")
    assert ended.kind is ExitKind.STOPPED
    assert (ended.returncode, ended.signal) == (0, None), "exited by itself, not killed"
    assert ended.shutdown_guest is True, console
    assert ended.shutdown_reason == "guest-shutdown"
    log = vm.paths.log_file.read_text()
    assert "event SHUTDOWN guest=true reason=guest-shutdown" in log
    for escalation in ("did not power off", ": quit", "SIGTERM", "SIGKILL"):
        assert escalation not in log


@needs_qemu
@pytest.mark.qemu
@pytest.mark.guest
def test_guest_poweroff_on_its_own_is_poweroff(layout: Layout, guest: Guest) -> None:
    exits: list[Exit] = []
    vm = guest_vm(layout, guest, guest.cmdline(poweroff_after=0), on_exit=exits.append)

    async def scenario() -> Exit:
        await vm.start()
        return await vm.wait()

    ended = run(scenario(), timeout=60)
    assert ended.kind is ExitKind.POWEROFF
    assert (ended.returncode, ended.signal) == (0, None)
    assert exits == [ended]


@needs_qemu
@pytest.mark.qemu
@pytest.mark.guest
def test_guest_panic_is_panic(layout: Layout, guest: Guest) -> None:
    if not guest.pvpanic:
        pytest.skip("the guest kernel lacks pvpanic")
    events: list[QmpEvent] = []
    vm = guest_vm(
        layout, guest, guest.cmdline(panic_after=0), "-device", "pvpanic", on_event=events.append
    )

    async def scenario() -> Exit:
        await vm.start()
        return await vm.wait()

    ended = run(scenario(), timeout=60)
    # QEMU's default panic action powers the VM off: GUEST_PANICKED, SHUTDOWN, exit 0.
    assert ended.kind is ExitKind.PANIC
    assert ended.returncode == 0
    assert "GUEST_PANICKED" in [e.name for e in events]


@needs_qemu
@pytest.mark.qemu
@pytest.mark.guest
def test_a_pause_by_qemu_is_read_with_its_reason(layout: Layout, guest: Guest) -> None:
    """STOP says nothing of why; the wrapper asks QEMU (query-status) and reports the reason."""
    if not guest.pvpanic:
        pytest.skip("the guest kernel lacks pvpanic")
    events: list[QmpEvent] = []
    vm = guest_vm(layout, guest, guest.cmdline(panic_after=0), "-device", "pvpanic",
                  "-action", "panic=pause", on_event=events.append)

    async def scenario() -> str | None:
        await vm.start()
        deadline = time.monotonic() + 45
        while not any(e.data.get("status") == "guest-panicked" for e in events):
            assert time.monotonic() < deadline, [e.name for e in events]
            await asyncio.sleep(0.05)
        state = vm.run_state
        await vm.stop(reason="test", shutdown_timeout=0, graceful=False)
        return state

    assert run(scenario(), timeout=60) == "guest-panicked"
    assert "paused by QEMU: guest-panicked" in vm.paths.log_file.read_text()


# --------------------------------------------------------------------------
# The promise at the process level (issue 7)
# --------------------------------------------------------------------------


def test_spawned_child_gets_no_descriptor_of_ours_and_a_private_umask(tmp_path: Path) -> None:
    """An inotify instance (as watchdog opens it: not close-on-exec) and any other open file of
    the daemon stay out of the child; the child's umask is 177 while ours never changes."""
    libc = ctypes.CDLL(None, use_errno=True)
    inotify = libc.inotify_init()  # no IN_CLOEXEC, like watchdog's
    assert inotify >= 0
    leaky = os.open(tmp_path, os.O_RDONLY)  # inheritable
    os.set_inheritable(leaky, True)
    out = tmp_path / "out"
    before = os.umask(0o022)
    try:
        with open(out, "wb") as log:
            pid = spawn_detached(["/bin/sh", "-c", "umask; ls -l /proc/self/fd/"], log.fileno())
        _, status = os.waitpid(pid, 0)
        assert os.umask(0o022) == 0o022  # ours untouched
    finally:
        os.umask(before)
        os.close(inotify)
        os.close(leaky)
    assert status == 0
    text = out.read_text()
    assert text.splitlines()[0] == "0177"
    assert "inotify" not in text and str(tmp_path) + "\n" not in text.replace(str(out), "")
    fds = [line.split()[-3] for line in text.splitlines() if " -> " in line]
    assert set(fds) <= {"0", "1", "2", "3"}, text  # 3: ls's own /proc/self/fd


def test_a_log_write_that_fails_never_escapes(layout: Layout) -> None:
    """ENOSPC on the VM log (here /dev/full) is swallowed: an exit is always handled."""
    vm = new_vm(layout)
    vm.paths = VmPaths(vm.paths.vm_dir, vm.paths.qmp_socket, vm.paths.pidfile,
                       Path("/dev/full"), vm.paths.console_log)
    vm._log("exited status=0 kind=stopped")  # would raise OSError(ENOSPC) if not handled


def test_a_lifecycle_line_after_cut_short_output_starts_on_its_own_line(tmp_path: Path) -> None:
    """QEMU's output cut mid-line (a full disk) is not glued to qemud's next line (the crash
    reason quotes the VM log's last QEMU line)."""
    from reconciler.vmlog import VmLog

    log = tmp_path / "vm.log"
    log.write_bytes(b"qemu-system-x86_64: Failed to wr")
    VmLog(log, "vm", lambda: 0.0).write("exited status=1")
    lines = log.read_text().splitlines()
    assert lines[0] == "qemu-system-x86_64: Failed to wr"
    assert lines[1].endswith("exited status=1") and len(lines) == 2


@pytest.mark.qemu
def test_a_qemu_never_resumed_is_resumed_by_adoption(layout: Layout) -> None:
    """A reconciler killed between the -S launch and `cont` leaves QEMU in prelaunch: the next
    one adopts it and lets it run."""
    first = new_vm(layout)

    async def scenario() -> str:
        first.prepare()
        await first.launch()
        await first.attach()  # ... and no resume(): the reconciler dies here
        assert (await first.query_status()).status == "prelaunch"
        await first.detach()
        adopted = await QemuProcess.adopt(first.name, first.uuid, first.paths, timeouts=FAST)
        assert adopted is not None and adopted.pid == first.pid
        state = (await adopted.query_status()).status
        await adopted.stop(reason="test", shutdown_timeout=0, graceful=False)
        return state

    assert run(scenario()) == "running"
    assert "resumed a QEMU that was never started (prelaunch)" in first.paths.log_file.read_text()


@pytest.mark.qemu
def test_a_qemu_without_its_pidfile_is_found_and_adopted_not_lost(layout: Layout) -> None:
    """A reconciler killed between the spawn and QEMU writing its pidfile: the folder is not
    stale while that QEMU lives; it is adopted, and a new start for the uuid is refused."""
    first = new_vm(layout)

    async def scenario() -> tuple[int | None, int | None]:
        await first.start()
        await first.detach()
        first.paths.pidfile.unlink()  # as if QEMU had not written it yet
        again = QemuProcess(first.name, first.uuid, list(first.argv), first.paths, timeouts=FAST)
        with pytest.raises(StartError, match="still running"):
            again.prepare()
        adopted = await QemuProcess.adopt(first.name, first.uuid, first.paths, timeouts=FAST)
        assert adopted is not None and first.paths.vm_dir.exists()
        pid = adopted.pid
        await adopted.stop(reason="test", shutdown_timeout=0, graceful=False)
        return pid, first.pid

    adopted_pid, started_pid = run(scenario())
    assert adopted_pid == started_pid


@needs_qemu
@pytest.mark.qemu
def test_an_exit_during_adoption_is_reported_once_and_returned_exited(layout: Layout) -> None:
    """QEMU dies while its new reconciler connects: the exit is not lost (no "unresponsive"
    VM waiting for a retry); it reaches on_exit once and adopt returns the exited wrapper."""
    first = new_vm(layout)
    exits: list[Exit] = []

    async def dies_while_connecting(socket_path: Path, name: str) -> Any:
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        raise ConnectionResetError("injected: the connection went with QEMU")

    async def scenario() -> QemuProcess | None:
        await first.start()
        await first.detach()
        return await QemuProcess.adopt(
            first.name, first.uuid, first.paths, timeouts=FAST,
            primitives=Primitives(connect_qmp=dies_while_connecting), on_exit=exits.append)

    adopted = run(scenario())
    assert adopted is not None and adopted.phase is Phase.EXITED
    assert len(exits) == 1 and exits[0].signal == signal.SIGKILL
    assert exits[0].kind is ExitKind.CRASH
    assert not first.paths.vm_dir.exists()


@pytest.mark.qemu
def test_qemu_holds_no_inotify_of_the_daemon(layout: Layout) -> None:
    """The daemon's inotify instance (watchdog's) never leaks into a VM's QEMU."""
    libc = ctypes.CDLL(None, use_errno=True)
    inotify = libc.inotify_init()
    assert inotify >= 0
    vm = new_vm(layout)

    async def scenario() -> list[str]:
        await vm.start()
        assert vm.pid is not None
        targets = [os.readlink(f"/proc/{vm.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{vm.pid}/fd")]
        await vm.stop(reason="test", shutdown_timeout=0, graceful=False)
        return targets

    try:
        targets = run(scenario())
    finally:
        os.close(inotify)
    assert not [t for t in targets if "inotify" in t], targets
