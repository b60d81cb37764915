"""Domain files for integration tests: the real test guest, and a QEMU that can never start."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from xml.sax.saxutils import escape

from tests.support.guest import Guest


def guest_xml(
    name: str,
    guest: Guest,
    *,
    uuid: str | None = None,
    state: str = "running",
    restart: str = "on-failure",
    shutdown_timeout: int = 10,
    cmdline: str | None = None,
    devices: str = "",
    on_poweroff: str = "destroy",
    on_crash: str = "destroy",
) -> str:
    """A TCG domain booting the test guest, its console on a pty logged to the console log.

    `cmdline` defaults to `guest.cmdline()`; pass `guest.cmdline(powerbutton="ignore")` etc. for
    the guest's test switches. `devices` is extra XML inside `<devices>`.
    """
    vm_uuid = uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-test/{name}"))
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{vm_uuid}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(guest.kernel))}</kernel>
    <initrd>{escape(str(guest.initrd))}</initrd>
    <cmdline>{escape(cmdline if cmdline is not None else guest.cmdline())}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>{on_poweroff}</on_poweroff>
  <on_crash>{on_crash}</on_crash>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    {devices}
  </devices>
  <metadata>
    <qemud:desired xmlns:qemud='urn:qemud:1' state='{state}' restart='{restart}'
                   shutdown-timeout='{shutdown_timeout}'/>
  </metadata>
</domain>
"""


def broken_xml(name: str, *, restart: str = "on-failure") -> str:
    """A valid domain whose QEMU can never start: its disk image does not exist."""
    vm_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-test/{name}"))
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{vm_uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/nonexistent/qemud-test/{escape(name)}.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
  <metadata>
    <qemud:desired xmlns:qemud='urn:qemud:1' state='running' restart='{restart}'/>
  </metadata>
</domain>
"""


def write(directory: Path, name: str, text: str) -> Path:
    """Write a domain file `<name>.xml` into `directory` atomically (temp file + rename)."""
    path = directory / f"{name}.xml"
    tmp = directory / f".{name}.xml.tmp"
    tmp.write_text(text)
    tmp.replace(path)
    return path
