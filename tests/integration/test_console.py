"""`reconcile console` on a real QEMU: a terminal (a pty) drives a shell in the test guest.

The guest boots the test kernel with ``rdinit=/bin/sh``, so a busybox shell runs on its serial
console and answers what is typed. `reconcile --once` starts the VM (it keeps running after); the
console is attached from a pseudo-terminal (`pty.fork`), so raw mode is set up for real. Bytes
must flow both ways (a command typed is answered by the guest), Ctrl-] must detach with exit 0
and the VM keep running, and QEMU's console log must record the session too.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.paths import Layout
from tests.support import vms
from tests.support.guest import Guest
from tests.support.procs import alive, kill_mentioning, pids_mentioning

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0
SHELL = "console=ttyS0 panic=-1 rdinit=/bin/sh"


@pytest.fixture
def root() -> Iterator[Path]:
    """A short directory (QMP socket paths fit in 107 bytes); nothing started in it survives."""
    path = Path(tempfile.mkdtemp(prefix="qcon-", dir="/tmp"))
    try:
        yield path
    finally:
        kill_mentioning(path, timeout=10)
        shutil.rmtree(path, ignore_errors=True)
    assert not pids_mentioning(path)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll until `predicate` is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class Terminal:
    """`reconcile console NAME` running on a pseudo-terminal, as a person would run it."""

    def __init__(self, conf: Path, name: str) -> None:
        argv = [sys.executable, "-m", "reconciler", "--config-dir", str(conf), "console", name]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its stdin, stdout and stderr are the pty
            try:
                os.chdir(REPO)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.seen = b""
        self.modes = termios.tcgetattr(self.fd)

    def read_until(self, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        """Read what the terminal shows until `needle` appears; return all seen so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out waiting for {needle!r}; the terminal showed "
                            f"{self.seen[-2000:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child has gone and closed its side
                    chunk = b""
                if not chunk:
                    pytest.fail(f"the console ended before {needle!r}: {self.seen[-2000:]!r}")
                self.seen += chunk
        return self.seen

    def type(self, data: bytes) -> None:
        """Type `data` on the terminal."""
        os.write(self.fd, data)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for `reconcile console` to exit; its exit status."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                pytest.fail(f"reconcile console did not exit; it showed {self.seen[-2000:]!r}")
            with_data, _, _ = select.select([self.fd], [], [], 0.05)
            if with_data:
                with contextlib.suppress(OSError):  # EIO once the child has gone
                    self.seen += os.read(self.fd, 4096)

    def close(self) -> None:
        """Kill the child if it is still there; close the terminal."""
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def start(conf: Path, name: str, xml: str) -> int:
    """Write the domain, start it with `reconcile --once` (it keeps running); its QEMU's pid."""
    vms.write(conf, name, xml)
    done = subprocess.run([sys.executable, "-m", "reconciler", "--config-dir", str(conf),
                           "--once"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    pid = int(Layout.under(conf).pidfile(vms_uuid(xml)).read_text())
    assert alive(pid)
    return pid


def vms_uuid(xml: str) -> str:
    """The <uuid> of a domain document."""
    return xml.split("<uuid>", 1)[1].split("</uuid>", 1)[0]


@pytest.mark.parametrize("kind", ["pty", "unix"])
def test_console_talks_to_the_guest_and_ctrl_bracket_detaches(guest: Guest, root: Path,
                                                              kind: str) -> None:
    conf = root / "c"
    conf.mkdir(mode=0o700)
    name = f"con-{kind}"
    xml = vms.guest_xml(name, guest, cmdline=SHELL, shutdown_timeout=1)
    if kind == "unix":
        sock = root / "serial.sock"
        xml = xml.replace("<serial type='pty'><target port='0'/></serial>",
                          f"<serial type='unix'><source mode='bind' path='{sock}'/>"
                          "<target port='0'/></serial>")
        assert str(sock) in xml
    qemu = start(conf, name, xml)
    console_log = Layout.under(conf).console_log(name)
    # the shell is up once it has complained about job control on the console (QEMU logs it)
    wait_for(lambda: console_log.exists() and b"job control" in console_log.read_bytes(),
             "the guest's shell on its console")

    term = Terminal(conf, name)
    try:
        term.read_until(b"Escape character is ^] (Ctrl + ])")
        term.type(b"echo hi-$((6*7))\r")
        term.read_until(b"hi-42")  # the shell's answer, not our echo: bytes went both ways
        if kind == "pty":  # a second console on the same pty is refused, the first one lives on
            second = subprocess.run(
                [sys.executable, "-m", "reconciler", "--config-dir", str(conf), "console", name],
                cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                check=False)
            assert second.returncode == 1
            assert "another console is attached" in second.stderr
            term.type(b"echo again-$((7*6))\r")
            term.read_until(b"again-42")
        term.type(b"\x1d")
        assert term.wait() == 0
        assert termios.tcgetattr(term.fd)[3] == term.modes[3]  # echo and canonical mode back
    finally:
        term.close()
    assert alive(qemu)  # detaching leaves the VM running
    wait_for(lambda: b"hi-42" in console_log.read_bytes(), "the session in the console log")
