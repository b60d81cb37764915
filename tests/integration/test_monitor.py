"""The users' own QMP monitor against real QEMU (issue 9): `reconcile monitor NAME COMMAND` and
`qmp-user.sock`, used while the daemon holds its own monitor connection, which keeps working."""

from __future__ import annotations

import json
import stat
import uuid as uuidlib

import pytest

from tests.integration.test_loop import World, _ready_lines, light_uuid, light_xml, world
from tests.support import vms
from tests.support.guest import Guest

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]


@pytest.mark.guest
def test_monitor_answers_beside_the_daemon_which_still_stops_the_guest_gracefully(
        world: World, guest: Guest) -> None:
    daemon = world.start_daemon()
    path = world.write("g", vms.guest_xml("g", guest, shutdown_timeout=30))
    uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "qemud-test/g"))
    st = world.wait_running("g", timeout=30)
    world.wait(lambda: _ready_lines(world, "g") >= 1, "the guest to boot", timeout=60)
    sock = world.layout.user_qmp_socket(uuid)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600

    out = world.cli("monitor", "g", '{"execute": "query-status"}')
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    reply = json.loads(out.stdout)
    assert reply["return"]["status"] == "running" and reply["return"]["running"] is True
    out = world.cli("monitor", "g", "query-name", "--pretty")  # a bare name works too
    assert out.returncode == 0 and json.loads(out.stdout) == {"return": {"name": "g"}}
    assert out.stdout.startswith("{\n")
    ident = world.cli("monitor", "g", '{"execute": "query-kvm", "id": "mine-1"}')
    assert json.loads(ident.stdout)["id"] == "mine-1"

    out = world.cli("monitor", "g", '{"execute": "no-such-command"}')
    assert out.returncode == 1 and out.stdout == ""
    assert "QEMU refused 'no-such-command': CommandNotFound: The command no-such-command " \
           "has not been found" in out.stderr, out.stderr
    out = world.cli("monitor", "g", '{"execute": "human-monitor-command", "arguments": {}}')
    assert out.returncode == 1 and "GenericError" in out.stderr, out.stderr

    # the daemon's own connection was never disturbed: it sees the guest power off when asked
    assert world.qemu(uuid) == [st["pid"]]
    assert "g: adopted" not in daemon.text() and "unresponsive" not in daemon.text()
    path.write_text(path.read_text().replace("state='running'", "state='stopped'"))
    world.wait_status("g", lambda s: s["state"] == "stopped", "stopped", timeout=30)
    log = world.vm_log("g")
    assert "event SHUTDOWN guest=true reason=guest-shutdown" in log, log
    assert "exited status=0 kind=stopped" in log, log
    assert ": quit" not in log and "SIGTERM" not in log and "SIGKILL" not in log, log

    out = world.cli("monitor", "g", "query-status")
    assert out.returncode == 1 and out.stdout == ""
    assert "g is not running (state stopped); start it with 'reconcile start g'" in out.stderr


def test_monitor_of_a_qemu_gone_or_a_name_unknown_says_so(world: World) -> None:
    world.write("l", light_xml("l"))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("l")
    assert st is not None
    out = world.cli("monitor", "l", '{"execute": "query-status"}')
    assert out.returncode == 0, out.stderr  # no daemon needed: QEMU answers by itself
    assert json.loads(out.stdout)["return"]["status"] == "running"
    out = world.cli("monitor", "nosuch", "query-status")
    assert out.returncode == 1 and "no domain named 'nosuch'" in out.stderr
    out = world.cli("monitor", "l", "not json {")
    assert out.returncode == 2 and "neither a QMP command name nor a JSON object" in out.stderr
    out = world.cli("monitor", "l", "quit")  # a user may end it through their monitor
    assert out.returncode == 0 and json.loads(out.stdout) == {"return": {}}
    world.wait(lambda: not world.qemu(light_uuid("l")), "QEMU to quit")
    out = world.cli("monitor", "l", "query-status")
    assert out.returncode == 1
    assert "l is not running: its QEMU exited ('reconcile status l' says why)" in out.stderr
