"""What happened while no reconciler ran (issue 9), against real QEMU: a QEMU killed meanwhile is
a crash like any other (the policy decides, the restart is counted); a host reboot is not; a clean
QEMU exit is a power-off, as the daemon would have seen it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from reconciler.history import UNSEEN_EXIT
from reconciler.loop import boot_time
from reconciler.qemu import STOP_FILE
from tests.integration.test_loop import World, light_uuid, light_xml, world
from tests.support.procs import alive

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]

UNSEEN = "QEMU crashed or was killed while no reconciler was running"


def killed_while_nobody_watched(world: World, name: str) -> int:
    """Start `name` with `--once`, SIGKILL its QEMU (no reconciler runs); return the pid."""
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status(name)
    assert st is not None and st["state"] == "running", st
    pid: int = st["pid"]
    os.kill(pid, signal.SIGKILL)
    world.wait(lambda: not alive(pid), f"QEMU {pid} to die")
    assert world.layout.pidfile(light_uuid(name)).exists()  # an unclean death leaves it
    return pid


def test_a_qemu_killed_while_no_daemon_ran_is_restarted_and_counted(world: World) -> None:
    world.write("c", light_xml("c"))
    old = killed_while_nobody_watched(world, "c")
    daemon = world.start_daemon()
    st = world.wait_status("c", lambda s: s["state"] == "running" and s["pid"] != old,
                           "c restarted on a new QEMU")
    assert st["restarts"] == 1, st
    said = daemon.lines(UNSEEN)
    assert len(said) == 1 and f"reconcile: c: {UNSEEN} (pid {old}, started " in said[0], \
        daemon.text()
    assert "c: starting (restart after crash (failure 1))" in daemon.text(), daemon.text()


def test_restart_never_keeps_it_crashed_and_says_why(world: World) -> None:
    world.write("n", light_xml("n").replace("state='running'", "state='running' restart='never'"))
    old = killed_while_nobody_watched(world, "n")
    out = world.cli("--once")
    assert out.returncode == 1, out.stdout + out.stderr
    st = world.status("n")
    assert st is not None and (st["state"], st["restarts"], st["pid"]) == ("crashed", 0, None), st
    assert st["reason"].startswith(f"{UNSEEN} (pid {old}"), st
    assert world.qemu(light_uuid("n")) == []


def test_a_vm_no_longer_wanted_running_is_simply_stopped(world: World) -> None:
    path = world.write("s", light_xml("s"))
    killed_while_nobody_watched(world, "s")
    path.write_text(path.read_text().replace("state='running'", "state='stopped'"))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("s")
    assert st is not None and (st["state"], st["restarts"]) == ("stopped", 0), st
    assert UNSEEN not in out.stdout + out.stderr


def test_a_host_reboot_is_no_crash(world: World) -> None:
    world.write("b", light_xml("b"))
    killed_while_nobody_watched(world, "b")
    booted = boot_time()
    assert booted is not None
    pidfile = world.layout.pidfile(light_uuid("b"))
    os.utime(pidfile, (booted - 60, booted - 60))  # as if it ran before the host went down
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("b")
    assert st is not None and (st["state"], st["restarts"]) == ("running", 0), st
    assert UNSEEN not in out.stdout + out.stderr


def quit_while_nobody_watched(world: World, name: str) -> Path:
    """Start `name` with `--once`, make its QEMU quit cleanly through the users' monitor (no
    reconciler runs: like a guest power-off, QEMU removes its pidfile); its runtime folder."""
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    out = world.cli("monitor", name, "quit")
    assert out.returncode == 0, out.stderr
    world.wait(lambda: not world.qemu(light_uuid(name)), "QEMU to quit")
    pidfile = world.layout.pidfile(light_uuid(name))
    assert not pidfile.exists() and pidfile.parent.exists()
    return pidfile.parent


def test_a_clean_exit_nobody_saw_is_a_power_off_as_the_daemon_would_have_seen_it(
        world: World) -> None:
    """Not a crash (no restart counted), and the restart policy decides as for a power-off
    the daemon sees: by default the VM stays stopped, with the reason in its status."""
    world.write("q", light_xml("q"))
    quit_while_nobody_watched(world, "q")
    out = world.cli("--once")
    assert out.returncode == 1, out.stdout + out.stderr  # desired running, not running
    st = world.status("q")
    assert st is not None and (st["state"], st["restarts"], st["pid"]) == ("stopped", 0, None), st
    assert st["reason"].startswith(UNSEEN_EXIT), st
    assert UNSEEN not in out.stdout + out.stderr
    assert world.qemu(light_uuid("q")) == []


def test_a_clean_exit_nobody_saw_restarts_under_restart_always(world: World) -> None:
    world.write("r", light_xml("r").replace("state='running'",
                                            "state='running' restart='always'"))
    quit_while_nobody_watched(world, "r")
    old = world.status("r")
    assert old is not None  # as the --once that started it left it: running
    daemon = world.start_daemon()
    st = world.wait_status("r", lambda s: s["state"] == "running" and s["pid"] != old["pid"],
                           "r restarted on a new QEMU")
    assert st["restarts"] == 1, st
    assert len(daemon.lines(UNSEEN_EXIT)) == 1, daemon.text()


def test_a_stop_qemud_began_is_no_exit_of_the_guest(world: World) -> None:
    """A reconciler killed after QEMU quit on its request but before the folder was cleaned up:
    the marker it left says the exit was its own, so the VM is simply started again."""
    world.write("t", light_xml("t"))
    folder = quit_while_nobody_watched(world, "t")
    (folder / STOP_FILE).touch()  # what `QemuProcess.stop` leaves when it begins
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("t")
    assert st is not None and (st["state"], st["restarts"]) == ("running", 0), st
    assert UNSEEN_EXIT not in out.stdout + out.stderr


def test_a_clean_exit_from_before_the_boot_is_no_exit_of_the_guest(world: World) -> None:
    """A host shut down with its VMs (QEMUs quit on SIGTERM, folders kept): started again."""
    world.write("h", light_xml("h"))
    folder = quit_while_nobody_watched(world, "h")
    booted = boot_time()
    assert booted is not None
    os.utime(folder, (booted - 60, booted - 60))  # as if it quit when the host went down
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("h")
    assert st is not None and (st["state"], st["restarts"]) == ("running", 0), st
