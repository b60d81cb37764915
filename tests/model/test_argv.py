"""The QEMU command line: a list of strings built from the model, libvirt's way."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import model
from model.domain import Domain
from tests.support.snippets import SAMPLES, UUID, domain_xml


def domain(extra: str = "", *, kind: str = "kvm", **parts: str | None) -> Domain:
    """Parse a minimal valid domain with `extra` top-level elements and some parts replaced."""
    return model.parse(domain_xml(extra, kind=kind, **parts)).domain


def devices(snippet: str, **parts: str | None) -> Domain:
    """Parse the minimal domain with `snippet` inside its <devices>."""
    return domain("<devices>\n" + textwrap.dedent(snippet).strip("\n") + "\n</devices>", **parts)


def values(d: Domain, option: str, runtime: model.Runtime | None = None) -> list[str]:
    """The values of every occurrence of `option` (e.g. all `-device` values), in order."""
    return [o[1] for o in model.options(d, runtime) if o[0] == option]


def flags(d: Domain) -> set[str]:
    """The options without a value."""
    return {o[0] for o in model.options(d) if len(o) == 1}


# --- shape --------------------------------------------------------------------------------------


def test_minimal_domain_exact_command_line() -> None:
    assert model.command_line(domain()) == [
        "qemu-system-x86_64",
        "-name", "guest=t,debug-threads=on",
        "-uuid", UUID,
        "-no-user-config",
        "-nodefaults",
        "-msg", "timestamp=on",
        "-machine", "pc,acpi=off,dump-guest-core=off",
        "-accel", "kvm",
        "-m", "64",
        "-smp", "1,maxcpus=1",
        "-rtc", "base=utc",
        "-action", "panic=shutdown",
        "-display", "none",
    ]


def test_argv_is_a_list_of_strings_and_options_flatten_to_it() -> None:
    d = model.parse_file(SAMPLES / "webserver.xml").domain
    argv = model.command_line(d)
    assert isinstance(argv, list)
    assert all(isinstance(a, str) for a in argv)
    assert [a for option in model.options(d) for a in option] == argv
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert all(isinstance(o, tuple) and 1 <= len(o) <= 2 for o in model.options(d))


def test_command_line_is_deterministic() -> None:
    d = model.parse_file(SAMPLES / "installer.xml").domain
    assert model.command_line(d) == model.command_line(d)
    assert model.command_line(d) == model.command_line(
        model.parse_file(SAMPLES / "installer.xml").domain)


# --- identity, machine, accelerator, cpu, memory ------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("<name>web</name>", "guest=web,debug-threads=on"),
    ("<name>a,b</name>", "guest=a,,b,debug-threads=on"),
    ("<name>my vm</name>", "guest=my vm,debug-threads=on"),
])
def test_name(name: str, value: str) -> None:
    assert values(domain(name=name), "-name") == [value]


def test_uuid_derived_from_the_name_is_on_the_command_line() -> None:
    d = domain(uuid=None)
    assert values(d, "-uuid") == [str(model.uuid_for_name("t"))]


@pytest.mark.parametrize(("kind", "accel"), [("kvm", "kvm"), ("qemu", "tcg")])
def test_accelerator(kind: str, accel: str) -> None:
    assert values(domain(kind=kind), "-accel") == [accel]


@pytest.mark.parametrize(("kind", "cpu", "expected"), [
    ("kvm", "", []),
    ("qemu", "", []),
    ("kvm", "<cpu mode='host-passthrough'/>", ["host"]),
    ("kvm", "<cpu mode='host-model'/>", ["host"]),
    ("qemu", "<cpu mode='host-passthrough'/>", ["max"]),
    ("qemu", "<cpu mode='host-model'/>", ["max"]),
    ("kvm", "<cpu mode='maximum'/>", ["max"]),
    ("qemu", "<cpu mode='maximum'/>", ["max"]),
    ("kvm", "<cpu mode='custom'><model>Skylake-Client</model></cpu>", ["Skylake-Client"]),
    ("qemu", "<cpu><model>qemu64</model></cpu>", ["qemu64"]),
    ("kvm", "<cpu mode='custom'><model>Haswell</model><feature policy='disable' name='vmx'/>"
            "<feature policy='require' name='pcid'/><feature policy='forbid' name='rtm'/>"
            "<feature policy='force' name='ssse3'/><feature policy='optional' name='aes'/></cpu>",
     ["Haswell,-vmx,+pcid,-rtm,+ssse3,+aes"]),
])
def test_cpu_under_kvm_and_tcg(kind: str, cpu: str, expected: list[str]) -> None:
    assert values(domain(cpu, kind=kind), "-cpu") == expected


@pytest.mark.parametrize(("extra", "smp"), [
    ("", "1,maxcpus=1"),
    ("<vcpu>4</vcpu>", "4,maxcpus=4"),
    ("<vcpu current='2'>8</vcpu>", "2,maxcpus=8"),
    ("<vcpu>4</vcpu><cpu mode='host-model'><topology sockets='1' dies='1' cores='2' threads='2'/>"
     "</cpu>", "4,maxcpus=4,sockets=1,cores=2,threads=2"),
    ("<vcpu>8</vcpu><cpu mode='host-model'><topology sockets='2' dies='2' cores='2' threads='1'/>"
     "</cpu>", "8,maxcpus=8,sockets=2,dies=2,cores=2,threads=1"),
])
def test_smp(extra: str, smp: str) -> None:
    assert values(domain(extra), "-smp") == [smp]


@pytest.mark.parametrize(("memory", "m"), [
    ("<memory unit='KiB'>219100</memory>", "214"),
    ("<memory unit='MiB'>512</memory>", "512"),
    ("<memory unit='GiB'>4</memory>", "4096"),
    ("<memory unit='GB'>1</memory>", "954"),
    ("<memory unit='b'>1</memory>", "1"),
])
def test_memory_in_whole_mib_rounded_up(memory: str, m: str) -> None:
    assert values(domain(memory=memory), "-m") == [m]


@pytest.mark.parametrize(("os_", "features", "machine"), [
    ("<os><type>hvm</type></os>", "", "pc,acpi=off,dump-guest-core=off"),
    ("<os><type>hvm</type></os>", "<features><acpi/></features>", "pc,dump-guest-core=off"),
    ("<os><type>hvm</type></os>", "<features><apic/><pae/></features>",
     "pc,acpi=off,dump-guest-core=off"),
    ("<os><type machine='q35'>hvm</type></os>", "<features><acpi/><apic/></features>",
     "q35,dump-guest-core=off"),
    ("<os><type machine='pc-q35-7.2'>hvm</type></os>",
     "<features><acpi/><vmport state='off'/></features>",
     "pc-q35-7.2,vmport=off,dump-guest-core=off"),
    ("<os><type machine='pc-i440fx-8.1'>hvm</type></os>",
     "<features><acpi/><vmport state='on'/></features>",
     "pc-i440fx-8.1,vmport=on,dump-guest-core=off"),
    ("<os><type>hvm</type></os>",
     "<features><acpi/></features><clock offset='utc'><timer name='hpet' present='no'/></clock>",
     "pc,hpet=off,dump-guest-core=off"),
    ("<os><type>hvm</type></os>",
     "<features><acpi/></features><clock offset='utc'><timer name='hpet' present='yes'/></clock>",
     "pc,dump-guest-core=off"),
])
def test_machine_and_acpi(os_: str, features: str, machine: str) -> None:
    assert values(domain(features, os=os_), "-machine") == [machine]


# --- emulator -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("os_", "snippet", "binary"), [
    ("<os><type>hvm</type></os>", "", "qemu-system-x86_64"),
    ("<os><type arch='x86_64'>hvm</type></os>", "", "qemu-system-x86_64"),
    ("<os><type arch='i686'>hvm</type></os>", "", "qemu-system-i386"),
    ("<os><type arch='i686'>hvm</type></os>",
     "<emulator>/usr/bin/qemu-system-i386</emulator>", "/usr/bin/qemu-system-i386"),
    ("<os><type>hvm</type></os>", "<emulator>/usr/bin/qemu-system-i386</emulator>",
     "/usr/bin/qemu-system-i386"),
    # a 64-bit emulator runs a 32-bit guest
    ("<os><type arch='i686'>hvm</type></os>",
     "<emulator>/usr/bin/qemu-system-x86_64</emulator>", "/usr/bin/qemu-system-x86_64"),
    ("<os><type arch='x86_64'>hvm</type></os>",
     "<emulator>/opt/qemu/bin/qemu-system-x86_64</emulator>", "/opt/qemu/bin/qemu-system-x86_64"),
])
def test_emulator_from_emulator_or_arch(os_: str, snippet: str, binary: str) -> None:
    argv = model.command_line(devices(snippet, os=os_))
    assert argv[0] == binary


# --- os: boot, kernel; clock; lifecycle; pm -----------------------------------------------------


@pytest.mark.parametrize(("os_", "boot"), [
    ("<os><type>hvm</type></os>", []),
    ("<os><type>hvm</type><boot dev='hd'/></os>", ["order=c"]),
    ("<os><type>hvm</type><boot dev='cdrom'/></os>", ["order=d"]),
    ("<os><type>hvm</type><boot dev='fd'/></os>", ["order=a"]),
    ("<os><type>hvm</type><boot dev='network'/></os>", ["order=n"]),
    ("<os><type>hvm</type><boot dev='cdrom'/><boot dev='hd'/><boot dev='network'/></os>",
     ["order=dcn"]),
    ("<os><type>hvm</type><boot dev='network'/><boot dev='fd'/></os>", ["order=na"]),
    ("<os><type>hvm</type><boot dev='hd'/><bootmenu enable='yes' timeout='3000'/></os>",
     ["order=c,menu=on,splash-time=3000"]),
    ("<os><type>hvm</type><bootmenu enable='yes'/></os>", ["menu=on"]),
    ("<os><type>hvm</type><bootmenu enable='no' timeout='3000'/></os>", ["menu=off"]),
])
def test_boot_order_and_menu(os_: str, boot: list[str]) -> None:
    assert values(domain(os=os_), "-boot") == boot


def test_direct_kernel_boot() -> None:
    d = domain(os="<os><type>hvm</type><kernel>/boot/vmlinuz</kernel>"
                  "<initrd>/boot/initrd.img</initrd><cmdline>console=ttyS0 root=/dev/vda1 a,b</cmdline>"
                  "</os>")
    opts = model.options(d)
    assert ("-kernel", "/boot/vmlinuz") in opts
    assert ("-initrd", "/boot/initrd.img") in opts
    # -append is not a comma-separated option list: its value is passed untouched
    assert ("-append", "console=ttyS0 root=/dev/vda1 a,b") in opts


def test_kernel_alone() -> None:
    d = domain(os="<os><type>hvm</type><kernel>/k</kernel></os>")
    assert values(d, "-kernel") == ["/k"]
    assert values(d, "-initrd") == values(d, "-append") == []


@pytest.mark.parametrize(("clock", "rtc"), [
    ("", ["base=utc"]),
    ("<clock offset='utc'/>", ["base=utc"]),
    ("<clock offset='localtime'/>", ["base=localtime"]),
    ("<clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>",
     ["base=utc,driftfix=slew"]),
    ("<clock offset='localtime'><timer name='rtc' tickpolicy='delay'/></clock>", ["base=localtime"]),
])
def test_clock_offset(clock: str, rtc: list[str]) -> None:
    assert values(domain(clock), "-rtc") == rtc


@pytest.mark.parametrize(("kind", "expected"), [
    ("kvm", ["kvm-pit.lost_tick_policy=delay"]),
    ("qemu", []),
])
def test_pit_tick_policy_only_under_kvm(kind: str, expected: list[str]) -> None:
    d = domain("<clock offset='utc'><timer name='pit' tickpolicy='delay'/></clock>", kind=kind)
    assert values(d, "-global") == expected


@pytest.mark.parametrize(("lifecycle", "no_reboot", "panic"), [
    ("", False, "panic=shutdown"),
    ("<on_reboot>restart</on_reboot>", False, "panic=shutdown"),
    ("<on_reboot>destroy</on_reboot>", True, "panic=shutdown"),
    ("<on_poweroff>destroy</on_poweroff>", False, "panic=shutdown"),
    ("<on_poweroff>restart</on_poweroff>", False, "panic=shutdown"),
    ("<on_crash>destroy</on_crash>", False, "panic=shutdown"),
    ("<on_crash>restart</on_crash>", False, "panic=shutdown"),
    ("<on_crash>preserve</on_crash>", False, "panic=pause"),
    ("<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>"
     "<on_crash>destroy</on_crash>", True, "panic=shutdown"),
])
def test_lifecycle(lifecycle: str, no_reboot: bool, panic: str) -> None:
    d = domain(lifecycle)
    assert ("-no-reboot" in flags(d)) is no_reboot
    assert values(d, "-action") == [panic]


@pytest.mark.parametrize(("machine", "pm", "globals_"), [
    ("pc", "", []),
    ("pc", "<pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>",
     ["PIIX4_PM.disable_s3=1", "PIIX4_PM.disable_s4=1"]),
    ("pc", "<pm><suspend-to-mem enabled='yes'/></pm>", ["PIIX4_PM.disable_s3=0"]),
    ("q35", "<pm><suspend-to-disk enabled='no'/></pm>", ["ICH9-LPC.disable_s4=1"]),
])
def test_power_management(machine: str, pm: str, globals_: list[str]) -> None:
    d = domain(pm, os=f"<os><type machine='{machine}'>hvm</type></os>")
    assert values(d, "-global") == globals_


# --- disks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "drive", "device"), [
    ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
     "<source file='/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>",
     "file=/img/a.qcow2,format=qcow2,if=none,id=drive-virtio-disk0",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk0,id=virtio-disk0"),
    ("<disk><source file='/img/b.raw'/><target dev='vdc' bus='virtio'/></disk>",
     "file=/img/b.raw,format=raw,if=none,id=drive-virtio-disk2",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk2,id=virtio-disk2"),
    ("<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>"
     "<source dev='/dev/vg/lv'/><target dev='vdb' bus='virtio'/></disk>",
     "file=/dev/vg/lv,format=raw,if=none,id=drive-virtio-disk1,cache=none",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk1,id=virtio-disk1"),
    ("<disk><driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>"
     "<source file='/a'/><target dev='vda'/></disk>",
     "file=/a,format=qcow2,if=none,id=drive-virtio-disk0,cache=writeback,discard=unmap",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk0,id=virtio-disk0"),
    ("<disk><driver name='qemu' cache='default'/><source file='/a'/><target dev='vda'/></disk>",
     "file=/a,format=raw,if=none,id=drive-virtio-disk0",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk0,id=virtio-disk0"),
    ("<disk><source file='/a'/><target dev='vda'/><readonly/></disk>",
     "file=/a,format=raw,if=none,id=drive-virtio-disk0,readonly=on",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk0,id=virtio-disk0"),
    ("<disk><source file='/a'/><target dev='vda'/><boot order='1'/><serial>S1</serial></disk>",
     "file=/a,format=raw,if=none,id=drive-virtio-disk0",
     "virtio-blk-pci,bus=pci.0,addr=0x2,drive=drive-virtio-disk0,id=virtio-disk0,bootindex=1,serial=S1"),
    ("<disk><source file='/a'/><target dev='hda' bus='ide'/></disk>",
     "file=/a,format=raw,if=none,id=drive-ide0-0-0",
     "ide-hd,bus=ide.0,unit=0,drive=drive-ide0-0-0,id=ide0-0-0"),
    ("<disk device='cdrom'><source file='/x.iso'/><target dev='hdc' bus='ide'/></disk>",
     "file=/x.iso,format=raw,if=none,id=drive-ide0-1-0,readonly=on",
     "ide-cd,bus=ide.1,unit=0,drive=drive-ide0-1-0,id=ide0-1-0"),
    # an empty cdrom: a drive without a file, ready for a medium
    ("<disk device='cdrom'><target dev='hdd' bus='ide'/><readonly/></disk>",
     "if=none,id=drive-ide0-1-1,readonly=on",
     "ide-cd,bus=ide.1,unit=1,drive=drive-ide0-1-1,id=ide0-1-1"),
    ("<disk device='cdrom'><driver name='qemu' type='raw'/><source file='/x.iso'/>"
     "<target dev='sdb' bus='sata'/></disk>",
     "file=/x.iso,format=raw,if=none,id=drive-sata0-0-1,readonly=on",
     "ide-cd,bus=sata0.1,drive=drive-sata0-0-1,id=sata0-0-1"),
    ("<disk><source file='/a'/><target dev='sda' bus='sata'/></disk>",
     "file=/a,format=raw,if=none,id=drive-sata0-0-0",
     "ide-hd,bus=sata0.0,drive=drive-sata0-0-0,id=sata0-0-0"),
    ("<disk><source file='/a'/><target dev='sdc' bus='scsi'/></disk>",  # libvirt: unit 2, LUN 2
     "file=/a,format=raw,if=none,id=drive-scsi0-0-0-2",
     "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=2,drive=drive-scsi0-0-0-2,id=scsi0-0-0-2"),
    ("<disk device='cdrom'><target dev='sda' bus='scsi'/></disk>",
     "if=none,id=drive-scsi0-0-0-0,readonly=on",
     "scsi-cd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0-0-0-0,id=scsi0-0-0-0"),
    ("<disk device='floppy'><source file='/f.img'/><target dev='fda' bus='fdc'/></disk>",
     "file=/f.img,format=raw,if=none,id=drive-fdc0-0-0",
     "floppy,unit=0,drive=drive-fdc0-0-0,id=fdc0-0-0"),
    ("<disk device='floppy'><source file='/f.img'/><target dev='fdb'/><serial>X</serial></disk>",
     "file=/f.img,format=raw,if=none,id=drive-fdc0-0-1",
     "floppy,unit=1,drive=drive-fdc0-0-1,id=fdc0-0-1"),
])
def test_disk(snippet: str, drive: str, device: str) -> None:
    d = devices(snippet)
    assert values(d, "-drive") == [drive]
    assert values(d, "-device")[-1] == device


@pytest.mark.parametrize(("machine", "bus", "controller"), [
    ("pc", "sata", ["ahci,bus=pci.0,addr=0x2,id=sata0"]),
    ("q35", "sata", []),  # AHCI is built into Q35
    ("pc", "virtio", []),
    ("pc", "scsi", ["virtio-scsi-pci,bus=pci.0,addr=0x2,id=scsi0"]),
])
def test_disk_bus_controllers(machine: str, bus: str, controller: list[str]) -> None:
    d = devices(f"<disk><source file='/a'/><target dev='{'vda' if bus == 'virtio' else 'sda'}' "
                f"bus='{bus}'/></disk>", os=f"<os><type machine='{machine}'>hvm</type></os>")
    assert values(d, "-device")[:-1] == controller


def test_sata_on_q35_uses_the_builtin_ide_bus() -> None:
    d = devices("<disk><source file='/a'/><target dev='sdc' bus='sata'/></disk>",
                os="<os><type machine='q35'>hvm</type></os>")
    assert values(d, "-device") == ["ide-hd,bus=ide.2,drive=drive-sata0-0-2,id=sata0-0-2"]


@pytest.mark.parametrize(("controller", "device"), [
    ("", "virtio-scsi-pci,bus=pci.0,addr=0x2,id=scsi0"),  # qemud's (libvirt: lsilogic)
    ("<controller type='scsi' index='0' model='virtio-scsi'/>",
     "virtio-scsi-pci,bus=pci.0,addr=0x2,id=scsi0"),
    ("<controller type='scsi' index='0' model='lsilogic'/>", "lsi,bus=pci.0,addr=0x2,id=scsi0"),
    ("<controller type='scsi' index='0' model='auto'/>",
     "virtio-scsi-pci,bus=pci.0,addr=0x2,id=scsi0"),
])
def test_scsi_controller_model(controller: str, device: str) -> None:
    d = devices(controller + "<disk><source file='/a'/><target dev='sda' bus='scsi'/></disk>")
    assert values(d, "-device")[0] == device


def test_disks_of_a_bus_come_in_target_order_as_libvirt_sorts_them() -> None:
    d = devices("""
        <disk><source file='/b'/><target dev='vdb'/></disk>
        <disk><source file='/a'/><target dev='vda'/></disk>""")
    assert values(d, "-drive") == ["file=/a,format=raw,if=none,id=drive-virtio-disk0",
                                   "file=/b,format=raw,if=none,id=drive-virtio-disk1"]


@pytest.mark.parametrize(("path", "drive"), [
    ("/a,b c.img", "file=/a,,b c.img,format=raw,if=none,id=drive-virtio-disk0"),
    ("/vm images/disk.img", "file=/vm images/disk.img,format=raw,if=none,id=drive-virtio-disk0"),
    ("/x,,y", "file=/x,,,,y,format=raw,if=none,id=drive-virtio-disk0"),
    ("/it's $HOME; rm -rf *", "file=/it's $HOME; rm -rf *,format=raw,if=none,"
                              "id=drive-virtio-disk0"),
    ("/a,format=qcow2", "file=/a,,format=qcow2,format=raw,if=none,id=drive-virtio-disk0"),
])
def test_disk_path_commas_are_escaped_in_one_argv_element(path: str, drive: str) -> None:
    escaped = path.replace("&", "&amp;").replace("'", "&apos;")
    d = devices(f"<disk><source file='{escaped}'/><target dev='vda'/></disk>")
    argv = model.command_line(d)
    assert d.devices.disks[0].source == path
    i = argv.index("-drive")
    assert argv[i + 1] == drive
    assert argv.count(drive) == 1


def test_the_issue_example_renders_file_a_comma_comma_b_space_c() -> None:
    d = devices("<disk type='file' device='disk'><source file='/a,b c.img'/>"
                "<target dev='vda' bus='virtio'/></disk>")
    drive = values(d, "-drive")[0]
    assert drive.startswith("file=/a,,b c.img,")
    assert drive in model.command_line(d)


# --- network ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "netdev", "device"), [
    ("<interface type='user'><mac address='52:54:00:12:34:56'/><model type='virtio'/></interface>",
     "user,id=hostnet0", "virtio-net-pci,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:12:34:56"),
    ("<interface type='user'><mac address='52:54:00:12:34:56'/></interface>",
     "user,id=hostnet0", "rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:12:34:56"),
    ("<interface type='bridge'><mac address='52:54:00:AA:BB:CC'/><source bridge='br0'/>"
     "<model type='e1000'/></interface>",
     "bridge,id=hostnet0,br=br0", "e1000,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:aa:bb:cc"),
    ("<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>"
     "<model type='e1000e'/></interface>",
     "bridge,id=hostnet0,br=virbr0",
     "e1000e,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01"),
    ("<interface type='network'><mac address='52:54:00:00:00:01'/><source network='lan0'/>"
     "<boot order='2'/></interface>",
     "bridge,id=hostnet0,br=lan0",
     "rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01,bootindex=2"),
])
def test_interface(snippet: str, netdev: str, device: str) -> None:
    d = devices(snippet)
    assert values(d, "-netdev") == [netdev]
    assert values(d, "-device") == [device]


@pytest.mark.parametrize(("nic_model", "device"), [
    ("virtio", "virtio-net-pci"), ("e1000", "e1000"), ("e1000e", "e1000e"),
    ("rtl8139", "rtl8139"), ("ne2k_pci", "ne2k_pci"), ("pcnet", "pcnet"), ("vmxnet3", "vmxnet3"),
])
def test_interface_models(nic_model: str, device: str) -> None:
    d = devices(f"<interface type='user'><mac address='52:54:00:00:00:09'/>"
                f"<model type='{nic_model}'/></interface>")
    assert values(d, "-device") == [f"{device},bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                                    "mac=52:54:00:00:00:09"]


def test_interface_without_mac_gets_a_stable_mac_per_domain_and_index() -> None:
    two = "<interface type='user'/><interface type='user'/>"
    first = values(devices(two), "-device")
    again = values(devices(two), "-device")
    other = values(devices(two, uuid="<uuid>0d6c1f0e-8a4b-4c1d-9a57-7f2c3b9e4a10</uuid>"),
                   "-device")
    macs = [v.rsplit("mac=", 1)[1] for v in first]
    assert first == again
    assert first != other
    assert macs[0] != macs[1]
    assert all(m.startswith("52:54:00:") and len(m) == 17 for m in macs)
    assert [v.split(",")[1:5] for v in first] == [
        ["bus=pci.0", "addr=0x2", "netdev=hostnet0", "id=net0"],
        ["bus=pci.0", "addr=0x3", "netdev=hostnet1", "id=net1"]]


# --- display ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "vnc", "display"), [
    ("", [], ["none"]),
    ("<graphics type='vnc'/>", ["127.0.0.1:0,to=99"], []),
    ("<graphics type='vnc' port='-1' autoport='yes'/>", ["127.0.0.1:0,to=99"], []),
    ("<graphics type='vnc' port='5900' autoport='yes'/>", ["127.0.0.1:0,to=99"], []),
    ("<graphics type='vnc' port='5900' autoport='no'/>", ["127.0.0.1:0"], []),
    ("<graphics type='vnc' port='5910' autoport='no' listen='0.0.0.0'/>", ["0.0.0.0:10"], []),
    ("<graphics type='vnc' port='5901'><listen type='address' address='192.168.1.2'/></graphics>",
     ["192.168.1.2:1"], []),
    ("<graphics type='vnc' port='5902' listen='::1'/>", ["[::1]:2"], []),
])
def test_graphics_vnc_or_no_display(snippet: str, vnc: list[str], display: list[str]) -> None:
    d = devices(snippet)
    assert values(d, "-vnc") == vnc
    assert values(d, "-display") == display


# --- serial ports and consoles ------------------------------------------------------------------

RUNTIME = model.Runtime(qmp_socket=Path("/run/qemud/t.qmp"), pidfile=Path("/run/qemud/t.pid"),
                        console_log=Path("/var/log/qemud/t.log"))


@pytest.mark.parametrize(("snippet", "chardev", "with_runtime"), [
    ("<serial type='pty'/>", "pty,id=charserial0",
     "pty,id=charserial0,logfile=/var/log/qemud/t.log,logappend=on"),
    ("<console type='pty'/>", "pty,id=charserial0",
     "pty,id=charserial0,logfile=/var/log/qemud/t.log,logappend=on"),
    ("<serial type='file'><source path='/var/log/s,1.log'/></serial>",
     "file,id=charserial0,path=/var/log/s,,1.log", "file,id=charserial0,path=/var/log/s,,1.log"),
    ("<console type='file'><source path='/tmp/c.log'/></console>",
     "file,id=charserial0,path=/tmp/c.log", "file,id=charserial0,path=/tmp/c.log"),
    ("<serial type='unix'><source mode='bind' path='/run/s.sock'/></serial>",
     "socket,id=charserial0,path=/run/s.sock,server=on,wait=off",
     "socket,id=charserial0,path=/run/s.sock,server=on,wait=off,"
     "logfile=/var/log/qemud/t.log,logappend=on"),
    ("<serial type='unix'><source mode='connect' path='/run/s.sock'/></serial>",
     "socket,id=charserial0,path=/run/s.sock,server=off",
     "socket,id=charserial0,path=/run/s.sock,server=off,logfile=/var/log/qemud/t.log,"
     "logappend=on"),
    ("<serial type='null'/>", "null,id=charserial0", "null,id=charserial0"),
    ("<console type='null'/>", "null,id=charserial0", "null,id=charserial0"),
    ("<serial type='pty'><log file='/l/own.log'/></serial>",
     "pty,id=charserial0,logfile=/l/own.log,logappend=off",
     "pty,id=charserial0,logfile=/l/own.log,logappend=off"),
    ("<serial type='pty'><log file='/l/own.log' append='on'/></serial>",
     "pty,id=charserial0,logfile=/l/own.log,logappend=on",
     "pty,id=charserial0,logfile=/l/own.log,logappend=on"),
    ("<serial type='pty'><target port='2'/></serial>", "pty,id=charserial2",
     "pty,id=charserial2,logfile=/var/log/qemud/t.2.log,logappend=on"),
])
def test_serial_and_console_chardevs(snippet: str, chardev: str, with_runtime: str) -> None:
    d = devices(snippet)
    port = d.devices.serials[0].port
    assert values(d, "-chardev") == [chardev]
    assert values(d, "-device") == [
        f"isa-serial,chardev=charserial{port},id=serial{port},index={port}"]
    assert values(d, "-chardev", RUNTIME)[2:] == [with_runtime]  # after the two monitors


def test_serial_mirrored_as_console_is_one_port() -> None:
    d = devices("<serial type='pty'><target port='0'/></serial>"
                "<console type='pty'><target type='serial' port='0'/></console>")
    assert values(d, "-chardev") == ["pty,id=charserial0"]
    assert values(d, "-device") == ["isa-serial,chardev=charserial0,id=serial0,index=0"]


# --- runtime ------------------------------------------------------------------------------------


def test_runtime_adds_pidfile_and_qmp_monitor() -> None:
    runtime = model.Runtime(qmp_socket=Path("/run/q,d/t.qmp"), pidfile=Path("/run/q d/t.pid"),
                            console_log=Path("/var/log/t.log"))
    opts = model.options(domain(), runtime)
    assert opts[3:8] == [
        ("-pidfile", "/run/q d/t.pid"),
        ("-chardev", "socket,id=charmonitor,path=/run/q,,d/t.qmp,server=on,wait=off"),
        ("-mon", "chardev=charmonitor,id=monitor,mode=control"),
        ("-chardev",
         "socket,id=charmonitor-user,path=/run/q,,d/qmp-user.sock,server=on,wait=off"),
        ("-mon", "chardev=charmonitor-user,id=monitor-user,mode=control"),
    ]
    assert runtime.user_qmp_socket == Path("/run/q,d/qmp-user.sock")
    assert model.options(domain())[3] == ("-no-user-config",)


@pytest.mark.parametrize(("port", "log"), [
    (0, "/var/log/qemud/t.log"),
    (1, "/var/log/qemud/t.1.log"),
    (3, "/var/log/qemud/t.3.log"),
])
def test_runtime_serial_log(port: int, log: str) -> None:
    assert RUNTIME.serial_log(port) == Path(log)


# --- video, input, balloon, rng, panic, usb -----------------------------------------------------


@pytest.mark.parametrize(("snippet", "expected"), [
    ("<video><model type='vga'/></video>", ["VGA,bus=pci.0,addr=0x2,id=video0"]),
    ("<video><model type='cirrus'/></video>", ["cirrus-vga,bus=pci.0,addr=0x2,id=video0"]),
    ("<video><model type='qxl'/></video>", [  # libvirt's default heads and sizes
        "qxl-vga,bus=pci.0,addr=0x2,id=video0,"
        "max_outputs=1,ram_size=67108864,vram_size=67108864,vram64_size_mb=0,vgamem_mb=16"]),
    ("<video><model type='virtio'/></video>", ["virtio-vga,bus=pci.0,addr=0x2,id=video0,max_outputs=1"]),
    ("<video><model type='bochs'/></video>", ["bochs-display,bus=pci.0,addr=0x2,id=video0"]),
    ("<video><model type='ramfb'/></video>", ["ramfb,id=video0"]),
    ("<video><model type='none'/></video>", []),
    ("<video><model type='virtio'/></video><video><model type='virtio'/></video>",
     ["virtio-vga,bus=pci.0,addr=0x2,id=video0,max_outputs=1",
      "virtio-gpu-pci,bus=pci.0,addr=0x3,id=video1,max_outputs=1"]),
    ("<video><model type='vga'/></video><video><model type='qxl'/></video>",
     ["VGA,bus=pci.0,addr=0x2,id=video0", "qxl,bus=pci.0,addr=0x3,id=video1,"
      "max_outputs=1,ram_size=67108864,vram_size=67108864,vram64_size_mb=0,vgamem_mb=16"]),
])
def test_video(snippet: str, expected: list[str]) -> None:
    assert values(devices(snippet), "-device") == expected


@pytest.mark.parametrize(("snippet", "expected"), [
    ("<graphics type='vnc'/>", ["VGA,bus=pci.0,addr=0x2,id=video0"]),  # libvirt adds a default video adapter
    ("<graphics type='vnc'/><video><model type='virtio'/></video>",
     ["virtio-vga,bus=pci.0,addr=0x2,id=video0,max_outputs=1"]),
    ("<graphics type='vnc'/><video><model type='none'/></video>", []),  # explicitly none
    ("", []),
])
def test_graphics_without_video_get_the_default_adapter(snippet: str, expected: list[str]) -> None:
    assert values(devices(snippet), "-device") == expected


@pytest.mark.parametrize(("machine", "snippet", "expected"), [
    ("pc", "<input type='mouse' bus='ps2'/><input type='keyboard' bus='ps2'/>", []),
    # libvirt's homes and order: piix3-uhci at 00:01.2; on q35 a PCIe device gets its own
    # pcie-root-port (added, plus a spare one); USB ports numbered from 1
    ("pc", "<input type='tablet' bus='usb'/>",
     ["piix3-usb-uhci,bus=pci.0,addr=0x1.0x2,id=usb", "usb-tablet,id=input0,bus=usb.0,port=1"]),
    ("q35", "<input type='tablet' bus='usb'/>",
     ["pcie-root-port,port=0x8,chassis=1,id=pci.1,bus=pcie.0,addr=0x1,multifunction=on",
      "pcie-root-port,port=0x9,chassis=2,id=pci.2,bus=pcie.0,addr=0x1.0x1",
      "qemu-xhci,bus=pci.1,addr=0x0,id=usb", "usb-tablet,id=input0,bus=usb.0,port=1"]),
    ("pc", "<input type='mouse' bus='usb'/><input type='keyboard' bus='usb'/>",
     ["piix3-usb-uhci,bus=pci.0,addr=0x1.0x2,id=usb", "usb-mouse,id=input0,bus=usb.0,port=1",
      "usb-kbd,id=input1,bus=usb.0,port=2"]),
    ("pc", "<input type='tablet' bus='virtio'/><input type='mouse' bus='virtio'/>"
           "<input type='keyboard' bus='virtio'/>",
     ["virtio-tablet-pci,bus=pci.0,addr=0x2,id=input0",
      "virtio-mouse-pci,bus=pci.0,addr=0x3,id=input1",
      "virtio-keyboard-pci,bus=pci.0,addr=0x4,id=input2"]),
    ("pc", "<controller type='usb' model='qemu-xhci'/><input type='tablet' bus='usb'/>",
     ["qemu-xhci,bus=pci.0,addr=0x2,id=usb", "usb-tablet,id=input0,bus=usb.0,port=1"]),
    ("pc", "<controller type='usb' model='ehci'/>", ["usb-ehci,bus=pci.0,addr=0x2,id=usb"]),
    ("pc", "<controller type='usb' model='piix4-uhci'/>",
     ["piix4-usb-uhci,bus=pci.0,addr=0x2,id=usb"]),
    ("pc", "<controller type='usb' model='nec-xhci'/>", ["nec-usb-xhci,bus=pci.0,addr=0x2,id=usb"]),
    ("q35", "<controller type='usb' model='ich9-ehci1'/><controller type='usb' model='ich9-uhci1'>"
            "<master startport='0'/></controller>",
     ["ich9-usb-ehci1,bus=pcie.0,addr=0x1d.0x7,id=usb",  # libvirt's q35-usb2: ICH9's USB slot
      "ich9-usb-uhci1,masterbus=usb.0,firstport=0,bus=pcie.0,addr=0x1d,multifunction=on"]),
    ("q35", "<controller type='usb' model='ich9-uhci1'/>",
     ["ich9-usb-uhci1,bus=pcie.0,addr=0x1,id=usb"]),
    ("pc", "<controller type='usb' model='none'/>", []),
])
def test_input_and_usb(machine: str, snippet: str, expected: list[str]) -> None:
    d = devices(snippet, os=f"<os><type machine='{machine}'>hvm</type></os>")
    assert values(d, "-device") == expected


@pytest.mark.parametrize(("snippet", "objects", "expected"), [
    ("<memballoon model='virtio'/>", [], ["virtio-balloon-pci,bus=pci.0,addr=0x2,id=balloon0"]),
    ("<memballoon model='none'/>", [], []),
    ("<panic model='isa'/>", [], ["pvpanic"]),
    ("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
     ["rng-random,id=objrng0,filename=/dev/urandom"],
     ["virtio-rng-pci,bus=pci.0,addr=0x2,rng=objrng0,id=rng0"]),
    ("<rng model='virtio'><backend model='random'>/dev/random</backend>"
     "<rate bytes='1024' period='2000'/></rng>",
     ["rng-random,id=objrng0,filename=/dev/random"],
     ["virtio-rng-pci,bus=pci.0,addr=0x2,rng=objrng0,id=rng0,max-bytes=1024,period=2000"]),
    ("<rng model='virtio'><backend model='random'>/dev/urandom</backend><rate bytes='10'/></rng>",
     ["rng-random,id=objrng0,filename=/dev/urandom"],
     ["virtio-rng-pci,bus=pci.0,addr=0x2,rng=objrng0,id=rng0,max-bytes=10,period=1000"]),
])
def test_balloon_panic_rng(snippet: str, objects: list[str], expected: list[str]) -> None:
    d = devices(snippet)
    assert values(d, "-object") == objects
    assert values(d, "-device") == expected


@pytest.mark.parametrize(("snippet", "device"), [
    ("<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>",
     "tpm-crb,tpmdev=tpm-tpm0,id=tpm0"),
    ("<tpm><backend type='emulator'/></tpm>", "tpm-tis,tpmdev=tpm-tpm0,id=tpm0"),
    ("<tpm model='tpm-tis'><backend type='emulator' version='1.2'/><alias name='tpm0'/></tpm>",
     "tpm-tis,tpmdev=tpm-tpm0,id=tpm0"),
])
def test_tpm_as_libvirt_renders_it(snippet: str, device: str) -> None:
    """libvirt's tests/qemuxml2argvdata/tpm-emulator*.args: -tpmdev, its chardev, the device."""
    d = devices(snippet)
    runtime = model.Runtime(Path("/r/u/qmp.sock"), Path("/r/u/pid"), Path("/l/x.log"),
                            state_dir=Path("/s/u"))
    argv = model.command_line(d, runtime)
    at = argv.index("-tpmdev")
    assert argv[at:at + 6] == ["-tpmdev", "emulator,id=tpm-tpm0,chardev=chrtpm",
                               "-chardev", "socket,id=chrtpm,path=/r/u/tpm0-swtpm.sock",
                               "-device", device]
    assert values(d, "-chardev") == ["socket,id=chrtpm,path=tpm0-swtpm.sock"]


def test_controllers_and_libvirts_own_address_do_not_change_the_command_line() -> None:
    plain = devices("<disk><source file='/a'/><target dev='vda'/></disk>"
                    "<interface type='user'/>")
    dumped = devices("""
        <controller type='pci' index='0' model='pci-root'><alias name='pci.0'/></controller>
        <controller type='ide' index='0'/>
        <disk>
          <source file='/a'/>
          <target dev='vda'/>
          <alias name='virtio-disk0'/>
          <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
        </disk>
        <interface type='user'/>""")
    # 00:03.0 is where libvirt puts the disk anyway (the NIC comes first, at 00:02.0)
    assert model.command_line(dumped) == model.command_line(plain)


def test_a_pci_address_is_honoured() -> None:
    d = devices("<disk><source file='/a'/><target dev='vda'/>"
                "<address type='pci' domain='0x0000' bus='0x00' slot='0x1e' function='0x0'/></disk>"
                "<interface type='user'/>")
    assert [v.split(",id=")[0].split(",netdev")[0] for v in values(d, "-device")] == [
        "virtio-blk-pci,bus=pci.0,addr=0x1e,drive=drive-virtio-disk0", "rtl8139,bus=pci.0,addr=0x2"]


# --- samples: the full command lines ------------------------------------------------------------


def test_sample_testguest_full_command_line() -> None:
    d = model.parse_file(SAMPLES / "testguest.xml").domain
    assert model.command_line(d) == [
        "qemu-system-x86_64",
        "-name", "guest=testguest,debug-threads=on",
        "-uuid", "0d6c1f0e-8a4b-4c1d-9a57-7f2c3b9e4a10",
        "-no-user-config", "-nodefaults", "-msg", "timestamp=on",
        "-machine", "pc,dump-guest-core=off",
        "-accel", "tcg",
        "-m", "256",
        "-smp", "1,maxcpus=1",
        "-rtc", "base=utc",
        "-action", "panic=shutdown",
        "-kernel", "@TEST_GUEST_DIR@/vmlinuz",
        "-initrd", "@TEST_GUEST_DIR@/initramfs.cpio.gz",
        "-append", "console=ttyS0 panic=-1",
        "-chardev", "pty,id=charserial0",
        "-device", "isa-serial,chardev=charserial0,id=serial0,index=0",
        "-display", "none",
        "-device", "pvpanic",
    ]


def test_sample_installer_key_options() -> None:
    d = model.parse_file(SAMPLES / "installer.xml").domain
    opts = model.options(d)
    assert ("-machine", "q35,vmport=off,hpet=off,dump-guest-core=off") in opts
    assert ("-accel", "tcg") in opts
    assert ("-cpu", "max") in opts
    assert ("-m", "2048") in opts
    assert ("-boot", "order=dc,menu=on,splash-time=3000") in opts
    assert ("-drive", "file=/var/lib/qemud/iso/debian-12.8.0-amd64-netinst.iso,format=raw,"
                      "if=none,id=drive-sata0-0-0,readonly=on") in opts
    assert ("-device", "ide-cd,bus=ide.0,drive=drive-sata0-0-0,id=sata0-0-0") in opts
    assert ("-vnc", "127.0.0.1:0,to=99") in opts
