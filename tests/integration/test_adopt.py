"""Adoption of a QEMU whose monitor does not answer: left alone, reported, retried later."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.loop import ADOPT_RETRY, Reconciler
from reconciler.paths import Layout
from reconciler.plan import Adopt
from reconciler.qemu import Timeouts, read_pidfile
from tests.support.procs import kill_mentioning, proc_state

UUID = uuidlib.UUID("5a4f7c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
XML = f"""<domain type='qemu'>
  <name>hung</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>
</domain>
"""


@pytest.fixture
def config() -> Iterator[Path]:
    """A config dir short enough for socket paths; every process mentioning it dies after."""
    base = Path(tempfile.mkdtemp(prefix="qda", dir="/tmp"))
    (base / "hung.xml").write_text(XML)
    yield base
    for pid in kill_mentioning(f"{base}/"):
        os.kill(pid, signal.SIGCONT)


@pytest.mark.qemu
def test_a_hung_qemu_is_left_alone_reported_and_not_retried_at_once(config: Path) -> None:
    layout = Layout.under(config)
    first = Reconciler(layout, out=io.StringIO())
    result = asyncio.run(first.once())
    assert [s.state for s in result.statuses] == ["running"]
    pid = read_pidfile(layout.pidfile(str(UUID)))
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # its QMP monitor can no longer answer

    out = io.StringIO()
    second = Reconciler(layout, out=out, timeouts=Timeouts(qmp=0.5))

    async def two_passes() -> tuple[float, float, list[object]]:
        second.prepare()
        t0 = time.monotonic()
        one = await second.run_pass()
        t1 = time.monotonic()
        two = await second.run_pass()
        t2 = time.monotonic()
        await second.detach_all()
        return t1 - t0, t2 - t1, [*one.actions, *two.actions]

    took_first, took_second, actions = asyncio.run(two_passes())
    assert took_first >= 0.5  # the adoption waited for the monitor, bounded by the timeout
    assert took_second < 0.5  # ... and the next pass does not wait again (retried later)
    assert actions.count(Adopt(UUID)) == 1
    assert "cannot adopt running QEMU pid" in out.getvalue()
    assert f"kill -CONT {pid}" in second.failures[UUID]  # says how to resolve it
    assert proc_state(pid) == "T"  # not killed, not continued: left exactly as it was
    assert layout.vm_dir(str(UUID)).is_dir()  # its runtime folder is kept
    assert ADOPT_RETRY >= 10
    os.kill(pid, signal.SIGCONT)
