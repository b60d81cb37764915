"""The OS side of a QEMU process: spawning it detached, and what /proc says about a pid.

Nothing here talks QMP; `QemuProcess` (reconciler.qemu) builds on it. Every check reads /proc
only and never signals anything; `WatchedProcess` holds one process by its pidfd, the only way
qemud signals a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.errors import InvalidIdentifierError
from reconciler.paths import canonical_uuid


def spawn_detached(argv: Sequence[str], log_fd: int, pass_fds: Sequence[int] = (),
                   cpus: frozenset[int] | None = None,
                   env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` in a new session, stdin /dev/null, stdout+stderr on ``log_fd``.

    The child survives qemud being killed: it has its own session and process group, so
    neither terminal signals nor a kill of qemud's group reach it. It inherits no other
    descriptor of qemud but ``pass_fds``, kept at their numbers (``close_fds``: no inotify
    instance, lock or socket leaks into a VM),
    its umask is 177 so QEMU's QMP socket, pidfile and console logs are private (0600) while
    qemud's own umask never changes, signals ignored by Python are reset to default, and
    LC_ALL=C keeps QEMU's messages in English. With ``cpus`` (``<vcpu cpuset>``), QEMU runs
    on those host CPUs only, from its first instruction: the affinity is set on the spawning
    thread (Linux affinity is per thread and inherited), then restored. ``argv[0]`` is looked
    up in PATH. Returns the pid; raises OSError if the binary cannot be executed or the CPUs
    cannot be used. ``env`` is added to the environment. Blocking: call it off the loop (in a
    thread of its own).
    """
    before = os.sched_getaffinity(0) if cpus else None
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        child = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, close_fds=True,
            pass_fds=tuple(pass_fds), start_new_session=True, umask=0o177,
            restore_signals=True, env={**os.environ, "LC_ALL": "C", **(env or {})})
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    # The pidfd owns this child from now on (waitid on it reaps it): Popen must never poll
    # or reap it behind our back, so it is told the child is none of its business.
    child.returncode = 0
    return child.pid


def listening_socket(path: Path) -> socket.socket:
    """A unix stream socket bound at ``path`` and listening (an old file there is replaced).

    The socket file gets mode 0600 whatever the umask. The descriptor is non-inheritable
    until passed explicitly (``spawn_detached(pass_fds=...)``).
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(4)
    except BaseException:
        sock.close()
        raise
    return sock


def pass_monitor_fd(argv: Sequence[str], socket_path: Path, fd: int) -> list[str]:
    """``argv`` with the chardev that listens at ``socket_path`` taking descriptor ``fd`` instead.

    ``socket,id=charmonitor,path=P,server=on,wait=off`` becomes
    ``socket,id=charmonitor,fd=N,server=on,wait=off``: QEMU uses the socket qemud bound (as
    libvirt passes its monitor). Every other argument is unchanged.
    """
    option = "path=" + str(socket_path).replace(",", ",,")  # QEMU's escaping of a comma
    out: list[str] = []
    for arg in argv:
        if arg.startswith("socket,") and (f",{option}," in arg or arg.endswith(f",{option}")):
            out.append(arg.replace(f",{option}", f",fd={fd}", 1))
        else:
            out.append(arg)
    return out


def describe_status(returncode: int | None, signum: int | None) -> str:
    """Render an exit status as ``status=N``, ``signal=SIGKILL`` or ``status=unknown``."""
    if signum is not None:
        try:
            return f"signal={signal.Signals(signum).name}"
        except ValueError:
            return f"signal={signum}"
    if returncode is not None:
        return f"status={returncode}"
    return "status=unknown"


def read_pidfile(path: Path) -> int | None:
    """Return the positive pid written in ``path``, or None if missing or garbled."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (field 3 first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ') '.
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (``/proc/PID/stat``), or None if it cannot be read."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[1]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def read_cmdline(pid: int) -> list[str] | None:
    """The argv of process ``pid`` from ``/proc/PID/cmdline``, or None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(arg) for arg in raw.split(b"\0")[:-1]]


def argv_value(argv: Sequence[str], option: str) -> str | None:
    """The value following ``-option`` or ``--option`` in ``argv``, or None."""
    for i, arg in enumerate(argv[:-1]):
        if arg in (f"-{option}", f"--{option}"):
            return argv[i + 1]
    return None


def identify_qemu(pid: int, vm_uuid: str, vm_dir: Path | None = None) -> str | None:
    """Check that ``pid`` is a live QEMU running the VM ``vm_uuid`` (out of ``vm_dir``).

    Returns None if it is, else why not: the process is gone or a zombie,
    ``/proc/PID/exe`` is not a ``qemu-system-*`` binary (an upgraded binary's
    `` (deleted)`` suffix is accepted), its command line lacks ``-uuid <vm_uuid>``, or (with
    ``vm_dir``) it does not name that runtime folder: another qemud instance's VM of the same
    uuid is not ours. Reads /proc only; never signals anything.
    """
    fields = _proc_stat_fields(pid)
    if fields is None:
        return f"pid {pid} does not exist"
    if fields[0] in ("Z", "X"):
        return f"pid {pid} has exited (zombie)"
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as err:
        return f"pid {pid}: cannot read its executable ({err.strerror})"
    exe = exe.removesuffix(" (deleted)")
    if not os.path.basename(exe).startswith("qemu-system-"):
        return f"pid {pid} runs {exe}, not qemu-system-*"
    argv = read_cmdline(pid) or []
    found = argv_value(argv, "uuid")
    if found is None:
        return f"pid {pid} is a QEMU without -uuid"
    try:
        same = canonical_uuid(found) == canonical_uuid(vm_uuid)
    except InvalidIdentifierError:
        same = False
    if not same:
        return f"pid {pid} is the QEMU of another VM (-uuid {found})"
    if vm_dir is not None and not _runs_from(argv, vm_dir):
        return f"pid {pid} runs this uuid for another qemud (its pidfile is not in {vm_dir})"
    return None


def _runs_from(argv: Sequence[str], vm_dir: Path) -> bool:
    """Whether QEMU's `-pidfile` lies in `vm_dir`, by name or as the same folder.

    By inode: a config directory reached through a symlink or a bind mount is still the same.
    """
    pidfile = argv_value(argv, "pidfile")
    if pidfile is None:
        return any(str(vm_dir) + "/" in arg for arg in argv)
    if os.path.dirname(pidfile) == str(vm_dir):
        return True
    try:
        return os.path.samefile(os.path.dirname(pidfile), vm_dir)
    except OSError:
        return False


def find_qemu(vm_uuid: str, vm_dir: Path, *, proc: Path = Path("/proc")) -> int | None:
    """The pid of a live QEMU running the VM ``vm_uuid`` out of ``vm_dir``, or None.

    Looks at every process, so a QEMU is found even without a pidfile (its reconciler was
    killed between the spawn and QEMU writing it). Its command line must name ``vm_dir`` (its
    pidfile and socket live there), so another qemud instance's VM of the same uuid is never
    taken for ours. Reads /proc only; never signals anything.
    """
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    wanted = canonical_uuid(vm_uuid)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            raw = (proc / entry / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted.encode() not in raw.lower() and wanted.replace("-", "").encode() not in raw:
            continue  # cheap filter before the real check
        if os.fsencode(str(vm_dir) + "/") in raw and identify_qemu(int(entry), wanted) is None:
            return int(entry)
    return None


def process_age(pid: int) -> float | None:
    """Seconds since process ``pid`` started, from ``/proc/PID/stat``, or None."""
    fields = _proc_stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    start_ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    return max(0.0, now - start_ticks / os.sysconf("SC_CLK_TCK"))


def pidfd_exited(pidfd: int) -> bool:
    """True if the process behind ``pidfd`` has terminated (pidfd readable)."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


def is_our_child(pidfd: int) -> bool:
    """True if the process behind ``pidfd`` is a child of this process (reapable)."""
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def remove_runtime_dir(vm_dir: Path) -> None:
    """Delete ``vm_dir`` (socket, pidfile, anything else); missing is fine."""
    shutil.rmtree(vm_dir, ignore_errors=True)


class WatchedProcess:
    """A process held by its pidfd: its end noticed without polling, signals to it alone.

    The pidfd (``os.pidfd_open``), registered with ``loop.add_reader``, becomes readable when
    the process terminates (a zombie counts), for children and adopted processes alike; then
    `exited` is resolved. Signals go through the pidfd, so only this very process can ever be
    signalled, even after its pid is reused. Use it from the loop it was created on.
    """

    def __init__(self, pid: int, pidfd: int, *, is_child: bool, started_at: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        """Own ``pidfd`` (closed by `close`) and start watching it on ``loop``."""
        self.pid = pid
        self.is_child = is_child
        #: When the process started, on the caller's monotonic clock.
        self.started_at = started_at
        #: Resolved (on the loop) once the process has terminated.
        self.exited: asyncio.Future[None] = loop.create_future()
        self._pidfd: int | None = pidfd
        self._loop = loop
        loop.add_reader(pidfd, self._on_readable)

    def _on_readable(self) -> None:
        """Loop callback: the process terminated."""
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        if not self.exited.done():
            self.exited.set_result(None)

    def alive(self) -> bool:
        """True until the process has terminated (asked of the kernel, not of the loop)."""
        return self._pidfd is not None and not pidfd_exited(self._pidfd)

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the process; False if it is gone or no longer held."""
        if self._pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> tuple[int | None, int | None]:
        """Collect a terminated child's status as (returncode, signal); (None, None) if unknown.

        Unknown for a process that is not our child (adopted) or was reaped elsewhere.
        """
        if not self.is_child or self._pidfd is None:
            return None, None
        try:
            result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return None, None
        if result is None:
            return None, None
        if result.si_code == os.CLD_EXITED:
            return result.si_status, None
        return None, result.si_status

    def close(self) -> None:
        """Stop watching and release the pidfd (the process is not touched); idempotent."""
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            if not self.exited.done():
                self._loop.remove_reader(pidfd)
            os.close(pidfd)
