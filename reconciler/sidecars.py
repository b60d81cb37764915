"""Helper processes QEMU needs beside it: swtpm (`<tpm>`) and virtiofsd (`<filesystem>`).

A sidecar is started before QEMU, on a socket qemud binds and listens on itself and passes
as a descriptor (`swtpm socket --ctrl type=unixio,fd=N`): the socket exists before the
helper runs, so QEMU never races it and nothing polls (virtiofsd: `--fd=N`). It runs
detached like QEMU (own session, no inherited descriptors, output into the VM log, its own
pidfile's path in its environment as `QEMUD_SIDECAR`), its pid is written to a pidfile in the
runtime folder, and a later reconciler adopts it only when /proc shows the same program with
its mark: this VM's state folder on swtpm's command line, `QEMUD_SIDECAR` in virtiofsd's
environment (its command line names only the shared folder, which two VMs may share). It is
stopped once QEMU has exited. swtpm's state (the TPM's `tpm2-00.permall`) lives in the VM's
state folder, created once by `swtpm_setup --not-overwrite`, never overwritten.

Everything here blocks (spawn, swtpm_setup): call it off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import model
from model.domain import Filesystem
from reconciler.errors import ReconcilerError
from reconciler.paths import ensure_private_dir
from reconciler.process import (
    listening_socket,
    parent_pid,
    read_cmdline,
    read_pidfile,
    spawn_detached,
)
from reconciler.vmlog import VmLog

_E = TypeVar("_E")

MARK = "QEMUD_SIDECAR"
"""The environment variable naming a sidecar's pidfile: how an environment-marked one is known."""

VHOST_USER_DIRS = (Path("/etc/qemu/vhost-user"), Path("/usr/share/qemu/vhost-user"))
"""QEMU's vhost-user descriptor folders, most important first (a file in /etc overrides the
one of the same name in /usr/share, as for firmware descriptors)."""
VIRTIOFSD_FALLBACK = "/usr/lib/qemu/virtiofsd"
"""Debian 12's virtiofsd (package qemu-system-common) when no descriptor names one."""

TPM_STATE = "tpm"
"""swtpm's state folder inside the VM's state folder (`tpm2-00.permall` and the like)."""
SETUP_TIMEOUT = 30.0
"""Seconds `swtpm_setup` may take to manufacture a TPM state."""


class SidecarError(ReconcilerError):
    """A sidecar could not be prepared or started; `what` names it (e.g. 'swtpm for tpm0')."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


@dataclass(frozen=True)
class Spec:
    """One sidecar of a VM: its program line (`{fd}` is the listening socket), socket, pidfile."""

    name: str
    """Short id, e.g. `tpm0`: the pidfile is `<name>.sidecar.pid` in the runtime folder."""
    argv: tuple[str, ...]
    socket: Path
    pidfile: Path
    state: Path | None
    """Its state folder (created 0700), if it has one."""
    mark: str | None
    """What identifies it in /proc: a string on its command line (swtpm: its state folder), or
    None for `QEMUD_SIDECAR=<pidfile>` in its environment."""
    setup: tuple[str, ...] = ()
    """Run once before the first start (must leave existing state alone)."""
    package: str = ""
    """The Debian package that provides the program (named when it is missing)."""
    folder: Path | None = None
    """A host folder that must exist before it starts (virtiofsd's shared folder)."""


@dataclass
class Running:
    """A sidecar process held by a pidfd (signals never reach a recycled pid)."""

    spec: Spec
    pid: int
    pidfd: int
    reaper: threading.Thread | None = field(default=None, repr=False)
    watcher: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    """The loop watching its pidfd (see `watch`), if any."""

    def alive(self) -> bool:
        """Whether the process still runs (its pidfd is not readable yet)."""
        import select
        return not select.select([self.pidfd], [], [], 0)[0]


def virtiofsd_binary(dirs: Sequence[Path] = VHOST_USER_DIRS) -> str:
    """The virtiofsd QEMU's vhost-user descriptors name (type 'fs'), else Debian's path.

    Descriptors are taken by file name in order (as QEMU's firmware descriptors are); a name
    in an earlier folder hides the same name in a later one. Unreadable or malformed files are
    skipped. Small reads; never raises.
    """
    chosen: dict[str, Path] = {}
    for folder in dirs:
        try:
            names = sorted(p.name for p in folder.iterdir() if p.suffix == ".json")
        except OSError:
            continue
        for name in names:
            chosen.setdefault(name, folder / name)
    for name in sorted(chosen):
        try:
            data = json.loads(chosen[name].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("type") == "fs" \
                and isinstance(data.get("binary"), str) and data["binary"]:
            return str(data["binary"])
    return VIRTIOFSD_FALLBACK


def virtiofsd_argv(fs: Filesystem, binary: str) -> tuple[str, ...]:
    """The virtiofsd line for `fs` (`{fd}` is the socket), as libvirt 9.0 builds it (pure).

    `qemuVirtioFSBuildCommandLine`: `virtiofsd --fd=N -o source=DIR[,cache=][,sandbox=]
    [,xattr|no_xattr][,flock|no_flock][,posix_lock|no_posix_lock] [--thread-pool-size=N]`.
    One difference: a comma or backslash in the folder is escaped with a backslash, which the C
    virtiofsd's option parser (fuse_opt) understands; libvirt doubles commas, which it does not
    (`source=/a,,b` makes it look for `/a`).
    """
    opts = "source=" + fs.source_dir.replace("\\", "\\\\").replace(",", "\\,")
    if fs.cache is not None:
        opts += f",cache={fs.cache}"
    if fs.sandbox is not None:
        opts += f",sandbox={fs.sandbox}"
    for name, value in (("xattr", fs.xattr), ("flock", fs.flock), ("posix_lock", fs.posix_lock)):
        if value is not None:
            opts += f",{'' if value else 'no_'}{name}"
    pool = (f"--thread-pool-size={fs.thread_pool}",) if fs.thread_pool is not None else ()
    return (fs.binary_path or binary, "--fd={fd}", "-o", opts, *pool)


def specs(domain: model.Domain, runtime: model.Runtime,
          virtiofsd: Callable[[], str] = virtiofsd_binary) -> list[Spec]:
    """The sidecars `domain` needs, with paths under `runtime`.

    swtpm's line is libvirt 9.0's (`qemuTPMEmulatorBuildCommand`) with the control socket
    passed as a descriptor: `swtpm socket --ctrl type=unixio,fd=N --tpmstate dir=...,mode=0600
    --terminate [--tpm2]`. virtiofsd's is `virtiofsd_argv`; `virtiofsd` finds the program
    (called only when the domain has a `<filesystem>`).
    """
    if runtime.state_dir is None:
        return []
    out = []
    binary = virtiofsd() if domain.devices.filesystems else ""
    for i, fs in enumerate(domain.devices.filesystems):
        out.append(Spec(
            name=f"fs{i}", argv=virtiofsd_argv(fs, binary), socket=runtime.fs_socket(i),
            pidfile=runtime.folder / f"fs{i}.sidecar.pid", state=None, mark=None,
            package="qemu-system-common", folder=Path(fs.source_dir),
        ))
    for i, tpm in enumerate(domain.devices.tpms):
        state = runtime.state_dir / TPM_STATE
        v2 = ["--tpm2"] if tpm.version == "2.0" else []
        out.append(Spec(
            name=f"tpm{i}",
            argv=("swtpm", "socket", "--ctrl", "type=unixio,fd={fd}",
                  "--tpmstate", f"dir={state},mode=0600", "--terminate", *v2),
            socket=runtime.tpm_socket(i), pidfile=runtime.folder / f"tpm{i}.sidecar.pid",
            state=state, mark=str(state), package="swtpm swtpm-tools",
            setup=("swtpm_setup", *v2, "--tpm-state", str(state), "--createek",
                   "--not-overwrite", "--vmid", f"{domain.name}:{domain.uuid}"),
        ))
    return out


def _reap(pid: int) -> threading.Thread:
    """Reap our child `pid` when it exits (a daemon thread), so it never lingers as a zombie."""
    def wait() -> None:
        """Block in waitpid for the child."""
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    thread = threading.Thread(target=wait, name=f"reap-{pid}", daemon=True)
    thread.start()
    return thread


def _setup(spec: Spec, log_fd: int) -> None:
    """Create the sidecar's state folder (0700) and run its setup, which keeps existing state."""
    if spec.state is None:
        return
    ensure_private_dir(spec.state.parent)
    ensure_private_dir(spec.state)
    if not spec.setup:
        return
    if shutil.which(spec.setup[0]) is None:
        raise SidecarError(spec.name, f"{spec.setup[0]} is not installed (Debian package "
                           "swtpm-tools; `apt-get install swtpm-tools`)")
    try:
        done = subprocess.run(list(spec.setup), stdin=subprocess.DEVNULL, stdout=log_fd,
                              stderr=log_fd, timeout=SETUP_TIMEOUT, check=False,
                              env={**os.environ, "LC_ALL": "C"}, cwd=spec.state)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SidecarError(spec.name, f"{spec.setup[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise SidecarError(spec.name, f"{spec.setup[0]} exited with status {done.returncode} "
                           "(its messages are in the VM log)")


def _spawn(argv: Sequence[str], log_fd: int, fds: Sequence[int], env: Mapping[str, str]) -> int:
    """`spawn_detached` with `env` added to the environment."""
    return spawn_detached(argv, log_fd, fds, env=env)


def start(spec: Spec, log_fd: int,
          spawn: Callable[[Sequence[str], int, Sequence[int], Mapping[str, str]], int] = _spawn,
          ) -> Running:
    """Set up and start one sidecar on a socket bound here; raises SidecarError on failure.

    When this returns, the socket exists and listens (QEMU may connect at once: the kernel
    queues the connection until the sidecar accepts it) and the pidfile names the process.
    """
    if shutil.which(spec.argv[0]) is None:
        raise SidecarError(spec.name, f"{spec.argv[0]} is not installed (Debian package "
                           f"{spec.package.split()[0]}; `apt-get install {spec.package}`)")
    if spec.folder is not None and not spec.folder.is_dir():
        raise SidecarError(spec.name, f"the shared folder {spec.folder} (<source dir>) is not a "
                           "folder on this host; create it or fix the path")
    _setup(spec, log_fd)
    try:
        sock = listening_socket(spec.socket)
    except OSError as exc:
        raise SidecarError(spec.name, f"cannot listen on {spec.socket}: {exc}") from exc
    with sock:
        fd = sock.fileno()
        argv = [a.replace("{fd}", str(fd)) for a in spec.argv]
        try:
            pid = spawn(argv, log_fd, (fd,), {MARK: str(spec.pidfile)})
        except OSError as exc:
            raise SidecarError(spec.name, f"cannot run {argv[0]}: {exc}") from exc
    pidfd = os.pidfd_open(pid)
    running = Running(spec, pid, pidfd, _reap(pid))
    try:
        _write_pidfile(spec, pid)
    except OSError as exc:
        stop([running])
        raise SidecarError(spec.name, f"cannot write {spec.pidfile}: {exc}") from exc
    return running


PROGRAMS = ("swtpm", "virtiofsd")
"""The sidecar programs (by file name): what `strays` may stop."""
STRAY_GRACE = 3.0
"""Seconds a stray sidecar gets to exit after SIGTERM before SIGKILL."""


def strays(folder: Path, keep: Sequence[int] = ()) -> list[int]:
    """Pids of sidecars started for runtime folder `folder` that nobody holds (not in `keep`).

    A sidecar carries its pidfile's path (`QEMUD_SIDECAR=<folder>/<name>.sidecar.pid`) in
    its environment from the moment it runs, so one left by a reconciler killed between its
    spawn and QEMU's (with or without a pidfile written) is found here. Reads /proc; never
    raises.
    """
    prefix = f"{MARK}={folder}/"
    marked: list[int] = []
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    for pid in pids:
        argv = read_cmdline(pid)
        if not argv or Path(argv[0]).name not in PROGRAMS:
            continue
        if any(v.startswith(prefix) and v.endswith(".sidecar.pid") for v in read_environ(pid)):
            marked.append(pid)
    # a sidecar's own children (virtiofsd forks its sandboxed worker) inherit the mark: only
    # the top of each family is a sidecar, and its children end with it
    return [pid for pid in marked if pid not in keep and parent_pid(pid) not in marked]


def stop_strays(folder: Path, keep: Sequence[int] = (), grace: float = STRAY_GRACE) -> list[int]:
    """Stop the stray sidecars of `folder` (see `strays`) and wait until they are gone.

    SIGTERM through a pidfd (then SIGKILL after `grace` seconds), re-checked once the pidfd
    pins the process, so a recycled pid is never signalled. Waiting matters: swtpm locks its
    state folder, which the next swtpm of the VM needs. Returns the pids stopped. Blocking.
    """
    import select
    stopped: list[int] = []
    for pid in strays(folder, keep):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if pid not in strays(folder, keep):
                continue  # gone, or another process by now
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not select.select([pidfd], [], [], grace)[0]:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], grace)
            stopped.append(pid)
        finally:
            os.close(pidfd)
    return stopped


def _write_pidfile(spec: Spec, pid: int) -> None:
    """Name `pid` in the sidecar's pidfile, atomically (raises OSError)."""
    tmp = spec.pidfile.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n", encoding="ascii")
    os.replace(tmp, spec.pidfile)


def stray_line(pid: int) -> str:
    """The VM log's line for a stray sidecar stopped (see `stop_strays`)."""
    return f"stopped stray sidecar pid {pid} (left by an interrupted start)"


def start_all(domain: model.Domain, runtime: model.Runtime, log_fd: int) -> list[Running]:
    """Start every sidecar of `domain`; on any failure the ones started are stopped again.

    Strays of the same runtime folder (a reconciler killed after starting them, before QEMU
    ran) are stopped first: a VM never gets a second swtpm or virtiofsd.
    """
    for pid in stop_strays(runtime.folder):
        os.write(log_fd, f"{stray_line(pid)}\n".encode())
    started: list[Running] = []
    try:
        for spec in specs(domain, runtime):
            started.append(start(spec, log_fd))
            if not started[-1].alive():
                raise SidecarError(spec.name, f"{spec.argv[0]} exited at once (see the VM log)")
    except BaseException:
        stop(started)
        raise
    return started


def read_environ(pid: int) -> list[str]:
    """The initial environment of process `pid` (`/proc/PID/environ`), or [] if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return []
    return [os.fsdecode(item) for item in raw.split(b"\0") if item]


def identify(spec: Spec, pid: int) -> bool:
    """Whether `pid` is this VM's sidecar: the same program, with its mark (see `Spec.mark`)."""
    argv = read_cmdline(pid)
    if not argv or Path(argv[0]).name != Path(spec.argv[0]).name:
        return False
    if spec.mark is not None:
        return any(spec.mark in arg for arg in argv[1:])
    return f"{MARK}={spec.pidfile}" in read_environ(pid)


def _marked(spec: Spec) -> int | None:
    """The live sidecar carrying `spec`'s pidfile as its mark (`QEMUD_SIDECAR`), if one runs.

    How a sidecar is found when its pidfile is gone or damaged: its environment still names it.
    """
    mark = f"{MARK}={spec.pidfile}"
    candidates = [pid for pid in strays(spec.pidfile.parent) if mark in read_environ(pid)]
    return next((pid for pid in candidates if identify(spec, pid)), None)


def adopt_all(domain: model.Domain, runtime: model.Runtime) -> tuple[list[Running], list[str]]:
    """Take over the live sidecars of a running QEMU; also say which ones are missing.

    Each is found by its pidfile, or, when that is gone or damaged, by its mark (the pidfile
    is then written again): a sidecar serving a live QEMU is never taken for a stray.
    """
    found: list[Running] = []
    missing: list[str] = []
    for spec in specs(domain, runtime):
        pid = read_pidfile(spec.pidfile)
        if pid is None or not identify(spec, pid):
            pid = _marked(spec)
            if pid is not None:
                with contextlib.suppress(OSError):
                    _write_pidfile(spec, pid)
        if pid is None or not identify(spec, pid):
            missing.append(spec.name)
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            missing.append(spec.name)
            continue
        if identify(spec, pid):  # checked again now that the pidfd pins the process
            found.append(Running(spec, pid, pidfd))
        else:
            os.close(pidfd)
            missing.append(spec.name)
    return found, missing


def open_log(path: Path) -> int:
    """The VM log opened for appending (0600), for a sidecar's output; the caller closes it."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def after(running: list[Running], on_exit: Callable[[_E], None]) -> Callable[[_E], None]:
    """Wrap QEMU's exit callback: stop the sidecars in `running` first (QEMU is gone)."""
    def exited(event: _E) -> None:
        """Stop the sidecars, then report the exit as before."""
        stop(running)
        on_exit(event)
    return exited


DEATH_GRACE = 2.0
"""Seconds a sidecar's death waits for QEMU's exit before it is reported: swtpm's
`--terminate` ends it as soon as QEMU closes the socket, a moment before QEMU itself exits."""


def watch(running: Sequence[Running], log: VmLog, grace: float = DEATH_GRACE) -> None:
    """Say in the VM log when a sidecar dies while QEMU runs (QEMU is left alone).

    Runs on the event loop: a reader on each pidfd. A death is reported only if QEMU's exit
    (which calls `stop`) has not come within `grace` seconds, so a sidecar ending with its
    QEMU is never reported as dead.
    """
    loop = asyncio.get_running_loop()
    for car in running:
        def report(car: Running = car) -> None:
            """QEMU did not exit meanwhile: the sidecar died under it; log it once."""
            if car.pidfd < 0:
                return  # QEMU's exit came: the sidecar ended with it
            log.write(f"{car.spec.argv[0]} for {car.spec.name} (pid {car.pid}) exited while "
                      "QEMU runs; the guest keeps running but its device no longer works: "
                      "restart the VM (reconcile restart NAME) to get it back")

        def died(car: Running = car) -> None:
            """The pidfd became readable: the sidecar is gone; judge it after the grace."""
            loop.remove_reader(car.pidfd)
            car.watcher = None
            loop.call_later(grace, report)
        loop.add_reader(car.pidfd, died)
        car.watcher = loop


def stop(running: Sequence[Running]) -> None:
    """SIGTERM each sidecar through its pidfd and remove its pidfile; never raises.

    Called once QEMU is gone (swtpm's `--terminate` would end it then anyway). Does not wait.
    """
    for car in running:
        if car.pidfd < 0:
            continue  # stopped already: its descriptor number may belong to someone else now
        if car.watcher is not None:
            car.watcher.remove_reader(car.pidfd)
            car.watcher = None
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(car.pidfd, signal.SIGTERM)
        with contextlib.suppress(OSError):
            car.spec.pidfile.unlink()
        with contextlib.suppress(OSError):
            os.close(car.pidfd)
        car.pidfd = -1
