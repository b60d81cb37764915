"""`<source startupPolicy='optional'>` on real QEMU: a missing image leaves its drive empty.

Reviewed: the attribute was ignored, and a VM whose install ISO was deleted never started.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.paths import Layout
from tests.support.onevm import monitor, once, private_layout

pytestmark = pytest.mark.qemu

XML = """<domain type='qemu'>
  <name>sp</name>
  <uuid>5e1dca25-3333-4222-8333-444455556666</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='{iso}' startupPolicy='{policy}'/><target dev='hdc' bus='ide'/><readonly/>
    </disk>
  </devices>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running' shutdown-timeout='1'/></metadata>
</domain>
"""


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A short private config dir; every process mentioning it dies afterwards."""
    with private_layout("qdp") as made:
        yield made


def test_a_missing_optional_iso_starts_the_vm_with_the_drive_empty(layout: Layout) -> None:
    layout.config_dir.mkdir(mode=0o700, exist_ok=True)
    iso = layout.config_dir / "gone.iso"
    (layout.config_dir / "sp.xml").write_text(XML.format(iso=iso, policy="optional"))
    assert once(layout) == "running"
    assert "gone.iso is missing; startupPolicy='optional': starting with the drive empty" in (
        layout.log_file("sp").read_text())
    blocks = monitor(layout, "sp", "query-block")
    drive = next(b for b in blocks["return"] if b["device"] == "drive-ide0-1-0")  # type: ignore[index]
    assert "inserted" not in drive  # empty, as libvirt leaves it


def test_a_missing_mandatory_iso_keeps_the_vm_down_with_the_reason(layout: Layout) -> None:
    layout.config_dir.mkdir(mode=0o700, exist_ok=True)
    iso = layout.config_dir / "gone.iso"
    (layout.config_dir / "sp.xml").write_text(XML.format(iso=iso, policy="mandatory"))
    state = once(layout)
    assert state != "running" and "gone.iso" in state
