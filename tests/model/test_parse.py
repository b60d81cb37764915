"""Parsing: every element the model covers, read from libvirt domain XML into the frozen model."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import model
from model.domain import (
    Clock,
    Controller,
    Cpu,
    CpuFeature,
    Desired,
    Disk,
    Domain,
    Features,
    Graphics,
    Input,
    Interface,
    Os,
    PciAddress,
    PowerManagement,
    Rng,
    Serial,
    Timer,
    Topology,
    Vcpu,
    Video,
)
from tests.support.snippets import PARTS, SAMPLES, UUID, domain_xml

domain = domain_xml


def devices(snippet: str) -> bytes:
    """`snippet` inside <devices> (line 6) of the minimal domain: its first line is line 7."""
    return domain("<devices>\n" + textwrap.dedent(snippet).strip("\n") + "\n</devices>")


def parse(data: bytes) -> Domain:
    return model.parse(data).domain


# --- the whole domain ---------------------------------------------------------------------------


def test_minimal_domain_has_the_documented_defaults() -> None:
    parsed = model.parse(domain())
    d = parsed.domain
    assert parsed.warnings == ()
    assert parsed.file is None
    assert d.type == "kvm"
    assert d.name == "t"
    assert d.uuid == uuid.UUID(UUID)
    assert (d.title, d.description) == (None, None)
    assert d.memory == 64 * 1024**2
    assert d.current_memory is None
    assert d.vcpu == Vcpu(count=1, current=None)
    assert d.cpu is None
    assert d.os == Os(type="hvm", arch="x86_64", machine="pc")
    assert d.features == Features(acpi=False, apic=False, pae=False, vmport=None)
    assert d.clock == Clock(offset="utc", timers=())
    assert (d.on_poweroff, d.on_reboot, d.on_crash) == ("destroy", "restart", "destroy")
    assert d.pm == PowerManagement()
    assert d.devices.disks == () and d.devices.emulator is None
    assert d.desired == Desired(state="stopped", restart="on-failure", shutdown_timeout=60)


@pytest.mark.parametrize("kind", ["kvm", "qemu"])
def test_domain_type(kind: str) -> None:
    assert parse(domain(kind=kind)).type == kind


@pytest.mark.parametrize(("xml", "name"), [
    ("<name>web</name>", "web"),
    ("<name>web-1.example_2</name>", "web-1.example_2"),
    ("<name>my vm</name>", "my vm"),
    ("<name>  padded  </name>", "padded"),
    ("<name>gäst-ü</name>", "gäst-ü"),
    ("<name>a:b@c+d</name>", "a:b@c+d"),
    (f"<name>{'n' * 200}</name>", "n" * 200),
])
def test_name(xml: str, name: str) -> None:
    assert parse(domain(name=xml)).name == name


@pytest.mark.parametrize(("xml", "value"), [
    (f"<uuid>{UUID}</uuid>", UUID),
    ("<uuid>4DEA22B3-1D52-D8F3-2516-782E98AB3FA0</uuid>", UUID),
    ("<uuid>4dea22b31d52d8f32516782e98ab3fa0</uuid>", UUID),
    ("<uuid>\n  0d6c1f0e-8a4b-4c1d-9a57-7f2c3b9e4a10\n</uuid>", "0d6c1f0e-8a4b-4c1d-9a57-7f2c3b9e4a10"),
])
def test_uuid_given(xml: str, value: str) -> None:
    parsed = model.parse(domain(uuid=xml))
    assert parsed.domain.uuid == uuid.UUID(value)
    assert parsed.warnings == ()


def test_absent_uuid_is_derived_from_the_name_with_a_warning() -> None:
    parsed = model.parse(domain(uuid=None))
    expected = model.uuid_for_name("t")
    assert parsed.domain.uuid == expected
    assert len(parsed.warnings) == 1
    warning = parsed.warnings[0]
    assert warning.line == 1
    assert warning.message.startswith(f"no <uuid>; using {expected}, derived from the name")


@pytest.mark.parametrize(("a", "b", "same"), [
    ("web", "web", True),
    ("web", "web2", False),
    ("web", "Web", False),
])
def test_derived_uuid_is_stable_and_depends_on_the_name(a: str, b: str, same: bool) -> None:
    ua = parse(domain(name=f"<name>{a}</name>", uuid=None)).uuid
    ub = parse(domain(name=f"<name>{b}</name>", uuid=None)).uuid
    assert (ua == ub) is same
    assert ua == model.uuid_for_name(a)
    assert ua.version == 5


def test_derived_uuid_is_a_fixed_value() -> None:
    # Pinned: a changed derivation would silently give every uuid-less VM a new identity.
    assert str(model.uuid_for_name("t")) == "99df19d4-d0fb-5210-9b91-7cd6037963d2"
    assert model.uuid_for_name("web") == uuid.uuid5(
        uuid.UUID("6f1c1a4e-2d0b-4e6b-9a53-1b7c0d6e2f10"), "web")


def test_absent_uuid_never_rewrites_the_users_file(tmp_path: Path) -> None:
    path = tmp_path / "t.xml"
    data = domain(uuid=None)
    path.write_bytes(data)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    parsed = model.parse_file(path)
    assert parsed.domain.uuid == model.uuid_for_name("t")
    assert parsed.file == str(path)
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.xml"]


@pytest.mark.parametrize(("extra", "title", "description"), [
    ("<title>Web server</title>", "Web server", None),
    ("<description>Serves\nthe web &amp; more</description>", None, "Serves\nthe web & more"),
    ("<title>T</title>\n<description>D</description>", "T", "D"),
    ("<title/>", None, None),
])
def test_title_and_description(extra: str, title: str | None, description: str | None) -> None:
    d = parse(domain(extra))
    assert (d.title, d.description) == (title, description)


# --- vcpu and cpu -------------------------------------------------------------------------------


@pytest.mark.parametrize(("xml", "vcpu"), [
    ("<vcpu>4</vcpu>", Vcpu(count=4)),
    ("<vcpu placement='static'>2</vcpu>", Vcpu(count=2)),
    ("<vcpu current='1'>4</vcpu>", Vcpu(count=4, current=1)),
    ("<vcpu current='4'>4</vcpu>", Vcpu(count=4, current=4)),
    ("<vcpu placement='static' current='2'>8</vcpu>", Vcpu(count=8, current=2)),
])
def test_vcpu(xml: str, vcpu: Vcpu) -> None:
    assert parse(domain(xml)).vcpu == vcpu


@pytest.mark.parametrize(("xml", "cpu"), [
    ("<cpu mode='host-passthrough'/>", Cpu(mode="host-passthrough")),
    ("<cpu mode='host-passthrough' check='none' migratable='on'/>", Cpu(mode="host-passthrough")),
    ("<cpu mode='host-model'/>", Cpu(mode="host-model")),
    ("<cpu mode='maximum'/>", Cpu(mode="maximum")),
    ("<cpu mode='custom' match='exact'><model fallback='forbid'>Skylake-Client</model></cpu>",
     Cpu(mode="custom", model="Skylake-Client")),
    ("<cpu><model>qemu64</model></cpu>", Cpu(mode="custom", model="qemu64")),
    ("<cpu mode='custom'><model>Haswell-noTSX</model><vendor>Intel</vendor>"
     "<feature policy='disable' name='vmx'/><feature name='pcid'/></cpu>",
     Cpu(mode="custom", model="Haswell-noTSX",
         features=(CpuFeature(policy="disable", name="vmx"), CpuFeature(policy="require",
                                                                         name="pcid")))),
    ("<cpu mode='host-model'><topology sockets='1' dies='1' cores='2' threads='2'/></cpu>",
     Cpu(mode="host-model", topology=Topology(sockets=1, dies=1, cores=2, threads=2))),
])
def test_cpu(xml: str, cpu: Cpu) -> None:
    extra = xml if "topology" not in xml else "<vcpu>4</vcpu>\n" + xml
    assert parse(domain(extra)).cpu == cpu


@pytest.mark.parametrize(("kind", "mode", "warned"), [
    ("kvm", "host-passthrough", False),
    ("kvm", "host-model", False),
    ("qemu", "host-passthrough", True),
    ("qemu", "host-model", True),
    ("qemu", "maximum", False),
])
def test_host_cpu_under_tcg_warns_at_the_cpu_line(kind: str, mode: str, warned: bool) -> None:
    parsed = model.parse(domain(f"<cpu mode='{mode}'/>", kind=kind))
    expected = [(6, f"<cpu mode='{mode}'> needs KVM; under <domain type='qemu'> (TCG) the 'max' "
                    "CPU model is used instead")] if warned else []
    assert [(w.line, w.message) for w in parsed.warnings] == expected


# --- os -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("xml", "os_"), [
    ("<os><type>hvm</type></os>", Os()),
    ("<os><type arch='x86_64'>hvm</type></os>", Os(arch="x86_64")),
    ("<os><type arch='i686'>hvm</type></os>", Os(arch="i686")),
    ("<os><type arch='x86_64' machine='q35'>hvm</type></os>", Os(arch="x86_64", machine="q35")),
    ("<os><type machine='pc-q35-7.2'>hvm</type></os>", Os(machine="pc-q35-7.2")),
    ("<os><type machine='pc-i440fx-8.1'>hvm</type></os>", Os(machine="pc-i440fx-8.1")),
    ("<os><type>hvm</type><boot dev='hd'/></os>", Os(boot=("hd",))),
    ("<os><type>hvm</type><boot dev='cdrom'/><boot dev='hd'/><boot dev='network'/></os>",
     Os(boot=("cdrom", "hd", "network"))),
    ("<os><type>hvm</type><boot dev='fd'/><boot dev='network'/></os>", Os(boot=("fd", "network"))),
    ("<os><type>hvm</type><bootmenu enable='yes' timeout='3000'/></os>",
     Os(bootmenu=True, bootmenu_timeout=3000)),
    ("<os><type>hvm</type><bootmenu enable='no'/></os>", Os(bootmenu=False)),
    ("<os><type>hvm</type><bootmenu enable='yes' timeout='0'/></os>",
     Os(bootmenu=True, bootmenu_timeout=0)),
    ("<os><type>hvm</type><bootmenu enable='yes' timeout='65535'/></os>",
     Os(bootmenu=True, bootmenu_timeout=65535)),
    ("<os><type>hvm</type><kernel>/boot/vmlinuz</kernel></os>", Os(kernel="/boot/vmlinuz")),
    ("<os><type>hvm</type><kernel>/k</kernel><initrd>/i.gz</initrd>"
     "<cmdline>console=ttyS0 root=/dev/vda1</cmdline></os>",
     Os(kernel="/k", initrd="/i.gz", cmdline="console=ttyS0 root=/dev/vda1")),
    ("<os><type>hvm</type><kernel>/k</kernel><cmdline/></os>", Os(kernel="/k")),
])
def test_os(xml: str, os_: Os) -> None:
    assert parse(domain(os=xml)).os == os_


# --- features, clock, lifecycle, pm -------------------------------------------------------------


@pytest.mark.parametrize(("xml", "features"), [
    ("<features/>", Features()),
    ("<features><acpi/></features>", Features(acpi=True)),
    ("<features><apic/></features>", Features(apic=True)),
    ("<features><pae/></features>", Features(pae=True)),
    ("<features><acpi/><apic eoi='on'/><pae/></features>", Features(acpi=True, apic=True,
                                                                   pae=True, apic_eoi=True)),
    ("<features><vmport state='off'/></features>", Features(vmport=False)),
    ("<features><vmport state='on'/></features>", Features(vmport=True)),
])
def test_features(xml: str, features: Features) -> None:
    assert parse(domain(xml)).features == features


@pytest.mark.parametrize(("xml", "clock"), [
    ("<clock offset='utc'/>", Clock(offset="utc")),
    ("<clock offset='localtime'/>", Clock(offset="localtime")),
    ("<clock/>", Clock(offset="utc")),
    ("<clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' "
     "tickpolicy='delay'/><timer name='hpet' present='no'/></clock>",
     Clock(offset="utc", timers=(Timer(name="rtc", tickpolicy="catchup"),
                                 Timer(name="pit", tickpolicy="delay"),
                                 Timer(name="hpet", present=False)))),
])
def test_clock(xml: str, clock: Clock) -> None:
    assert parse(domain(xml)).clock == clock


@pytest.mark.parametrize(("xml", "expected"), [
    ("", ("destroy", "restart", "destroy")),
    ("<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>",
     ("destroy", "restart", "destroy")),
    ("<on_poweroff>restart</on_poweroff><on_reboot>destroy</on_reboot><on_crash>restart</on_crash>",
     ("restart", "destroy", "restart")),
    ("<on_crash>preserve</on_crash>", ("destroy", "restart", "preserve")),
    ("<on_crash>rename-restart</on_crash>", ("destroy", "restart", "rename-restart")),
])
def test_lifecycle_actions(xml: str, expected: tuple[str, str, str]) -> None:
    d = parse(domain(xml))
    assert (d.on_poweroff, d.on_reboot, d.on_crash) == expected


@pytest.mark.parametrize(("xml", "pm"), [
    ("<pm/>", PowerManagement()),
    ("<pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='yes'/></pm>",
     PowerManagement(suspend_to_mem=False, suspend_to_disk=True)),
])
def test_power_management(xml: str, pm: PowerManagement) -> None:
    assert parse(domain(xml)).pm == pm


# --- desired state ------------------------------------------------------------------------------


@pytest.mark.parametrize(("xml", "desired"), [
    ("", Desired(state="stopped", restart="on-failure", shutdown_timeout=60)),
    ("<metadata/>", Desired()),
    ("<metadata><qemud:desired xmlns:qemud='urn:qemud:1'/></metadata>", Desired()),
    ("<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>",
     Desired(state="running", restart="on-failure", shutdown_timeout=60)),
    ("<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='stopped' restart='always' "
     "shutdown-timeout='120'/></metadata>",
     Desired(state="stopped", restart="always", shutdown_timeout=120)),
    ("<metadata><qemud:desired xmlns:qemud='urn:qemud:1' restart='never' shutdown-timeout='1'/>"
     "</metadata>", Desired(restart="never", shutdown_timeout=1)),
    # any prefix works: the namespace is what counts
    ("<metadata><q:desired xmlns:q='urn:qemud:1' state='running'/></metadata>",
     Desired(state="running")),
    # another project's element of the same local name is not ours
    ("<metadata><o:desired xmlns:o='urn:other:1' state='bogus'/></metadata>", Desired()),
])
def test_desired_state_and_its_defaults(xml: str, desired: Desired) -> None:
    assert parse(domain(xml)).desired == desired


# --- devices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "emulator"), [
    ("<emulator>/usr/bin/qemu-system-x86_64</emulator>", "/usr/bin/qemu-system-x86_64"),
    ("<emulator>/opt/qemu/bin/qemu-system-x86_64</emulator>", "/opt/qemu/bin/qemu-system-x86_64"),
    ("<emulator>qemu-system-x86_64</emulator>", "qemu-system-x86_64"),
    ("", None),
])
def test_emulator(snippet: str, emulator: str | None) -> None:
    assert parse(devices(snippet)).devices.emulator == emulator


@pytest.mark.parametrize(("snippet", "disk"), [
    ("""
     <disk type='file' device='disk'>
       <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
       <source file='/var/lib/images/a.qcow2'/>
       <target dev='vda' bus='virtio'/>
     </disk>""",
     Disk(type="file", device="disk", driver_type="qcow2", cache="none", discard="unmap",
          source="/var/lib/images/a.qcow2", target_dev="vda", target_bus="virtio")),
    ("""
     <disk type='block' device='disk'>
       <driver name='qemu' type='raw' cache='writeback'/>
       <source dev='/dev/vg0/lv1'/>
       <target dev='sdb' bus='scsi'/>
     </disk>""",
     Disk(type="block", device="disk", driver_type="raw", cache="writeback",
          source="/dev/vg0/lv1", target_dev="sdb", target_bus="scsi")),
    ("""
     <disk type='file' device='cdrom'>
       <source file='/iso/debian.iso'/>
       <target dev='hdc' bus='ide'/>
       <readonly/>
     </disk>""",
     Disk(device="cdrom", source="/iso/debian.iso", target_dev="hdc", target_bus="ide",
          readonly=True)),
    ("""
     <disk type='file' device='cdrom'>
       <target dev='sda' bus='sata'/>
       <readonly/>
     </disk>""",
     Disk(device="cdrom", source=None, target_dev="sda", target_bus="sata", readonly=True)),
    ("""
     <disk type='file' device='floppy'>
       <source file='/img/boot.img'/>
       <target dev='fda' bus='fdc'/>
     </disk>""",
     Disk(device="floppy", source="/img/boot.img", target_dev="fda", target_bus="fdc")),
    ("""
     <disk type='file' device='floppy'>
       <target dev='fdb'/>
     </disk>""",
     Disk(device="floppy", target_dev="fdb", target_bus="fdc")),
    ("""
     <disk type='file' device='disk'>
       <source file='/a,b c.img'/>
       <target dev='vdb'/>
       <boot order='2'/>
       <serial>WD-1234 5</serial>
     </disk>""",
     Disk(source="/a,b c.img", target_dev="vdb", target_bus="virtio", boot_order=2,
          serial="WD-1234 5")),
    ("""
     <disk type='file' device='disk'>
       <source file='/a.img'/>
       <target dev='hda'/>
     </disk>""",
     Disk(source="/a.img", target_dev="hda", target_bus="ide")),
    ("""
     <disk type='file' device='disk'>
       <source file='/a.img'/>
       <target dev='sdc'/>
     </disk>""",
     Disk(source="/a.img", target_dev="sdc", target_bus="sata")),
    ("""
     <disk type='file' device='disk'>
       <driver name='qemu' type='raw' cache='default'/>
       <source file='/a.img'/>
       <target dev='vda' bus='virtio'/>
     </disk>""",
     Disk(driver_type="raw", cache="default", source="/a.img", target_dev="vda",
          target_bus="virtio")),
])
def test_disk(snippet: str, disk: Disk) -> None:
    assert parse(devices(snippet)).devices.disks == (disk,)


@pytest.mark.parametrize("cache", ["default", "none", "writethrough", "writeback", "directsync",
                                   "unsafe"])
def test_disk_cache_modes(cache: str) -> None:
    d = parse(devices(f"<disk><driver name='qemu' cache='{cache}'/><source file='/a'/>"
                      "<target dev='vda'/></disk>"))
    assert d.devices.disks[0].cache == cache


@pytest.mark.parametrize(("snippet", "nic"), [
    ("<interface type='user'/>", Interface(type="user", model="rtl8139")),
    ("""
     <interface type='user'>
       <mac address='52:54:00:12:34:56'/>
       <model type='virtio'/>
     </interface>""", Interface(type="user", mac="52:54:00:12:34:56", model="virtio")),
    ("<interface type='user'><mac address='52:54:00:AB:CD:EF'/></interface>",
     Interface(type="user", mac="52:54:00:ab:cd:ef")),
    ("""
     <interface type='bridge'>
       <source bridge='br0'/>
       <model type='e1000'/>
       <boot order='1'/>
     </interface>""", Interface(type="bridge", source="br0", model="e1000", boot_order=1)),
    ("""
     <interface type='network'>
       <source network='default' portid='0b7c7e4a-9d0e-4f6c-8a4d-2e3f1a5b6c7d' bridge='virbr0'/>
       <model type='e1000e'/>
       <target dev='vnet0'/>
     </interface>""", Interface(type="network", source="default", bridge="virbr0",
                                model="e1000e")),  # a live XML states the bridge
])
def test_interface(snippet: str, nic: Interface) -> None:
    assert parse(devices(snippet)).devices.interfaces == (nic,)


@pytest.mark.parametrize("nic_model", ["virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet",
                                       "vmxnet3"])
def test_interface_models(nic_model: str) -> None:
    d = parse(devices(f"<interface type='user'><model type='{nic_model}'/></interface>"))
    assert d.devices.interfaces[0].model == nic_model


def test_network_interface_unresolved_warns_that_the_bridge_is_a_guess() -> None:
    # without host facts (no network lookup injected) the bridge is guessed, and said so
    parsed = model.parse(devices("<interface type='network'><source network='lan'/></interface>"))
    assert [w.line for w in parsed.warnings] == [7]
    assert parsed.warnings[0].message.startswith("<source network='lan'>: libvirt's networks "
                                                 "were not consulted")


@pytest.mark.parametrize(("snippet", "graphics"), [
    ("", ()),
    ("<graphics type='vnc'/>", (Graphics(port=None, listen="127.0.0.1"),)),
    ("<graphics type='vnc' port='-1' autoport='yes'/>", (Graphics(port=None),)),
    ("<graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'/>", (Graphics(port=None),)),
    ("<graphics type='vnc' port='5910' autoport='no'/>", (Graphics(port=5910),)),
    ("<graphics type='vnc' port='5901'/>", (Graphics(port=5901),)),
    ("<graphics type='vnc' port='5905' autoport='no' listen='0.0.0.0'/>",
     (Graphics(port=5905, listen="0.0.0.0"),)),
    ("""
     <graphics type='vnc' port='5910' autoport='no'>
       <listen type='address' address='::1'/>
     </graphics>""", (Graphics(port=5910, listen="::1"),)),
    ("<graphics type='vnc' listen='0.0.0.0'><listen type='address'/></graphics>",
     (Graphics(listen="0.0.0.0"),)),
])
def test_graphics(snippet: str, graphics: tuple[Graphics, ...]) -> None:
    assert parse(devices(snippet)).devices.graphics == graphics


@pytest.mark.parametrize(("snippet", "serials"), [
    ("<serial type='pty'/>", (Serial(type="pty", port=0),)),
    ("<serial type='pty'><target port='0'/></serial>", (Serial(type="pty", port=0),)),
    ("<serial type='file'><source path='/var/log/s.log'/><target port='1'/></serial>",
     (Serial(type="file", port=1, path="/var/log/s.log"),)),
    ("<serial type='unix'><source mode='bind' path='/run/s.sock'/></serial>",
     (Serial(type="unix", path="/run/s.sock", mode="bind"),)),
    ("<serial type='unix'><source mode='connect' path='/run/s.sock'/></serial>",
     (Serial(type="unix", path="/run/s.sock", mode="connect"),)),
    ("<serial type='null'/>", (Serial(type="null"),)),
    ("<serial type='pty'><log file='/var/log/c.log' append='on'/></serial>",
     (Serial(type="pty", log="/var/log/c.log", log_append=True),)),
    ("<serial type='pty'><log file='/var/log/c.log' append='off'/></serial>",
     (Serial(type="pty", log="/var/log/c.log", log_append=False),)),
    # a console alone stands for a serial port
    ("<console type='pty'/>", (Serial(type="pty", port=0),)),
    ("<console type='file'><source path='/tmp/c'/><target type='serial' port='0'/></console>",
     (Serial(type="file", path="/tmp/c"),)),
    ("<console type='unix'><source path='/tmp/c.sock'/></console>",
     (Serial(type="unix", path="/tmp/c.sock"),)),
    ("<console type='null'/>", (Serial(type="null"),)),
    # libvirt mirrors serial port 0 as a console: one device, not two
    ("""
     <serial type='pty'><target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
     <console type='pty' tty='/dev/pts/3'><target type='serial' port='0'/></console>""",
     (Serial(type="pty", port=0),)),
    ("""
     <serial type='pty'><target port='0'/></serial>
     <serial type='null'><target port='1'/></serial>
     <console type='file'><source path='/tmp/c2'/><target port='2'/></console>""",
     (Serial(port=0), Serial(type="null", port=1), Serial(type="file", port=2, path="/tmp/c2"))),
])
def test_serial_and_console(snippet: str, serials: tuple[Serial, ...]) -> None:
    assert parse(devices(snippet)).devices.serials == serials


@pytest.mark.parametrize(("snippet", "videos"), [
    ("<video><model type='vga'/></video>", (Video(model="vga"),)),
    ("<video><model type='virtio' heads='1' primary='yes'/></video>",
     (Video(model="virtio", heads=1),)),
    ("<video><model type='qxl' ram='65536' vram='65536' vgamem='16384'/></video>",
     (Video(model="qxl", ram=65536, vram=65536, vgamem=16384),)),
    ("<video><model type='virtio'/><address type='pci' bus='0' slot='0x03'/></video>",
     (Video(model="virtio", address=PciAddress(slot=3)),)),
    ("<video><model type='cirrus'/></video>", (Video(model="cirrus"),)),
    ("<video><model type='bochs'/></video>", (Video(model="bochs"),)),
    ("<video><model type='ramfb'/></video>", (Video(model="ramfb"),)),
    ("<video><model type='none'/></video>", (Video(model="none"),)),
    ("<video/>", (Video(model="vga"),)),
])
def test_video(snippet: str, videos: tuple[Video, ...]) -> None:
    assert parse(devices(snippet)).devices.videos == videos


@pytest.mark.parametrize(("snippet", "inputs"), [
    ("<input type='tablet' bus='usb'/>", (Input(type="tablet", bus="usb"),)),
    ("<input type='mouse' bus='ps2'/>", (Input(type="mouse", bus="ps2"),)),
    ("<input type='keyboard'/>", (Input(type="keyboard", bus="ps2"),)),
    ("<input type='keyboard' bus='virtio'/><input type='tablet' bus='virtio'/>",
     (Input(type="keyboard", bus="virtio"), Input(type="tablet", bus="virtio"))),
])
def test_input(snippet: str, inputs: tuple[Input, ...]) -> None:
    assert parse(devices(snippet)).devices.inputs == inputs


@pytest.mark.parametrize(("snippet", "field", "value"), [
    ("<memballoon model='virtio'/>", "memballoon", "virtio"),
    ("<memballoon model='none'/>", "memballoon", "none"),
    ("<memballoon model='virtio' autodeflate='on'><stats period='10'/></memballoon>",
     "memballoon", "virtio"),
    ("", "memballoon", None),
    ("<panic model='isa'/>", "panic", "isa"),
    ("<panic/>", "panic", "isa"),
    ("", "panic", None),
    ("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>", "rngs",
     (Rng(backend="/dev/urandom"),)),
    ("<rng model='virtio'><backend model='random'>/dev/random</backend>"
     "<rate bytes='1024' period='2000'/></rng>", "rngs",
     (Rng(backend="/dev/random", rate_bytes=1024, rate_period=2000),)),
])
def test_memballoon_panic_rng(snippet: str, field: str, value: Any) -> None:
    assert getattr(parse(devices(snippet)).devices, field) == value


@pytest.mark.parametrize(("snippet", "controllers"), [
    ("<controller type='usb' index='0' model='qemu-xhci' ports='15'/>",
     (Controller(type="usb", index=0, model="qemu-xhci", ports=15),)),
    ("<controller type='usb' model='none'/>", (Controller(type="usb", model="none"),)),
    ("<controller type='scsi' index='0' model='virtio-scsi'/>",
     (Controller(type="scsi", model="virtio-scsi"),)),
    ("""
     <controller type='pci' index='1' model='pcie-root-port'>
       <model name='pcie-root-port'/>
       <target chassis='1' port='0x10'/>
       <alias name='pci.1'/>
       <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0' multifunction='on'/>
     </controller>""", (Controller(type="pci", index=1, model="pcie-root-port", chassis=1, port=0x10,
                                   address=PciAddress(slot=2, multifunction=True)),)),
    ("<controller type='ide' index='0'><address type='pci' bus='0x00' slot='0x01' function='0x1'/>"
     "</controller>", (Controller(type="ide", address=PciAddress(slot=1, function=1)),)),
    # virt-install writes pcie-root-ports without index: libvirt numbers them per type
    ("<controller type='pci' model='pcie-root'/><controller type='pci' model='pcie-root-port'/>"
     "<controller type='pci' model='pcie-root-port'/><controller type='usb' model='qemu-xhci'/>",
     (Controller(type="pci", index=0, model="pcie-root"),
      Controller(type="pci", index=1, model="pcie-root-port"),
      Controller(type="pci", index=2, model="pcie-root-port"),
      Controller(type="usb", index=0, model="qemu-xhci"))),
    ("<controller type='sata' index='0'/><controller type='virtio-serial' index='0' vectors='4'/>"
     "<controller type='fdc' index='0'/>",
     (Controller(type="sata"), Controller(type="virtio-serial", vectors=4),
      Controller(type="fdc"))),
])
def test_controllers_are_accepted(snippet: str, controllers: tuple[Controller, ...]) -> None:
    q35 = "pcie-root" in snippet  # PCI Express controllers need machine 'q35'
    data = domain_xml("<devices>\n" + textwrap.dedent(snippet).strip("\n") + "\n</devices>",
                      os="<os><type machine='q35'>hvm</type></os>" if q35 else PARTS["os"])
    assert parse(data).devices.controllers == controllers


@pytest.mark.parametrize("model_name", ["piix3-uhci", "piix4-uhci", "ehci", "ich9-ehci1",
                                        "ich9-uhci1", "ich9-uhci2", "ich9-uhci3", "qemu-xhci",
                                        "nec-xhci", "none"])
def test_usb_controller_models(model_name: str) -> None:
    d = parse(devices(f"<controller type='usb' model='{model_name}'/>"))
    assert d.devices.controllers == (Controller(type="usb", model=model_name),)


# --- real `virsh dumpxml` content that does not change the guest --------------------------------

DUMPXML = b"""\
<domain type='kvm' id='7'>
  <name>dumped</name>
  <uuid>e5f2a9b4-3c1d-4e6f-8a7b-9c0d1e2f3a4b</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:flavor name="m1.small"/>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
    <feature policy='require' name='x2apic'/>
  </cpu>
  <clock offset='utc'/>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/dumped.qcow2' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'>
      <alias name='pci.0'/>
    </controller>
    <interface type='bridge'>
      <mac address='52:54:00:0a:0b:0c'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/4'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/4'>
      <source path='/dev/pts/4'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <input type='mouse' bus='ps2'>
      <alias name='input0'/>
    </input>
    <input type='keyboard' bus='ps2'>
      <alias name='input1'/>
    </input>
    <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <video>
      <model type='cirrus' vram='16384' heads='1' primary='yes'/>
      <alias name='video0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <alias name='balloon0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <alias name='rng0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </rng>
    <panic model='isa'>
      <address type='isa' iobase='0x505'/>
    </panic>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-e5f2a9b4-3c1d-4e6f-8a7b-9c0d1e2f3a4b</label>
    <imagelabel>libvirt-e5f2a9b4-3c1d-4e6f-8a7b-9c0d1e2f3a4b</imagelabel>
  </seclabel>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
    <imagelabel>+64055:+994</imagelabel>
  </seclabel>
</domain>
"""


def test_virsh_dumpxml_is_accepted_without_changing_the_guest() -> None:
    parsed = model.parse(DUMPXML)
    d = parsed.domain
    assert parsed.warnings == ()
    assert d.name == "dumped"
    assert d.uuid == uuid.UUID("e5f2a9b4-3c1d-4e6f-8a7b-9c0d1e2f3a4b")
    assert d.memory == d.current_memory == 1024**3
    assert d.cpu == Cpu(mode="custom", model="qemu64", features=(CpuFeature(name="x2apic"),))
    # the PCI addresses libvirt stored are kept: the guest sees the same topology
    assert d.devices.disks == (Disk(driver_type="qcow2", source="/var/lib/libvirt/images/"
                                    "dumped.qcow2", target_dev="vda", target_bus="virtio",
                                    address=PciAddress(slot=4)),)
    assert d.devices.interfaces == (Interface(type="bridge", mac="52:54:00:0a:0b:0c",
                                              source="br0", model="virtio",
                                              address=PciAddress(slot=3)),)
    assert d.devices.serials == (Serial(type="pty", port=0, path="/dev/pts/4"),)
    assert d.devices.graphics == (Graphics(port=None, listen="127.0.0.1"),)
    assert d.devices.videos == (Video(model="cirrus", vram=16384, heads=1,
                                      address=PciAddress(slot=2)),)
    assert d.devices.memballoon == "virtio"
    assert d.devices.memballoon_address == PciAddress(slot=5)
    assert d.devices.panic == "isa"
    assert d.desired == Desired()
    # the ignored parts leave no trace: the same domain without them is equal
    stripped = (DUMPXML.replace(b" id='7'", b"")
                .split(b"<seclabel")[0] + b"</domain>\n")
    assert model.parse(stripped).domain == d


@pytest.mark.parametrize(("extra", "what"), [
    ("<seclabel type='none' model='none'/>", "seclabel"),
    ("<seclabel type='dynamic' model='selinux' relabel='yes'><label>x</label></seclabel>",
     "seclabel"),
    ("<resource><partition>/machine</partition></resource>", "resource"),
    ("<metadata><app:x xmlns:app='urn:app'><app:y>z</app:y></app:x></metadata>", "metadata"),
    ("<devices><disk><source file='/a'/><target dev='vda'/><alias name='ua-disk'/>"
     "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></disk>"
     "</devices>", "alias and address"),
])
def test_settings_that_do_not_change_the_guest_are_accepted(extra: str, what: str) -> None:
    assert parse(domain(extra)).name == "t", what


def test_domain_id_is_accepted() -> None:
    assert parse(domain().replace(b"<domain type='kvm'>", b"<domain type='kvm' id='42'>")).name \
        == "t"


def test_comments_and_processing_instructions_are_ignored() -> None:
    data = domain("<!-- a comment -->\n<?app data?>\n<devices><!-- c --><serial type='pty'/>"
                  "</devices>")
    assert parse(data).devices.serials == (Serial(),)


def test_xml_declaration_and_utf8_bom_are_accepted() -> None:
    data = b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>\n" + domain(name="<name>gäst</name>")
    assert parse(data).name == "gäst"


@pytest.mark.parametrize(("sample", "name", "uuid_"), [
    ("diskless.xml", "diskless", "6b0bd1a1-5d3e-4f5b-8c0e-3a1f2e4d5c61"),
    ("installer.xml", "debian12-install", "a3f4c2d1-0b9e-4e8f-8d7c-6b5a49382716"),
    ("testguest.xml", "testguest", "0d6c1f0e-8a4b-4c1d-9a57-7f2c3b9e4a10"),
    ("webserver.xml", "webserver", "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"),
    ("workstation.xml", "workstation", "e1b2c3d4-5f60-4718-9a2b-3c4d5e6f7081"),
])
def test_samples_are_valid(sample: str, name: str, uuid_: str) -> None:
    parsed = model.parse_file(SAMPLES / sample)
    assert parsed.domain.name == name
    assert parsed.domain.uuid == uuid.UUID(uuid_)
    assert parsed.file == str(SAMPLES / sample)


def test_parse_file_accepts_str_paths(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_bytes(domain())
    assert model.parse_file(str(path)).domain.name == "t"


def test_parsed_domain_is_frozen() -> None:
    d = parse(domain())
    with pytest.raises(ValueError, match="frozen"):
        d.name = "other"  # type: ignore[misc]
    assert hash(d) == hash(parse(domain()))
