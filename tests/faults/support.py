"""Shared pieces of the fault suite: light domains, a /proc watcher of QEMUs, mounts, decoys.

Everything here reads /proc afresh (a process may exit or a pid be reused between two calls)
and never signals a process it did not start itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import alive, cmdline_of, proc_state

# ------------------------------------------------------------------------------------------ /proc


@dataclass(frozen=True)
class Qemu:
    """One live QEMU process seen in /proc: its pid, `-uuid` and the writable images it opens."""

    pid: int
    uuid: str
    disks: tuple[str, ...]


def _arg_after(argv: list[bytes], option: bytes) -> str | None:
    """The argument following `option` in a raw argv, decoded; None when absent."""
    for i, arg in enumerate(argv[:-1]):
        if arg == option:
            return os.fsdecode(argv[i + 1])
    return None


def qemus_under(run_dir: Path) -> list[Qemu]:
    """Every live QEMU whose command line names a path below `run_dir` (one sweep of /proc)."""
    needle = os.fsencode(f"{run_dir}/")
    me = os.getpid()
    found: list[Qemu] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        raw = cmdline_of(int(entry))
        if needle not in raw or not raw.startswith(b"qemu-system"):
            continue
        if not alive(int(entry)):
            continue
        argv = raw.split(b"\0")[:-1]
        uuid = _arg_after(argv, b"-uuid") or "?"
        disks = []
        for i, arg in enumerate(argv[:-1]):
            if arg == b"-drive" and b"readonly=on" not in argv[i + 1]:
                spec = os.fsdecode(argv[i + 1])
                parts = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
                if "file" in parts:
                    disks.append(os.path.realpath(parts["file"]))
        found.append(Qemu(int(entry), uuid, tuple(disks)))
    return found


def doubled(qemus: list[Qemu]) -> list[str]:
    """What is doubled in one sample: uuids or writable images held by two live QEMUs."""
    out: list[str] = []
    by_uuid: dict[str, list[int]] = {}
    by_disk: dict[str, list[int]] = {}
    for q in qemus:
        by_uuid.setdefault(q.uuid, []).append(q.pid)
        for disk in q.disks:
            by_disk.setdefault(disk, []).append(q.pid)
    out += [f"uuid {u}: pids {p}" for u, p in by_uuid.items() if len(p) > 1]
    out += [f"image {d}: pids {p}" for d, p in by_disk.items() if len(p) > 1]
    return out


@dataclass
class ProcWatch:
    """Samples the QEMUs under a run directory in a thread; keeps every doubled sample.

    `interval` is the pause between sweeps (0: as fast as it can, for short windows).
    """

    run_dir: Path
    interval: float = 0.0
    samples: int = 0
    doubles: list[list[str]] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._done.is_set():
            found = doubled(qemus_under(self.run_dir))
            self.samples += 1
            if found:
                self.doubles.append(found)
            if self.interval:
                self._done.wait(self.interval)

    def __enter__(self) -> ProcWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def fd_count(pid: int) -> int:
    """How many descriptors `pid` holds (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------------------------------ mounts


def mount_tmpfs(where: Path, size: str) -> None:
    """Mount a private tmpfs of `size` on `where` (mode 0700); raises CalledProcessError."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                   check=True, capture_output=True, text=True)


def bind_read_only(where: Path) -> None:
    """Make `where` read-only by bind-mounting it onto itself and remounting that ro."""
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True, capture_output=True)


def unmount(where: Path) -> None:
    """Unmount `where` (lazily if busy); quiet when nothing is mounted there."""
    with contextlib.suppress(subprocess.CalledProcessError):
        subprocess.run(["umount", str(where)], check=True, capture_output=True)
        return
    subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` with one file until ENOSPC; return that file."""
    filler = directory / ".filler"
    chunk = b"\0" * (1 << 16)
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


# ------------------------------------------------------------------------------------------ decoys

_DECOY = """
import signal, sys, time
path = sys.argv[1]
def note(signum, frame):
    with open(path, "a") as out:
        out.write(f"{signum}\\n")
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
          signal.SIGCONT, signal.SIGQUIT):
    signal.signal(s, note)
with open(path, "a") as out:
    out.write("ready\\n")
while True:
    signal.pause()
"""


@contextlib.contextmanager
def decoy(journal: Path, *extra: str) -> Iterator[int]:
    """A process that notes every catchable signal it gets in `journal`; yields its pid.

    `extra` arguments go on its command line (e.g. a VM's uuid, to look like its QEMU to a
    careless matcher). Killed at the end; callers check `journal` and `proc_state` meanwhile.
    """
    proc = subprocess.Popen([sys.executable, "-c", _DECOY, str(journal), *extra],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while "ready" not in (journal.read_text() if journal.exists() else ""):
            assert time.monotonic() < deadline, "the decoy did not start"
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def signals_seen(journal: Path) -> list[str]:
    """The signals a decoy noted (its 'ready' line left out)."""
    return [s for s in journal.read_text().split() if s != "ready"]


def untouched(pid: int) -> bool:
    """Alive and not stopped (SIGSTOP leaves state T)."""
    return alive(pid) and proc_state(pid) not in ("T", "t")
