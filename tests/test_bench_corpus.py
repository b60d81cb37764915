"""The corpus bench's pure helpers: libvirt's `.args` files read as QEMU would, devices compared,
refusals grouped (the figures `python -m tests.bench corpus` prints rest on these)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.corpus import (
    Device,
    _deb_src_entries,
    args_file_argv,
    devices_of,
    implicit,
    parse_device,
    reason,
)

DEVICES = [
    ('{"driver":"virtio-blk-pci","iothread":"iothread1","bus":"pci.0","addr":"0x4",'
     '"drive":"libvirt-2-format","id":"virtio-disk1"}',
     Device("virtio-blk-pci", "virtio-disk1", "pci.0", "4.0")),
    ("piix3-usb-uhci,id=usb,bus=pci.0,addr=0x1.0x2", Device("piix3-usb-uhci", "usb", "pci.0", "1.2")),
    ("virtio-serial-pci,bus=pcie.0,addr=0x02.0,id=virtio-serial0",
     Device("virtio-serial-pci", "virtio-serial0", "pcie.0", "2.0")),
    ("isa-serial,chardev=a,,b,id=serial0", Device("isa-serial", "serial0")),
]


@pytest.mark.parametrize(("value", "device"), DEVICES)
def test_parse_device(value: str, device: Device) -> None:
    assert parse_device(value) == device


def test_args_file_with_continuations_and_old_usb() -> None:
    text = ("LC_ALL=C \\\n/usr/bin/qemu-system-i386 \\\n-usb \\\n"
            "-device '{\"driver\":\"virtio-balloon-pci\",\"id\":\"balloon0\"}'\n")
    argv = args_file_argv(text)
    assert argv[:3] == ["LC_ALL=C", "/usr/bin/qemu-system-i386", "-usb"]
    assert [d.driver for d in devices_of(argv)] == ["piix3-usb-uhci", "virtio-balloon-pci"]


def test_implicit_devices_left_out_only_when_the_file_has_none(tmp_path: Path) -> None:
    found = [Device("piix3-usb-uhci", "usb"), Device("virtio-balloon-pci", "balloon0"),
             Device("e1000", "net0")]
    bare = tmp_path / "bare.xml"
    bare.write_text("<domain><devices/></domain>")
    asked = tmp_path / "asked.xml"
    asked.write_text("<domain><devices><controller type='usb'/><memballoon model='virtio'/>"
                     "</devices></domain>")
    assert implicit(bare, found) == [Device("e1000", "net0")]
    assert implicit(asked, found) == found


@pytest.mark.parametrize(("message", "grouped"), [
    ("<source>: attribute 'protocol' is not supported", "<source>: attribute 'protocol' is not supported"),
    ("<graphics tlsPort>: set it to -1", "<graphics tlsPort>: set it to -…"),
    ("<model name>: 'pxb' is not supported for model 'pci-expander-bus'",
     "<model name>: 'pxb' is not supported for model 'pci-expander-bus'"),
    ("<source file='/a/b'> is missing", "<source file=…> is missing"),
])
def test_reasons_keep_names_and_mask_values(message: str, grouped: str) -> None:
    assert reason(message) == grouped


def test_deb_src_entries_are_derived_from_the_systems_deb_entries(tmp_path: Path) -> None:
    src = tmp_path / "x.sources"
    src.write_text("Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n"
                   "Components: main\n\nTypes: deb-src\nURIs: http://other.invalid\n")
    out = _deb_src_entries([src])
    assert out.startswith("Types: deb-src\nURIs: http://mirror.invalid/debian\n")
    assert "other.invalid" not in out
