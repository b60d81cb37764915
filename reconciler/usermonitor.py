"""`reconcile monitor NAME COMMAND`: one QMP command through the VM's users' monitor.

Every VM qemud starts has two QMP monitors: the daemon's own (`qmp.sock`, which it keeps
connected for lifecycle events) and the users' (`qmp-user.sock`, see `model.Runtime`), free for
`reconcile monitor`, qmp-shell and scripts. QEMU serves one client per monitor at a time, so
the users' monitor never disturbs the daemon's connection, whatever is done with it.

This is a blocking client on a plain socket (no asyncio, no pydantic: the command answers in
tens of milliseconds): read QEMU's greeting, negotiate capabilities (`qmp_capabilities`),
send the command, and return the first reply, skipping the asynchronous events that may come
before it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.paths import Layout

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for QEMU's greeting and for each reply."""

_LIMIT = 64 * 1024 * 1024
"""Longest reply line accepted (query-qmp-schema is ~200 KiB; this is a runaway guard)."""


class MonitorUnavailableError(ReconcilerError):
    """The VM's users' monitor cannot be reached: not running, never had one, busy."""


class QmpCommandError(ReconcilerError):
    """QEMU answered the command with an error (its class and description are kept)."""

    def __init__(self, name: str, command: str, error_class: str, desc: str) -> None:
        self.name = name
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"{name}: QEMU refused '{command}': {error_class}: {desc}")


class QmpProtocolError(ReconcilerError):
    """What came back on the socket is not QMP (or it closed half-way)."""


def parse_command(text: str) -> dict[str, Any]:
    """The QMP command object a user typed: a JSON object with "execute", or a bare name.

    `query-status` is short for `{"execute": "query-status"}`. Raises `ValueError` with what
    is wrong otherwise.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("the command is empty; write it like '{\"execute\": \"query-status\"}'")
    if not stripped.startswith("{"):
        if all(c.isalnum() or c in "-_" for c in stripped):
            return {"execute": stripped}
        raise ValueError(f"{text!r} is neither a QMP command name nor a JSON object; "
                         """write it like '{"execute": "query-status"}'""")
    try:
        command = json.loads(stripped)
    except ValueError as exc:
        raise ValueError(f"the command is not valid JSON ({exc})") from exc
    if not isinstance(command, dict) or not isinstance(command.get("execute"), str):
        raise ValueError("""the command must be a JSON object with "execute", like """
                         """'{"execute": "query-status"}' (and "arguments" if it takes any)""")
    return command


def find_socket(layout: Layout, name: str, domains: Sequence[Mapping[str, Any]]) -> Path:
    """The users' monitor socket of the VM named `name`, from status.json's `domains`.

    Raises `MonitorUnavailableError` (with what to do) when no such domain is known or it has
    no runtime folder, i.e. it is not running. Whether QEMU answers there is for `execute`.
    """
    mine = [d for d in domains if d.get("name") == name and d.get("uuid")
            and d.get("state") not in ("conflict", "invalid")]
    if not mine:
        raise MonitorUnavailableError(
            f"no domain named {name!r} in {layout.status_dir / 'status.json'}; "
            "'reconcile status' lists them")
    dom = mine[0]
    path = layout.user_qmp_socket(str(dom["uuid"]))
    if not path.parent.is_dir():
        raise MonitorUnavailableError(
            f"{name} is not running (state {dom.get('state')}); start it with "
            f"'reconcile start {name}'")
    if not os.path.lexists(path):
        if not qemu_runs(layout.pidfile(str(dom["uuid"])), str(dom["uuid"])):
            raise MonitorUnavailableError(
                f"{name} is not running: its QEMU exited ('reconcile status {name}' says why)")
        raise MonitorUnavailableError(
            f"{name} has no users' monitor {path}: its QEMU was started by an older qemud; "
            f"'reconcile restart {name}' starts it with one")
    return path


def qemu_runs(pidfile: Path, vm_uuid: str, proc: Path = Path("/proc")) -> bool:
    """Whether the pid in `pidfile` is a live process with `vm_uuid` on its command line.

    A light check (no asyncio, unlike `reconciler.process.identify_qemu`) that only chooses
    between two error messages; QEMU itself answering on the socket is the real proof.
    """
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    return vm_uuid.encode() in cmdline


def execute(path: Path, name: str, command: Mapping[str, Any], *,
            timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Send `command` through the QMP monitor at `path`; return QEMU's reply object.

    The reply is `{"return": ...}` (with the command's "id" if it had one). Raises
    `QmpCommandError` for an `{"error": ...}` reply, `MonitorUnavailableError` when nothing
    answers at `path` (QEMU gone, or another client holding the monitor until `timeout`),
    `QmpProtocolError` for anything that is not QMP.
    """
    deadline = time.monotonic() + timeout
    sock = _connect(path, name)
    try:
        reader = _Lines(sock, deadline, path, name)
        greeting = reader.next()
        if "QMP" not in greeting:
            raise QmpProtocolError(f"{path}: no QMP greeting (got {_short(greeting)})")
        _send(sock, {"execute": "qmp_capabilities"})
        reply = reader.reply()
        if "error" in reply:
            raise _error(name, "qmp_capabilities", reply)
        _send(sock, command)
        reply = reader.reply()
    finally:
        sock.close()
    if "error" in reply:
        raise _error(name, str(command.get("execute")), reply)
    return reply


def _connect(path: Path, name: str) -> socket.socket:
    """A socket connected to the monitor at `path`; `MonitorUnavailableError` if none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.fspath(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise MonitorUnavailableError(
                f"{name} is not running: nothing listens on {path} (its QEMU exited); "
                f"'reconcile status {name}' says why") from exc
        raise MonitorUnavailableError(f"cannot connect to {path}: {exc.strerror or exc}") from exc
    return sock


def _send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    """Write one QMP message (a JSON object and a newline)."""
    sock.sendall(json.dumps(message).encode() + b"\n")


def _error(name: str, command: str, reply: Mapping[str, Any]) -> QmpCommandError:
    """The exception for an error reply (QEMU's class and description)."""
    err = reply.get("error")
    if not isinstance(err, dict):
        err = {}
    return QmpCommandError(name, command, str(err.get("class", "?")), str(err.get("desc", "")))


def _short(message: object) -> str:
    """A message cut to a readable length for an error text."""
    text = json.dumps(message)
    return text if len(text) <= 200 else text[:200] + "..."


class _Lines:
    """QMP messages from a socket, one JSON object a line, each read before `deadline`."""

    def __init__(self, sock: socket.socket, deadline: float, path: Path, name: str) -> None:
        self._sock = sock
        self._deadline = deadline
        self._path = path
        self._name = name
        self._buffer = b""
        self.greeted = False

    def next(self) -> dict[str, Any]:
        """The next message; raises when the socket closes, times out or carries no JSON."""
        while b"\n" not in self._buffer:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out()
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise self._timed_out() from None
            except OSError as exc:
                raise QmpProtocolError(f"{self._path}: {exc.strerror or exc}") from exc
            if not chunk:
                raise MonitorUnavailableError(
                    f"{self._name}: QEMU closed its monitor {self._path} "
                    f"({'before it answered' if self.greeted else 'without a greeting'}); "
                    f"'reconcile status {self._name}' says whether it still runs")
            self._buffer += chunk
            if len(self._buffer) > _LIMIT:
                raise QmpProtocolError(f"{self._path}: a reply longer than {_LIMIT} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QmpProtocolError(f"{self._path}: not JSON: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise QmpProtocolError(f"{self._path}: not a JSON object: {line[:200]!r}")
        self.greeted = True
        return message

    def reply(self) -> dict[str, Any]:
        """The next message that is not an asynchronous event (the answer to what was sent)."""
        while True:
            message = self.next()
            if "event" not in message:
                return message

    def _timed_out(self) -> MonitorUnavailableError:
        """The error for a monitor that did not answer in time."""
        if not self.greeted:
            return MonitorUnavailableError(
                f"{self._name}: no greeting on {self._path}: another client (qmp-shell, a "
                "script) is connected to the users' monitor, which serves one at a time, or "
                "its QEMU is hung; close the other client and try again")
        return MonitorUnavailableError(f"{self._name}: QEMU did not answer on {self._path} in "
                                       "time; try a longer --timeout")
