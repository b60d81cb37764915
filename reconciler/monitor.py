"""The daemon's QMP session with one QEMU: connect, lifecycle events, bounded commands.

`Monitor` wraps one connected `qemu.qmp.QMPClient`. It hands each lifecycle event (and only
those: every other event is dropped unread, so nothing piles up) to a callback in arrival order,
runs commands within a time limit and turns every failure into `MonitorError` (QEMU refused it,
no answer in time, connection gone), and drains the last events once QEMU has gone.

It knows nothing of processes: `reconciler.qemu.QemuProcess` owns one and decides what the
events mean. QEMU gets its monitor socket already bound and listening (``-chardev
socket,fd=N``, as libvirt does), so a connection made right after the spawn waits in the
socket's backlog until QEMU greets: no polling for the socket to appear.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import ExecuteError, QMPClient, QMPError, Runstate
from qemu.qmp.message import Message

from reconciler.errors import MonitorError, MonitorTimeoutError

__all__ = [
    "LIFECYCLE_EVENTS",
    "Monitor",
    "QmpConnector",
    "QmpEvent",
    "RunStatus",
    "VncInfo",
    "connect_qmp",
]

#: QMP events the monitor passes on; every other event is dropped unread.
LIFECYCLE_EVENTS = frozenset({"SHUTDOWN", "GUEST_PANICKED", "RESET", "STOP", "RESUME"})

#: Connect and negotiate a QMP session on a socket path; the str names the client.
QmpConnector = Callable[[Path, str], Awaitable[QMPClient]]


async def connect_qmp(socket_path: Path, name: str) -> QMPClient:
    """Open a QMP session on ``socket_path``: greeting and capabilities negotiated.

    Raises `qemu.qmp.QMPError` (ConnectError) if nothing listens or the handshake fails; the
    caller bounds the time (a pre-bound socket accepts at once and greets when QEMU is ready).
    """
    client = QMPClient(name)
    await client.connect(str(socket_path))
    return client


@dataclass(frozen=True)
class QmpEvent:
    """One lifecycle event QEMU sent; ``at`` is wall-clock time of receipt."""

    name: str
    data: Mapping[str, object]
    at: float


@dataclass(frozen=True)
class RunStatus:
    """QEMU's ``query-status`` answer: ``status`` is e.g. running, paused, prelaunch."""

    status: str
    running: bool


@dataclass(frozen=True)
class VncInfo:
    """Where the VM's VNC server listens."""

    host: str
    port: int


class Monitor:
    """One connected QMP session of one VM (see the module docstring).

    Use it from the event loop it was created on. ``on_message`` gets every lifecycle event
    exactly once, in order, including those still queued when the session is closed.
    """

    def __init__(self, name: str, socket_path: Path, client: QMPClient, *, timeout: float,
                 on_message: Callable[[Message], None]) -> None:
        """Take over ``client`` and start handing its lifecycle events to ``on_message``."""
        self.name = name
        self.socket_path = socket_path
        self.timeout = timeout
        self._client: QMPClient | None = client
        self._on_message = on_message
        client.events.names.update(LIFECYCLE_EVENTS)
        self._events: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._consume(client))

    async def _consume(self, client: QMPClient) -> None:
        """Hand events to the callback in arrival order until cancelled."""
        async for message in client.events:
            self._on_message(message)

    @property
    def connected(self) -> bool:
        """True while the QMP session is up (not closed by QEMU or by us)."""
        return self._client is not None and self._client.runstate is Runstate.RUNNING

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      *, timeout: float | None = None) -> object:
        """Run one QMP command and return its result, within ``timeout`` (default: the monitor's).

        Raises `MonitorTimeoutError` if QEMU does not answer in time (e.g. it is SIGSTOPped) and
        `MonitorError` if it answers with an error (carrying QEMU's message and error class) or
        the connection is gone.
        """
        client = self._client
        if client is None:
            raise MonitorError(self.name, command=command, socket=self.socket_path,
                               reason="monitor not connected")
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(client.execute(command, arguments), limit)
        except ExecuteError as err:
            raise MonitorError(
                self.name, command=command, socket=self.socket_path, reason="QEMU refused it",
                qemu_message=str(err), error_class=err.error_class,
            ) from err
        except TimeoutError as err:
            raise MonitorTimeoutError(
                self.name, command=command, socket=self.socket_path,
                reason=f"no answer within {limit:g}s (is QEMU stopped or hung?)",
            ) from err
        except (QMPError, OSError, EOFError) as err:
            raise MonitorError(
                self.name, command=command, socket=self.socket_path,
                reason=f"monitor connection lost ({err})",
            ) from err

    async def query_status(self) -> RunStatus:
        """QEMU's run state via ``query-status``; `MonitorError` if it cannot be read."""
        result = await self.execute("query-status")
        if not isinstance(result, Mapping):
            raise MonitorError(self.name, command="query-status", socket=self.socket_path,
                               reason=f"unexpected answer {result!r}")
        return RunStatus(str(result.get("status", "")), bool(result.get("running", False)))

    async def query_vnc(self) -> VncInfo | None:
        """The VNC server's address via ``query-vnc``; None if the VM has no VNC display."""
        try:
            result = await self.execute("query-vnc")
        except MonitorError as err:
            if err.error_class == "CommandNotFound":
                return None
            raise
        if not isinstance(result, Mapping) or not result.get("enabled"):
            return None
        service = str(result.get("service", ""))
        if not service.isdigit():
            return None
        return VncInfo(host=str(result.get("host", "")), port=int(service))

    async def drain(self, timeout: float) -> None:
        """After QEMU's exit: read the session to its end (at most ``timeout`` s), then close.

        The last events (SHUTDOWN before a guest's power-off, say) reach ``on_message`` first.
        """
        client = self._client
        if client is None:
            return

        async def until_eof() -> None:
            """Return once the library has read the monitor to its end."""
            while client.runstate is Runstate.RUNNING:
                await client.runstate_changed()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until_eof(), timeout)
        await self.close()

    async def close(self) -> None:
        """Stop event handling (delivering what is queued) and disconnect; idempotent."""
        client, self._client = self._client, None
        task, self._events = self._events, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if client is None:
            return
        for message in client.events.clear():
            self._on_message(message)
        # disconnect() re-raises why the connection ended (EOFError when QEMU went away);
        # that is expected here.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.timeout)
