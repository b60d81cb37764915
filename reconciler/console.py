"""`reconcile console NAME`: attach the terminal to serial port 0 of a running VM.

Where the console is, is read from what the running QEMU itself says, never from the domain
file (which may have changed since it started):

- its command line (`/proc/PID/cmdline`) tells the kind of `charserial0`: a pty, or a unix
  socket (only `server=on`, where QEMU listens, can be attached to);
- for a pty, QEMU's start-up line in the VM log, ``char device redirected to /dev/pts/N (label
  charserial0)``, names it, and `/proc/PID/fdinfo` (``tty-index``) confirms that this QEMU
  holds that pty, so a line left by an earlier run is never believed.

The pid comes from the VM's pidfile in its runtime folder, and is checked to be a live QEMU of
this uuid. Attaching takes an exclusive `flock` on the pty, so two consoles never split the
guest's output between them. The terminal is put in raw mode (every key goes to the guest,
Ctrl-C included) and restored on the way out; Ctrl-] detaches, like virsh. QEMU's `logfile=`
keeps writing the console log all along.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import re
import select
import signal
import socket
import termios
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from reconciler.errors import ReconcilerError
from reconciler.paths import Layout
from reconciler.process import identify_qemu, read_cmdline, read_pidfile

ESCAPE = 0x1D
"""Ctrl-] (GS): detaches from the console."""
LABEL = "charserial0"
"""The chardev id of serial port 0 on qemud's command lines (see model.argv)."""
_REDIRECT = re.compile(rb"char device redirected to (/dev/pts/\d+) \(label " + LABEL.encode()
                       + rb"\)")


class ConsoleError(ReconcilerError):
    """The console cannot be attached to (or went away): the message says why and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where serial port 0 of a running VM can be reached."""

    kind: Literal["pty", "unix"]
    path: Path

    def describe(self) -> str:
        """`pty /dev/pts/3` or `unix socket /path`."""
        return f"pty {self.path}" if self.kind == "pty" else f"unix socket {self.path}"


def chardev_options(cmdline: Sequence[str], label: str = LABEL) -> dict[str, str] | None:
    """The options of `-chardev <backend>,id=<label>,...` on a QEMU command line, or None.

    The backend is under the key "backend"; QEMU's `,,` escape for a comma is undone.
    """
    for flag, value in itertools.pairwise(cmdline):
        if flag not in ("-chardev", "--chardev"):
            continue
        parts = [p.replace("\0", ",") for p in value.replace(",,", "\0").split(",")]
        opts = {"backend": parts[0]}
        for part in parts[1:]:
            key, _, val = part.partition("=")
            opts[key] = val
        if opts.get("id") == label:
            return opts
    return None


def qemu_cmdline(pid: int, uuid: str) -> list[str] | None:
    """The command line of `pid` if it is a live QEMU of this uuid (`identify_qemu`), else None."""
    if identify_qemu(pid, uuid) is not None:
        return None
    return read_cmdline(pid)


def pty_indexes(pid: int) -> set[int] | None:
    """The pty numbers whose master side `pid` holds (`tty-index` in fdinfo).

    None when the kernel does not say (fdinfo without tty-index, or unreadable), so the caller
    cannot check.
    """
    found: set[int] = set()
    told = False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/fd/{fd}")) != "ptmx":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key == "tty-index" and value.strip().isdigit():
                found.add(int(value))
                told = True
    return found if told else None


def pty_from_log(log: Path) -> Path | None:
    """The last pty QEMU said serial port 0 was redirected to, in the VM log (None if none)."""
    try:
        data = log.read_bytes()
    except OSError:
        return None
    found = None
    for match in _REDIRECT.finditer(data):
        found = match
    return Path(os.fsdecode(found.group(1))) if found else None


def find_console(layout: Layout, name: str, domains: Sequence[Mapping[str, Any]]) -> Endpoint:
    """Where serial port 0 of the running VM `name` is; raises `ConsoleError` with the fix.

    `domains` are status.json's domains (for the uuid). See the module docstring for the
    sources and checks.
    """
    mine = [d for d in domains if d.get("name") == name and d.get("uuid")
            and d.get("state") not in ("conflict", "invalid")]
    if not mine:
        raise ConsoleError(f"no domain named {name!r} in {layout.status_dir / 'status.json'}; "
                           "'reconcile status' lists them")
    dom = mine[0]
    uuid = str(dom["uuid"])
    pid = read_pidfile(layout.pidfile(uuid))
    argv = qemu_cmdline(pid, uuid) if pid is not None else None
    if pid is None or argv is None:
        raise ConsoleError(f"{name} is not running (state {dom.get('state')}); start it with "
                           f"'reconcile start {name}'")
    opts = chardev_options(argv)
    if opts is None:
        raise ConsoleError(f"{name} has no serial console; add <serial type='pty'/> to its "
                           "<devices> (the change applies when it is started again)")
    backend = opts["backend"]
    if backend == "socket" and opts.get("path") and opts.get("server", "off") in ("on", "yes"):
        return Endpoint("unix", Path(opts["path"]))
    if backend != "pty":
        raise ConsoleError(f"the serial console of {name} is a {backend} chardev "
                           f"({', '.join(f'{k}={v}' for k, v in opts.items() if k != 'backend')}),"
                           " which cannot be attached to; make it <serial type='pty'> (or a unix "
                           "socket with mode='bind'); 'reconcile logs --console "
                           f"{name}' shows what it printed")
    log = layout.log_file(name)
    pty = pty_from_log(log)
    if pty is None:
        raise ConsoleError(f"QEMU of {name} (pid {pid}) did not say which pty its console is "
                           f"(no 'char device redirected to ... (label {LABEL})' in {log})")
    held = pty_indexes(pid)
    if held is not None and int(pty.name) not in held:
        raise ConsoleError(f"{log} names {pty} as the console of {name}, but its QEMU (pid "
                           f"{pid}) does not hold that pty: the line is from an earlier run; "
                           "restart the VM to get a console")
    return Endpoint("pty", pty)


@contextlib.contextmanager
def _connected(endpoint: Endpoint) -> Iterator[int]:
    """A file descriptor of the console, locked (pty) or connected (socket); closed after."""
    if endpoint.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(endpoint.path))
        except OSError as exc:
            sock.close()
            raise ConsoleError(f"cannot connect to the console socket {endpoint.path}: "
                               f"{exc.strerror or exc}") from exc
        with sock:
            yield sock.fileno()
        return
    try:
        fd = os.open(endpoint.path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConsoleError(f"cannot open the console {endpoint.path}: "
                           f"{exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConsoleError(f"another console is attached to {endpoint.path}; detach it "
                               "first (Ctrl-] in its terminal)") from exc
        tty.setraw(fd, termios.TCSANOW)  # no echo or line editing (QEMU sets it so, too)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal on `fd` in raw mode for the block (nothing done if it is not a terminal).

    Its settings are restored afterwards, also when SIGTERM or SIGHUP end the block.
    """
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)

    def leave(signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGHUP: leave through the finally below, which restores the terminal."""
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, leave) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keys typed already are kept, not flushed
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        for signum, handler in old.items():
            signal.signal(signum, handler)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (a pipe or pty may take it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def attach(endpoint: Endpoint, stdin: int, stdout: int,
           attached: Callable[[], None] = lambda: None) -> Literal["detached", "closed", "eof"]:
    """Copy bytes both ways between the terminal and the console until one side ends.

    `attached` is called once the console is open and the terminal raw (a banner printed
    there must end its lines with CR LF); keys typed from then on all reach the guest.
    Returns "detached" after Ctrl-] (the bytes typed before it are sent), "closed" when the
    console went away (QEMU exited), "eof" when stdin ended (not a terminal). Raises
    `ConsoleError` when it cannot be attached.
    """
    with _connected(endpoint) as console, _raw(stdin):
        attached()
        while True:
            ready, _, _ = select.select([console, stdin], [], [])
            if console in ready:
                try:
                    data = os.read(console, 4096)
                except OSError as exc:
                    if exc.errno in (errno.EIO, errno.ECONNRESET):
                        return "closed"  # the pty's master (QEMU) is gone
                    raise
                if not data:
                    return "closed"
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    return "eof"
                cut = data.find(ESCAPE)
                try:
                    _write_all(console, data if cut < 0 else data[:cut])
                except (BrokenPipeError, ConnectionResetError):
                    return "closed"  # QEMU closed the socket
                if cut >= 0:
                    return "detached"
