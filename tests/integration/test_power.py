"""Power verbs against real QEMU: `stop --force`, `restart`, `reboot`, `reset`, with and without
a daemon (issue 9). Light VMs (no kernel: QEMU idles in the BIOS and ignores the ACPI power
button) stand for guests that ignore ACPI; the test guest for the ones that power off."""

from __future__ import annotations

import subprocess
import sys
import uuid as uuidlib

import pytest

from tests.integration.test_loop import REPO, World, light_uuid, light_xml, world
from tests.integration.test_promise import Watch, marker_pass
from tests.support import vms
from tests.support.guest import Guest
from tests.support.procs import alive

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]


def test_stop_force_does_not_wait_for_the_guest(world: World) -> None:
    """A guest that ignores ACPI, with a 600 s shutdown timeout: `stop --force` sets the desired
    state and stops it at once (QMP quit), even while a graceful stop is already waiting."""
    world.start_daemon()
    path = world.write("f", light_xml("f", acpi=True, shutdown_timeout=600))
    pid = world.wait_running("f")["pid"]
    out = world.cli("stop", "f", "--force", timeout=60)  # 600 s if it waited for the guest
    assert out.returncode == 0, out.stdout + out.stderr
    assert "f: stopped" in out.stdout, out.stdout
    assert "state='stopped'" in path.read_text()
    st = world.wait_status("f", lambda s: s["state"] == "stopped", "f stopped")
    assert st["desired"] == "stopped" and not alive(pid)
    log = world.vm_log("f")
    assert "stopping reason=" in log and ": quit" in log, log


def test_stop_force_cuts_short_a_graceful_stop_under_way(world: World) -> None:
    world.start_daemon()
    world.write("g", light_xml("g", acpi=True, shutdown_timeout=600))
    pid = world.wait_running("g")["pid"]
    out = world.cli("stop", "g")
    assert out.returncode == 0, out.stdout + out.stderr
    world.wait_status("g", lambda s: s["state"] == "stopping", "g stopping (waiting for ACPI)")
    world.wait(lambda: "waiting up to 600s" in world.vm_log("g"), "the ACPI wait to begin")
    out = world.cli("stop", "g", "--force", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    world.wait_status("g", lambda s: s["state"] == "stopped", "g stopped")
    assert not alive(pid)
    assert "forced: not waiting for the guest" in world.vm_log("g")


def test_restart_runs_a_new_qemu_and_keeps_the_desired_state(world: World) -> None:
    """`restart` stops the VM (after its shutdown timeout: the guest ignores ACPI) and the
    daemon starts it again: a new pid, never two at once, the file untouched."""
    world.start_daemon()
    path = world.write("r", light_xml("r", acpi=True, shutdown_timeout=1))
    text = path.read_text()
    old = world.wait_running("r")["pid"]
    with Watch([light_uuid("r")]) as watch:
        out = world.cli("restart", "r")
        assert out.returncode == 0, out.stdout + out.stderr
        marker_pass(world)
    assert "r: stopping" in out.stdout and "r: running, pid" in out.stdout, out.stdout
    assert watch.overlaps == [], f"two QEMUs of r at once: {watch.overlaps[:3]}"
    st = world.wait_running("r")
    assert st["pid"] != old and not alive(old) and st["desired"] == "running"
    assert path.read_text() == text
    assert "stopping reason=restart-requested" in world.vm_log("r")


def test_restart_no_wait_returns_at_once_and_the_daemon_carries_it_out(world: World) -> None:
    world.start_daemon()
    world.write("n", light_xml("n", acpi=True, shutdown_timeout=1))
    old = world.wait_running("n")["pid"]
    out = world.cli("restart", "n", "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "n: restart requested" in out.stdout
    st = world.wait_status("n", lambda s: s["state"] == "running" and s["pid"] != old,
                           "n running on a new QEMU")
    assert not alive(old) and world.qemu(light_uuid("n")) == [st["pid"]]


def test_reboot_of_a_guest_that_ignores_acpi_fails_and_leaves_it_running(world: World) -> None:
    world.start_daemon()
    world.write("i", light_xml("i", acpi=True, shutdown_timeout=1))
    pid = world.wait_running("i")["pid"]
    out = world.cli("reboot", "i")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "did not power off within 1s" in out.stderr and "reconcile restart i" in out.stderr
    assert "the reboot is called off" in out.stderr  # a later power-off is the guest's own
    marker_pass(world)
    st = world.wait_running("i")
    assert st["pid"] == pid and alive(pid), "a failed reboot never stops the VM"


def test_reset_keeps_the_qemu_and_verbs_on_stopped_vms_say_what_to_do(world: World) -> None:
    world.start_daemon()
    world.write("z", light_xml("z"))
    world.write("off", light_xml("off", state="stopped"))
    pid = world.wait_running("z")["pid"]
    out = world.cli("reset", "z")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"z: reset (pid {pid})" in out.stdout
    assert world.wait_running("z")["pid"] == pid
    for verb in ("reset", "reboot", "restart"):
        out = world.cli(verb, "off")
        assert out.returncode == 1, (verb, out.stdout + out.stderr)
        assert "reconcile start off" in out.stderr, (verb, out.stderr)
    out = world.cli("reset", "nosuch")
    assert out.returncode == 1 and "no domain named 'nosuch'" in out.stderr


def test_verbs_without_a_daemon_are_carried_out_here(world: World) -> None:
    """No daemon: `restart` owns the VMs for its time (adopting them), then lets them go."""
    world.write("h", light_xml("h", acpi=True, shutdown_timeout=1))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    old = world.status("h")["pid"]  # type: ignore[index]
    out = world.cli("restart", "h")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("h")
    assert st is not None and st["state"] == "running" and st["pid"] != old
    assert world.qemu(light_uuid("h")) == [st["pid"]] and not alive(old)
    out = world.cli("restart", "h", "--no-wait")  # reviewed: it waited, ignoring --no-wait
    assert out.returncode == 2 and "--no-wait needs the daemon" in out.stderr, out.stderr
    assert world.qemu(light_uuid("h")) == [st["pid"]]
    out = world.cli("stop", "h", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert world.qemu(light_uuid("h")) == []


def test_stop_force_without_a_daemon_cuts_short_a_graceful_stop_under_way(world: World) -> None:
    """Reviewed: without a daemon, `stop --force` waited for a plain `stop` holding the pass
    lock through its whole ACPI wait, printing nothing. Now it quits QEMU through its own
    monitor at once, and the plain `stop` sees an ordinary exit."""
    world.write("w", light_xml("w", acpi=True, shutdown_timeout=600))
    assert world.cli("--once").returncode == 0
    pid = world.status("w")["pid"]  # type: ignore[index]
    graceful = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--config-dir", str(world.config), "stop", "w"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert graceful.stdout is not None
        for line in graceful.stdout:  # an event: it has begun its ACPI wait
            if "then up to 600s" in line:
                break
        out = world.cli("stop", "w", "--force", timeout=60)  # 600 s if it waited
        assert out.returncode == 0, out.stdout + out.stderr
        assert "quitting w's QEMU at once through its own monitor" in out.stdout, out.stdout
        assert "w: stopped" in out.stdout
        assert graceful.wait(timeout=60) == 0  # its stop ended with the QEMU, not the timeout
    finally:
        if graceful.poll() is None:
            graceful.kill()
            graceful.wait()
    assert not alive(pid)
    assert world.status("w")["state"] == "stopped"  # type: ignore[index]


@pytest.mark.guest
def test_reboot_starts_the_guest_afresh_once_it_powered_off(world: World, guest: Guest) -> None:
    """The test guest powers off on the ACPI button: `reboot` waits for that, then the daemon
    starts a new QEMU (libvirt's fake reboot); the guest boots again, desired state unchanged,
    and the power-off counts as qemud's (not a crash, no restart counted)."""
    world.start_daemon()
    world.write("b", vms.guest_xml("b", guest, shutdown_timeout=60))
    uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "qemud-test/b"))
    old = world.wait_running("b", timeout=30)["pid"]
    world.wait(lambda: _ready(world, "b") >= 1, "the guest to boot", timeout=60)
    out = world.cli("reboot", "b", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ACPI power button pressed" in out.stdout and "b: running, pid" in out.stdout
    st = world.wait_running("b")
    assert st["pid"] != old and not alive(old) and world.qemu(uuid) == [st["pid"]]
    assert st["desired"] == "running" and st.get("restarts", 0) == 0, st
    world.wait(lambda: _ready(world, "b") >= 2, "the guest to boot again", timeout=60)
    assert "event SHUTDOWN guest=true" in world.vm_log("b")


def _ready(world: World, name: str) -> int:
    """How often the guest has printed its ready line on its console."""
    from tests.integration.test_loop import _ready_lines
    return _ready_lines(world, name)


def test_stop_on_a_name_clash_edits_the_file_of_the_vm_that_runs(world: World) -> None:
    """`web` runs from b.xml; a.xml (same name, another uuid) lost the clash. `stop web` (and
    `stop --force web`) edit b.xml, the one the running VM comes from, not a.xml."""
    world.start_daemon()
    b = world.write("b", light_xml("web", uuid=light_uuid("b")))
    pid = world.wait_running("web")["pid"]
    a = world.path("a")
    a.write_text(light_xml("web", uuid=light_uuid("a")))
    marker_pass(world)
    out = world.cli("stop", "web", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"({b})" in out.stdout, out.stdout
    assert "state='stopped'" in b.read_text() and "state='running'" in a.read_text()
    world.wait(lambda: not alive(pid), "the VM of b.xml to stop")


def test_stop_force_of_a_vm_whose_file_was_deleted_skips_the_wait(world: World) -> None:
    """The file is gone, so the VM is being stopped gracefully (600 s ACPI wait): `stop --force`
    has no file to edit but still cuts the wait short."""
    world.start_daemon()
    path = world.write("gone", light_xml("gone", acpi=True, shutdown_timeout=600))
    pid = world.wait_running("gone")["pid"]
    path.unlink()
    world.wait(lambda: "waiting up to 600s" in world.vm_log("gone"), "the ACPI wait to begin")
    out = world.cli("stop", "gone", "--force", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no valid domain file" in out.stdout and "gone: stopped" in out.stdout, out.stdout
    world.wait(lambda: not alive(pid), "the VM to stop")


def test_a_verb_to_a_hung_daemon_says_so_and_is_dropped_when_given_up(world: World) -> None:
    """A stopped (SIGSTOP) daemon: `reset --no-wait` says it may be hung and that nothing was
    done; once the daemon runs again it drops that request instead of carrying it out late."""
    import signal

    daemon = world.start_daemon()
    world.write("h", light_xml("h"))
    pid = world.wait_running("h")["pid"]
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        out = world.cli("reset", "h", "--no-wait", timeout=60)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "it may be hung; nothing was done" in out.stderr, out.stderr
    world.wait(lambda: daemon.lines("control: reset h dropped"), "the daemon to drop it")
    assert not daemon.lines("control: reset h requested"), daemon.text()
    assert world.qemu(light_uuid("h")) == [pid]
