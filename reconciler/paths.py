"""Where qemud keeps its files, and the safety checks on those directories.

Two layouts exist, like libvirt's session and system daemons:

========  ==================  ==================  ===================
layout    config              runtime (per VM)    logs / status
========  ==================  ==================  ===================
session   ``~/.qemud``        ``~/.qemud/run``    ``~/.qemud/log``,
                                                  ``~/.qemud/status``
system    ``/etc/qemud``      ``/run/qemud``      ``/var/log/qemud``,
                                                  ``/run/qemud/status``
========  ==================  ==================  ===================

Each running VM owns ``<run>/<uuid>/`` holding its QMP socket (``qmp.sock``, the
daemon's), the users' own QMP socket (``qmp-user.sock``, for `reconcile monitor` and
qmp-shell) and QEMU's pidfile (``qemu.pid``); its logs are ``<log>/<name>.log`` and
``<log>/<name>.console.log``.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from reconciler.errors import InvalidIdentifierError, SocketPathTooLongError, UnsafeDirectoryError

#: Longest Unix socket path in bytes: ``sun_path`` is 108 bytes including the NUL.
MAX_SOCKET_PATH = 107

PRIVATE_DIR_MODE = 0o700

_SAMPLE_UUID = "00000000-0000-0000-0000-000000000000"

USER_QMP_SOCKET = "qmp-user.sock"
"""The users' QMP socket's name in a runtime folder (`model.argv.USER_QMP_SOCKET`: the same
name, not imported, so that the fast read-only commands need not import the model)."""


def canonical_uuid(vm_uuid: str) -> str:
    """Return ``vm_uuid`` in canonical lowercase hyphenated form, or raise.

    Accepts every spelling `uuid.UUID` does (upper case, no hyphens, braces);
    the result is always safe as a single path component.
    """
    import uuid  # here, not above: `reconcile status` and `logs` import this module and start fast

    try:
        return str(uuid.UUID(vm_uuid))
    except ValueError as err:
        raise InvalidIdentifierError("uuid", vm_uuid, "not a UUID") from err


def check_vm_name(name: str) -> str:
    """Return ``name`` if it can be used as a log file name, else raise.

    Guarantees the value is a single, non-hidden path component.
    """
    if not name:
        raise InvalidIdentifierError("name", name, "empty")
    if "/" in name or "\0" in name:
        raise InvalidIdentifierError("name", name, "contains '/' or NUL")
    if name.startswith("."):
        raise InvalidIdentifierError("name", name, "starts with '.'")
    return name


def check_socket_path(path: Path) -> Path:
    """Return ``path`` if it fits in ``sockaddr_un.sun_path``, else raise.

    Raises `SocketPathTooLongError` naming the path and suggesting a shorter
    ``--config-dir``.
    """
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH:
        raise SocketPathTooLongError(path, length, MAX_SOCKET_PATH)
    return path


def _describe_writable(mode: int) -> str | None:
    """Say which of group/other may write given ``st_mode``, or None if neither."""
    group = bool(mode & stat.S_IWGRP)
    other = bool(mode & stat.S_IWOTH)
    if group and other:
        return "group- and world-writable"
    if group:
        return "group-writable"
    if other:
        return "world-writable"
    return None


def check_private_dir(path: Path) -> None:
    """Raise `UnsafeDirectoryError` unless ``path`` is a safe private directory.

    Safe means: a real directory (not a symlink), owned by the effective uid,
    and neither group- nor world-writable.  Readable bits are allowed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError as err:
        raise UnsafeDirectoryError(
            path, "does not exist", f"mkdir -m 0700 {path}"
        ) from err
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        raise UnsafeDirectoryError(
            path,
            f"is a symlink to {target}",
            f"replace it with a directory: rm {path} && mkdir -m 0700 {path}",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectoryError(
            path, "not a directory", f"move it away or choose another --config-dir than {path}"
        )
    euid = os.geteuid()
    if st.st_uid != euid:
        raise UnsafeDirectoryError(
            path, f"owned by uid {st.st_uid}, not {euid}", f"chown {euid} {path}"
        )
    writable = _describe_writable(st.st_mode)
    if writable is not None:
        mode = stat.S_IMODE(st.st_mode)
        raise UnsafeDirectoryError(
            path, f"{writable} (mode {mode:04o})", f"chmod 0700 {path}"
        )


def untrusted_file(path: Path) -> str | None:
    """Why root must not act on the domain file `path`, or None if it may.

    Under `--system` a domain file chooses a binary root runs (`<emulator>`) and files QEMU
    opens as root, so it must be owned by root and writable by nobody else; a symlink must
    be root's too, and so must its target (checked the same way).
    """
    try:
        link = os.lstat(path)
        target = os.stat(path)
    except OSError as err:
        return f"cannot check its owner ({err.strerror})"
    for what, st in (("the file", target), ("the symlink", link)):
        if st.st_uid != 0:
            return (f"{what} is owned by uid {st.st_uid}, not root: with --system a domain file "
                    f"chooses programs root runs; fix: chown root {path}")
        if what == "the file":
            writable = _describe_writable(st.st_mode)
            if writable is not None:
                return (f"the file is {writable}: with --system only root may change a domain "
                        f"file; fix: chmod go-w {os.path.realpath(path)}")
        if not stat.S_ISLNK(link.st_mode):
            break
    return None


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) at mode 0700, or check the existing one.

    Newly created directories get exactly mode 0700 whatever the umask.  An
    existing ``path`` must pass `check_private_dir`; its parents are not
    checked.  Returns ``path``.
    """
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created concurrently: checked below like any existing one
        os.chmod(directory, PRIVATE_DIR_MODE)
    check_private_dir(path)
    return path


class _Record:
    """An immutable record compared, hashed and shown by its fields (`__slots__`).

    What `typing.NamedTuple` gave these classes, minus being a tuple, without importing typing
    or building classes with `exec` at import: `reconcile status` imports this module, and
    those two cost it ~7 ms of its start-up.
    """

    __slots__: tuple[str, ...] = ()

    def _set(self, **fields: object) -> None:
        """Set the fields once (from `__init__`)."""
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[object, ...]:
        """The fields' values in declaration order."""
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class VmPaths(_Record):
    """Every file one VM uses: its runtime folder, sockets, pidfile and logs."""

    __slots__ = ("console_log", "log_file", "pidfile", "qmp_socket", "user_qmp_socket", "vm_dir")
    vm_dir: Path
    qmp_socket: Path
    pidfile: Path
    log_file: Path
    console_log: Path
    user_qmp_socket: Path | None
    """The users' own QMP monitor (`model.Runtime.user_qmp_socket` renders it)."""

    def __init__(self, vm_dir: Path, qmp_socket: Path, pidfile: Path, log_file: Path,
                 console_log: Path, *, user_qmp_socket: Path | None = None) -> None:
        self._set(vm_dir=vm_dir, qmp_socket=qmp_socket, pidfile=pidfile, log_file=log_file,
                  console_log=console_log, user_qmp_socket=user_qmp_socket)


class Layout(_Record):
    """The four top-level directories of one qemud instance.

    `system_instance`: the system instance (root), whose domain files must be root's and
    writable by root alone. `state_root`: where per-VM state that outlives runs lives (UEFI
    variables); default `<config>/state`.
    """

    __slots__ = (
        "config_dir",
        "log_dir",
        "run_dir",
        "state_root",
        "status_dir",
        "system_instance",
    )
    config_dir: Path
    run_dir: Path
    log_dir: Path
    status_dir: Path
    system_instance: bool
    state_root: Path | None

    def __init__(self, config_dir: Path, run_dir: Path, log_dir: Path, status_dir: Path,
                 *, system_instance: bool = False, state_root: Path | None = None) -> None:
        self._set(config_dir=config_dir, run_dir=run_dir, log_dir=log_dir,
                  status_dir=status_dir, system_instance=system_instance, state_root=state_root)

    def state_dir(self, vm_uuid: str) -> Path:
        """The VM's state folder (`<state>/<uuid>/`, 0700, made on first need, never emptied)."""
        return (self.state_root or self.config_dir / "state") / canonical_uuid(vm_uuid)

    @classmethod
    def under(cls, config_dir: Path) -> Layout:
        """Put everything below ``config_dir`` (what ``--config-dir`` selects)."""
        return cls(
            config_dir=config_dir,
            run_dir=config_dir / "run",
            log_dir=config_dir / "log",
            status_dir=config_dir / "status",
        )

    @classmethod
    def session(cls, home: Path) -> Layout:
        """Per-user layout below ``home/.qemud``."""
        return cls.under(home / ".qemud")

    @classmethod
    def system(cls) -> Layout:
        """System-wide layout following the FHS (``/etc``, ``/run``, ``/var/log``)."""
        return cls(
            config_dir=Path("/etc/qemud"),
            run_dir=Path("/run/qemud"),
            log_dir=Path("/var/log/qemud"),
            status_dir=Path("/run/qemud/status"),
            system_instance=True,
            state_root=Path("/var/lib/qemud"),
        )

    def command(self) -> str:
        """How to name this instance in a hint: `reconcile`, with `--system` or `--config-dir`.

        The session default (`~/.qemud`) needs neither.
        """
        if self.system_instance:
            return "reconcile --system"
        if self.config_dir == Path.home() / ".qemud":
            return "reconcile"
        return f"reconcile --config-dir {shlex.quote(str(self.config_dir))}"

    def ensure(self) -> None:
        """Create or check all four directories as private (see `ensure_private_dir`).

        Also checks that a VM's QMP socket path will fit in ``sun_path``, so a
        too-deep ``--config-dir`` is refused at startup rather than per VM.
        """
        for directory in (self.config_dir, self.run_dir, self.log_dir, self.status_dir):
            ensure_private_dir(directory)
        check_socket_path(self.user_qmp_socket(_SAMPLE_UUID))  # the longest socket path

    def vm_dir(self, vm_uuid: str) -> Path:
        """Runtime folder of the VM with this UUID (any spelling, see `canonical_uuid`)."""
        return self.run_dir / canonical_uuid(vm_uuid)

    def qmp_socket(self, vm_uuid: str) -> Path:
        """QMP monitor socket of the VM with this UUID."""
        return self.vm_dir(vm_uuid) / "qmp.sock"

    def user_qmp_socket(self, vm_uuid: str) -> Path:
        """The users' QMP monitor socket of the VM with this UUID (`reconcile monitor`)."""
        return self.vm_dir(vm_uuid) / USER_QMP_SOCKET

    def pidfile(self, vm_uuid: str) -> Path:
        """Pidfile QEMU writes for the VM with this UUID."""
        return self.vm_dir(vm_uuid) / "qemu.pid"

    def log_file(self, name: str) -> Path:
        """QEMU stdout/stderr and lifecycle log of the VM with this name."""
        return self.log_dir / f"{check_vm_name(name)}.log"

    def console_log(self, name: str) -> Path:
        """Serial console log of the VM with this name."""
        return self.log_dir / f"{check_vm_name(name)}.console.log"

    def vm(self, name: str, vm_uuid: str) -> VmPaths:
        """Gather all paths of one VM."""
        return VmPaths(
            vm_dir=self.vm_dir(vm_uuid),
            qmp_socket=self.qmp_socket(vm_uuid),
            pidfile=self.pidfile(vm_uuid),
            log_file=self.log_file(name),
            console_log=self.console_log(name),
            user_qmp_socket=self.user_qmp_socket(vm_uuid),
        )
