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
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from reconciler.loop import Reconciler
from reconciler.paths import Layout
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
