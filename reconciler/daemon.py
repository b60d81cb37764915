"""The daemon around the reconciler: when to run a pass, signals, the directory lock, watching.

`serve()` runs `Reconciler.run_pass()` (the same code as `reconcile --once`) whenever it is
woken: a completed save of a domain file (close after write, rename into place) at once, any
other change in the config or run directory after a short debounce, a QEMU exit or QMP event,
a back-off or quiet-period deadline, SIGHUP (a full rescan), SIGUSR1 (a pass asked for by
`reconcile --once`) and a periodic resync. The watchdog thread only posts wake-ups into the
loop. Power verbs (`reconcile restart`, ...) arrive on its control socket (`reconciler.control`).
SIGTERM and SIGINT end the daemon and leave every VM running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from reconciler.control import CONTROL_SOCKET, serve_control
from reconciler.errors import ReconcilerError
from reconciler.lock import DAEMON_LOCK, LAST_PASS, DirLock, LockTimeoutError
from reconciler.networks import networks_dir
from reconciler.scan import is_domain_file
from reconciler.status import remove_left_over_temp_files, write_atomic
from reconciler.supervisor import is_runtime_folder

if TYPE_CHECKING:
    from reconciler.loop import Reconciler

SETTLED_FILE = "settled"
"""Wall-clock start of the daemon's last pass after which no action was under way."""


class AlreadyRunningError(ReconcilerError):
    """A reconciler daemon already serves this directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"another reconcile daemon already serves this directory (lock {path}); "
                         "it applies every change by itself ('reconcile status' shows its work)")


class DaemonServesError(ReconcilerError):
    """`reconcile --once` could not reach the daemon that serves the directory."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        super().__init__(f"a reconcile daemon serves {config_dir} and applies every change by "
                         "itself; see 'reconcile status', or stop the daemon to use --once")


def under_journal(environ: Mapping[str, str]) -> bool:
    """Whether systemd runs us with stderr going to its journal, which stamps every line itself.

    systemd sets INVOCATION_ID for every service process and JOURNAL_STREAM when stderr is
    connected to the journal; then the daemon adds no timestamps of its own.
    """
    return bool(environ.get("INVOCATION_ID") or environ.get("JOURNAL_STREAM"))


async def delegate(rec: Reconciler, daemon: DirLock, timeout: float) -> bool:
    """Have the daemon holding `daemon` run a full pass (SIGUSR1) and wait until it settled.

    Returns False, having done nothing, when no daemon holds the directory.
    """
    pid = daemon.owner()
    if pid is None or pid == os.getpid():
        return False
    asked = time.time()
    rec.say(f"a daemon (pid {pid}) serves this directory; asking it for a full pass")
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        raise DaemonServesError(rec.layout.config_dir) from exc
    deadline = time.monotonic() + timeout
    marker = rec.layout.run_dir / SETTLED_FILE
    while True:
        with contextlib.suppress(OSError, ValueError):
            if float(marker.read_text().strip() or 0) >= asked:
                return True
        if time.monotonic() >= deadline:
            raise LockTimeoutError(marker, timeout)
        await asyncio.sleep(0.02)


async def serve(rec: Reconciler, *, resync: float = 30.0, debounce: float = 0.05) -> None:
    """The daemon: run passes when woken, until SIGTERM or SIGINT; VMs keep running after."""
    rec.prepare()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    pending: list[asyncio.TimerHandle] = []

    def debounced() -> None:
        """Runs on the loop: (re)arm the quiet-period timer that wakes a pass."""
        for handle in pending:
            handle.cancel()
        pending[:] = [loop.call_later(debounce, rec.wake.set)]

    def at_once() -> None:
        """Runs on the loop: a completed save wakes a pass now."""
        for handle in pending:
            handle.cancel()
        pending.clear()
        rec.wake.set()

    def rescan() -> None:
        """SIGHUP: reread every file and rewrite every status file; run a full pass."""
        rec.say("SIGHUP: full rescan")
        rec.reload()
        rec.wake.set()

    def notify(completed: bool) -> None:
        """Runs on the observer thread: only post a wake-up into the loop."""
        loop.call_soon_threadsafe(at_once if completed else debounced)

    # handlers first: `reconcile --once` signals the lock's holder as soon as it sees one
    handlers: dict[signal.Signals, Callable[[], None]] = {
        signal.SIGHUP: rescan, signal.SIGUSR1: rec.wake.set,
        signal.SIGTERM: stopping.set, signal.SIGINT: stopping.set}
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    daemon_lock = DirLock(rec.layout.run_dir / DAEMON_LOCK, record_pid=True)
    try:
        if not daemon_lock.try_acquire():
            raise AlreadyRunningError(daemon_lock.path)
        remove_left_over_temp_files(rec.layout.run_dir, SETTLED_FILE)  # of a daemon killed
        with contextlib.suppress(OSError):  # its heartbeat says how often it passes at least
            write_atomic(rec.layout.run_dir / LAST_PASS, f"{resync}\n".encode(), durable=False)
        observer = watch(rec.layout.config_dir, rec.layout.run_dir, notify, (networks_dir(),))
        control_path = rec.layout.run_dir / CONTROL_SOCKET
        control = await serve_control(rec, control_path)
        rec.say(f"watching {rec.layout.config_dir} (pid {os.getpid()})")
        try:
            await _serve(rec, stopping, resync)
        finally:
            rec.say("exiting; VMs keep running and are adopted by the next reconciler")
            control.close()
            with contextlib.suppress(OSError):
                control_path.unlink()
            observer.stop()
            await rec.detach_all()
            rec.lock.release()
            observer.join(timeout=2)
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        daemon_lock.release()


async def _serve(rec: Reconciler, stopping: asyncio.Event, resync: float) -> None:
    """The daemon's loop: a pass per wake-up (or per `resync` seconds) until `stopping`."""
    rec.wake.set()
    while not stopping.is_set():
        waiter = asyncio.ensure_future(rec.wake.wait())
        stopper = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({waiter, stopper}, timeout=resync, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        if stopping.is_set():
            break
        rec.wake.clear()
        while not _take(rec):
            if stopping.is_set():
                return
            await asyncio.sleep(0.05)
        began = rec.clock()
        await rec.run_pass()
        if not rec.supervisor.working:
            rec.lock.release()
            with contextlib.suppress(OSError):  # all asked for before `began` is done
                write_atomic(rec.layout.run_dir / SETTLED_FILE, f"{began!r}\n".encode(),
                             durable=False)


def _take(rec: Reconciler) -> bool:
    """Take the pass lock; a run directory deleted by hand is made again instead of fatal."""
    try:
        return rec.lock.try_acquire()
    except OSError as exc:
        rec.say(f"cannot take the pass lock ({exc}); making the private directories again")
        try:
            rec.layout.ensure()
        except (OSError, ReconcilerError) as again:
            rec.say(f"cannot make them: {again}; trying again on the next wake-up")
            return False
        return rec.lock.try_acquire()


def _stop_race(record: logging.LogRecord) -> bool:
    """Drop watchdog's error for the event its reader thread was reading while we stopped it.

    Stopping the observer closes its inotify instance under the reader thread, which then logs
    "queue_events() called when the thread is inactive": expected at every shutdown, nothing to
    tell the user. Every other watchdog message passes.
    """
    return "called when the thread is inactive" not in record.getMessage()


def watch(config_dir: Path, run_dir: Path, wake: Callable[[bool], None],
          facts_dirs: tuple[Path, ...] = ()) -> BaseObserver:
    """Start a watchdog observer calling `wake(completed)` (from its thread) on relevant events.

    Relevant: a domain file in `config_dir` (`completed` when it was closed after writing or
    renamed into place: an editor's save is done), a runtime folder appearing or going in
    `run_dir` (another reconciler started a VM), an XML file changing in one of the
    `facts_dirs` that exist (libvirt's network definitions, which domain files refer to).
    """
    present = tuple(d for d in facts_dirs if d.is_dir())
    handler = _Handler(wake, config_dir, present)
    quiet = logging.getLogger("watchdog.observers.inotify")
    if _stop_race not in quiet.filters:
        quiet.addFilter(_stop_race)
    observer = Observer()
    for directory in (config_dir, run_dir, *present):
        observer.schedule(handler, str(directory), recursive=False)
    observer.start()
    return observer


class _Handler(FileSystemEventHandler):
    """Forwards relevant watchdog events as wake-ups; runs on the observer thread."""

    def __init__(self, wake: Callable[[bool], None], config_dir: Path,
                 facts_dirs: tuple[Path, ...] = ()) -> None:
        self._wake = wake
        self._config_dir = str(config_dir)
        self._facts_dirs = {str(d) for d in facts_dirs}

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Wake the loop for a domain file event, or a runtime folder appearing or going."""
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw, is_dest in ((event.src_path, False), (getattr(event, "dest_path", ""), True)):
            path = os.fsdecode(raw)
            if not path:
                continue
            name = os.path.basename(path)
            if os.path.dirname(path) == self._config_dir:
                if is_domain_file(name):
                    completed = event.event_type == "closed" or (
                        event.event_type == "moved" and is_dest)
                    self._wake(completed)
                    return
            elif os.path.dirname(path) in self._facts_dirs:
                if name.endswith(".xml") and event.event_type in ("closed", "moved", "deleted"):
                    self._wake(True)
                    return
            elif is_runtime_folder(name):
                self._wake(False)
                return
