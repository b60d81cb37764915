"""What happened while no reconciler ran (issue 9), against real QEMU: a QEMU killed meanwhile is
a crash like any other (the policy decides, the restart is counted); a host reboot and a clean
QEMU exit are not crashes."""

from __future__ import annotations

import os
import signal

import pytest

from reconciler.loop import boot_time
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


def test_a_host_reboot_or_a_clean_exit_is_no_crash(world: World) -> None:
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
    # a clean exit (here a quit through the users' monitor) removes the pidfile: not a crash
    out = world.cli("monitor", "b", "quit")
    assert out.returncode == 0, out.stderr
    world.wait(lambda: not world.qemu(light_uuid("b")), "QEMU to quit")
    assert not pidfile.exists() and pidfile.parent.exists()
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("b")
    assert st is not None and (st["state"], st["restarts"]) == ("running", 0), st
