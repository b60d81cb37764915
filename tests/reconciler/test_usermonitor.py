"""`reconcile monitor`: parsing the command, finding the socket, and the QMP exchange (against a
scripted peer on a real unix socket; tests/integration/test_monitor.py runs it on real QEMU)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.usermonitor import (
    MonitorUnavailableError,
    QmpCommandError,
    QmpProtocolError,
    execute,
    find_socket,
    parse_command,
    qemu_runs,
)
from tests.reconciler.test_cli_ops import ROOT, U1, dom, publish, run

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short scratch directory (unix socket paths must fit in 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qum-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(("text", "command"), [
    ("query-status", {"execute": "query-status"}),
    ("  query_status ", {"execute": "query_status"}),
    ('{"execute": "query-status"}', {"execute": "query-status"}),
    ('{"execute": "human-monitor-command", "arguments": {"command-line": "info"}, "id": 7}',
     {"execute": "human-monitor-command", "arguments": {"command-line": "info"}, "id": 7}),
])
def test_parse_command(text: str, command: dict[str, Any]) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the command is empty"),
    ("query status", "neither a QMP command name nor a JSON object"),
    ("{execute}", "not valid JSON"),
    ('{"arguments": {}}', 'with "execute"'),
    ('{"execute": 3}', 'with "execute"'),
    ("[1]", "neither"),
])
def test_parse_command_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_command(text)


# --- the exchange ---------------------------------------------------------------------------------

Script = Callable[[socket.socket], None]


def serve(path: Path, script: Script) -> threading.Thread:
    """Listen at `path` and run `script` on the first connection, in a thread."""
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run_once() -> None:
        conn, _ = server.accept()
        with conn, server:
            script(conn)

    thread = threading.Thread(target=run_once, daemon=True)
    thread.start()
    return thread


def send(conn: socket.socket, *messages: dict[str, Any]) -> None:
    """Write QMP messages as QEMU does (CR LF after each)."""
    conn.sendall(b"".join(json.dumps(m).encode() + b"\r\n" for m in messages))


def receive(conn: socket.socket) -> dict[str, Any]:
    """Read one line the client sent."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, "the client closed"
        data += chunk
    message: dict[str, Any] = json.loads(data)
    return message


def qemu_like(reply: dict[str, Any], seen: list[dict[str, Any]]) -> Script:
    """A peer that greets, accepts capabilities, sends an event, then `reply`."""

    def script(conn: socket.socket) -> None:
        send(conn, GREETING)
        seen.append(receive(conn))
        send(conn, {"return": {}})
        seen.append(receive(conn))
        send(conn, {"event": "RTC_CHANGE", "data": {"offset": 0},
                    "timestamp": {"seconds": 1, "microseconds": 2}}, reply)

    return script


def test_execute_negotiates_skips_events_and_returns_the_reply(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    reply = {"return": {"status": "running", "running": True}}
    thread = serve(tmp_path / "m.sock", qemu_like(reply, seen))
    command = {"execute": "query-status", "id": "x"}
    assert execute(tmp_path / "m.sock", "vm", command, timeout=5) == reply
    thread.join(5)
    assert seen == [{"execute": "qmp_capabilities"}, command]


def test_an_error_reply_carries_qemus_class_and_description(tmp_path: Path) -> None:
    error = {"error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}
    serve(tmp_path / "m.sock", qemu_like(error, []))
    with pytest.raises(QmpCommandError) as info:
        execute(tmp_path / "m.sock", "vm", {"execute": "x"}, timeout=5)
    assert (info.value.error_class, info.value.desc) == ("CommandNotFound",
                                                          "The command x has not been found")
    assert str(info.value) == ("vm: QEMU refused 'x': CommandNotFound: The command x has not "
                               "been found")


def test_a_reply_split_across_reads_and_a_long_one_arrive_whole(tmp_path: Path) -> None:
    big = {"return": [{"name": f"cmd-{i}", "meta-type": "command"} for i in range(20000)]}

    def script(conn: socket.socket) -> None:
        conn.sendall(json.dumps(GREETING).encode()[:10])
        conn.sendall(json.dumps(GREETING).encode()[10:] + b"\r\n")
        receive(conn)
        send(conn, {"return": {}})
        receive(conn)
        send(conn, big)

    serve(tmp_path / "m.sock", script)
    assert execute(tmp_path / "m.sock", "vm", {"execute": "query-qmp-schema"}, timeout=5) == big


def test_a_monitor_held_by_another_client_times_out_saying_so(tmp_path: Path) -> None:
    # QEMU serves one client per monitor: a second connection waits in the backlog, ungreeted
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "m.sock"))
    server.listen(1)
    with server, pytest.raises(MonitorUnavailableError, match=r"another client .* is connected"):
        execute(tmp_path / "m.sock", "vm", {"execute": "query-status"}, timeout=0.2)


@pytest.mark.parametrize(("script", "error", "match"), [
    (lambda c: None, MonitorUnavailableError, r"closed its monitor .* \(without a greeting"),
    (lambda c: c.sendall(b"hello\r\n"), QmpProtocolError, "not JSON"),
    (lambda c: send(c, {"something": 1}), QmpProtocolError, "no QMP greeting"),
    (lambda c: (send(c, GREETING), receive(c)), MonitorUnavailableError,
     r"\(before it answered\)"),
])
def test_a_peer_that_is_not_qmp_is_an_error(tmp_path: Path, script: Script,
                                            error: type[Exception], match: str) -> None:
    serve(tmp_path / "m.sock", script)
    with pytest.raises(error, match=match):
        execute(tmp_path / "m.sock", "vm", {"execute": "query-status"}, timeout=5)


def test_nothing_listening_means_not_running(tmp_path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "m.sock"))  # bound, never listening: like a socket left behind
    dead.close()
    with pytest.raises(MonitorUnavailableError, match="vm is not running: nothing listens on"):
        execute(tmp_path / "m.sock", "vm", {"execute": "query-status"}, timeout=5)


# --- finding the socket ---------------------------------------------------------------------------


def test_find_socket_names_the_fix_for_each_case(tmp_path: Path) -> None:
    layout = publish(tmp_path / "c", dom("a", state="running", pid=os.getpid()),
                     dom("b", state="stopped"))
    domains = json.loads((layout.status_dir / "status.json").read_text())["domains"]
    with pytest.raises(MonitorUnavailableError, match="no domain named 'z'"):
        find_socket(layout, "z", domains)
    with pytest.raises(MonitorUnavailableError,
                       match=r"b is not running \(state stopped\); start it with "
                       "'reconcile start b'"):
        find_socket(layout, "b", domains)
    folder = layout.vm_dir(U1)
    folder.mkdir()
    with pytest.raises(MonitorUnavailableError, match="a is not running: its QEMU exited"):
        find_socket(layout, "a", domains)  # a folder left behind, no QEMU
    # a live process of this uuid (the test runner stands for QEMU) without the socket
    (folder / "qemu.pid").write_text(f"{os.getpid()}\n")
    assert not qemu_runs(folder / "qemu.pid", U1)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()", U1],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        (folder / "qemu.pid").write_text(f"{holder.pid}\n")
        assert qemu_runs(folder / "qemu.pid", U1)
        with pytest.raises(MonitorUnavailableError, match="started by an older qemud; "
                           "'reconcile restart a'"):
            find_socket(layout, "a", domains)
        (folder / "qmp-user.sock").touch()
        assert find_socket(layout, "a", domains) == layout.user_qmp_socket(U1)
    finally:
        holder.kill()
        holder.wait()


def test_the_command_prints_the_reply_or_the_error_and_imports_nothing_heavy(
        tmp_path: Path) -> None:
    layout = publish(tmp_path / "c", dom("a", state="running", pid=1))
    layout.vm_dir(U1).mkdir()
    path = layout.user_qmp_socket(U1)
    serve(path, qemu_like({"return": {"name": "a"}}, []))
    code = f"""
import sys
from reconciler import cli
code = cli.main(['monitor', '--config-dir', {str(tmp_path / 'c')!r}, 'a', 'query-name'])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'asyncio', 'lxml'))
assert not heavy, heavy
raise SystemExit(code)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"return": {"name": "a"}}\n', "")
    serve(path, qemu_like({"error": {"class": "GenericError", "desc": "no"}}, []))
    code_, out, err = run("monitor", "--config-dir", str(tmp_path / "c"), "a", "stop")
    assert (code_, out, err) == (1, "", "reconcile: a: QEMU refused 'stop': GenericError: no\n")
    assert run("monitor", "--config-dir", str(tmp_path / "c"), "a", "{")[0] == 2
