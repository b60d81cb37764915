"""Prove the test guest (tests.support.guest) behaves as documented under bare QEMU (TCG)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from tests.support.guest import READY_LINE, Guest

pytestmark = [pytest.mark.guest, pytest.mark.qemu]

READY_TIMEOUT = 30.0


@dataclass
class Qemu:
    """A running bare QEMU with its console log file and QMP socket path."""

    proc: subprocess.Popen[bytes]
    console: Path
    qmp_sock: Path
    started: float


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    """Yield a function starting QEMU on the guest; kills whatever is still running at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def _launch(guest: Guest, append: str, extra: Sequence[str] = ()) -> Qemu:
        """Start qemu-system-x86_64 (TCG) booting ``guest`` with ``append`` as command line."""
        console = tmp_path / "console.log"
        qmp_sock = tmp_path / "qmp.sock"
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc",
            "-nodefaults", "-no-user-config", "-display", "none", "-m", "256",
            "-kernel", str(guest.kernel), "-initrd", str(guest.initrd), "-append", append,
            "-chardev", f"file,id=s0,path={console}", "-device", "isa-serial,chardev=s0",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off",
            *extra,
        ]
        with (tmp_path / "qemu.stderr").open("wb") as stderr:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr)
        procs.append(proc)
        return Qemu(proc, console, qmp_sock, time.monotonic())

    yield _launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def console_text(vm: Qemu) -> str:
    """Return the console log so far (empty if QEMU has not created it yet)."""
    try:
        return vm.console.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def wait_ready(vm: Qemu, timeout: float = READY_TIMEOUT) -> float:
    """Poll the console log until READY_LINE appears; return seconds since QEMU started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.strip() == READY_LINE for line in console_text(vm).splitlines()):
            return time.monotonic() - vm.started
        if vm.proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    stderr = (vm.console.parent / "qemu.stderr").read_text(errors="replace")
    pytest.fail(
        f"guest not ready (qemu rc={vm.proc.poll()}); stderr:\n{stderr}\nconsole:\n{console_text(vm)}"
    )


async def connect_qmp(vm: Qemu, timeout: float = 10.0) -> QMPClient:
    """Connect a QMPClient to the VM's socket, retrying until QEMU listens."""
    deadline = time.monotonic() + timeout
    while not vm.qmp_sock.exists() and time.monotonic() < deadline and vm.proc.poll() is None:
        await asyncio.sleep(0.02)
    while True:
        qmp = QMPClient("test-guest")
        try:
            await qmp.connect(str(vm.qmp_sock))
            return qmp
        except Exception:
            if time.monotonic() > deadline or vm.proc.poll() is not None:
                raise
            await asyncio.sleep(0.05)


async def wait_event(qmp: QMPClient, name: str, timeout: float) -> dict[str, Any]:
    """Return the first QMP event called ``name`` seen on this connection, waiting if needed."""
    deadline = time.monotonic() + timeout
    while True:
        for event in qmp.events.history:
            if event["event"] == name:
                return dict(event)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            seen = [e["event"] for e in qmp.events.history]
            pytest.fail(f"no {name} event within {timeout}s; events seen: {seen}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(qmp.events.get(), remaining)


async def wait_exit(vm: Qemu, timeout: float) -> int | None:
    """Wait up to ``timeout`` s for QEMU to exit by itself; return its exit code or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = vm.proc.poll()
        if rc is not None:
            return rc
        await asyncio.sleep(0.02)
    return vm.proc.poll()


async def close(qmp: QMPClient) -> None:
    """Disconnect, ignoring the EOF error left behind when QEMU already exited."""
    with contextlib.suppress(Exception):
        await qmp.disconnect()


def test_powerdown_makes_guest_power_off(guest: Guest, launch: Any) -> None:
    """system_powerdown -> guest runs poweroff -f -> SHUTDOWN guest=true, QEMU exits 0 in 5 s."""

    async def scenario() -> None:
        vm = launch(guest, guest.cmdline())
        qmp = await connect_qmp(vm)
        try:
            ready = await wait_ready(vm)
            sent = time.monotonic()
            await qmp.execute("system_powerdown")
            rc = await wait_exit(vm, 5.0)
            exited = time.monotonic() - sent
            assert rc == 0, f"qemu rc={rc} after system_powerdown; console:\n{console_text(vm)}"
            shutdown = await wait_event(qmp, "SHUTDOWN", 2.0)
            assert shutdown["data"]["guest"] is True, shutdown
            assert shutdown["data"]["reason"] == "guest-shutdown", shutdown
            print(f"\nboot-to-ready {ready:.2f}s, powerdown-to-exit {exited:.2f}s")
        finally:
            await close(qmp)

    asyncio.run(scenario())


def test_powerbutton_ignore(guest: Guest, launch: Any) -> None:
    """With qemud.powerbutton=ignore the guest keeps running after system_powerdown."""

    async def scenario() -> None:
        vm = launch(guest, guest.cmdline(powerbutton="ignore"))
        qmp = await connect_qmp(vm)
        try:
            await wait_ready(vm)
            await qmp.execute("system_powerdown")
            await asyncio.sleep(2.0)
            assert vm.proc.poll() is None, f"qemu exited; console:\n{console_text(vm)}"
            status = await qmp.execute("query-status")
            assert isinstance(status, dict)
            assert status["status"] == "running", status
            assert "power button: ignored" in console_text(vm)
            assert not any(e["event"] == "SHUTDOWN" for e in qmp.events.history)
        finally:
            await close(qmp)

    asyncio.run(scenario())


def test_poweroff_after(guest: Guest, launch: Any) -> None:
    """qemud.poweroff_after=1: QEMU exits 0 by itself with SHUTDOWN guest=true, no command sent."""

    async def scenario() -> None:
        vm = launch(guest, guest.cmdline(poweroff_after=1))
        qmp = await connect_qmp(vm)
        try:
            await wait_ready(vm)
            rc = await wait_exit(vm, 10.0)
            assert rc == 0, f"qemu rc={rc}; console:\n{console_text(vm)}"
            shutdown = await wait_event(qmp, "SHUTDOWN", 2.0)
            assert shutdown["data"]["guest"] is True, shutdown
            assert shutdown["data"]["reason"] == "guest-shutdown", shutdown
        finally:
            await close(qmp)

    asyncio.run(scenario())


def test_reboot_after(guest: Guest, launch: Any) -> None:
    """qemud.reboot_after=1: QEMU emits RESET guest=true and boots the guest again."""

    async def scenario() -> None:
        vm = launch(guest, guest.cmdline(reboot_after=1))
        qmp = await connect_qmp(vm)
        try:
            await wait_ready(vm)
            reset = await wait_event(qmp, "RESET", 10.0)
            assert reset["data"]["guest"] is True, reset
            assert reset["data"]["reason"] == "guest-reset", reset
            assert vm.proc.poll() is None
            deadline = time.monotonic() + READY_TIMEOUT
            while console_text(vm).count(READY_LINE) < 2:  # the guest came up again
                assert time.monotonic() < deadline, console_text(vm)
                await asyncio.sleep(0.05)
        finally:
            await close(qmp)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("extra", "action"),
    [
        pytest.param((), "poweroff", id="default-action"),
        pytest.param(("-action", "panic=pause"), "pause", id="panic=pause"),
    ],
)
def test_panic_after_reports_guest_panicked(
    guest: Guest, launch: Any, extra: tuple[str, ...], action: str
) -> None:
    """qemud.panic_after=1 + -device pvpanic: QEMU emits GUEST_PANICKED with the panic action.

    QEMU 7.2's default panic action is "shutdown": GUEST_PANICKED(action=poweroff),
    then SHUTDOWN(guest=true, reason=guest-panic) and QEMU exits 0.  With
    ``-action panic=pause`` the VM stays paused in status "guest-panicked".
    """
    assert guest.pvpanic, "the guest kernel package lacks the pvpanic modules"

    async def scenario() -> None:
        vm = launch(guest, guest.cmdline(panic_after=1), ["-device", "pvpanic", *extra])
        qmp = await connect_qmp(vm)
        try:
            await wait_ready(vm)
            panicked = await wait_event(qmp, "GUEST_PANICKED", 15.0)
            assert panicked["data"]["action"] == action, panicked
            if action == "poweroff":
                shutdown = await wait_event(qmp, "SHUTDOWN", 5.0)
                assert shutdown["data"] == {"guest": True, "reason": "guest-panic"}, shutdown
                rc = await wait_exit(vm, 5.0)
                assert rc == 0, f"qemu rc={rc}"
            else:
                status = await qmp.execute("query-status")
                assert isinstance(status, dict)
                assert status["status"] == "guest-panicked", status
                assert vm.proc.poll() is None
        finally:
            await close(qmp)

    asyncio.run(scenario())
