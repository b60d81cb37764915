"""The machine types an emulator offers (`<emulator> -machine help`), cached, and their check.

`MachineCatalog.check` is the `model.parse.MachineCheck` that `model.parse` is given (through
`reconciler.hostfacts`) to check `<type machine>` against the emulator's own list.

Running the emulator is a side effect, so it lives here and not in `model/`. Each binary's list
is kept in memory and in a small JSON file in the user's cache directory, keyed by the binary's
resolved path, mtime and size: a QEMU upgrade (new mtime or size) is asked again, an unchanged one
never. A binary that cannot be found or run is not checked (None): the start reports it.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_ALIAS = re.compile(r"\(alias of (\S+)\)")
RUN_TIMEOUT_S = 2.0
"""How long `-machine help` may take (QEMU answers in ~20 ms): the scan waits for it, and the
daemon's loop for the scan, so a program that hangs must not hold the other VMs up. One that
does not answer in time is not asked again until it changes (`MachineCatalog._unanswered`)."""


@dataclass(frozen=True)
class Machines:
    """One emulator's machine types: every name (aliases included) and what each alias means."""

    names: frozenset[str]
    aliases: dict[str, str] = field(default_factory=dict, hash=False)

    def resolve(self, machine: str) -> str | None:
        """The concrete machine type behind `machine` (`pc` -> `pc-i440fx-7.2`), None if unknown."""
        if machine not in self.names:
            return None
        return self.aliases.get(machine, machine)


def parse_machine_help(text: str) -> Machines:
    """Read the output of `qemu-system-* -machine help` (the first line is a heading)."""
    names: set[str] = set()
    aliases: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("Supported machines"):
            continue
        name = line.split()[0]
        names.add(name)
        alias = _ALIAS.search(line)
        if alias is not None:
            aliases[name] = alias.group(1)
    return Machines(frozenset(names), aliases)


def cache_file() -> Path:
    """`$XDG_CACHE_HOME/qemud/machines.json` (default `~/.cache/qemud/machines.json`)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "qemud" / "machines.json"


Runner = Callable[[str], str]
"""Runs `<binary> -machine help` and returns its standard output (raises OSError or
subprocess errors when it cannot)."""


MAX_HELP_BYTES = 1 << 20
"""The most of `-machine help` read (QEMU's is a few KiB): a program that is not QEMU and
prints without end (`yes`) is cut off there, never read into memory whole."""


def run_machine_help(binary: str) -> str:
    """Run `binary -machine help` (no display, no accelerator: it only prints).

    At most `MAX_HELP_BYTES` of its output are read, for at most `RUN_TIMEOUT_S` seconds
    (whatever holds the pipe: even a grandchild in a session of its own cannot make it wait
    longer); then the program is killed, with its own session. Raises OSError,
    TimeoutExpired when it did not answer in time, or CalledProcessError when it exits non-zero.
    """
    import select

    deadline = time.monotonic() + RUN_TIMEOUT_S
    with subprocess.Popen([binary, "-machine", "help"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          start_new_session=True) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = b""
        timed_out = False
        while len(out) < MAX_HELP_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(fd, MAX_HELP_BYTES - len(out))
            if not chunk:
                break
            out += chunk
        if timed_out or len(out) >= MAX_HELP_BYTES:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
            timed_out = True
    if timed_out:
        raise subprocess.TimeoutExpired([binary, "-machine", "help"], RUN_TIMEOUT_S)
    if code != 0 and len(out) < MAX_HELP_BYTES:
        raise subprocess.CalledProcessError(code, [binary, "-machine", "help"])
    return out.decode("utf-8", errors="replace")


@dataclass
class MachineCatalog:
    """Machine lists per emulator binary: memory first, then the JSON cache, then the binary.

    Thread-safe (the scan runs in a worker thread). `check` is a `model.MachineCheck`.
    """

    cache: Path | None = field(default_factory=cache_file)
    run: Runner = run_machine_help
    which: Callable[[str], str | None] = shutil.which
    _memory: dict[str, tuple[list[object], Machines]] = field(default_factory=dict)
    _unanswered: dict[str, list[object]] = field(default_factory=dict)
    """Binaries (by version key) that did not answer in time: their machine types go unchecked."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def machines(self, emulator: str) -> Machines | None:
        """The machine types of `emulator` (a path or a name on PATH); None when not runnable."""
        found = emulator if "/" in emulator else self.which(emulator)
        if found is None:
            return None
        try:
            real = os.path.realpath(found)
            st = os.stat(real)
        except OSError:
            return None
        key: list[object] = [st.st_mtime_ns, st.st_size]
        with self._lock:
            held = self._memory.get(real)
            if held is not None and held[0] == key:
                return held[1]
            machines = _from_json(self._load().get(real), key)
            if machines is None:
                if self._unanswered.get(real) == key:
                    return None
                try:
                    machines = parse_machine_help(self.run(real))
                except subprocess.CalledProcessError:
                    return Machines(frozenset())  # it ran and failed: no machine types
                except subprocess.TimeoutExpired:
                    self._unanswered[real] = key
                    return None
                except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
                    return None
                if not machines.names:
                    return machines  # not cached: a later QEMU build may answer
                self._store(real, key, machines)
            self._memory[real] = (key, machines)
            return machines

    def check(self, emulator: str, machine: str) -> str | None:
        """A `model.MachineCheck`: None when `emulator` has `machine` (or cannot be asked)."""
        machines = self.machines(emulator)
        if machines is None or machine in machines.names:
            return None
        if not machines.names:
            return (f"{emulator} lists no machine types (`{emulator} -machine help` printed "
                    "none, or failed): it is not a QEMU system emulator; name one in "
                    "<emulator>, e.g. /usr/bin/qemu-system-x86_64")
        close = difflib.get_close_matches(machine, sorted(machines.names), n=3, cutoff=0.6)
        hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close
                else f"see `{emulator} -machine help`")
        return f"{machine!r} is not a machine type of {emulator}; {hint}"

    def _load(self) -> dict[str, object]:
        """The JSON cache's entries by binary path; an absent or damaged file is empty."""
        if self.cache is None:
            return {}
        try:
            data = json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _store(self, real: str, key: list[object], machines: Machines) -> None:
        """Write the cache with this binary's entry (atomically; failures only lose the cache)."""
        if self.cache is None:
            return
        data = self._load()
        data[real] = {"key": key, "names": sorted(machines.names), "aliases": machines.aliases}
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.cache.with_name(f".{self.cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.cache)
        except OSError:
            pass


def _from_json(entry: object, key: list[object]) -> Machines | None:
    """A cache entry read back, when it is well formed and for this `key` (mtime, size)."""
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    names, aliases = entry.get("names"), entry.get("aliases")
    if not isinstance(names, list) or not isinstance(aliases, dict):
        return None
    return Machines(frozenset(str(n) for n in names),
                    {str(k): str(v) for k, v in aliases.items()})


_DEFAULT: list[MachineCatalog] = []


def default_catalog() -> MachineCatalog:
    """The process's shared catalog (one memory cache for the daemon and the commands)."""
    if not _DEFAULT:
        _DEFAULT.append(MachineCatalog())
    return _DEFAULT[0]

