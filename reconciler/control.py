"""The daemon's control socket: one-shot power requests from the CLI, answered with progress.

The socket is ``<run>/control.sock`` (mode 0600 in the private run directory). A client sends
one JSON line, ``{"verb": "reboot", "name": "web", "wait": true}`` (and ``"uuid"`` to name the
VM exactly), and reads JSON lines back:
``{"progress": "..."}`` for each step, then ``{"ok": true, "message": "..."}`` or
``{"ok": false, "error": "..."}``, after ``{"ack": true}`` when the daemon takes the request
(a client that gave up before that is dropped). With ``"wait": false`` the daemon answers
``{"ok": true, "accepted": true, ...}`` at once and carries the request out on its own.

The client side (`request`) uses the standard library only, so the CLI stays fast.
"""

from __future__ import annotations

import json
import os
import socket
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from reconciler.loop import Reconciler

CONTROL_SOCKET = "control.sock"
"""In the run directory: the daemon listens there while it runs."""

#: The longest a client waits for the daemon's next line (a graceful stop may take minutes).
CLIENT_TIMEOUT = 900.0
#: How long a client waits for the daemon to take its request before it says so.
ACK_TIMEOUT = 10.0


class NoDaemonError(Exception):
    """Nothing listens on the control socket (no daemon runs, or an old one without it)."""


def request(path: Path, verb: str, name: str, *, wait: bool,
            progress: Callable[[str], None], uuid: str | None = None) -> tuple[bool, str]:
    """Send one power request to the daemon at ``path``; return (ok, final message).

    ``uuid``, when given, names the VM exactly (the one whose file the CLI just edited), so
    that a clash over ``name`` resolved otherwise meanwhile cannot redirect the request.
    Each progress line is given to ``progress`` as it arrives. Raises `NoDaemonError` when no
    daemon listens; a daemon that goes away mid-request is a failure with that message.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ACK_TIMEOUT)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoDaemonError(str(exc)) from exc
        sock.sendall(json.dumps({"verb": verb, "name": name, "wait": wait,
                                 **({"uuid": uuid} if uuid else {})}).encode() + b"\n")
        lines = _LineReader(sock)  # not makefile(): its reader is dead after one timeout
        taken = said = False
        while True:
            try:
                raw = lines.readline()
            except TimeoutError:
                if taken:
                    raise
                if not wait:
                    return False, (f"the daemon did not take the request within "
                                   f"{ACK_TIMEOUT:g}s: it may be hung; nothing was done")
                if not said:
                    progress(f"the daemon has not taken the request within {ACK_TIMEOUT:g}s: "
                             "it may be hung (stopped, or stuck in a pass); still waiting "
                             "(Ctrl-C gives up, and then the request is dropped)")
                    said = True
                sock.settimeout(CLIENT_TIMEOUT)
                continue
            if not raw:
                break
            taken = True
            sock.settimeout(CLIENT_TIMEOUT)  # taken: steps may take minutes each
            try:
                reply: dict[str, Any] = json.loads(raw)
            except ValueError:
                continue
            if "ack" in reply:
                continue
            if "progress" in reply:
                progress(str(reply["progress"]))
            elif reply.get("ok"):
                return True, str(reply.get("message", ""))
            else:
                return False, str(reply.get("error", "failed"))
    except TimeoutError:
        return False, f"the daemon did not answer within {CLIENT_TIMEOUT:g}s"
    except OSError as exc:
        return False, f"lost the daemon's control socket: {exc}"
    finally:
        sock.close()
    return False, "the daemon closed the control socket before answering (did it exit?)"


class _LineReader:
    """Lines from a socket whose timeout may expire and be changed between reads.

    (`socket.makefile` refuses every read after a first timeout: "cannot read from timed out
    object".) A line comes back with its newline; b"" at the end of the stream.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def readline(self) -> bytes:
        """The next line; raises TimeoutError (nothing lost) when the socket's timeout expires."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


async def _gone(reader: asyncio.StreamReader) -> bool:
    """Whether the client closed its end (it sends nothing after its request line)."""
    import asyncio

    try:
        return await asyncio.wait_for(reader.read(1), timeout=0.01) == b""
    except TimeoutError:
        return False


async def serve_control(rec: Reconciler, path: Path) -> asyncio.Server:
    """Listen on ``path`` for power requests and carry them out in `rec` (the daemon's loop).

    A stale socket file is replaced. Requests run beside the passes; a client that goes away
    once its request is taken does not cancel it, one that gave up before is not carried out.
    """
    import asyncio

    from reconciler.errors import ReconcilerError
    from reconciler.power import VERBS, carry_out

    background: set[asyncio.Task[str]] = set()

    def finished(task: asyncio.Task[str]) -> None:
        """A request ended: log how (also when its client did not wait for it)."""
        background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        rec.say(f"control: {exc}" if exc is not None else f"control: {task.result()}")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client: read its request, stream progress, answer once."""

        def send(obj: dict[str, object]) -> None:
            """Queue one reply line; a client that left is ignored."""
            if not writer.is_closing():
                writer.write(json.dumps(obj).encode() + b"\n")

        try:
            try:
                req = json.loads(await reader.readline())
                verb, name, wait = str(req["verb"]), str(req["name"]), bool(req.get("wait", True))
                exact = uuidlib.UUID(str(req["uuid"])) if req.get("uuid") else None
            except (ValueError, KeyError, TypeError, AttributeError):
                send({"ok": False, "error": "malformed request"})
                return
            if verb not in VERBS:
                send({"ok": False, "error": f"unknown verb {verb!r}"})
                return
            if await _gone(reader):  # it gave up before this daemon read its request
                rec.say(f"control: {verb} {name} dropped: its client went away before the "
                        "daemon took it")
                return
            send({"ack": True})
            rec.say(f"control: {verb} {name} requested")

            def say(text: str) -> None:
                """A step of the request: to the daemon log and to the client."""
                rec.say(text)
                send({"progress": text})

            task = asyncio.ensure_future(carry_out(rec, verb, name, say, uuid=exact))
            background.add(task)
            task.add_done_callback(finished)
            if not wait:
                send({"ok": True, "accepted": True, "message": f"{name}: {verb} requested"})
                return
            try:
                message = await asyncio.shield(task)
            except ReconcilerError as exc:
                send({"ok": False, "error": str(exc)})
            except Exception as exc:  # a bug: say it, keep the daemon
                send({"ok": False, "error": f"internal error: {exc!r} (please report it)"})
            else:
                send({"ok": True, "message": message})
        finally:
            try:
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass

    if path.exists() or path.is_symlink():
        path.unlink()
    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)
    return server
