"""A domain without ACPI (issue 9): `validate` warns that a graceful stop can never work, and the
daemon stops it with QMP `quit` at once instead of pressing a power button nobody hears."""

from __future__ import annotations

import pytest

from tests.integration.test_loop import World, light_xml, world
from tests.support.procs import alive

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]


def test_a_domain_without_acpi_is_warned_about_and_quit_at_once(world: World) -> None:
    path = world.write("bare", light_xml("bare", shutdown_timeout=600))  # no <features><acpi/>
    out = world.cli("validate", str(path))
    assert out.returncode == 0, out.stderr
    assert f"{path}:" in out.stderr and "no <acpi/> in <features>: a graceful stop can never " \
        "work; qemud will quit it at once" in out.stderr, out.stderr
    world.start_daemon()
    pid = world.wait_running("bare")["pid"]
    path.write_text(path.read_text().replace("state='running'", "state='stopped'"))
    # 600 s if it waited for the guest; the bound is the harness's usual one (15 s)
    world.wait_status("bare", lambda s: s["state"] == "stopped", "bare stopped")
    assert not alive(pid)
    log = world.vm_log("bare")
    assert "stopping reason=desired-state-is-stopped: quit" in log, log
    assert "system_powerdown" not in log, log
