"""The reconciler's exceptions: one root, subclasses that carry the facts.

Every error the reconciler raises on purpose derives from `ReconcilerError`.
Each subclass keeps the data a caller needs to act (path, pid, exit status,
QEMU's own message) as attributes, and its message names the path or VM
involved and says what to do.  Errors caused by another exception are raised
``from`` it, so the cause stays in the traceback.
"""

from __future__ import annotations

from pathlib import Path


class ReconcilerError(Exception):
    """Root of every error the reconciler raises on purpose.

    ``str(err)`` is a complete, user-facing sentence: what failed, where, and
    what to do about it.
    """


class InvalidIdentifierError(ReconcilerError):
    """A VM name or UUID cannot be used to build file paths."""

    def __init__(self, kind: str, value: str, problem: str) -> None:
        self.kind = kind
        self.value = value
        self.problem = problem
        super().__init__(
            f"invalid VM {kind} {value!r}: {problem}; fix: change the {kind} in the domain XML"
        )


class UnsafeDirectoryError(ReconcilerError):
    """A state directory exists but could be tampered with by someone else.

    Modelled on sshd's StrictModes: the message reads
    ``/x/.qemud: group-writable (mode 0775); fix: chmod 0700 /x/.qemud``.
    """

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; fix: {fix}")


class SocketPathTooLongError(ReconcilerError):
    """A Unix socket path does not fit in ``sockaddr_un.sun_path``."""

    def __init__(self, path: Path, length: int, limit: int) -> None:
        self.path = path
        self.length = length
        self.limit = limit
        super().__init__(
            f"{path}: socket path is {length} bytes, Unix sockets allow at most {limit}; "
            "fix: use a shorter --config-dir (a directory of your own, such as the default ~/.qemud)"
        )


class QemuError(ReconcilerError):
    """Base for failures of one VM's QEMU process; ``vm`` is the VM name."""

    def __init__(self, vm: str, message: str) -> None:
        self.vm = vm
        super().__init__(f"VM {vm}: {message}")


class InvalidArgvError(QemuError):
    """The QEMU command line lacks something the process wrapper relies on."""

    def __init__(self, vm: str, problem: str) -> None:
        self.problem = problem
        super().__init__(vm, f"unusable QEMU command line: {problem}; this is a bug in qemud")


class StartError(QemuError):
    """QEMU could not be started, or died or hung before the guest was resumed.

    ``stage`` is the start stage that failed (``prepare``, ``launch``,
    ``attach``, ``resume``); ``qemu_message`` is what QEMU itself printed to
    its log (for example ``Could not open '/nope.img': No such file or
    directory``), empty if it printed nothing.
    """

    def __init__(
        self,
        vm: str,
        *,
        stage: str,
        reason: str,
        log_file: Path,
        pid: int | None = None,
        returncode: int | None = None,
        signal: int | None = None,
        qemu_message: str = "",
    ) -> None:
        self.stage = stage
        self.reason = reason
        self.log_file = log_file
        self.pid = pid
        self.returncode = returncode
        self.signal = signal
        self.qemu_message = qemu_message
        text = f"failed to start ({stage}): {reason}"
        if qemu_message:
            text += f"; QEMU said: {qemu_message}"
        text += f"; see {log_file}"
        super().__init__(vm, text)


class MonitorError(QemuError):
    """A QMP command failed, or the monitor connection is gone.

    ``qemu_message`` and ``error_class`` (e.g. ``CommandNotFound``) are QEMU's
    own error description and class when QEMU answered with an error, empty
    when it did not answer at all.
    """

    def __init__(
        self,
        vm: str,
        *,
        command: str,
        socket: Path,
        reason: str,
        qemu_message: str = "",
        error_class: str = "",
    ) -> None:
        self.command = command
        self.socket = socket
        self.reason = reason
        self.qemu_message = qemu_message
        self.error_class = error_class
        text = f"QMP {command} on {socket}: {reason}"
        if qemu_message:
            text += f": {qemu_message}"
        super().__init__(vm, text)


class MonitorTimeoutError(MonitorError):
    """QEMU did not answer a QMP command in time (hung, or SIGSTOPped)."""


class PhaseError(QemuError):
    """A process-wrapper method was called in a phase where it makes no sense."""

    def __init__(self, vm: str, operation: str, phase: str) -> None:
        self.operation = operation
        self.phase = phase
        super().__init__(vm, f"{operation} called in phase {phase}; this is a bug in qemud")


class AdoptError(QemuError):
    """A running QEMU of this VM was found but cannot be taken over.

    The process is left alone; the message says how to resolve it by hand.
    """

    def __init__(self, vm: str, *, pid: int, socket: Path, reason: str) -> None:
        self.pid = pid
        self.socket = socket
        self.reason = reason
        super().__init__(
            vm,
            f"cannot adopt running QEMU pid {pid}: {reason}; fix: if it is stopped, "
            f"'kill -CONT {pid}'; otherwise stop it with 'kill {pid}' and let qemud restart it",
        )


class StopError(QemuError):
    """QEMU survived every stop step including SIGKILL (e.g. stuck in the kernel)."""

    def __init__(self, vm: str, *, pid: int, waited: float) -> None:
        self.pid = pid
        self.waited = waited
        super().__init__(
            vm,
            f"QEMU pid {pid} is still alive {waited:.1f}s after SIGKILL; it is probably "
            f"stuck in the kernel (check 'cat /proc/{pid}/stack' and dmesg)",
        )

