"""A running VM whose file is invalid keeps its definition through everything a fresh reconciler
brings (review of issue 9, with real QEMU): a daemon restart with a uuid clash, a rename, and a
crash while no reconciler ran. The definition in use is persisted in the runtime folder (with
its file's path and inode), so a new reconciler decides as the one before it."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.test_loop import World, light_uuid, light_xml, world
from tests.support.procs import alive

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]

INVALID = "<memory unit='MiB'>lots</memory>"


def _break(world: World, name: str) -> None:
    """Make `name`'s file invalid (its VM keeps the definition in use)."""
    path = world.path(name)
    path.write_text(path.read_text().replace("<memory unit='MiB'>32</memory>", INVALID))


def _running(world: World, name: str) -> int:
    """The pid of `name`'s VM, which must run."""
    st = world.status(name)
    assert st is not None and st["state"] == "running", st
    return int(st["pid"])


def test_a_daemon_restart_keeps_an_invalid_files_vm_against_a_uuid_clash(world: World) -> None:
    uuid = light_uuid("u1")
    world.write("u1", light_xml("u1"))
    daemon = world.start_daemon()
    pid = world.wait_running("u1")["pid"]
    world.write("u2", light_xml("u2", uuid=uuid))  # same uuid: loses to the running VM
    world.wait(lambda: (world.status("u2") or {}).get("state") == "conflict", "u2 in conflict")
    _break(world, "u1")
    world.wait(lambda: (world.status("u1") or {}).get("errors"), "u1's errors")
    daemon.proc.send_signal(signal.SIGTERM)  # what systemctl restart does
    daemon.proc.wait(timeout=30)
    out = world.cli("--once")
    assert world.qemu(uuid) == [pid], out.stdout + out.stderr
    assert _running(world, "u1") == pid
    u2 = world.status("u2")
    assert u2 is not None and u2["state"] == "conflict", u2
    assert "stopping" not in world.vm_log("u1")


def test_a_renamed_invalid_file_keeps_its_vm(world: World) -> None:
    """With a daemon (its cache knows the inode) and with --once (the runtime folder does)."""
    world.write("w1", light_xml("w1"))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    pid = _running(world, "w1")
    _break(world, "w1")
    world.cli("--once")
    world.path("w1").rename(world.config / "w1-renamed.xml")
    out = world.cli("--once")
    assert world.qemu(light_uuid("w1")) == [pid], out.stdout + out.stderr
    assert _running(world, "w1") == pid
    daemon = world.start_daemon()
    (world.config / "w1-renamed.xml").rename(world.config / "w1-again.xml")
    world.wait(lambda: (world.status("w1") or {}).get("file", "").endswith("w1-again.xml"),
               "the daemon to follow the rename")
    assert world.qemu(light_uuid("w1")) == [pid], daemon.text()
    assert "stopping" not in world.vm_log("w1")


def test_an_invalid_files_vm_that_crashed_while_no_reconciler_ran_comes_back(
        world: World) -> None:
    world.write("v1", light_xml("v1"))
    world.cli("--once")
    pid = _running(world, "v1")
    _break(world, "v1")
    world.cli("--once")
    os.kill(pid, signal.SIGKILL)
    world.wait(lambda: not alive(pid), "QEMU to die")
    out = world.cli("--once")  # finds the crash (its folder is removed), due a restart
    st = world.status("v1")
    assert st is not None and st["state"] == "crashed" and st["errors"], out.stdout + out.stderr
    daemon = world.start_daemon()  # a fresh reconciler: the definition's copy in the state
    st = world.wait_status("v1", lambda s: s["state"] == "running", "v1 restarted")
    assert st["pid"] != pid and st["restarts"] == 1 and st["errors"], (st, daemon.text())


def test_once_applies_a_deleted_file_after_the_quiet_period(world: World) -> None:
    """`--once` waits out the quiet period of a file that went missing, then stops its VM (the
    daemon does the same); it used to report 'missing for a moment' and exit 0 for ever."""
    world.write("s", light_xml("s"))
    world.cli("--once")
    pid = _running(world, "s")
    world.path("s").unlink()
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "s: stopping (domain file removed)" in out.stderr, out.stderr
    assert world.qemu(light_uuid("s")) == [] and not alive(pid)
