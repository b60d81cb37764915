"""The status directory read-only, and a full disk (a small tmpfs as the config directory).

Both leave the running VMs alone, say clearly what could not be written (daemon log: the file and
the OS's reason), keep the daemon serving, and recover by themselves once the directory is
writable or the space is back: every status file is right again without a signal or an edit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.daemon import SETTLED_FILE
from tests.faults.support import bind_read_only, fill, mount_tmpfs, unmount, untouched
from tests.integration.test_loop import World, light_uuid, light_xml, world
from tests.support.procs import kill_mentioning, pids_mentioning

__all__ = ["world"]  # the fixture, imported for the tests below

pytestmark = [pytest.mark.qemu]


def settled(world: World, since: float) -> None:
    """Wait until the daemon has settled a pass that began at or after `since` (wall clock).

    Its `run/settled` file says so; a pass is not started by this (nothing is written).
    """

    def probe() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return float((world.layout.run_dir / SETTLED_FILE).read_text().strip()) >= since
        return False

    world.wait(probe, "a pass to begin and settle")


def _mount_or_skip(action: str, run: object) -> None:
    """Run a mount step; skip the test with the reason when this machine cannot mount."""
    try:
        assert callable(run)
        run()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        pytest.skip(f"cannot {action} here (root and mount(8) are needed): {detail}")


@pytest.fixture
def ro_status(world: World) -> Iterator[Path]:
    """The world's status directory, to be made read-only by the test; unmounted afterwards."""
    world.layout.status_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    yield world.layout.status_dir
    unmount(world.layout.status_dir)


@pytest.fixture
def tmpfs_world() -> Iterator[World]:
    """A world whose whole config directory is a 4 MiB tmpfs (filled by the test)."""
    w = World()
    _mount_or_skip("mount a tmpfs", lambda: mount_tmpfs(w.config, "4m"))
    try:
        yield w
    finally:
        for daemon in w.daemons:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=5)
        kill_mentioning(w.root, timeout=10)
        unmount(w.config)
        w.close()
    assert not pids_mentioning(w.root), "a process outlived the cleanup"


def test_read_only_status_dir(world: World, ro_status: Path) -> None:
    """The status directory read-only while the daemon serves: a new VM still starts, the
    running one keeps its QEMU, the daemon log names the file and 'Read-only file system'; once
    writable again every status file comes back by itself."""
    daemon = world.start_daemon()
    world.write("a", light_xml("a"))
    pid = world.wait_running("a")["pid"]
    _mount_or_skip("bind-mount read-only", lambda: bind_read_only(ro_status))
    with pytest.raises(OSError):
        (ro_status / "probe").write_text("x")
    world.write("b", light_xml("b"))
    world.wait(lambda: world.qemu(light_uuid("b")), "b's QEMU, without a writable status dir")
    said = world.wait(lambda: daemon.lines(f"cannot write {ro_status}/"), "the write failure said")
    assert any("Read-only file system" in line for line in said), said
    assert world.qemu(light_uuid("a")) == [pid] and untouched(pid)
    assert world.status("b") is None
    assert daemon.proc.poll() is None, daemon.text()
    world.wait(lambda: daemon.lines("b: running"), "b's start to end")
    settled(world, time.time())  # a pass that began after everything, all of it failing to write
    shown = world.cli("status")  # reviewed: the old table passed for the truth
    assert "the status files could not be written" in shown.stderr, shown.stderr
    assert "Read-only file system" in shown.stderr and "may be out of date" in shown.stderr
    once = world.cli("--once")
    assert once.returncode == 1 and "may be out of date" in once.stderr, once.stderr

    unmount(ro_status)
    st_b = world.wait_running("b")
    assert world.wait_running("a")["pid"] == pid
    names = {d["name"]: d["state"] for d in world.status_all()["domains"]}
    assert names == {"a": "running", "b": "running"}, names
    assert daemon.proc.poll() is None, daemon.text()
    assert world.qemu(light_uuid("b")) == [st_b["pid"]]
    assert daemon.lines(f"status files written again in {ro_status}")
    assert "could not be written" not in world.cli("status").stderr


def test_full_disk(tmpfs_world: World) -> None:
    """The config directory (domain files, runtime folders, logs, status) on a full tmpfs: a new
    domain cannot be prepared and says why, the running VMs keep their QEMUs, the daemon serves
    on; once space is back the new VM starts and every status file and exits.json are right."""
    world = tmpfs_world
    daemon = world.start_daemon()
    world.write("a", light_xml("a"))
    world.write("b", light_xml("b"))
    pids = {n: world.wait_running(n)["pid"] for n in ("a", "b")}
    pending = world.config / ".c.pending"  # written while there is room, renamed in when full
    pending.write_text(light_xml("c"))
    filler = fill(world.config)
    with pytest.raises(OSError):
        (world.config / "probe.bin").write_bytes(b"\0" * 8192)
    os.replace(pending, world.path("c"))
    said = world.wait(lambda: [line for line in daemon.lines("No space left on device")
                               if "c" in line], "the full disk said")
    world.wait(lambda: daemon.lines("cannot write"), "a failed status write said")
    assert world.qemu(light_uuid("c")) == []
    for name, pid in pids.items():
        assert world.qemu(light_uuid(name)) == [pid] and untouched(pid), name
    # reviewed: restart stopped a healthy VM that could then not start again; stop gave a
    # traceback. Both refuse, saying why, and leave the VMs alone
    refused = world.cli("restart", "a")
    assert refused.returncode == 1 and "too little to start QEMU again" in refused.stderr, (
        refused.stdout + refused.stderr)
    refused = world.cli("stop", "b")
    assert refused.returncode == 1 and "No space left on device; nothing changed" in (
        refused.stderr), refused.stdout + refused.stderr
    for name, pid in pids.items():
        assert world.qemu(light_uuid(name)) == [pid] and untouched(pid), name
    os.kill(daemon.proc.pid, signal.SIGHUP)  # a full rescan on a full disk changes nothing
    world.wait(lambda: daemon.lines("SIGHUP: full rescan"), "the rescan")
    assert daemon.proc.poll() is None, daemon.text()

    filler.unlink()
    st_c = world.wait_running("c", timeout=30)
    for name, pid in pids.items():
        assert world.wait_running(name)["pid"] == pid, name
    listing = {d["name"]: d["state"] for d in world.status_all()["domains"]}
    assert listing == {"a": "running", "b": "running", "c": "running"}, listing
    exits = json.loads((world.layout.run_dir / "exits.json").read_bytes())
    assert isinstance(exits, dict)
    assert world.qemu(light_uuid("c")) == [st_c["pid"]]
    assert daemon.proc.poll() is None, daemon.text()
    for name, pid in pids.items():
        assert untouched(pid) and "stopping" not in world.vm_log(name), name
    assert said
