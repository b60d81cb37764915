"""`<qemu:commandline>` (libvirt's escape hatch) reaches the real QEMU: args and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_loop import World, light_xml, world

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]

COMMANDLINE = """<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
    <qemu:arg value='-smbios'/><qemu:arg value='type=1,serial=qemud-cmdline'/>
    <qemu:env name='QEMUD_TEST_ENV' value='yes'/>
  </qemu:commandline>
</domain>"""


def test_qemu_commandline_args_and_env_reach_qemu(world: World) -> None:
    world.write("c", light_xml("c").replace("</domain>", COMMANDLINE))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("c")
    assert st is not None and st["state"] == "running", st
    argv = Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")
    at = argv.index(b"-smbios")  # after qemud's own options (then the -S qemud starts with)
    assert argv[at + 1] == b"type=1,serial=qemud-cmdline" and at > argv.index(b"-pidfile"), argv
    environ = Path(f"/proc/{st['pid']}/environ").read_bytes().split(b"\0")
    assert b"QEMUD_TEST_ENV=yes" in environ
    validate = world.cli("validate", str(world.config / "c.xml"))
    assert "<qemu:commandline> passes options to QEMU that qemud does not check" in \
        validate.stdout + validate.stderr
