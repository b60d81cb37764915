"""One VM in a private config dir, driven by in-process `reconcile --once` passes.

For integration tests of one domain and its helpers (firmware, swtpm, virtiofsd): a short private
config dir whose processes all die afterwards, a pass that returns the domain's state, the VM's own
QMP monitor through the real CLI, and a bounded wait for a process to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import model
from reconciler.loop import Reconciler
from reconciler.paths import Layout
from reconciler.supervisor import QemuLayer
from tests.support.procs import kill_mentioning


@contextlib.contextmanager
def private_layout(prefix: str) -> Iterator[Layout]:
    """A short private (0700) config dir under /tmp; every process mentioning it is killed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o700)
    try:
        yield Layout.under(base)
    finally:
        kill_mentioning(f"{base}/")
        shutil.rmtree(base, ignore_errors=True)


def once(layout: Layout) -> str:
    """One `reconcile --once` in process (a fresh reconciler each time); the only domain's state.

    A state other than running comes with its reason ("stopped: ..."), so a failed assertion
    says why.
    """
    result = asyncio.run(Reconciler(layout, out=io.StringIO()).once())
    status = result.statuses[0]
    return status.state if status.state == "running" else f"{status.state}: {status.reason}"


def monitor(layout: Layout, name: str, command: str | dict[str, object]) -> object:
    """One QMP command on VM `name`'s user monitor, through `reconcile monitor`; the reply."""
    text = command if isinstance(command, str) else json.dumps(command)
    done = subprocess.run([sys.executable, "-m", "reconciler", "--config-dir",
                           str(layout.config_dir), "monitor", name, text],
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait on `pid`'s pidfd (at most `timeout` s) until it has exited; fail if it still runs."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], timeout)[0], f"process {pid} still runs"
    finally:
        os.close(fd)


def helper_death_spares_qemu(layout: Layout, uuid: str, domain: model.Domain, name: str,
                             helpers: Callable[[], list[int]]) -> None:
    """Start `domain` through the real process layer, SIGKILL its one helper (`helpers()` lists it).

    Checks that VM `name`'s log says the helper "exited while QEMU runs", that QEMU is untouched
    (no exit reported, the process alive), and that a stop then reports exactly one exit.
    """
    log = layout.log_file(name)

    async def scenario() -> None:
        """Start, kill the helper, wait (bounded) for the log line, check QEMU, stop."""
        exits: list[object] = []
        handle = await QemuLayer(layout).start(uuidlib.UUID(uuid), domain, None, exits.append,
                                               lambda _event: None)
        assert handle.pid is not None
        [pid] = helpers()
        os.kill(pid, signal.SIGKILL)
        for _ in range(400):  # bounded: the line comes after the supervisor's death grace
            if log.exists() and "exited while QEMU runs" in log.read_text():
                break
            await asyncio.sleep(0.05)
        assert "exited while QEMU runs" in log.read_text()
        assert not exits and os.path.exists(f"/proc/{handle.pid}")  # QEMU untouched
        await handle.stop(reason="test", shutdown_timeout=1, graceful=False)
        assert len(exits) == 1

    asyncio.run(scenario())


def interrupted_start(layout: Layout, uuid: str, xml: str, *, pidfile: bool) -> int:
    """What a reconciler killed between starting a VM's sidecar and its QEMU leaves behind.

    The domain's only sidecar is started the way a start does (`sidecars.start`: its pidfile
    written, or removed again when `pidfile` is false, as if killed before writing it); no
    QEMU, nobody holding it. Returns its pid.
    """
    from reconciler import sidecars
    layout.ensure()
    domain = model.parse(xml.encode()).domain
    layout.vm_dir(uuid).mkdir(mode=0o700, exist_ok=True)
    runtime = model.Runtime(layout.qmp_socket(uuid), layout.pidfile(uuid), Path(os.devnull),
                            state_dir=layout.state_dir(uuid))
    (spec,) = sidecars.specs(domain, runtime)
    log_fd = os.open(os.devnull, os.O_WRONLY)
    try:
        car = sidecars.start(spec, log_fd)
    finally:
        os.close(log_fd)
    os.close(car.pidfd)  # the reconciler is gone: nobody holds it
    if not pidfile:
        spec.pidfile.unlink()
    return car.pid
