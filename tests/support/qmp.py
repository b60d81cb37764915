"""A minimal synchronous QMP client for tests that start QEMU themselves."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class Qmp:
    """A minimal synchronous QMP client (QEMU's greeting, capabilities, commands, events skipped)."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        """Connect to `path` once QEMU listens there; fail when QEMU exits first or never listens."""
        waited = 0.0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"QEMU exited with status {proc.returncode} before QMP answered")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if waited > timeout:
                    raise RuntimeError(f"no QMP at {path} after {timeout:.0f} s") from None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)  # returns at once if QEMU exits
                waited += 0.05
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        """The next message that is not an event."""
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError("QMP closed")
            msg: dict[str, Any] = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run `command`; return its `return` value, or raise with QEMU's error."""
        self.file.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error']}")
        return reply.get("return")

    def close(self) -> None:
        """Close the connection."""
        self.file.close()
        self.sock.close()


def query_paused(argv: list[str], qmp_path: Path, log: Path,
                 commands: Sequence[str | tuple[str, dict[str, Any]]], timeout: float = 30.0,
                 env: Mapping[str, str] | None = None) -> list[Any]:
    """Start QEMU (`argv`, with `-S`), run the QMP `commands`, `quit`; their replies in order.

    A command is its name, or (name, arguments). `env` is added to QEMU's environment. QEMU's
    output goes to `log` (quoted, with the command line, when it exits early). Fails unless
    QEMU exits 0 after the `quit`; QEMU never outlives the call.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={**os.environ, **(env or {})})
    try:
        try:
            qmp = Qmp(qmp_path, proc, timeout)
        except RuntimeError as e:
            raise AssertionError(f"{e}: {log.read_text()}\n{shlex.join(argv)}") from None
        try:
            replies = [qmp.execute(c) if isinstance(c, str) else qmp.execute(c[0], **c[1])
                       for c in commands]
            with contextlib.suppress(RuntimeError, OSError):
                qmp.execute("quit")
        finally:
            qmp.close()
        assert proc.wait(timeout) == 0, log.read_text()
        return replies
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout)
