"""`<emulator>` for real: any QEMU program runs (RHEL's qemu-kvm here a wrapper), others do not.

The wrapper is named and placed like RHEL's `/usr/libexec/qemu-kvm` but execs Debian's QEMU:
the domain is validated against its own `-machine help`, and started through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.hostfacts import check_emulator, parse_checked
from reconciler.paths import Layout
from reconciler.process import read_cmdline
from tests.support.onevm import once, private_layout

pytestmark = [pytest.mark.qemu]

UUID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"


def emu_xml(emulator: Path, machine: str = "q35") -> str:
    """A light q35 domain run by `emulator`."""
    return f"""<domain type='qemu'>
  <name>emu</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='{machine}'>hvm</type></os>
  <features><acpi/></features>
  <devices><emulator>{emulator}</emulator></devices>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running' shutdown-timeout='1'/></metadata>
</domain>
"""


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A short private config dir; every process mentioning it dies afterwards."""
    with private_layout("qde") as made:
        yield made


@pytest.fixture
def qemu_kvm(tmp_path: Path) -> Path:
    """An executable `libexec/qemu-kvm` that runs Debian's QEMU (with the same arguments)."""
    folder = tmp_path / "libexec"
    folder.mkdir()
    wrapper = folder / "qemu-kvm"
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_a_vm_runs_under_a_qemu_kvm_binary(layout: Layout, qemu_kvm: Path) -> None:
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "emu.xml").write_text(emu_xml(qemu_kvm))
    assert once(layout) == "running"
    pid = int(layout.pidfile(UUID).read_text())
    assert read_cmdline(pid)[:1] == ["/usr/bin/qemu-system-x86_64"]  # the wrapper exec'd it
    assert "emu" in " ".join(read_cmdline(pid))


def test_machine_types_come_from_that_binary_and_a_missing_one_is_named(
        layout: Layout, qemu_kvm: Path) -> None:
    with pytest.raises(Exception, match="'pc-q35-rhel9.2.0' is not a machine type of "
                                        f"{qemu_kvm}; did you mean"):
        parse_checked(emu_xml(qemu_kvm, "pc-q35-rhel9.2.0").encode())
    gone = qemu_kvm.parent / "nothing-here"
    assert check_emulator(str(gone)) is not None and str(gone) in str(check_emulator(str(gone)))
    qemu_kvm.chmod(0o644)
    assert "is not an executable program" in str(check_emulator(str(qemu_kvm)))
    assert os.access("/usr/bin/qemu-system-x86_64", os.X_OK)
    assert check_emulator("/usr/bin/qemu-system-x86_64") is None
    assert check_emulator("qemu-system-x86_64") is None  # found in $PATH
