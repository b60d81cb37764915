"""The control socket's client (`reconciler.control.request`) against a scripted daemon."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from reconciler import control


def scripted(path: Path, delay: float, replies: list[bytes]) -> threading.Thread:
    """A one-request daemon at `path`: reads the request, waits `delay` s, sends `replies`."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        """Answer one client, late."""
        conn, _ = server.accept()
        with conn, server:
            conn.recv(4096)
            time.sleep(delay)
            for reply in replies:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_daemon_that_takes_the_request_late_is_still_heard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewed: after the "may be hung, still waiting" line, the next read failed with
    "cannot read from timed out object" (a file object is dead after one timeout)."""
    monkeypatch.setattr(control, "ACK_TIMEOUT", 0.2)
    path = tmp_path / "control.sock"
    thread = scripted(path, 0.6, [b'{"ack": true}\n{"progress": "h: reset"}\n',
                                  b'{"ok": true, "message": "h: reset (pid 1)"}\n'])
    said: list[str] = []
    ok, message = control.request(path, "reset", "h", wait=True, progress=said.append)
    thread.join(5)
    assert (ok, message) == (True, "h: reset (pid 1)")
    assert len(said) == 2 and "it may be hung" in said[0] and said[1] == "h: reset"
