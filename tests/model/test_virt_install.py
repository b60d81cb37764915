"""Real-world domain files (tests/data/virt-install) validate and give the guest libvirt's devices.

The files are what Debian 12's virt-install 4.1 prints (`--print-xml`) and what libvirt 9.0
stores for them (`virsh dumpxml`); `NAME.args` is libvirt's own command line for each
(`virsh domxml-to-native qemu-argv`). See tests/data/virt-install/make.sh. The comparison is of
what the guest sees: every `-device` driver with its bus and PCI address (or USB port,
virtio-serial port), not the host-side options, where qemud and libvirt differ by design.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import model

DATA = Path(__file__).resolve().parents[1] / "data" / "virt-install"
FILES = sorted(DATA.glob("*.xml"))
NAMES = [p.stem for p in FILES]

KNOWN_DIFFERENCES: dict[str, set[tuple[str, str, str, str]]] = {
    # libvirt adds a virtio memballoon to a domain without <memballoon>; qemud adds none
    "win11": {("virtio-balloon-pci", "pci.4", "0x0", "")},
}
"""Devices libvirt's command line has and qemud's lacks, per file, each with its reason."""


def _value(text: str) -> dict[str, str]:
    """A -device value as a dict: libvirt writes JSON, qemud QEMU's key=value syntax."""
    if text.startswith("{"):
        return {k: str(v) for k, v in json.loads(text).items()}
    parts = text.replace(",,", "\0").split(",")
    out = {"driver": parts[0]}
    for part in parts[1:]:
        key, _, val = part.partition("=")
        out[key] = val.replace("\0", ",")
    return out


def _addr(text: str | None) -> str:
    """Normalise a PCI addr ("0x2", "0x2.0x1", "2") for comparison."""
    if text is None:
        return ""
    slot, _, function = text.partition(".")
    return f"{int(slot, 16):#x}" + (f".{int(function, 16):#x}" if function and int(function, 16)
                                    else "")


def guest_devices(argv: list[str]) -> set[tuple[str, str, str, str]]:
    """(driver, bus, PCI address, port) of every -device; root ports with their port number."""
    out = set()
    for i, arg in enumerate(argv):
        if arg != "-device":
            continue
        d = _value(argv[i + 1])
        port = d.get("port", d.get("nr", ""))
        if d["driver"] == "pcie-root-port":
            port = str(int(port, 0))
        out.add((d["driver"], d.get("bus", ""), _addr(d.get("addr")), port))
    return out


def test_there_are_ten_files_with_libvirts_command_lines() -> None:
    assert len(FILES) == 10
    assert all(p.with_suffix(".args").is_file() for p in FILES)


@pytest.mark.parametrize("name", NAMES)
def test_each_file_validates(name: str) -> None:
    parsed = model.parse_file(DATA / f"{name}.xml")
    assert parsed.domain.type == "kvm"


@pytest.mark.parametrize("name", NAMES)
def test_the_guest_sees_libvirts_devices(name: str) -> None:
    libvirt = guest_devices(shlex.split((DATA / f"{name}.args").read_text()))
    ours = guest_devices(model.command_line(model.parse_file(DATA / f"{name}.xml").domain))
    assert libvirt - ours == KNOWN_DIFFERENCES.get(name, set())
    assert ours - libvirt == set()


@pytest.mark.parametrize("name", ["debian12", "headless", "win11", "fedora", "debian12-uefi"])
def test_print_xml_and_dumpxml_give_the_same_guest(name: str) -> None:
    # libvirt gives the same topology to both; so must qemud (addresses assigned vs. stored)
    first = model.command_line(model.parse_file(DATA / f"{name}.xml").domain)
    stored = model.command_line(model.parse_file(DATA / f"{name}.dumpxml.xml").domain)
    difference = guest_devices(first) ^ guest_devices(stored)
    assert difference == KNOWN_DIFFERENCES.get(name, set())


def test_kvm_command_line_of_the_windows_guest() -> None:
    d = model.parse_file(DATA / "win11.dumpxml.xml").domain
    options = dict((o[0], o[1]) for o in model.options(d) if len(o) == 2 and o[0] in
                   ("-cpu", "-accel", "-rtc", "-global"))
    assert options["-accel"] == "kvm"
    # libvirt: -cpu host,migratable=on,hv-time=on,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff
    assert options["-cpu"] == "host,hv-time=on,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff"
    assert options["-rtc"] == "base=localtime,driftfix=slew"


def test_guest_agent_socket_is_in_the_runtime_folder() -> None:
    d = model.parse_file(DATA / "headless.dumpxml.xml").domain
    runtime = model.Runtime(Path("/run/q/u/qmp.sock"), Path("/run/q/u/pid"), Path("/l/c.log"))
    argv = model.command_line(d, runtime)
    assert ("socket,id=charchannel0,path=/run/q/u/org.qemu.guest_agent.0,server=on,wait=off"
            in argv)
    assert ("virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,"
            "name=org.qemu.guest_agent.0" in argv)
