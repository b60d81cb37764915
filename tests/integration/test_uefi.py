"""UEFI guests for real: firmware chosen from QEMU's descriptors, variables kept across restarts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.paths import Layout
from reconciler.uefi import descriptors
from tests.support.onevm import once, private_layout

pytestmark = [pytest.mark.qemu]

UUID = "7e3c1b2a-1111-4222-8333-444455556666"


def efi_xml(state: str) -> str:
    """A q35 UEFI domain with no disk: OVMF starts, finds nothing to boot, says so on serial."""
    return f"""<domain type='qemu'>
  <name>efi</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>256</memory>
  <os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/><apic/></features>
  <devices><serial type='pty'><target port='0'/></serial></devices>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='{state}' shutdown-timeout='1'/></metadata>
</domain>
"""


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A short private config dir; every process mentioning it dies afterwards."""
    with private_layout("qdu") as made:
        yield made


def wait_for(path: Path, text: str, timeout: float = 60.0) -> None:
    """Wait until `path` contains `text` (the console log filling as the firmware runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.skipif(not descriptors(), reason="no UEFI firmware descriptors (Debian's ovmf)")
def test_a_uefi_guest_boots_its_firmware_and_keeps_its_variables(layout: Layout) -> None:
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "efi.xml").write_text(efi_xml("running"))
    assert once(layout) == "running"
    console = layout.console_log("efi")
    wait_for(console, "BdsDxe")  # OVMF itself is running and talking on the serial port
    store = layout.state_dir(UUID) / "VARS.fd"
    assert store.exists() and (store.stat().st_mode & 0o777) == 0o600
    assert (store.parent.stat().st_mode & 0o777) == 0o700
    first = store.stat()

    (config / "efi.xml").write_text(efi_xml("stopped"))
    assert once(layout).startswith("stopped")
    pin = store.with_name("pin")
    os.link(store, pin)  # a copy from the template would replace the store by another inode
    console.unlink()
    (config / "efi.xml").write_text(efi_xml("running"))
    assert once(layout) == "running"
    wait_for(console, "BdsDxe")
    assert store.stat().st_ino == pin.stat().st_ino == first.st_ino  # kept, never copied again
