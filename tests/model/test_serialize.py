"""`model.to_xml`: libvirt domain XML that parses back into an equal domain."""

from __future__ import annotations

import textwrap
import uuid

import pytest
from lxml import etree

import model
from model.domain import Domain
from tests.support.snippets import SAMPLES, UUID, domain_xml


def domain(extra: str = "", *, kind: str = "kvm", **parts: str | None) -> Domain:
    """Parse a minimal valid domain with `extra` top-level elements and some parts replaced."""
    return model.parse(domain_xml(extra, kind=kind, **parts)).domain


def roundtrip(d: Domain) -> Domain:
    """Serialise and parse again; the output must be valid, with its uuid written out."""
    parsed = model.parse(model.to_xml(d))
    assert not any("<uuid>" in w.message for w in parsed.warnings)
    return parsed.domain


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.xml")))
def test_samples_round_trip(sample: str) -> None:
    d = model.parse_file(SAMPLES / sample).domain
    again = roundtrip(d)
    assert again == d
    assert model.command_line(again) == model.command_line(d)


ROUND_TRIPS = [
    pytest.param({}, "", id="minimal"),
    pytest.param({"kind": "qemu"}, "", id="tcg"),
    pytest.param({"uuid": None}, "", id="derived-uuid"),
    pytest.param({}, "<title>Web &amp; mail</title><description>Line 1\nLine 2 &lt;b&gt;"
                     "</description>", id="title-description"),
    pytest.param({"memory": "<memory unit='KiB'>219100</memory>"},
                 "<currentMemory unit='b'>1000000</currentMemory>"
                 "<devices><memballoon model='virtio'/></devices>", id="odd-sizes"),
    pytest.param({}, "<vcpu current='2'>4</vcpu><cpu mode='host-model'><topology sockets='1' "
                     "dies='1' cores='2' threads='2'/></cpu>", id="vcpu-topology"),
    pytest.param({}, "<cpu mode='custom'><model>Skylake-Client</model>"
                     "<feature policy='disable' name='vmx'/><feature name='pcid'/></cpu>",
                 id="cpu-custom"),
    pytest.param({"os": "<os><type arch='i686' machine='q35'>hvm</type><boot dev='cdrom'/>"
                        "<boot dev='hd'/><boot dev='network'/>"
                        "<bootmenu enable='yes' timeout='500'/></os>"}, "", id="os-boot"),
    pytest.param({"os": "<os><type>hvm</type><bootmenu enable='no'/></os>"}, "",
                 id="bootmenu-off"),
    pytest.param({"os": "<os><type>hvm</type><kernel>/k</kernel><initrd>/i</initrd>"
                        "<cmdline>console=ttyS0 a=b,c</cmdline></os>"}, "", id="kernel"),
    pytest.param({}, "<features><acpi/><apic/><pae/><vmport state='off'/></features>",
                 id="features"),
    pytest.param({}, "<clock offset='localtime'><timer name='rtc' tickpolicy='catchup'/>"
                     "<timer name='hpet' present='no'/></clock>", id="clock"),
    pytest.param({}, "<on_poweroff>restart</on_poweroff><on_reboot>destroy</on_reboot>"
                     "<on_crash>preserve</on_crash>", id="lifecycle"),
    pytest.param({}, "<pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='yes'/></pm>",
                 id="pm"),
    pytest.param({}, "<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running' "
                     "restart='never' shutdown-timeout='5'/></metadata>", id="desired"),
    pytest.param({}, """
        <devices>
          <emulator>/usr/bin/qemu-system-x86_64</emulator>
          <disk type='file' device='disk'>
            <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
            <source file='/a,b c.img'/>
            <target dev='vda' bus='virtio'/>
            <boot order='1'/>
            <serial>SER 1</serial>
          </disk>
          <disk type='block' device='disk'>
            <source dev='/dev/sdb'/>
            <target dev='sda' bus='scsi'/>
            <readonly/>
          </disk>
          <disk type='file' device='cdrom'>
            <target dev='hdc' bus='ide'/>
            <readonly/>
          </disk>
          <disk type='file' device='floppy'>
            <source file='/f.img'/>
            <target dev='fda' bus='fdc'/>
          </disk>
          <controller type='scsi' index='0' model='lsilogic'/>
        </devices>""", id="disks"),
    pytest.param({}, """
        <devices>
          <interface type='user'><model type='virtio'/></interface>
          <interface type='bridge'><mac address='52:54:00:AA:00:01'/><source bridge='br0'/>
            <boot order='2'/></interface>
          <interface type='network'><source network='default'/><model type='e1000'/></interface>
        </devices>""", id="interfaces"),
    pytest.param({}, "<devices><graphics type='vnc' port='5910' autoport='no' listen='0.0.0.0'/>"
                     "</devices>", id="vnc-fixed"),
    pytest.param({}, "<devices><graphics type='vnc'/></devices>", id="vnc-auto"),
    pytest.param({}, """
        <devices>
          <serial type='pty'><target port='0'/><log file='/l' append='on'/></serial>
          <serial type='file'><source path='/s.log'/><target port='1'/></serial>
          <serial type='unix'><source mode='connect' path='/s.sock'/><target port='2'/></serial>
          <console type='null'><target port='3'/></console>
        </devices>""", id="serials"),
    pytest.param({}, """
        <devices>
          <video><model type='qxl'/></video>
          <input type='tablet' bus='usb'/>
          <input type='keyboard' bus='virtio'/>
          <controller type='usb' model='qemu-xhci'/>
          <memballoon model='none'/>
          <rng model='virtio'><backend model='random'>/dev/random</backend>
            <rate bytes='100' period='10'/></rng>
          <panic model='isa'/>
        </devices>""", id="misc-devices"),
    pytest.param({}, "<devices><tpm model='tpm-crb'><backend type='emulator' version='1.2'/>"
                     "</tpm></devices>", id="tpm"),
    pytest.param({}, """
        <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
        <devices>
          <filesystem type='mount' accessmode='passthrough'>
            <driver type='virtiofs'/><source dir='/srv/a'/><target dir='a'/></filesystem>
          <filesystem type='mount' accessmode='passthrough'>
            <driver type='virtiofs' queue='512'/>
            <binary path='/usr/libexec/virtiofsd' xattr='off'>
              <cache mode='none'/><sandbox mode='namespace'/><lock posix='on' flock='off'/>
              <thread_pool size='4'/>
            </binary>
            <source dir='/srv/b,c'/><target dir='b'/>
            <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
          </filesystem>
        </devices>""", id="virtiofs"),
    pytest.param({}, "<memoryBacking><source type='memfd'/></memoryBacking>", id="memfd-private"),
]


@pytest.mark.parametrize(("parts", "extra"), ROUND_TRIPS)
def test_round_trip(parts: dict[str, str | None], extra: str) -> None:
    d = domain(extra, **parts)
    again = roundtrip(d)
    assert again == d
    assert model.command_line(again) == model.command_line(d)


def test_round_trip_is_a_fixed_point() -> None:
    d = model.parse_file(SAMPLES / "webserver.xml").domain
    once = model.to_xml(d)
    assert model.to_xml(model.parse(once).domain) == once


def test_output_is_utf8_bytes_without_declaration() -> None:
    xml = model.to_xml(domain(name="<name>gäst</name>"))
    assert isinstance(xml, bytes)
    assert xml.startswith(b"<domain type=\"kvm\">\n")
    assert "<name>gäst</name>".encode() in xml
    assert not xml.startswith(b"<?xml")
    assert xml.endswith(b"</domain>\n")


def test_output_shape_of_the_minimal_domain() -> None:
    desired = ('<qemud:desired xmlns:qemud="urn:qemud:1" state="stopped" restart="on-failure" '
               'shutdown-timeout="60"/>')
    assert model.to_xml(domain()).decode() == textwrap.dedent(f"""\
        <domain type="kvm">
          <name>t</name>
          <uuid>{UUID}</uuid>
          <metadata>
            {desired}
          </metadata>
          <memory unit="MiB">64</memory>
          <vcpu>1</vcpu>
          <os>
            <type arch="x86_64" machine="pc">hvm</type>
          </os>
          <features/>
          <clock offset="utc"/>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <pm/>
          <devices/>
        </domain>
        """)


@pytest.mark.parametrize(("memory", "text", "unit"), [
    ("<memory unit='KiB'>219100</memory>", "219100", "KiB"),
    ("<memory unit='G'>4</memory>", "4", "GiB"),
    ("<memory unit='MB'>1</memory>", "1000000", "b"),
    ("<memory unit='KiB'>1048576</memory>", "1", "GiB"),
    ("<memory unit='T'>2</memory>", "2", "TiB"),
])
def test_memory_is_written_in_the_largest_exact_unit(memory: str, text: str, unit: str) -> None:
    root = etree.fromstring(model.to_xml(domain(memory=memory)))
    node = root.find("memory")
    assert node is not None
    assert (node.text, node.get("unit")) == (text, unit)


def test_derived_uuid_is_written_out() -> None:
    root = etree.fromstring(model.to_xml(domain(uuid=None)))
    assert root.findtext("uuid") == str(model.uuid_for_name("t"))
    assert uuid.UUID(root.findtext("uuid") or "") == model.uuid_for_name("t")


def test_desired_state_is_in_qemuds_namespace() -> None:
    d = domain("<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>")
    root = etree.fromstring(model.to_xml(d))
    desired = root.find("metadata/{urn:qemud:1}desired")
    assert desired is not None
    assert dict(desired.attrib) == {"state": "running", "restart": "on-failure",
                                    "shutdown-timeout": "60"}
    assert model.NAMESPACE == "urn:qemud:1"


def test_graphics_autoport_is_written_the_libvirt_way() -> None:
    auto = etree.fromstring(model.to_xml(domain("<devices><graphics type='vnc'/></devices>")))
    fixed = etree.fromstring(model.to_xml(domain(
        "<devices><graphics type='vnc' port='5905' autoport='no'/></devices>")))
    g_auto, g_fixed = auto.find("devices/graphics"), fixed.find("devices/graphics")
    assert g_auto is not None and g_fixed is not None
    assert dict(g_auto.attrib) == {"type": "vnc", "autoport": "yes", "listen": "127.0.0.1"}
    assert dict(g_fixed.attrib) == {"type": "vnc", "port": "5905", "autoport": "no",
                                    "listen": "127.0.0.1"}


def test_console_only_is_written_as_a_serial_port() -> None:
    d = domain("<devices><console type='pty'/></devices>")
    root = etree.fromstring(model.to_xml(d))
    devs = root.find("devices")
    assert devs is not None
    assert [e.tag for e in devs] == ["serial"]
    assert roundtrip(d) == d


def test_special_characters_are_escaped() -> None:
    d = domain("<description>a &lt; b &amp; c \"d\" 'e'</description>",
               os="<os><type>hvm</type><kernel>/k</kernel><cmdline>x=\"1 2\" &amp;</cmdline></os>")
    assert d.description == "a < b & c \"d\" 'e'"
    assert d.os.cmdline == "x=\"1 2\" &"
    assert roundtrip(d) == d
