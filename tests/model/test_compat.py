"""The elements added for libvirt compatibility: parse, command line, and errors at their lines.

Expected command lines follow libvirt 9.0's `virsh domxml-to-native` for the same XML (its
JSON -device values written as QEMU's key=value), except where a comment says why not.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import model
from model import pci, serialize
from model.argv import balloon_target
from model.domain import Domain, PciAddress
from model.firmware import choose, parse_descriptor
from model.parse import HostFacts
from tests.support.snippets import domain_xml


def devices(snippet: str, machine: str = "pc", kind: str = "kvm", extra: str = "") -> Domain:
    """The minimal domain with `snippet` in <devices> (line 7 onwards) on `machine`."""
    return model.parse(domain_xml(
        extra + "<devices>\n" + textwrap.dedent(snippet).strip("\n") + "\n</devices>", kind=kind,
        os=f"<os><type machine='{machine}'>hvm</type></os>")).domain


def values(d: Domain, option: str, runtime: model.Runtime | None = None) -> list[str]:
    """Every value of `option`, in order."""
    return [o[1] for o in model.options(d, runtime) if o[0] == option]


def issues(data: bytes) -> list[tuple[int | None, str]]:
    """(line, message) of every issue of an invalid document."""
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data)
    return [(i.line, i.message) for i in info.value.issues]


RUNTIME = model.Runtime(Path("/run/q/u/qmp.sock"), Path("/run/q/u/pid"), Path("/log/c.log"),
                        state_dir=Path("/state/u"))


# --- channels --------------------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "chardevs", "ports"), [
    ("<channel type='unix'><source mode='bind'/>"
     "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
     ["socket,id=charchannel0,path=/run/q/u/org.qemu.guest_agent.0,server=on,wait=off"],
     ["virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,"
      "name=org.qemu.guest_agent.0"]),
    ("<channel type='unix'><source mode='connect' path='/srv/x.sock'/>"
     "<target type='virtio' name='x'/><address type='virtio-serial' controller='0' bus='0' "
     "port='5'/></channel>",
     ["socket,id=charchannel0,path=/srv/x.sock,server=off"],
     ["virtserialport,bus=virtio-serial0.0,nr=5,chardev=charchannel0,id=channel0,name=x"]),
    ("<channel type='pty'><target type='virtio' name='a'/></channel>"
     "<channel type='pty'><target type='virtio' name='b'/></channel>",
     ["pty,id=charchannel0", "pty,id=charchannel1"],
     ["virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,name=a",
      "virtserialport,bus=virtio-serial0.0,nr=2,chardev=charchannel1,id=channel1,name=b"]),
])
def test_channels(snippet: str, chardevs: list[str], ports: list[str]) -> None:
    d = devices(snippet)
    got = values(d, "-chardev", RUNTIME)
    assert got[2:] == chardevs  # [0] and [1] are the monitors (the daemon's, the users')
    assert "virtio-serial-pci,bus=pci.0,addr=0x2,id=virtio-serial0" in values(d, "-device")
    assert [v for v in values(d, "-device") if v.startswith("virtserialport")] == ports


def test_spicevmc_channel_needs_spice_and_is_the_agent() -> None:
    d = devices("<graphics type='spice' port='5905'/>"
                "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/>"
                "</channel>")
    assert "spicevmc,id=charchannel0,name=vdagent" in values(d, "-chardev")
    assert issues(domain_xml("<devices>\n<channel type='spicevmc'>"
                             "<target type='virtio'/></channel>\n</devices>")) == [
        (7, "this <channel> goes through spice, but the domain has no <graphics type='spice'>; "
            "add one or remove it")]


@pytest.mark.parametrize(("snippet", "line", "message"), [
    ("<channel type='unix'><target type='guestfwd' name='x'/></channel>", 7,
     "<channel><target type>: 'guestfwd' is not supported; use 'virtio' (guestfwd needs user "
     "networking rules qemud does not write)"),
    ("<channel type='file'><target type='virtio' name='x'/></channel>", 7,
     "<channel>: type='file' needs <source path='...'/>"),
    ("<channel type='vc'><target type='virtio' name='x'/></channel>", 7,
     "<channel type>: 'vc' is not allowed; use one of 'unix', 'spicevmc', 'pty', 'qemu-vdagent', "
     "'tcp', 'udp', 'file', 'null', 'dev', 'pipe' or 'spiceport'"),
    ("<channel type='unix'><source mode='connect'/><target type='virtio' name='x'/></channel>", 7,
     "<channel>: mode='connect' needs <source path='...'/>: the socket to connect to"),
])
def test_channel_errors(snippet: str, line: int, message: str) -> None:
    assert issues(domain_xml(f"<devices>\n{snippet}\n</devices>")) == [(line, message)]


# --- graphics ----------------------------------------------------------------------------------


def test_spice_fixed_port_and_options() -> None:
    d = devices("<graphics type='spice' port='5901' listen='0.0.0.0'><image compression='off'/>"
                "<streaming mode='filter'/><clipboard copypaste='no'/></graphics>")
    assert values(d, "-spice") == ["port=5901,addr=0.0.0.0,disable-ticketing=on,"
                                   "image-compression=off,streaming-video=filter,"
                                   "disable-copy-paste=on,seamless-migration=on"]
    assert values(d, "-device") == ["VGA,bus=pci.0,addr=0x2,id=video0"]


def test_spice_autoport_is_a_unix_socket_in_the_runtime_folder_with_a_warning() -> None:
    parsed = model.parse(domain_xml("<devices>\n<graphics type='spice' autoport='yes'/>\n"
                                    "</devices>"))
    assert values(parsed.domain, "-spice", RUNTIME) == [
        "unix=on,addr=/run/q/u/spice.sock,disable-ticketing=on,seamless-migration=on"]
    assert [w.line for w in parsed.warnings] == [7]
    assert "spice.sock" in parsed.warnings[0].message


def test_passwords_go_through_secret_objects() -> None:
    d = devices("<graphics type='vnc' port='5900' passwd='pw'/>"
                "<graphics type='spice' port='5901' passwd='p,w'/>")
    assert values(d, "-object") == ["secret,id=vnc-secret,data=pw,format=raw",
                                    "secret,id=spice-secret,data=p,,w,format=raw"]
    assert values(d, "-vnc") == ["127.0.0.1:0,password-secret=vnc-secret"]
    assert values(d, "-spice")[0].startswith("port=5901,addr=127.0.0.1,"
                                             "password-secret=spice-secret,")


# --- sound, audio, redirdev, watchdog ------------------------------------------------------------


@pytest.mark.parametrize(("machine", "snippet", "audiodevs", "expected"), [
    ("q35", "<sound model='ich9'/>", ["none,id=audio1"],
     ["ich9-intel-hda,bus=pcie.0,addr=0x1b,id=sound0",
      "hda-duplex,id=sound0-codec0,bus=sound0.0,cad=0,audiodev=audio1"]),
    ("pc", "<sound model='ich6'><codec type='micro'/></sound><audio id='3' type='none'/>",
     ["none,id=audio3"],
     ["intel-hda,bus=pci.0,addr=0x2,id=sound0",
      "hda-micro,id=sound0-codec0,bus=sound0.0,cad=0,audiodev=audio3"]),
    ("pc", "<sound model='ac97'/>", ["none,id=audio1"],
     ["AC97,bus=pci.0,addr=0x2,id=sound0,audiodev=audio1"]),
    ("pc", "<sound model='usb'/>", ["none,id=audio1"],
     ["piix3-usb-uhci,bus=pci.0,addr=0x1.0x2,id=usb",
      "usb-audio,id=sound0,audiodev=audio1,bus=usb.0,port=1"]),
])
def test_sound(machine: str, snippet: str, audiodevs: list[str], expected: list[str]) -> None:
    d = devices(snippet, machine)
    assert values(d, "-audiodev") == audiodevs
    assert values(d, "-device") == expected


def test_sound_with_spice_defaults_to_spice_audio_and_redirdev_gets_usb_ports() -> None:
    d = devices("<graphics type='spice' port='5901'/><input type='tablet' bus='usb'/>"
                "<sound model='ich9'/><redirdev bus='usb' type='spicevmc'/>"
                "<redirdev bus='usb' type='spicevmc'/>", "q35")
    assert values(d, "-audiodev") == ["spice,id=audio1"]
    assert [v for v in values(d, "-device") if "usb.0" in v] == [
        "usb-tablet,id=input0,bus=usb.0,port=1",
        "usb-redir,chardev=charredir0,id=redir0,bus=usb.0,port=2",
        "usb-redir,chardev=charredir1,id=redir1,bus=usb.0,port=3"]


@pytest.mark.parametrize(("snippet", "line", "message"), [
    ("<sound model='gus'/>", 7,
     "<sound model>: 'gus' is not allowed; use one of 'ich9', 'ich6', 'ac97', 'usb', 'es1370', "
     "'sb16' or 'pcspk'"),
    ("<sound model='ac97'><codec type='duplex'/></sound>", 7,
     "<sound>: <codec> is for the HD Audio models ich6 and ich9, not 'ac97'"),
    ("<audio id='1' type='coreaudio'/>", 7, "<audio type>: 'coreaudio' is a macOS sound "
     "backend, which Linux QEMU does not have; use 'pulseaudio', 'alsa', 'jack', 'sdl', "
     "'spice', 'file' or 'none'"),
    ("<audio id='1' type='sdl' driver='pulseaudio'/>", 7, "<audio type='sdl' driver=>: qemud "
     "does not set SDL's audio driver (an environment variable of QEMU); remove driver= (SDL "
     "picks one) or use that backend directly, e.g. type='pulseaudio'"),
    ("<audio id='1' type='pulseaudio'><input latency='soon'/></audio>", 7, "<audio> input "
     "latency='soon' is not valid (yes/no, a whole number, a format like s16, or a path)"),
    ("<audio id='1' type='alsa'><input voices='many'/></audio>", 7, "<audio> input voices='many' "
     "is not valid (yes/no, a whole number, a format like s16, or a path)"),
    ("<audio id='1' type='alsa'><input bufferCount='3'/></audio>", 7, "<input>: attribute "
     "'bufferCount' is not supported by qemud; remove it or see README for what is"),
    ("<redirdev bus='usb' type='tcp'/>", 7, "<redirdev>: type='tcp' needs <source "
     "service='PORT'/>"),
    ("<redirdev bus='usb' type='vc'/>", 7, "<redirdev type>: 'vc' is not supported; a virtual "
     "console needs a graphical QEMU window, which qemud does not open; use 'pty'"),
    ("<watchdog model='i6300esb' action='dump'/>", 7, "<watchdog action='dump'> needs a memory "
     "dump qemud cannot take; use 'reset', 'poweroff', 'pause' or 'none'"),
    ("<watchdog model='diag288'/>", 7,
     "<watchdog model>: 'diag288' is not allowed; use one of 'i6300esb' or 'ib700'"),
])
def test_device_errors(snippet: str, line: int, message: str) -> None:
    assert issues(domain_xml(f"<devices>\n{snippet}\n</devices>")) == [(line, message)]


def test_watchdogs() -> None:
    d = devices("<watchdog model='i6300esb' action='pause'/><watchdog model='ib700' "
                "action='pause'/>")
    assert values(d, "-device") == ["i6300esb,bus=pci.0,addr=0x2,id=watchdog0", "ib700,id=watchdog1"]
    assert values(d, "-action")[-1] == "watchdog=pause"


# --- features and timers -------------------------------------------------------------------------


@pytest.mark.parametrize(("features", "clock", "cpu"), [
    ("<hyperv mode='custom'><relaxed state='on'/><vapic state='off'/>"
     "<spinlocks state='on' retries='8191'/><vpindex state='on'/><synic state='on'/>"
     "<stimer state='on'><direct state='on'/></stimer><vendor_id state='on' value='abc'/>"
     "</hyperv>", "",
     "qemu64,hv-relaxed=on,hv-spinlocks=0x1fff,hv-vpindex=on,hv-synic=on,hv-stimer=on,"
     "hv-stimer-direct=on,hv-vendor-id=abc"),
    ("<hyperv mode='passthrough'/>", "", "qemu64,hv-passthrough=on"),
    ("<kvm><hidden state='on'/><hint-dedicated state='on'/></kvm><pvspinlock state='off'/>", "",
     "qemu64,kvm=off,kvm-hint-dedicated=on,kvm-pv-unhalt=off"),
    ("", "<timer name='kvmclock' present='no'/><timer name='tsc' frequency='2445406000'/>",
     "qemu64,kvmclock=off,tsc-frequency=2445406000"),  # libvirt: the same
    ("", "<timer name='kvmclock' present='yes'/><timer name='hypervclock' present='yes'/>",
     "qemu64,kvmclock=on,hv-time=on"),  # libvirt: the same
])
def test_cpu_properties(features: str, clock: str, cpu: str) -> None:
    d = model.parse(domain_xml(f"<features>{features}</features><clock offset='utc'>{clock}"
                               "</clock>")).domain
    assert values(d, "-cpu") == [cpu]


@pytest.mark.parametrize(("timers", "globals_"), [
    ("<timer name='pit' tickpolicy='delay'/>", ["kvm-pit.lost_tick_policy=delay"]),
    ("<timer name='pit' tickpolicy='discard'/>", ["kvm-pit.lost_tick_policy=discard"]),
    ("<timer name='pit' tickpolicy='catchup'/>", []),  # libvirt renders nothing either
])
def test_pit_tick_policies(timers: str, globals_: list[str]) -> None:
    d = model.parse(domain_xml(f"<clock offset='utc'>{timers}</clock>")).domain
    assert values(d, "-global") == globals_


# --- clock offsets: libvirt's clock-variable, -absolute, -france, -realtime ----------------

PARIS_NOW = datetime(2009, 2, 14, 0, 31, 30, tzinfo=timezone(timedelta(hours=1)))
"""libvirt's test clock (1234567890, 2009-02-13T23:31:30Z) seen from a host at UTC+1."""


@pytest.mark.parametrize(("clock", "rtc", "env"), [
    ("<clock offset='variable' adjustment='123456' basis='utc'/>",
     "base=2009-02-15T09:49:06", {}),  # libvirt's clock-variable.args
    ("<clock offset='variable' adjustment='123456'/>", "base=2009-02-15T09:49:06", {}),
    ("<clock offset='variable' adjustment='3600' basis='localtime'/>",
     "base=2009-02-14T01:31:30", {}),  # the host's local time (UTC+1) plus an hour
    ("<clock offset='variable' adjustment='-86400'/>", "base=2009-02-12T23:31:30", {}),
    ("<clock offset='utc' adjustment='60'/>", "base=2009-02-13T23:32:30", {}),  # = variable
    ("<clock offset='localtime' adjustment='60'/>", "base=2009-02-14T00:32:30", {}),
    ("<clock offset='utc' adjustment='reset'/>", "base=utc", {}),
    ("<clock offset='absolute' start='253402300799'/>", "base=9999-12-31T23:59:59", {}),
    ("<clock offset='absolute' start='0'/>", "base=1970-01-01T00:00:00", {}),
    ("<clock offset='timezone' timezone='Europe/Paris'/>", "base=localtime",
     {"TZ": "Europe/Paris"}),  # libvirt's clock-france.args: TZ=Europe/Paris, base=localtime
    ("<clock offset='utc'><timer name='rtc' track='realtime'/></clock>", "base=utc,clock=rt", {}),
    ("<clock offset='utc'><timer name='rtc' track='wall' tickpolicy='catchup'/></clock>",
     "base=utc,clock=host,driftfix=slew", {}),
    ("<clock offset='localtime'><timer name='rtc' track='guest'/></clock>",
     "base=localtime,clock=vm", {}),
])
def test_clock_offsets(clock: str, rtc: str, env: dict[str, str]) -> None:
    d = model.parse(domain_xml(clock)).domain
    assert [o[1] for o in model.options(d, now=PARIS_NOW) if o[0] == "-rtc"] == [rtc]
    assert model.environment(d) == env
    again = model.parse(serialize.to_xml(d)).domain  # what the runtime folder keeps
    assert again == d


@pytest.mark.parametrize(("clock", "message"), [
    ("<clock offset='absolute'/>", "<clock>: offset='absolute' needs start= (seconds since "
     "1970 UTC, the RTC's time at every start)"),
    ("<clock offset='absolute' start='253402300800'/>",
     "<clock start>: '253402300800' is too large; the maximum is 253402300799"),
    ("<clock offset='timezone'/>",
     "<clock>: offset='timezone' needs timezone= (like 'Europe/Paris')"),
    ("<clock offset='timezone' timezone='Europe/Paris; rm'/>",
     "<clock timezone>: 'Europe/Paris; rm' has characters or a form that is not allowed here"),
    ("<clock offset='utc' timezone='Europe/Paris'/>",
     "<clock>: timezone goes with offset='timezone', not 'utc'; remove it"),
    ("<clock offset='utc' start='5'/>",
     "<clock>: start goes with offset='absolute', not 'utc'; remove it"),
    ("<clock offset='variable' adjustment='reset'/>",
     "<clock>: adjustment='reset' goes with offset='utc' or 'localtime', not 'variable'; remove it"),
    ("<clock offset='utc' adjustment='soon'/>", "<clock adjustment>: 'soon' is not a whole number"),
    ("<clock offset='variable' adjustment='99999999999'/>",
     "<clock adjustment>: '99999999999' is too large; the maximum is 3162240000"),
    ("<clock offset='utc'><timer name='pit' track='wall'/></clock>",
     "<timer>: only the rtc timer takes track (QEMU's -rtc clock=); remove it"),
    ("<clock offset='utc'><timer name='rtc' track='boot'/></clock>",
     "<timer track>: 'boot' is not allowed; use one of 'guest', 'wall' or 'realtime'"),
])
def test_clock_offset_refusals(clock: str, message: str) -> None:
    assert issues(domain_xml("\n" + clock)) == [(6, message)]


@pytest.mark.parametrize(("graphics", "found"), [
    ("<graphics type='vnc' port='5905'>\n<listen type='address' address='127.0.0.1'/>\n"
     "<listen type='address' address='0.0.0.0'/></graphics>",
     [(9, "a second <listen>: QEMU serves a display on one address only; keep one <listen>")]),
    ("<graphics type='vnc' port='5905' listen='127.0.0.1'>\n"
     "<listen type='address' address='0.0.0.0'/></graphics>",
     [(8, "<graphics listen='127.0.0.1'> and <listen address='0.0.0.0'> disagree (libvirt "
          "refuses this too); make them the same, or drop one")]),
    ("<graphics type='vnc' port='5905' listen='127.0.0.1'>\n"
     "<listen type='address' address='127.0.0.1'/></graphics>", "127.0.0.1:5"),
    ("<graphics type='vnc' port='5905' listen='127.0.0.1'>\n<listen type='address'/></graphics>",
     "127.0.0.1:5"),
])
def test_a_display_listens_on_one_address(graphics: str, found: object) -> None:
    """A local-only display never ends up on another address (libvirt refuses these too)."""
    data = domain_xml("<devices>\n" + graphics + "\n</devices>")
    if isinstance(found, str):
        assert values(model.parse(data).domain, "-vnc") == [found]
    else:
        assert issues(data) == found


@pytest.mark.parametrize(("memory", "apic", "machine", "cpu"), [  # libvirt's eoi-*, machine-core-*
    ("<memory unit='MiB' dumpCore='on'>64</memory>", "<apic eoi='on'/>",
     "pc,acpi=off,dump-guest-core=on", ["qemu64,kvm-pv-eoi=on"]),
    ("<memory unit='MiB' dumpCore='off'>64</memory>", "<apic eoi='off'/>",
     "pc,acpi=off,dump-guest-core=off", ["qemu64,kvm-pv-eoi=off"]),
    ("<memory unit='MiB'>64</memory>", "<apic/>", "pc,acpi=off,dump-guest-core=off", []),
])
def test_dump_core_and_apic_eoi(memory: str, apic: str, machine: str, cpu: list[str]) -> None:
    d = model.parse(domain_xml(f"<features>{apic}</features>", memory=memory)).domain
    assert values(d, "-machine") == [machine]
    assert values(d, "-cpu") == cpu
    assert model.parse(serialize.to_xml(d)).domain == d


def test_dump_core_and_eoi_refuse_other_words() -> None:
    assert issues(domain_xml("\n<features><apic eoi='yes'/></features>")) == [
        (6, "<apic eoi>: 'yes' is not allowed; use 'on' or 'off'")]
    assert issues(domain_xml("\n<features><acpi eoi='on'/></features>")) == [
        (6, "<acpi>: attribute 'eoi' is not supported by qemud; remove it or see README for "
            "what is")]


@pytest.mark.parametrize("action", ["coredump-destroy", "coredump-restart"])
def test_coredump_on_crash_is_refused_with_why(action: str) -> None:
    assert issues(domain_xml(f"\n<on_crash>{action}</on_crash>")) == [
        (6, f"<on_crash>{action}</on_crash>: libvirt dumps the guest's memory to a file first, "
            f"which qemud does not do; use {action.removeprefix('coredump-')!r} (or 'preserve', "
            "to dump it yourself with QMP dump-guest-memory)")]


def test_the_primary_video_is_the_vga_one_as_libvirt_orders_it() -> None:
    """libvirt moves the `primary='yes'` adapter first (the VGA the firmware and VNC show)."""
    d = devices("<video><model type='virtio' heads='1'/></video>"
                "<video><model type='vga' primary='yes'/></video>")
    assert [v.split(",")[0] for v in values(d, "-device")] == ["VGA", "virtio-gpu-pci"]
    assert model.parse(serialize.to_xml(d)).domain == d
    assert [m for _, m in issues(domain_xml(
        "<devices>\n<video><model type='vga' primary='yes'/></video>\n"
        "<video><model type='qxl' primary='yes'/></video>\n</devices>"))] == [
        "a second <video> with primary='yes' (libvirt refuses it too; the first is at line "
        "7); keep one"]
    assert [m for _, m in issues(domain_xml(
        "<devices>\n<video><model type='qxl'/></video>\n<video><model type='none'/></video>"
        "\n</devices>"))] == ["<video><model type='none'> means no adapter at all: it cannot "
                              "be beside others; remove it"]


def test_function_zero_of_a_shared_slot_is_multifunction_as_libvirt_sets_it() -> None:
    d = devices("<interface type='user'><model type='virtio'/><address type='pci' domain='0' "
                "bus='0' slot='5' function='0'/></interface><interface type='user'><model "
                "type='e1000'/><address type='pci' domain='0' bus='0' slot='5' function='1'/>"
                "</interface>")
    nics = [v for v in values(d, "-device") if "netdev=" in v]
    assert "addr=0x5,multifunction=on," in nics[0] and "addr=0x5.0x1," in nics[1]


def test_disks_are_placed_in_libvirts_target_order() -> None:
    """libvirt's disk-order: vdb written before vda still gets the later slot (the guest's
    /dev/vda stays the file's vda); IDE disks likewise, on the command line too."""
    d = devices("<disk device='cdrom'><target dev='hdc' bus='ide'/></disk>"
                "<disk><source file='/b'/><target dev='vdb' bus='virtio'/></disk>"
                "<disk><source file='/a'/><target dev='hda' bus='ide'/></disk>"
                "<disk><source file='/v'/><target dev='vda' bus='virtio'/></disk>")
    assert [v.split(",drive=")[0] for v in values(d, "-device")] == [
        "ide-hd,bus=ide.0,unit=0", "ide-cd,bus=ide.1,unit=0",
        "virtio-blk-pci,bus=pci.0,addr=0x2", "virtio-blk-pci,bus=pci.0,addr=0x3"]
    assert [v.rsplit("id=", 1)[1] for v in values(d, "-device")][2:] == ["virtio-disk0",
                                                                         "virtio-disk1"]


def test_an_optional_image_that_is_missing_leaves_its_drive_empty() -> None:
    """libvirt's startupPolicy='optional': a deleted install ISO does not keep the VM down."""
    d = devices("<disk device='cdrom'><source file='/gone.iso' startupPolicy='optional'/>"
                "<target dev='hdc' bus='ide'/></disk>"
                "<disk device='cdrom'><source file='/here.iso' startupPolicy='optional'/>"
                "<target dev='hdd' bus='ide'/></disk>")
    started, dropped = model.without_missing(d, lambda path: path == "/here.iso")
    assert [x.target_dev for x in dropped] == ["hdc"]
    assert values(started, "-drive") == ["if=none,id=drive-ide0-1-0,readonly=on",
                                         "file=/here.iso,format=raw,if=none,id=drive-ide0-1-1,"
                                         "readonly=on"]
    assert model.without_missing(d, lambda path: True) == (d, [])
    assert model.parse(serialize.to_xml(d)).domain == d
    assert [m for _, m in issues(domain_xml(
        "<devices>\n<disk><source file='/a' startupPolicy='optional'/><target dev='vda'/>"
        "</disk>\n</devices>"))] == ["<disk>: startupPolicy 'requisite' and 'optional' are for "
                                      "a cdrom or floppy (libvirt refuses them on a disk too); "
                                      "remove it"]


def test_a_shareable_qcow2_is_refused_as_libvirt_does() -> None:
    assert [m for _, m in issues(domain_xml(
        "<devices>\n<disk><driver name='qemu' type='qcow2'/><source file='/a.qcow2'/>"
        "<target dev='vda'/><shareable/></disk>\n</devices>"))] == [
        "<disk>: <shareable/> needs a raw image: two guests writing one qcow2 corrupt it "
        "(libvirt and QEMU refuse it too); use type='raw'"]


def test_smm_and_kvm_only_hyperv() -> None:
    d = model.parse(domain_xml("<features><smm state='on'/></features>")).domain
    assert values(d, "-machine") == ["pc,acpi=off,smm=on,dump-guest-core=off"]
    assert issues(domain_xml("<features>\n<hyperv><vpindex state='on'/></hyperv>\n</features>",
                             kind="qemu")) == [
        (6, "<hyperv> vpindex need KVM (QEMU cannot emulate them under <domain type='qemu'>); "
            "use type='kvm' or turn them off")]


# --- disks ---------------------------------------------------------------------------------------


def test_disk_driver_options_shareable_and_wwn() -> None:
    d = devices("<controller type='scsi' model='virtio-scsi'/>"
                "<disk><driver name='qemu' cache='none' io='native' discard='unmap' "
                "detect_zeroes='unmap'/><source file='/a'/><target dev='sda' bus='scsi'/>"
                "<shareable/><wwn>5000C50015EA71AD</wwn></disk>")
    assert values(d, "-drive") == ["file=/a,format=raw,if=none,id=drive-scsi0-0-0-0,cache=none,"
                                   "aio=native,discard=unmap,detect-zeroes=unmap"]
    assert values(d, "-device")[-1] == ("scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,"
                                        "drive=drive-scsi0-0-0-0,id=scsi0-0-0-0,"
                                        "wwn=0x5000c50015ea71ad,share-rw=on")


# --- drive addresses and controllers (libvirt's controller-virtio-scsi, usb-ich9-companion) ---


def test_drive_addresses_and_scsi_controllers_as_libvirt() -> None:
    d = devices("""
        <controller type='scsi' index='0' model='virtio-scsi'/>
        <controller type='scsi' index='1' model='virtio-scsi'><driver queues='8'/></controller>
        <controller type='scsi' index='2' model='virtio-scsi'>
          <driver cmd_per_lun='50' max_sectors='512' ioeventfd='on' iothread='1' iommu='on'/>
        </controller>
        <controller type='scsi' index='3' model='lsilogic'/>
        <disk><source file='/a'/><target dev='sda' bus='scsi'/>
          <address type='drive' controller='1' bus='0' target='2' unit='3'/></disk>
        <disk><source file='/b'/><target dev='sdb' bus='scsi'/>
          <address type='drive' controller='3' bus='0' target='0' unit='5'/></disk>
        <disk><source file='/c'/><target dev='sdc' bus='scsi'/>
          <address type='drive' controller='2' bus='0' target='0' unit='0'/></disk>
        <disk><source file='/d'/><target dev='sdh' bus='scsi'/></disk>
        <disk><source file='/e'/><target dev='hdc' bus='ide'/>
          <address type='drive' controller='0' bus='1' target='0' unit='1'/></disk>
        <disk><source file='/f'/><target dev='sdz' bus='sata'/>
          <address type='drive' controller='0' bus='0' target='0' unit='4'/></disk>
    """, extra="<iothreads>1</iothreads>")
    got = values(d, "-device")
    assert got[:5] == [
        "virtio-scsi-pci,bus=pci.0,addr=0x2,id=scsi0",
        "virtio-scsi-pci,bus=pci.0,addr=0x3,id=scsi1,num_queues=8",
        "virtio-scsi-pci,iommu_platform=on,iothread=iothread1,bus=pci.0,addr=0x4,id=scsi2,"
        "cmd_per_lun=50,max_sectors=512,ioeventfd=on",
        "lsi,bus=pci.0,addr=0x5,id=scsi3",
        "ahci,bus=pci.0,addr=0x6,id=sata0"]
    disks = [v for v in got if v.startswith(("scsi-hd", "ide-hd"))]
    assert [v.split(",drive=")[0] for v in disks] == [
        "scsi-hd,bus=scsi1.0,channel=0,scsi-id=2,lun=3",
        "scsi-hd,bus=scsi3.0,scsi-id=5",
        "scsi-hd,bus=scsi2.0,channel=0,scsi-id=0,lun=0",
        "scsi-hd,bus=scsi1.0,channel=0,scsi-id=0,lun=0",  # sdh: controller 1, unit 0 (7 a bus)
        "ide-hd,bus=ide.1,unit=1",
        "ide-hd,bus=sata0.4"]
    assert [v.rsplit(",id=", 1)[1] for v in disks] == [
        "scsi1-0-2-3", "scsi3-0-5", "scsi2-0-0-0", "scsi1-0-0-0", "ide0-1-1", "sata0-0-4"]
    assert model.parse(serialize.to_xml(d)).domain == d


def test_a_scsi_disk_on_an_undeclared_controller_gets_one_as_libvirt_adds_them() -> None:
    """sdi is libvirt's controller 1, unit 1; qemud's default model stays virtio-scsi."""
    d = devices("<disk><source file='/a'/><target dev='sdi' bus='scsi'/></disk>")
    assert values(d, "-device")[:2] == ["virtio-scsi-pci,bus=pci.0,addr=0x2,id=scsi1",
                                        "scsi-hd,bus=scsi1.0,channel=0,scsi-id=0,lun=1,"
                                        "drive=drive-scsi1-0-0-1,id=scsi1-0-0-1"]


@pytest.mark.parametrize(("snippet", "message"), [
    ("<controller type='scsi' model='lsilogic'/><disk><source file='/a'/>"
     "<target dev='sda' bus='scsi'/>"
     "<address type='drive' controller='0' bus='0' target='0' unit='8'/></disk>",
     "<address type='drive' controller='0' bus='0' target='0' unit='8'>: the scsi controller "
     "has bus 0-0, target 0-0 and unit 0-7; use an address inside those"),
    ("<disk><source file='/a'/><target dev='sda' bus='sata'/>"
     "<address type='drive' controller='1' bus='0' target='0' unit='0'/></disk>",
     "<address type='drive' controller='1' bus='0' target='0' unit='0'>: a sata disk goes on "
     "controller 0 (QEMU's machine has one SATA controller); use controller='0'"),
    ("<disk><source file='/a'/><target dev='hda' bus='ide'/>"
     "<address type='drive' controller='0' bus='2' target='0' unit='0'/></disk>",
     "<address type='drive' controller='0' bus='2' target='0' unit='0'>: the ide controller "
     "has bus 0-1, target 0-0 and unit 0-1; use an address inside those"),
    ("<disk><source file='/a'/><target dev='sdb' bus='scsi'/></disk>"
     "<disk><source file='/b'/><target dev='sdc' bus='scsi'/>"
     "<address type='drive' controller='0' bus='0' target='0' unit='1'/></disk>",
     "<address type='drive' controller='0' bus='0' target='0' unit='1'>: disk sdb sits at the "
     "same address; give each disk its own unit"),
    ("<disk><source file='/a'/><target dev='vda' bus='virtio'/>"
     "<address type='drive' controller='0' bus='0' target='0' unit='1'/></disk>",
     "<disk>: a disk on bus='virtio' has no drive address; remove <address type='drive'>"),
])
def test_drive_addresses_qemu_cannot_hold_are_refused(snippet: str, message: str) -> None:
    found = issues(domain_xml("<devices>\n" + snippet + "\n</devices>"))
    assert [m for _, m in found] == [message]


def test_usb_companions_as_virt_manager_wrote_them() -> None:
    d = devices("""
        <controller type='usb' index='0' model='ich9-ehci1'>
          <address type='pci' domain='0' bus='0' slot='4' function='7'/></controller>
        <controller type='usb' index='0' model='ich9-uhci1'><master startport='0'/>
          <address type='pci' domain='0' bus='0' slot='4' function='0' multifunction='on'/>
        </controller>
        <controller type='usb' index='0' model='ich9-uhci2'><master startport='2'/>
          <address type='pci' domain='0' bus='0' slot='4' function='1'/></controller>
        <controller type='usb' index='0' model='ich9-uhci3'><master startport='4'/>
          <address type='pci' domain='0' bus='0' slot='4' function='2'/></controller>
    """)
    assert values(d, "-device") == [  # libvirt's usb-ich9-companion.args
        "ich9-usb-ehci1,bus=pci.0,addr=0x4.0x7,id=usb",
        "ich9-usb-uhci1,masterbus=usb.0,firstport=0,bus=pci.0,addr=0x4,multifunction=on",
        "ich9-usb-uhci2,masterbus=usb.0,firstport=2,bus=pci.0,addr=0x4.0x1",
        "ich9-usb-uhci3,masterbus=usb.0,firstport=4,bus=pci.0,addr=0x4.0x2"]
    assert model.parse(serialize.to_xml(d)).domain == d


@pytest.mark.parametrize(("machine", "snippet", "message"), [
    ("pc", "<controller type='pci' index='1' model='pci-bridge'/><controller type='pci' "
     "index='1' model='pci-bridge'/>", "a second <controller type='pci' index='1'> (libvirt "
     "refuses it too; QEMU would see one id twice); give it another index or remove it"),
    ("pc", "<controller type='sata' index='1'/>", "<controller type='sata' index='1'>: qemud "
     "renders one SATA controller, index 0 (a second one would be dropped); put its devices "
     "on index 0 or remove it"),
    ("pc", "<controller type='usb' index='2' model='ehci'/>", "<controller type='usb' "
     "index='2'>: qemud renders one USB controller, index 0 (a second one would be dropped); "
     "put its devices on index 0 or remove it"),
    ("q35", "<controller type='ide' index='0'/>", "<controller type='ide'>: machine 'q35' has "
     "no IDE controller; use SATA (built in) or remove it"),
    ("pc", "<controller type='usb' model='ich9-ehci1'/><controller type='usb' index='0' "
     "model='ehci'/>", "<controller type='usb' model='ehci'>: a second USB controller at index "
     "0 is a companion of the first: give it <master startport=> (as virt-manager writes "
     "ich9-uhci1..3), or remove it"),
    ("pc", "<controller type='usb' model='ich9-ehci1'/><controller type='usb' model='ehci'/>",
     "<controller type='usb' index='1'>: qemud renders one USB controller, index 0 (a second "
     "one would be dropped); put its devices on index 0 or remove it"),  # libvirt's autoindex
    ("pc", "<controller type='usb' model='qemu-xhci'/><controller type='usb' index='0' "
     "model='ich9-uhci1'><master startport='0'/></controller>", "<master startport>: companions go beside an "
     "ich9-ehci1 USB controller; add <controller type='usb' index='0' model='ich9-ehci1'/>"),
])
def test_controllers_qemud_would_drop_are_refused(machine: str, snippet: str,
                                                   message: str) -> None:
    found = issues(domain_xml("<devices>\n" + snippet + "\n</devices>",
                              os=f"<os><type machine='{machine}'>hvm</type></os>"))
    assert [m for _, m in found] == [message]


def test_declared_controllers_are_rendered_without_devices_on_them() -> None:
    """libvirt renders a declared AHCI, virtio-scsi with its options and a ccid reader."""
    d = devices("<controller type='sata' index='0'/><controller type='ccid' index='0'/>"
                "<controller type='scsi' model='virtio-scsi'><driver queues='4'/></controller>"
                "<controller type='pci' index='0' model='pci-root'><target hotplug='off'/>"
                "</controller>")
    got = values(d, "-device")
    assert "virtio-scsi-pci,bus=pci.0,addr=0x3,id=scsi0,num_queues=4" in got
    assert any(v.startswith("ahci,") for v in got)
    assert any(v.startswith("usb-ccid,id=ccid0,bus=usb.0") for v in got)
    assert values(d, "-global") == ["PIIX4_PM.acpi-root-pci-hotplug=off"]
    q35 = devices("<controller type='pci' index='0' model='pcie-root'/>"
                  "<controller type='pci' index='1' model='pcie-root-port'><target hotplug='off'/>"
                  "</controller>", machine="q35")
    assert values(q35, "-device")[0].startswith("pcie-root-port,port=0x8,chassis=1,id=pci.1,"
                                               "hotplug=off,")


def test_usb_companions_without_addresses_share_their_ehcis_slot_as_libvirt_packs_them() -> None:
    """libvirt's usb-ich9-ehci-addr: the EHCI at function 7, the UHCIs at 0-2 of one slot."""
    d = devices("<controller type='usb' index='0' model='ich9-ehci1'/>"
                "<controller type='usb' index='0' model='ich9-uhci1'/>"
                "<controller type='usb' index='0' model='ich9-uhci2'/>"
                "<controller type='usb' index='0' model='ich9-uhci3'/>")
    assert values(d, "-device") == [
        "ich9-usb-ehci1,bus=pci.0,addr=0x2.0x7,id=usb",
        "ich9-usb-uhci1,masterbus=usb.0,firstport=0,bus=pci.0,addr=0x2,multifunction=on",
        "ich9-usb-uhci2,masterbus=usb.0,firstport=2,bus=pci.0,addr=0x2.0x1",
        "ich9-usb-uhci3,masterbus=usb.0,firstport=4,bus=pci.0,addr=0x2.0x2"]
    assert [m for _, m in issues(domain_xml(
        "<devices>\n<controller type='usb' index='0' model='ich9-ehci1'/>\n<controller "
        "type='usb' index='0' model='ich9-uhci1'><master startport='8'/></controller>\n"
        "</devices>"))] == ["<master startport>: '8' is too large; the maximum is 4"]


def test_iotune_becomes_drive_throttling_in_libvirts_order() -> None:
    """libvirt (before -blockdev) wrote `<iotune>` as `-drive throttling.*`; so does qemud.

    libvirt 9.0 sets the same limits over QMP (block_set_io_throttle) before the guest runs.
    """
    d = devices("""
        <disk><source file='/a'/><target dev='vda' bus='virtio'/><iotune>
          <read_bytes_sec>5000</read_bytes_sec><write_bytes_sec>5500</write_bytes_sec>
          <total_iops_sec>6000</total_iops_sec><read_bytes_sec_max>6000</read_bytes_sec_max>
          <total_iops_sec_max>7000</total_iops_sec_max><size_iops_sec>2000</size_iops_sec>
          <read_bytes_sec_max_length>3</read_bytes_sec_max_length>
          <total_iops_sec_max_length>5</total_iops_sec_max_length><write_iops_sec>0</write_iops_sec>
          <group_name>a,b</group_name></iotune></disk>
        <disk><source file='/b'/><target dev='vdb' bus='virtio'/><iotune>
          <total_bytes_sec>1</total_bytes_sec></iotune></disk>""")
    assert values(d, "-drive") == [
        "file=/a,format=raw,if=none,id=drive-virtio-disk0,throttling.bps-read=5000,"
        "throttling.bps-write=5500,throttling.iops-total=6000,throttling.bps-read-max=6000,"
        "throttling.iops-total-max=7000,throttling.iops-size=2000,throttling.group=a,,b,"
        "throttling.bps-read-max-length=3,throttling.iops-total-max-length=5",
        "file=/b,format=raw,if=none,id=drive-virtio-disk1,throttling.bps-total=1"]
    text = model.to_xml(d)
    assert text.count(b"<iotune>") == 2 and model.parse(text).domain == d


def test_intel_iommu_first_of_the_devices_with_libvirts_switches() -> None:
    d = devices("""
        <interface type='user'><model type='virtio'/></interface>
        <iommu model='intel'><driver intremap='on' caching_mode='on' iotlb='off'
          aw_bits='48'/></iommu>""", machine="q35",
                extra="<features><acpi/><ioapic driver='qemu'/></features>")
    argv = model.command_line(d)
    assert "q35,kernel_irqchip=split,dump-guest-core=off" in argv
    first = argv.index("-device")
    assert argv[first + 1] == ("intel-iommu,id=iommu0,intremap=on,caching-mode=on,"
                               "device-iotlb=off,aw-bits=48")
    assert model.parse(model.to_xml(d)).domain == d


def test_virtio_iommu_is_an_integrated_device_after_the_video() -> None:
    d = devices("<video><model type='vga'/></video><iommu model='virtio'/>", machine="q35",
                extra="<features><acpi/><ioapic driver='kvm'/></features>")
    assert "virtio-iommu,id=iommu0,bus=pcie.0,addr=0x2" in values(d, "-device")
    assert "q35,kernel_irqchip=on,dump-guest-core=off" in values(d, "-machine")
    assert model.parse(model.to_xml(d)).domain == d


@pytest.mark.parametrize(("snippet", "machine", "extra", "kind", "expected"), [
    ("<iommu model='intel'/>", "pc", "<features><acpi/></features>", "kvm",
     (7, "<iommu model='intel'> needs machine 'q35' (the PC machine has no IOMMU)")),
    ("<iommu model='virtio'/>", "q35", "", "kvm",
     (7, "<iommu model='virtio'> needs ACPI (the guest finds it through its VIOT table); add "
         "<features><acpi/></features>")),
    ("<iommu model='intel'><driver intremap='on'/></iommu>", "q35", "<features><acpi/></features>",
     "kvm", (7, "<driver intremap='on'> needs the I/O APIC emulated by QEMU; add "
                "<ioapic driver='qemu'/> to <features>")),
    ("<iommu model='intel'><driver intremap='on' eim='on'/></iommu>", "q35",
     "<features><acpi/><ioapic driver='qemu'/></features>", "qemu",
     (7, "<driver eim='on'> needs KVM (QEMU refuses extended interrupt mode under <domain "
         "type='qemu'>); use type='kvm' or remove it")),
    ("<iommu model='intel'><driver eim='on'/></iommu>", "q35", "<features><acpi/></features>",
     "kvm", (7, "<iommu>: <driver eim='on'> needs intremap='on' (extended interrupt mode is "
                "part of interrupt remapping)")),
    ("<iommu model='virtio'><driver caching_mode='on'/></iommu>", "q35",
     "<features><acpi/></features>", "kvm",
     (7, "<iommu>: <iommu model='virtio'> has no <driver> settings (they are intel-iommu's); "
         "remove them")),
    ("<iommu model='intel'><driver aw_bits='40'/></iommu>", "q35", "<features><acpi/></features>",
     "kvm", (8, "<driver aw_bits>: 40 is not allowed; use one of 39 or 48")),
    ("<iommu model='virtio'/><iommu model='virtio'/>", "q35", "<features><acpi/></features>",
     "kvm", (8, "more than one <iommu> is not supported; keep one")),
    ("<iommu model='smmuv3'/>", "q35", "<features><acpi/></features>", "kvm",
     (7, "<iommu model>: 'smmuv3' is not allowed; use one of 'intel' or 'virtio'")),
])
def test_iommu_rules_name_the_line(snippet: str, machine: str, extra: str, kind: str,
                                   expected: tuple[int, str]) -> None:
    data = domain_xml(extra + "<devices>\n" + snippet.replace("/><", "/>\n<")
                      .replace("><driver", ">\n<driver") + "\n</devices>", kind=kind,
                      os=f"<os><type machine='{machine}'>hvm</type></os>")
    assert expected in issues(data)


def test_memballoon_options_as_libvirt_renders_them() -> None:
    d = devices("""<memballoon model='virtio' autodeflate='on' freePageReporting='off'>
        <stats period='10'/><driver iommu='on' packed='on'/></memballoon>""")
    assert values(d, "-device")[-1] == ("virtio-balloon-pci,iommu_platform=on,packed=on,"
                                        "bus=pci.0,addr=0x2,id=balloon0,deflate-on-oom=on,"
                                        "free-page-reporting=off,"
                                        "guest-stats-polling-interval=10")
    assert model.parse(model.to_xml(d)).domain == d
    data = domain_xml("<devices>\n<memballoon model='none' autodeflate='on'/>\n</devices>")
    assert issues(data) == [(7, "<memballoon model='none'> has no balloon to deflate or report "
                                "through; remove autodeflate, freePageReporting and <stats>")]


def test_vnc_share_policy() -> None:
    d = devices("<graphics type='vnc' port='5901' sharePolicy='ignore'/>")
    assert values(d, "-vnc") == ["127.0.0.1:1,share=ignore"]
    assert model.parse(model.to_xml(d)).domain == d
    data = domain_xml("<devices>\n<graphics type='spice' port='5901' sharePolicy='ignore'/>\n"
                      "</devices>")
    assert issues(data) == [(7, "<graphics>: sharePolicy is a VNC setting; spice has none")]


def test_dmi_to_pci_bridge_at_ich9s_slot_with_conventional_devices_behind_it() -> None:
    """libvirt's older q35 layout (q35-pcie.xml): i82801b11 at 00:1e.0, a pci-bridge on it."""
    d = devices("""
        <controller type='pci' model='pcie-root'/>
        <controller type='pci' model='dmi-to-pci-bridge'/>
        <controller type='pci' model='pci-bridge'/>
        <interface type='user'><model type='e1000'/></interface>""", machine="q35")
    devs = values(d, "-device")
    assert "i82801b11-bridge,id=pci.1,bus=pcie.0,addr=0x1e" in devs
    assert "pci-bridge,chassis_nr=2,id=pci.2,bus=pci.1,addr=0x0" in devs
    assert any(v.startswith("e1000,") and "bus=pci.1,addr=0x1" in v for v in devs), devs


@pytest.mark.parametrize(("machine", "snippet", "expected"), [
    ("pc", "<controller type='pci' index='1' model='pcie-root-port'/>",
     "<controller type='pci' model='pcie-root-port'> needs the PCI Express root of machine "
     "'q35'; on 'pc' use model='pci-bridge'"),
    ("pc", "<controller type='pci' index='0' model='pcie-root'/>",
     "<controller type='pci' model='pcie-root'> needs the PCI Express root of machine 'q35'; on "
     "'pc' use model='pci-root'"),
    ("q35", "<controller type='pci' index='0' model='pci-root'/>",
     "machine 'q35' has a PCI Express root: use model='pcie-root' for the controller with "
     "index='0'"),
    ("q35", "<controller type='pci' index='2' model='pcie-root'/>",
     "<controller model='pcie-root'> is the root bus: its index is 0"),
])
def test_pci_controllers_fit_the_machine(machine: str, snippet: str, expected: str) -> None:
    data = domain_xml("<devices>\n" + snippet + "\n</devices>",
                      os=f"<os><type machine='{machine}'>hvm</type></os>")
    assert issues(data) == [(7, expected)]


def test_genid_and_refused_top_level_elements() -> None:
    d = model.parse(domain_xml("<genid>e9392370-2917-565e-692b-d057f46512d6</genid>")).domain
    assert "vmgenid,guid=e9392370-2917-565e-692b-d057f46512d6,id=vmgenid0" in values(d, "-device")
    assert model.parse(model.to_xml(d)).domain == d
    data = domain_xml("<genid/>\n<idmap><uid start='0' target='1000' count='10'/></idmap>\n"
                      "<launchSecurity type='sev'/>")
    assert issues(data) == [
        (6, "<genid/> without a value: qemud does not write to your file; give the GUID (e.g. "
            "from uuidgen): <genid>GUID</genid>"),
        (7, "<idmap> is not supported: it maps user ids for containers (libvirt's LXC driver); "
            "a QEMU guest has no use for it; remove it"),
        (8, "<launchSecurity> is not supported: memory encryption (AMD SEV) needs host firmware "
            "and keys qemud does not manage; remove it")]


@pytest.mark.parametrize(("extra", "iothreads"), [
    ("<iothreadids><iothread id='1'/><iothread id='2'/></iothreadids>", 2),
    ("<iothreads>4</iothreads><iothreadids><iothread id='2'/><iothread id='1'/></iothreadids>", 4),
])
def test_iothreadids_naming_threads_one_to_n_are_accepted(extra: str, iothreads: int) -> None:
    assert model.parse(domain_xml(extra)).domain.iothreads == iothreads


def test_other_iothreadids_are_refused_with_why() -> None:
    data = domain_xml("<iothreads>2</iothreads>\n<iothreadids>\n<iothread id='5'/>\n"
                      "<iothread id='6' thread_pool_max='4'/>\n</iothreadids>")
    assert issues(data) == [
        (7, "<iothreadids>: qemud names its I/O threads 1 to N; list ids 1 to 2 or remove "
            "<iothreadids> and keep <iothreads>2</iothreads>"),
        (9, "<iothread thread_pool_max>: I/O thread pool sizes are not supported by qemud; "
            "remove it")]


def test_rotation_rate_on_ide_sata_and_scsi_hard_disks() -> None:
    d = devices("""<disk><source file='/a'/><target dev='sda' bus='scsi' rotation_rate='7200'/></disk>
        <disk><source file='/b'/><target dev='hda' bus='ide' rotation_rate='1'/></disk>""")
    devs = values(d, "-device")
    assert any(v.startswith("scsi-hd,") and v.endswith(",rotation_rate=7200") for v in devs)
    assert any(v.startswith("ide-hd,") and v.endswith(",rotation_rate=1") for v in devs)
    assert model.parse(model.to_xml(d)).domain == d
    data = domain_xml("<devices>\n<disk><source file='/a'/><target dev='vda' bus='virtio' "
                      "rotation_rate='1'/></disk>\n</devices>")
    assert issues(data) == [(7, "<disk>: <target rotation_rate> is for ide, sata and scsi hard "
                                "disks (QEMU has it on ide-hd and scsi-hd only); remove it")]


def test_any_emulator_binary_is_taken_and_checked_through_host_facts() -> None:
    """RHEL's /usr/libexec/qemu-kvm, as any other program: the host facts say if it runs."""
    data = domain_xml("<devices>\n<emulator>/usr/libexec/qemu-kvm</emulator>\n</devices>",
                      os="<os><type machine='pc-q35-rhel9.2.0'>hvm</type></os>")
    asked: list[tuple[str, str]] = []

    def machines(emulator: str, machine: str) -> str | None:
        asked.append((emulator, machine))
        return None

    facts = HostFacts(check_machine=machines, check_emulator=lambda path: None)
    d = model.parse(data, host=facts).domain
    assert model.command_line(d)[0] == "/usr/libexec/qemu-kvm"
    assert asked == [("/usr/libexec/qemu-kvm", "pc-q35-rhel9.2.0")]
    missing = HostFacts(check_machine=machines, check_emulator=lambda path: f"{path} is gone")
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data, host=missing)
    assert [(i.line, i.message) for i in info.value.issues] == [
        (7, "<emulator>: /usr/libexec/qemu-kvm is gone")]
    assert len(asked) == 1  # a program that cannot run is not asked for its machine types


# --- PCI topology --------------------------------------------------------------------------------


def test_q35_root_ports_are_packed_and_devices_take_one_each() -> None:
    d = devices("""
        <controller type='pci' index='0' model='pcie-root'/>
        <controller type='pci' index='1' model='pcie-root-port'/>
        <controller type='pci' index='2' model='pcie-root-port'/>
        <controller type='pci' index='3' model='pcie-root-port'>
          <target chassis='9' port='0x20'/></controller>
        <interface type='user'><model type='virtio'/></interface>
        <disk><source file='/a'/><target dev='vda'/></disk>
        <video><model type='virtio'/></video>""", "q35")
    assert values(d, "-device") == [
        "pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,addr=0x2,multifunction=on",
        "pcie-root-port,port=0x11,chassis=2,id=pci.2,bus=pcie.0,addr=0x2.0x1",
        "pcie-root-port,port=0x20,chassis=9,id=pci.3,bus=pcie.0,addr=0x2.0x2",
        "virtio-blk-pci,bus=pci.2,addr=0x0,drive=drive-virtio-disk0,id=virtio-disk0",
        "virtio-net-pci,bus=pci.1,addr=0x0,netdev=hostnet0,id=net0,mac=" +
        values(d, "-device")[4].rsplit("mac=", 1)[1],
        "virtio-vga,bus=pcie.0,addr=0x1,id=video0,max_outputs=1"]


@pytest.mark.parametrize(("snippet", "message"), [
    ("<disk><source file='/a'/><target dev='vda'/>"
     "<address type='pci' bus='0' slot='0x01' function='0'/></disk>",
     "device virtio-disk0: slot 0x01 of bus 0 belongs to the chipset; use another slot"),
    ("<disk><source file='/a'/><target dev='vda'/><address type='pci' slot='4'/></disk>"
     "<interface type='user'><address type='pci' slot='4'/></interface>",
     "device virtio-disk0: PCI address 00:04.0 is used by two devices"),
    ("<controller type='pci' index='1' model='pcie-root-port'/>"
     "<disk><source file='/a'/><target dev='vda'/><address type='pci' bus='1' slot='2'/></disk>",
     "device virtio-disk0: a pcie-root-port has only slot 0, not 0x02"),
])
def test_pci_address_errors(snippet: str, message: str) -> None:
    machine = "q35" if "pcie" in snippet else "pc"
    found = issues(domain_xml(f"<devices>\n{snippet}\n</devices>",
                              os=f"<os><type machine='{machine}'>hvm</type></os>"))
    assert [m for _, m in found] == [message]


def test_an_address_on_an_undeclared_bus_adds_its_controller_like_libvirt() -> None:
    d = devices("<interface type='user'><address type='pci' bus='0x03' slot='0'/></interface>",
                "q35")
    assert values(d, "-device")[0] == ("pcie-root-port,port=0x8,chassis=3,id=pci.3,bus=pcie.0,"
                                       "addr=0x1")


def test_assign_is_pure_and_keeps_explicit_addresses() -> None:
    reqs = [pci.Request("a", "pci", PciAddress(slot=5)), pci.Request("b", "pci")]
    placed = pci.assign(reqs, q35=False)
    assert placed.addresses == {"a": PciAddress(slot=5), "b": PciAddress(slot=2)}
    assert pci.render(PciAddress(bus=2, slot=1, function=3), q35=True) == "bus=pci.2,addr=0x1.0x3"


# --- memory, lifecycle, vcpu ------------------------------------------------------------------------


BALLOON = "<devices><memballoon model='virtio'/></devices>"


def test_current_memory_is_the_balloon_target() -> None:
    d = model.parse(domain_xml("<currentMemory unit='MiB'>32</currentMemory>" + BALLOON)).domain
    assert balloon_target(d) == 32 * 1024**2
    same = model.parse(domain_xml("<currentMemory unit='MiB'>64</currentMemory>")).domain
    assert balloon_target(same) is None


@pytest.mark.parametrize("balloon", ["", "<devices><memballoon model='none'/></devices>"])
def test_current_memory_below_memory_without_a_balloon_is_refused_with_its_line(
        balloon: str) -> None:
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(domain_xml("\n<currentMemory unit='MiB'>32</currentMemory>" + balloon))
    [issue] = info.value.issues
    assert "add <memballoon model='virtio'/>" in issue.message
    text = domain_xml("\n<currentMemory unit='MiB'>32</currentMemory>" + balloon)
    assert issue.line is not None
    assert text.splitlines()[issue.line - 1].strip().startswith(b"<currentMemory")


def test_vcpu_placement_static_is_accepted() -> None:
    d = model.parse(domain_xml("<vcpu placement='static' current='1'>2</vcpu>")).domain
    assert values(d, "-smp") == ["1,maxcpus=2"]


# --- UEFI ------------------------------------------------------------------------------------------

SECURE = """{"interface-types": ["uefi"], "mapping": {"device": "flash",
  "executable": {"filename": "/fw/CODE.ms.fd", "format": "raw"},
  "nvram-template": {"filename": "/fw/VARS.ms.fd", "format": "raw"}},
  "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
  "features": ["enrolled-keys", "requires-smm", "secure-boot"]}"""
PLAIN = """{"interface-types": ["uefi"], "mapping": {"device": "flash",
  "executable": {"filename": "/fw/CODE.fd", "format": "raw"},
  "nvram-template": {"filename": "/fw/VARS.fd", "format": "raw"}},
  "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}],
  "features": []}"""
BIOS = """{"interface-types": ["bios"], "mapping": {"device": "memory", "filename": "/b"},
  "targets": [{"architecture": "x86_64", "machines": ["pc-*"]}], "features": []}"""
DESCRIPTORS = [d for d in (parse_descriptor("40-secure.json", SECURE),
                           parse_descriptor("50-bios.json", BIOS),
                           parse_descriptor("60-plain.json", PLAIN)) if d is not None]


def efi(machine: str, extra: str = "") -> Domain:
    """A domain with <os firmware='efi'> and `extra` inside <os>."""
    return model.parse(domain_xml(os=f"<os firmware='efi'><type machine='{machine}'>hvm</type>"
                                     f"{extra}</os>")).domain


def test_descriptors_parse_and_bios_ones_are_skipped() -> None:
    assert [d.name for d in DESCRIPTORS] == ["40-secure.json", "60-plain.json"]
    with pytest.raises(ValueError, match="not valid"):
        parse_descriptor("x.json", "{")


def test_efi_picks_the_first_fitting_descriptor_like_libvirt() -> None:
    d = efi("q35")
    argv = model.command_line(d, RUNTIME, DESCRIPTORS)
    assert "driver=file,filename=/fw/CODE.ms.fd,node-name=pflash0-file,read-only=on" in argv
    assert "driver=file,filename=/state/u/VARS.fd,node-name=pflash1-file" in argv
    assert values(d, "-machine") == ["q35,acpi=off,dump-guest-core=off,pflash0=pflash0,"
                                     "pflash1=pflash1"]  # without descriptors: no SMM known
    assert "q35,acpi=off,smm=on,dump-guest-core=off,pflash0=pflash0,pflash1=pflash1" in argv
    assert "driver=cfi.pflash01,property=secure,value=on" in argv
    fw = choose(d, DESCRIPTORS, Path("/state/u"))
    assert fw is not None and fw.template == Path("/fw/VARS.ms.fd")


def test_an_explicit_loader_takes_its_descriptors_template_as_libvirt_does() -> None:
    """Reviewed: `<loader>` + an `<nvram>` not made yet (no template=) failed every start."""
    os_ = ("<os><type machine='q35'>hvm</type><loader readonly='yes' type='pflash'>/fw/CODE.fd"
           "</loader><nvram>/vms/a_VARS.fd</nvram></os>")
    d = model.parse(domain_xml(os=os_)).domain
    assert model.uses_uefi(d)
    fw = choose(d, DESCRIPTORS, None)
    assert fw is not None and (fw.template, fw.vars) == (Path("/fw/VARS.fd"),
                                                         Path("/vms/a_VARS.fd"))
    own = model.parse(domain_xml(os=os_.replace("<nvram>", "<nvram template='/t.fd'>"))).domain
    fw = choose(own, DESCRIPTORS, None)
    assert fw is not None and fw.template == Path("/t.fd")  # the file's own wins
    other = model.parse(domain_xml(os=os_.replace("/fw/CODE.fd", "/mine/CODE.fd"))).domain
    fw = choose(other, DESCRIPTORS, None)
    assert fw is not None and fw.template is None  # no descriptor names it


def test_efi_feature_wishes_and_machine_choose_the_descriptor() -> None:
    no_sb = efi("q35", "<firmware><feature enabled='no' name='secure-boot'/></firmware>")
    assert "driver=file,filename=/fw/CODE.fd,node-name=pflash0-file,read-only=on" in \
        model.command_line(no_sb, RUNTIME, DESCRIPTORS)
    pc = efi("pc")
    fw = choose(pc, DESCRIPTORS, None)
    assert fw is not None and fw.code == Path("/fw/CODE.fd") and not fw.requires_smm
    with pytest.raises(model.RenderError, match="no UEFI firmware fits machine 'pc' with "
                                                "secure-boot=yes"):
        model.command_line(efi("pc", "<firmware><feature enabled='yes' name='secure-boot'/>"
                                     "</firmware>"), RUNTIME, DESCRIPTORS)


def test_explicit_loader_and_nvram_win() -> None:
    d = efi("q35", "<loader readonly='yes' type='pflash' secure='yes'>/x/CODE.fd</loader>"
                   "<nvram template='/x/VARS.fd'>/var/lib/vm/VARS.fd</nvram>")
    argv = model.command_line(d, RUNTIME, DESCRIPTORS)
    assert "driver=file,filename=/x/CODE.fd,node-name=pflash0-file,read-only=on" in argv
    assert "driver=file,filename=/var/lib/vm/VARS.fd,node-name=pflash1-file" in argv
    assert "driver=cfi.pflash01,property=secure,value=on" in argv


def test_smm_off_with_secure_boot_firmware_is_an_error() -> None:
    d = model.parse(domain_xml("<features><smm state='off'/></features>",
                               os="<os firmware='efi'><type machine='q35'>hvm</type>"
                                  "<firmware><feature enabled='yes' name='secure-boot'/>"
                                  "</firmware></os>")).domain
    with pytest.raises(model.RenderError, match="no UEFI firmware fits"):
        model.command_line(d, RUNTIME, DESCRIPTORS)


# --- round trip --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "data" /
                                         "virt-install").glob("*.xml")), ids=lambda p: p.stem)
def test_virt_install_files_round_trip_through_to_xml(path: Path) -> None:
    d = model.parse_file(path).domain
    assert model.parse(model.to_xml(d)).domain == d


AUDIO = [
    # libvirt 9.0's corpus: audio-alsa-minimal, audio-file-minimal, audio-alsa-best,
    # audio-file-best, audio-oss-full (JSON -audiodev values written as QEMU's key=value)
    ("<audio id='1' type='alsa'/>", "alsa,id=audio1"),
    ("<audio id='1' type='file'/>", "wav,id=audio1"),
    ("""<audio id='1' type='alsa' timerPeriod='50'>
      <input mixingEngine='yes' fixedSettings='yes' voices='1' dev='/dev/dsp0'>
        <settings frequency='44100' channels='2' format='s16'/></input>
      <output mixingEngine='yes' fixedSettings='yes' voices='2' dev='/dev/dsp1'>
        <settings frequency='22050' channels='4' format='f32'/></output></audio>""",
     "alsa,id=audio1,timer-period=50,in.mixing-engine=on,in.fixed-settings=on,in.voices=1,"
     "in.dev=/dev/dsp0,in.frequency=44100,in.channels=2,in.format=s16,out.mixing-engine=on,"
     "out.fixed-settings=on,out.voices=2,out.dev=/dev/dsp1,out.frequency=22050,out.channels=4,"
     "out.format=f32"),
    ("<audio id='1' type='file' timerPeriod='50' path='audio,1.wav'/>",
     "wav,id=audio1,timer-period=50,path=audio,,1.wav"),
    # audio-pulseaudio-full, audio-jack-full, audio-sdl-minimal, audio-many-backends (dbus)
    ("""<audio id='1' type='pulseaudio' serverName='acme.example.org'>
      <input mixingEngine='yes' voices='1' name='fish' streamName='food' latency='100'/>
      <output bufferLength='200' name='fish' streamName='food' latency='200'>
        <settings frequency='22050' channels='4' format='f32'/></output></audio>""",
     "pa,id=audio1,server=acme.example.org,in.mixing-engine=on,in.voices=1,in.name=fish,"
     "in.stream-name=food,in.latency=100,out.buffer-length=200,out.name=fish,"
     "out.stream-name=food,out.latency=200,out.frequency=22050,out.channels=4,out.format=f32"),
    ("""<audio id='1' type='jack'>
      <input serverName='fish' clientName='food' connectPorts='yum' exactName='yes'/>
      <output serverName='fish' clientName='food' connectPorts='yum'/></audio>""",
     "jack,id=audio1,in.server-name=fish,in.client-name=food,in.connect-ports=yum,"
     "in.exact-name=on,out.server-name=fish,out.client-name=food,out.connect-ports=yum"),
    ("<audio id='1' type='sdl'><output bufferCount='50'/></audio>",
     "sdl,id=audio1,out.buffer-count=50"),
    ("<audio id='1' type='dbus'/>", "dbus,id=audio1"),
    ("""<audio id='1' type='oss' tryMMap='yes' exclusive='yes' dspPolicy='3'>
      <output bufferLength='200' dev='/dev/dsp1' bufferCount='30' tryPoll='no'/></audio>""",
     "oss,id=audio1,try-mmap=on,exclusive=on,dsp-policy=3,out.buffer-length=200,out.dev=/dev/dsp1,"
     "out.buffer-count=30,out.try-poll=off"),
]


@pytest.mark.parametrize(("audio", "expected"), AUDIO)
def test_audio_backends_render_as_libvirt(audio: str, expected: str) -> None:
    d = devices(audio + "\n<sound model='ich9'/>")
    assert values(d, "-audiodev") == [expected]
    assert model.parse(model.to_xml(d)).domain == d


IOTHREAD_DISK = """<disk type='file' device='disk'><driver name='qemu' type='raw' iothread='{n}'/>
  <source file='/i/{n}.img'/><target dev='vd{dev}' bus='{bus}'/></disk>"""


def test_iothreads_render_as_libvirt() -> None:
    """libvirt 9.0's iothreads-disk: one -object per thread, virtio-blk-pci names its thread."""
    d = devices(IOTHREAD_DISK.format(n=1, dev="b", bus="virtio") + "\n"
                + IOTHREAD_DISK.format(n=2, dev="c", bus="virtio"), extra="<iothreads>2</iothreads>\n")
    assert values(d, "-object") == ["iothread,id=iothread1", "iothread,id=iothread2"]
    blk = [v for v in values(d, "-device") if v.startswith("virtio-blk-pci")]
    assert [v.split(",")[1] for v in blk] == ["iothread=iothread1", "iothread=iothread2"]
    assert model.parse(model.to_xml(d)).domain == d


@pytest.mark.parametrize(("disk", "iothreads", "message"), [
    (IOTHREAD_DISK.format(n=3, dev="b", bus="virtio"), "<iothreads>2</iothreads>",
     "<driver iothread='3'>: there are 2 <iothreads>; add <iothreads>3</iothreads>"),
    (IOTHREAD_DISK.format(n=1, dev="b", bus="sata"), "<iothreads>1</iothreads>",
     "<driver iothread>: only virtio disks have an I/O thread; this one is on bus 'sata'"),
])
def test_iothread_errors(disk: str, iothreads: str, message: str) -> None:
    data = domain_xml(iothreads + "\n<devices>\n" + disk + "\n</devices>")
    assert issues(data) == [(8, message)]


CPU_CACHE = [
    # libvirt 9.0's cpu-cache-disable, cpu-cache-emulate-l3, cpu-cache-passthrough (.args)
    ("host-passthrough", "<cache mode='disable'/>", "max,host-cache-info=off,l3-cache=off"),
    ("host-passthrough", "<cache level='3' mode='emulate'/>", "max,l3-cache=on,host-cache-info=off"),
    ("host-passthrough", "<cache mode='passthrough'/>", "max,host-cache-info=on,l3-cache=off"),
    ("custom", "<model>Haswell</model><cache mode='disable'/>", "Haswell,l3-cache=off"),
]


@pytest.mark.parametrize(("mode", "body", "expected"), CPU_CACHE)
def test_cpu_cache_renders_as_libvirt(mode: str, body: str, expected: str) -> None:
    d = model.parse(domain_xml(f"<cpu mode='{mode}'>{body}</cpu>", kind="qemu")).domain
    assert values(d, "-cpu") == [expected]
    assert model.parse(model.to_xml(d)).domain == d


@pytest.mark.parametrize(("mode", "cache", "message"), [
    ("host-passthrough", "<cache level='2' mode='emulate'/>",
     "<cache mode='emulate'> needs level='3' (QEMU emulates only the L3 cache)"),
    ("host-passthrough", "<cache level='3' mode='passthrough'/>",
     "<cache mode='passthrough'> takes no level; remove it"),
    ("host-model", "<cache mode='passthrough'/>",
     "<cache mode='passthrough'> needs <cpu mode='host-passthrough'> or 'maximum' (the host's "
     "cache info comes with the host's CPU)"),
])
def test_cpu_cache_errors(mode: str, cache: str, message: str) -> None:
    assert issues(domain_xml(f"<cpu mode='{mode}'>\n{cache}\n</cpu>")) == [(7, message)]


LISTEN = [
    # libvirt 9.0's graphics-vnc-none, graphics-vnc-socket, graphics-vnc-auto-socket,
    # graphics-spice-socket, graphics-spice-auto-socket, audio-spice-minimal (listen none)
    ("<graphics type='vnc'><listen type='none'/></graphics>", "-vnc", "none"),
    ("<graphics type='vnc'><listen type='socket' socket='/tmp/vnc,1.sock'/></graphics>", "-vnc",
     "vnc=unix:/tmp/vnc,,1.sock"),
    ("<graphics type='vnc'><listen type='socket'/></graphics>", "-vnc", "vnc=unix:/r/vnc.sock"),
    ("<graphics type='spice'><listen type='socket' socket='/tmp/spice.sock'/></graphics>",
     "-spice", "unix=on,addr=/tmp/spice.sock,disable-ticketing=on,seamless-migration=on"),
    ("<graphics type='spice'><listen type='socket'/></graphics>", "-spice",
     "unix=on,addr=/r/spice.sock,disable-ticketing=on,seamless-migration=on"),
    ("<graphics type='spice'><listen type='none'/></graphics>", "-spice",
     "port=0,disable-ticketing=on,seamless-migration=on"),
]


@pytest.mark.parametrize(("graphics", "option", "expected"), LISTEN)
def test_graphics_listen_types(graphics: str, option: str, expected: str) -> None:
    d = devices(graphics)
    runtime = model.Runtime(Path("/r/qmp.sock"), Path("/r/pid"), Path("/r/console.log"))
    assert values(d, option, runtime) == [expected]
    assert model.parse(model.to_xml(d)).domain == d


USB_DISKS = [
    # libvirt 9.0's disk-usb-device and disk-usb-device-removable (pc: PIIX3 UHCI, ports 1-2)
    ("<disk type='file' device='disk'><source file='/i/a.img'/><target dev='sda' bus='usb'/>"
     "</disk>", "pc",
     ["piix3-usb-uhci,bus=pci.0,addr=0x1.0x2,id=usb",
      "usb-storage,bus=usb.0,port=1,drive=drive-usb-disk0,id=usb-disk0,removable=off"]),
    ("<disk type='file' device='disk'><source file='/i/a.img'/>"
     "<target dev='sdb' bus='usb' removable='on'/></disk><input type='tablet' bus='usb'/>", "q35",
     ["qemu-xhci,bus=pci.1,addr=0x0,id=usb",
      "usb-storage,bus=usb.0,port=1,drive=drive-usb-disk1,id=usb-disk1,removable=on",
      "usb-tablet,id=input0,bus=usb.0,port=2"]),
]


@pytest.mark.parametrize(("disk", "machine", "expected"), USB_DISKS)
def test_usb_disks_render_as_libvirt(disk: str, machine: str, expected: list[str]) -> None:
    d = devices(disk, machine=machine)
    got = [v for v in values(d, "-device") if "usb" in v]
    assert got == expected
    assert model.parse(model.to_xml(d)).domain == d


SMALL_FEATURES = [
    # libvirt 9.0's vmcoreinfo, virtio-rng-builtin, x86_64-default-cpu-tcg-features (.args)
    ("<features><vmcoreinfo/></features>", "", "-device", "vmcoreinfo"),
    ("<features><vmcoreinfo state='off'/></features>", "", "-device", None),
    ("", "<rng model='virtio'><backend model='builtin'/></rng>", "-object",
     "rng-builtin,id=objrng0"),
    ("<features><tcg><tb-cache unit='KiB'>102400</tb-cache></tcg></features>", "", "-accel",
     "tcg,tb-size=100"),
    ("<features><tcg><tb-cache>64</tb-cache></tcg></features>", "", "-accel", "tcg,tb-size=64"),
]


@pytest.mark.parametrize(("features", "dev", "option", "expected"), SMALL_FEATURES)
def test_small_features_render_as_libvirt(features: str, dev: str, option: str,
                                          expected: str | None) -> None:
    d = devices(dev, kind="qemu", extra=features + "\n")
    got = values(d, option)
    if expected is None:
        assert "vmcoreinfo" not in got
    else:
        assert expected in got
    assert model.parse(model.to_xml(d)).domain == d


def test_tb_cache_needs_tcg() -> None:
    data = domain_xml("<features><tcg><tb-cache>64</tb-cache></tcg></features>")
    assert issues(data) == [(6, "<tcg><tb-cache> is a TCG setting; it needs <domain type='qemu'>")]


VIRTIO_OPTIONS = [
    # libvirt 9.0's virtio-options-{disk,net,input,rng}-{ats,iommu,packed} (.args)
    ("<disk type='file' device='disk'><driver name='qemu' type='raw' ats='on'/>"
     "<source file='/i/a.img'/><target dev='vda' bus='virtio'/></disk>", "virtio-blk-pci,ats=on,"),
    ("<interface type='user'><model type='virtio'/><driver packed='on'/></interface>",
     "virtio-net-pci,packed=on,"),
    ("<input type='mouse' bus='virtio'><driver iommu='on'/></input>",
     "virtio-mouse-pci,iommu_platform=on,"),
    ("<rng model='virtio'><backend model='random'>/dev/urandom</backend>"
     "<driver iommu='off' ats='on' packed='off'/></rng>",
     "virtio-rng-pci,iommu_platform=off,ats=on,packed=off,"),
]


@pytest.mark.parametrize(("device", "prefix"), VIRTIO_OPTIONS)
def test_virtio_options_render_as_libvirt(device: str, prefix: str) -> None:
    d = devices(device)
    assert [v for v in values(d, "-device") if v.startswith(prefix)]
    assert model.parse(model.to_xml(d)).domain == d


def test_an_audio_backend_whose_qemu_module_is_missing_is_refused_at_its_line() -> None:
    """With the host's module check (reconciler.hostfacts), a missing module is an error that
    says which package to install; without one (pure model) the file is accepted."""
    text = domain_xml("<devices>\n<audio id='1' type='pulseaudio'/>\n</devices>",
                      os="<os><type machine='pc'>hvm</type></os>")
    asked: list[tuple[str, str]] = []

    def missing(emulator: str, module: str) -> str:
        asked.append((emulator, module))
        return "needs QEMU's audio-pa module; install Debian's qemu-system-gui package"

    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(text, host=HostFacts(check_module=missing))
    assert [(i.line, i.message) for i in caught.value.issues] == [
        (7, "<audio type='pulseaudio'>: needs QEMU's audio-pa module; install Debian's "
            "qemu-system-gui package")]
    assert asked == [("qemu-system-x86_64", "audio-pa")]  # the default emulator, by name
    assert model.parse(text).domain.devices.audios[0].type == "pulseaudio"


def test_the_module_check_looks_in_debians_module_folder(tmp_path: Path) -> None:
    from reconciler.hostfacts import check_module

    (tmp_path / "audio-alsa.so").touch()
    assert check_module("/usr/bin/qemu-system-x86_64", "audio-alsa", tmp_path) is None
    why = check_module("/usr/bin/qemu-system-x86_64", "audio-pa", tmp_path)
    assert why == (f"needs QEMU's audio-pa module, which is not installed ({tmp_path}/"
                   "audio-pa.so); install Debian's qemu-system-gui package")
    assert check_module("qemu-system-x86_64", "audio-pa", tmp_path) == why  # found in $PATH
    assert check_module("/opt/qemu/bin/qemu-system-x86_64", "audio-pa", tmp_path) is None
    assert check_module("/usr/bin/qemu-system-x86_64", "audio-pa", tmp_path / "none") is None


# --- displays of QEMU's own: egl-headless, dbus ---------------------------------------------------

DISPLAYS = [
    # libvirt 9.0's graphics-egl-headless-rendernode, graphics-dbus-p2p, graphics-dbus-address,
    # graphics-dbus-audio
    ("<graphics type='egl-headless'><gl rendernode='/dev/dri/foo'/></graphics>",
     ["egl-headless,rendernode=/dev/dri/foo"]),
    ("<graphics type='egl-headless'/>", ["egl-headless"]),
    ("<graphics type='dbus' p2p='yes'/>", ["dbus,p2p=on"]),
    ("<graphics type='dbus' address='unix:path=/tmp/foo'><gl enable='yes' "
     "rendernode='/dev/dri/foo'/></graphics>",
     ["dbus,addr=unix:path=/tmp/foo,gl=on,rendernode=/dev/dri/foo"]),
    ("<graphics type='dbus' p2p='yes'><audio id='1'/></graphics><audio id='1' type='dbus'/>",
     ["dbus,p2p=on,audiodev=audio1"]),
]


@pytest.mark.parametrize(("snippet", "display"), DISPLAYS)
def test_local_displays_render_as_libvirt(snippet: str, display: list[str]) -> None:
    d = devices(snippet)
    assert values(d, "-display") == display
    assert model.parse(model.to_xml(d)).domain == d


def test_egl_headless_goes_beside_vnc() -> None:
    """libvirt's graphics-vnc-egl-headless: the VNC server shows what egl-headless renders."""
    d = devices("<graphics type='vnc' port='5901'/><graphics type='egl-headless'/>")
    assert values(d, "-display") == ["egl-headless"]
    assert values(d, "-vnc") == ["127.0.0.1:1"]


@pytest.mark.parametrize(("snippet", "line", "message"), [
    ("<graphics type='dbus'/>", 7, "<graphics type='dbus'> without p2p='yes' or address= needs "
     "a private D-Bus daemon, which qemud does not run; add p2p='yes' (clients connect through "
     "QMP) or the address= of a bus"),
    ("<graphics type='sdl' display=':0.1' xauth='/root/.Xauthority'/>", 7,
     "<graphics type='sdl'>: opens a window on the X display of whoever runs QEMU, which a "
     "daemon has none of; use VNC or spice (remote-viewer), or dbus p2p"),
    ("<graphics type='dbus' p2p='yes'/>\n<graphics type='egl-headless'/>", 8,
     "<graphics type='egl-headless'>: QEMU has one local display and <graphics type='dbus'> is "
     "it; keep one"),
    ("<graphics type='dbus' p2p='yes'><audio id='2'/></graphics>", 7,
     "<graphics type='dbus'><audio id='2'> names an <audio> that does not exist; add it or "
     "remove the reference"),
])
def test_local_display_errors(snippet: str, line: int, message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        devices(snippet)
    assert [(i.line, i.message) for i in caught.value.issues] == [(line, message)]


# --- spice: TLS, channel modes, GL --------------------------------------------------------------


def test_spice_tls_and_channel_modes_render_as_libvirt() -> None:
    """libvirt 9.0's graphics-spice: x509 from libvirt's spice folder, default and per-channel
    modes."""
    d = devices("""<graphics type='spice' port='5903' tlsPort='5904' autoport='no'
        listen='127.0.0.1' defaultMode='secure'>
      <channel name='main' mode='secure'/><channel name='inputs' mode='insecure'/>
      <channel name='cursor' mode='any'/></graphics>""")
    assert values(d, "-spice") == [
        "port=5903,tls-port=5904,addr=127.0.0.1,disable-ticketing=on,"
        "x509-dir=/etc/pki/libvirt-spice,tls-channel=default,tls-channel=main,"
        "plaintext-channel=inputs,seamless-migration=on"]
    assert model.parse(model.to_xml(d)).domain == d


def test_spice_gl_is_local_on_port_0_with_its_render_node() -> None:
    """libvirt's graphics-spice-gl-auto-rendernode (autoport='no', no port: local only)."""
    d = devices("<graphics type='spice' autoport='no'><gl enable='yes' "
                "rendernode='/dev/dri/foo,bar'/></graphics>")
    assert values(d, "-spice") == ["port=0,disable-ticketing=on,gl=on,"
                                   "rendernode=/dev/dri/foo,,bar,seamless-migration=on"]
    assert model.parse(model.to_xml(d)).domain == d


@pytest.mark.parametrize(("snippet", "message"), [
    ("<graphics type='spice' port='5903'><channel name='main' mode='secure'/></graphics>",
     "a secure spice channel needs TLS: give tlsPort="),
    ("<graphics type='spice' autoport='yes' tlsPort='5904'/>", "spice over TLS needs port= on "
     "an address too (QEMU cannot choose spice ports, and TLS is for TCP clients)"),
    ("<graphics type='vnc' port='5900'><gl enable='yes'/></graphics>", "image, jpeg, zlib, "
     "playback, streaming, mouse, clipboard, filetransfer, tlsPort, defaultMode, channel and gl "
     "are spice settings; VNC has none of them"),
])
def test_spice_tls_mistakes_are_refused_at_the_graphics_line(snippet: str, message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        devices(snippet)
    assert len(caught.value.issues) == 1 and caught.value.issues[0].line == 7
    assert message in caught.value.issues[0].message


def test_spice_tls_without_certificates_says_where_they_go(tmp_path: Path) -> None:
    from reconciler.hostfacts import spice_certificates

    text = domain_xml("<devices>\n<graphics type='spice' port='5903' tlsPort='5904'/>\n"
                      "</devices>", os="<os><type machine='pc'>hvm</type></os>")
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(text, host=HostFacts(spice_certificates=lambda d: spice_certificates(
            str(tmp_path))))
    [issue] = caught.value.issues
    assert issue.line == 7 and issue.message == (
        "<graphics tlsPort>: spice over TLS needs ca-cert.pem, server-cert.pem, server-key.pem in "
        f"{tmp_path} (libvirt's spice_tls_x509_cert_dir), readable by qemud's user; missing or "
        "unreadable: ca-cert.pem, server-cert.pem, server-key.pem; create them or remove tlsPort")
    for name in ("ca-cert.pem", "server-cert.pem", "server-key.pem"):
        (tmp_path / name).write_text("x")
    assert spice_certificates(str(tmp_path)) is None


# --- small machine settings: pmu, hyperv panic, dirty ring, bios ---------------------------------


def domain_with(top: str = "", devices_xml: str = "", kind: str = "qemu") -> model.Domain:
    """A minimal domain with `top` after <os> and `devices_xml` in <devices>."""
    return model.parse(domain_xml(top + "<devices>\n" + devices_xml + "\n</devices>", kind=kind,
                                  os="<os><type machine='pc'>hvm</type></os>")).domain


@pytest.mark.parametrize(("top", "devs", "kind", "option", "expected"), [
    # libvirt 9.0's pmu-feature, pmu-feature-off, hyperv-panic, kvm-features, reboot-timeout-*
    ("<features><pmu/></features>", "", "qemu", "-cpu", ["qemu64,pmu=on"]),
    ("<features><pmu state='off'/></features>", "", "qemu", "-cpu", ["qemu64,pmu=off"]),
    ("", "<panic model='hyperv'/>", "qemu", "-cpu", ["qemu64,hv-crash"]),
    ("<features><kvm><dirty-ring state='on' size='4096'/></kvm></features>", "", "kvm",
     "-accel", ["kvm,dirty-ring-size=4096"]),
    ("<features><kvm><dirty-ring state='off'/></kvm></features>", "", "kvm", "-accel", ["kvm"]),
])
def test_machine_settings_render_as_libvirt(top: str, devs: str, kind: str, option: str,
                                            expected: list[str]) -> None:
    d = domain_with(top, devs, kind)
    assert values(d, option) == expected
    assert model.parse(model.to_xml(d)).domain == d


def test_a_hyperv_and_an_isa_panic_go_together() -> None:
    """libvirt's panic-double: the crash MSRs and the pvpanic ISA device."""
    d = domain_with(devices_xml="<panic model='hyperv'/><panic model='isa'/>")
    assert values(d, "-cpu") == ["qemu64,hv-crash"]
    assert any(v.startswith("pvpanic") for v in values(d, "-device"))
    assert model.parse(model.to_xml(d)).domain == d
    with pytest.raises(model.InvalidDomainError) as caught:
        domain_with(devices_xml="<panic model='isa'/>\n<panic model='isa'/>")
    assert [(i.line, i.message) for i in caught.value.issues] == [
        (8, "more than one <panic model='isa'> is not supported; keep one")]


@pytest.mark.parametrize(("bios", "boot", "sga"), [
    ("<bios rebootTimeout='128'/>", ["order=c,reboot-timeout=128"], False),
    ("<bios rebootTimeout='-1'/>", ["order=c,reboot-timeout=-1"], False),
    ("<bios useserial='yes'/>", ["order=c"], True),
])
def test_bios_settings_render_as_libvirt(bios: str, boot: list[str], sga: bool) -> None:
    d = model.parse(domain_xml("<devices/>", os="<os><type machine='pc'>hvm</type>"
                               f"<boot dev='hd'/>{bios}</os>")).domain
    assert values(d, "-boot") == boot
    assert ("sga" in values(d, "-device")) is sga
    assert model.parse(model.to_xml(d)).domain == d


def test_a_dirty_ring_size_kvm_refuses_is_refused() -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        domain_with("<features><kvm><dirty-ring state='on' size='3000'/></kvm></features>",
                    kind="kvm")
    assert "power of two" in caught.value.issues[0].message
    with pytest.raises(model.InvalidDomainError) as caught:
        domain_with("<features><kvm><dirty-ring state='on' size='4096'/></kvm></features>")
    assert caught.value.issues[0].message == ("<kvm><dirty-ring> is a KVM setting; it needs "
                                              "<domain type='kvm'>")


def test_more_sound_models_render_as_libvirt_does_for_qemu_7() -> None:
    """libvirt 9.0's sound-device: ES1370 on PCI, sb16 on ISA, the PC speaker as the machine's
    pcspk-audiodev (QEMU 7.2 has no -soundhw, which libvirt's old .args still show)."""
    d = devices("<sound model='pcspk'/><sound model='es1370'/><sound model='sb16'/>"
                "<sound model='ac97'/>")
    assert [v for v in values(d, "-device") if "sound" in v] == [
        "ES1370,bus=pci.0,addr=0x2,id=sound1,audiodev=audio1",
        "sb16,id=sound2,audiodev=audio1",
        "AC97,bus=pci.0,addr=0x3,id=sound3,audiodev=audio1"]
    assert "pcspk-audiodev=audio1" in values(d, "-machine")[0].split(",")
    assert model.parse(model.to_xml(d)).domain == d
    with pytest.raises(model.InvalidDomainError) as caught:
        devices("<sound model='pcspk'/>\n<sound model='pcspk'/>")
    assert [(i.line, i.message) for i in caught.value.issues] == [
        (8, "a machine has one PC speaker: keep one <sound model='pcspk'>")]


def test_vnc_carries_the_sound_of_its_audiodev() -> None:
    """libvirt's audio-many-backends: `<graphics type='vnc'><audio id='2'/>`."""
    d = devices("<graphics type='vnc' port='5900'><audio id='2'/></graphics>"
                "<audio id='1' type='none'/><audio id='2' type='alsa'/>")
    assert values(d, "-vnc") == ["127.0.0.1:0,audiodev=audio2"]
    assert model.parse(model.to_xml(d)).domain == d
    with pytest.raises(model.InvalidDomainError) as caught:
        devices("<graphics type='vnc' port='5900'><audio id='4'/></graphics>")
    assert caught.value.issues[0].message == (
        "<graphics type='vnc'><audio id='4'> names an <audio> that does not exist; add it or "
        "remove the reference")


# --- sysinfo: SMBIOS tables and fw_cfg ----------------------------------------------------------

SYSINFO = """<sysinfo type='smbios'>
    <bios><entry name='vendor'>LENOVO</entry><entry name='date'>01/02/2023</entry></bios>
    <system><entry name='manufacturer'>Fedora</entry>
      <entry name='uuid'>{uuid}</entry></system>
    <baseBoard><entry name='product'>A,B</entry></baseBoard>
    <baseBoard><entry name='product'>C</entry></baseBoard>
    <chassis><entry name='sku'>Type3Sku1</entry></chassis>
    <oemStrings><entry>Hello</entry><entry>is, tricky</entry></oemStrings>
  </sysinfo>
  <sysinfo type='fwcfg'>
    <entry name='opt/com.example/name'>example value</entry>
    <entry name='opt/com.coreos/config' file='/tmp/provision.ign'/>
  </sysinfo>
"""


def _sysinfo_domain(smbios: str = "<smbios mode='sysinfo'/>", uuid: str | None = None
                    ) -> model.Parsed:
    """A domain with `SYSINFO` and `smbios` in <os> (its system uuid `uuid`, else its own)."""
    text = domain_xml("<devices/>", os=f"<os><type machine='pc'>hvm</type>{smbios}</os>").decode()
    own = model.parse(text.replace(smbios, "").encode()).domain.uuid
    return model.parse(text.replace("<devices/>", SYSINFO.format(uuid=uuid or own)
                                    + "<devices/>").encode())


def test_sysinfo_renders_smbios_tables_and_fw_cfg_as_libvirt() -> None:
    """libvirt 9.0's smbios and smbios-type-fwcfg (values escaped, baseboards in order)."""
    parsed = _sysinfo_domain()
    d = parsed.domain
    assert values(d, "-smbios") == [
        "type=0,vendor=LENOVO,date=01/02/2023", f"type=1,manufacturer=Fedora,uuid={d.uuid}",
        "type=2,product=A,,B", "type=2,product=C", "type=3,sku=Type3Sku1",
        "type=11,value=Hello,value=is,, tricky"]
    assert values(d, "-fw_cfg") == ["name=opt/com.example/name,string=example value",
                                    "name=opt/com.coreos/config,file=/tmp/provision.ign"]
    assert parsed.warnings == ()
    assert model.parse(model.to_xml(d)).domain == d


def test_sysinfo_without_smbios_mode_gives_only_fw_cfg_and_a_warning() -> None:
    parsed = _sysinfo_domain(smbios="")
    assert values(parsed.domain, "-smbios") == []
    assert len(values(parsed.domain, "-fw_cfg")) == 2
    assert [w.message for w in parsed.warnings] == [
        "<sysinfo type='smbios'> has no effect without <os><smbios mode='sysinfo'/></os> (as in "
        "libvirt); add that to give the guest these tables"]


@pytest.mark.parametrize(("smbios", "uuid", "message"), [
    ("<smbios mode='sysinfo'/>", "a94b4335-6a14-8bc4-d6da-f7ea590b6816",
     "<system><entry name='uuid'>a94b4335-6a14-8bc4-d6da-f7ea590b6816</entry> differs from the "
     "domain's <uuid>"),
    ("<smbios mode='host'/>", None, "<smbios mode='host'> copies the host's SMBIOS tables, "
     "which qemud does not read; use mode='sysinfo' with a <sysinfo type='smbios'>"),
])
def test_sysinfo_mistakes(smbios: str, uuid: str | None, message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        _sysinfo_domain(smbios, uuid)
    assert any(message in i.message and i.line is not None for i in caught.value.issues), \
        caught.value.issues


# --- shmem (ivshmem) ----------------------------------------------------------------------------


def test_shmem_renders_as_libvirt() -> None:
    """libvirt 9.0's shmem-plain-doorbell (plain with roles and sizes, doorbell on a server)."""
    d = devices("""<shmem name='lg'><model type='ivshmem-plain'/><size unit='M'>32</size></shmem>
      <shmem name='s1' role='master'><model type='ivshmem-plain'/></shmem>
      <shmem name='s2'><model type='ivshmem-doorbell'/><server/><msi vectors='16'/></shmem>
      <shmem name='s3'><server path='/tmp/s3,sock'/><msi ioeventfd='off'/></shmem>""")
    got = [v for v in values(d, "-device") + values(d, "-object") + values(d, "-chardev")
           if "shm" in v]
    assert got == [
        "ivshmem-plain,id=shmem0,memdev=shmmem-shmem0,bus=pci.0,addr=0x2",
        "ivshmem-plain,id=shmem1,memdev=shmmem-shmem1,master=on,bus=pci.0,addr=0x3",
        "ivshmem-doorbell,id=shmem2,chardev=charshmem2,vectors=16,ioeventfd=on,bus=pci.0,addr=0x4",
        "ivshmem-doorbell,id=shmem3,chardev=charshmem3,ioeventfd=off,bus=pci.0,addr=0x5",
        "memory-backend-file,id=shmmem-shmem0,mem-path=/dev/shm/lg,size=33554432,share=on",
        "memory-backend-file,id=shmmem-shmem1,mem-path=/dev/shm/s1,size=4194304,share=on",
        "socket,id=charshmem2,path=/var/lib/libvirt/shmem-s2-sock",
        "socket,id=charshmem3,path=/tmp/s3,,sock"]
    assert model.parse(model.to_xml(d)).domain == d


@pytest.mark.parametrize(("snippet", "message"), [
    ("<shmem name='a'><size unit='K'>12345</size></shmem>",
     "the shared memory size must be a power of two"),
    ("<shmem name='a'><msi/></shmem>", "<msi> is for model 'ivshmem-doorbell'"),
    ("<shmem name='a/b'/>", "<shmem name>"),
])
def test_shmem_mistakes(snippet: str, message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        devices(snippet)
    assert caught.value.issues[0].line == 7 and message in caught.value.issues[0].message, \
        caught.value.issues


def test_acpi_tables_render_as_libvirt() -> None:
    """libvirt 9.0's acpi-table: an extra table (SLIC, MSDM) from a file."""
    d = model.parse(domain_xml("<devices/>", os="<os><type machine='pc'>hvm</type><acpi>"
                               "<table type='slic'>/var/lib/libvirt/acpi/slic.dat</table>"
                               "</acpi></os>")).domain
    assert values(d, "-acpitable") == ["sig=SLIC,file=/var/lib/libvirt/acpi/slic.dat"]
    assert model.parse(model.to_xml(d)).domain == d
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(domain_xml("<devices/>", os="<os><type machine='pc'>hvm</type><acpi>"
                               "<table type='dsdt'>/x</table></acpi></os>"))
    assert caught.value.issues[0].line == 5


# --- cputune pins -------------------------------------------------------------------------------


def test_cputune_pins_are_read_and_kept() -> None:
    """vcpupin, emulatorpin and iothreadpin (libvirt 9.0's cputune-numatune and
    vcpu-placement-static use them); the process layer applies them (tests/integration)."""
    d = model.parse(domain_xml(
        "<vcpu>2</vcpu><iothreads>1</iothreads>\n<cputune><vcpupin vcpu='0' cpuset='1'/>"
        "<vcpupin vcpu='1' cpuset='0-1,^1'/><emulatorpin cpuset='1-3'/>"
        "<iothreadpin iothread='1' cpuset='2'/></cputune>\n<devices/>")).domain
    assert d.cputune is not None
    assert d.cputune.vcpupins == ((0, frozenset({1})), (1, frozenset({0})))
    assert d.cputune.emulatorpin == frozenset({1, 2, 3})
    assert d.cputune.iothreadpins == ((1, frozenset({2})),)
    assert model.parse(model.to_xml(d)).domain == d


@pytest.mark.parametrize(("tune", "message"), [
    ("<shares>2048</shares>", "<cputune><shares> is applied through the cgroup CPU controller, "
     "which qemud does not manage; remove it (the pins are kept)"),
    ("<vcpusched vcpus='0' scheduler='fifo' priority='1'/>",
     "<cputune><vcpusched>: real-time scheduling is not supported by qemud; remove it"),
    ("<vcpupin vcpu='2' cpuset='0'/>", "<vcpupin vcpu='2'>: the domain has 2 vCPUs, numbered 0 "
     "to 1"),
    ("<vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='0' cpuset='1'/>",
     "each vcpu is pinned once; remove the second <vcpupin>"),
    ("<iothreadpin iothread='1' cpuset='0'/>", "<iothreadpin iothread='1'>: the domain has 0 "
     "<iothreads>, numbered from 1"),
])
def test_cputune_mistakes(tune: str, message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(domain_xml(f"<vcpu>2</vcpu>\n<cputune>{tune}</cputune>\n<devices/>"))
    assert [i.message for i in caught.value.issues if message in i.message], caught.value.issues
    assert all(i.line is not None for i in caught.value.issues)


# --- <qemu:commandline> -------------------------------------------------------------------------

QEMU_NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"


def test_qemu_commandline_renders_as_libvirt_with_a_warning() -> None:
    """libvirt 9.0's qemu-ns-alt: args appended last, env for QEMU; tainted, so warned."""
    parsed = model.parse(domain_xml(
        f"<devices/>\n<qemu:commandline {QEMU_NS}><qemu:arg value='-unknown'/>"
        "<qemu:arg value='parameter'/><qemu:env name='NS' value='ns'/><qemu:env name='BAR'/>"
        "</qemu:commandline>"))
    argv = model.command_line(parsed.domain)
    assert argv[-2:] == ["-unknown", "parameter"]
    assert model.environment(parsed.domain) == {"NS": "ns", "BAR": ""}
    assert [w.line for w in parsed.warnings] == [7]
    assert model.parse(model.to_xml(parsed.domain)).domain == parsed.domain


@pytest.mark.parametrize(("inner", "line", "message"), [
    ("<qemu:arg value='-daemonize'/>", 8, "<qemu:arg value='-daemonize'>: qemud supervises QEMU "
     "through this option itself; remove it"),
    ("<qemu:arg value='--pidfile'/>", 8, "<qemu:arg value='--pidfile'>: qemud supervises QEMU "
     "through this option itself; remove it"),
    ("<qemu:env name='1BAD' value='x'/>", 7, "<qemu:env name>"),
])
def test_qemu_commandline_refuses_what_would_take_qemu_from_qemud(inner: str, line: int,
                                                                  message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(domain_xml(f"<devices/>\n<qemu:commandline {QEMU_NS}>\n{inner}\n"
                               "</qemu:commandline>"))
    assert [(i.line, i.message) for i in caught.value.issues if message in i.message] and \
        caught.value.issues[0].line == line, caught.value.issues


def test_the_rest_of_libvirts_qemu_namespace_is_refused_with_why() -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(domain_xml(f"<devices/>\n<qemu:capabilities {QEMU_NS}><qemu:add "
                               "capability='vnc-colon'/></qemu:capabilities>"))
    assert caught.value.issues[0].line == 7
    assert caught.value.issues[0].message.startswith("<qemu:capabilities>: it changes libvirt's")


# --- USB hubs -----------------------------------------------------------------------------------


def test_usb_hubs_and_the_ports_below_them_as_libvirt() -> None:
    """libvirt 9.0's usb-port-autoassign: hubs take root ports first (uhci has two), the
    devices without an address then go to the first hub's ports."""
    d = devices("""<controller type='usb' index='0'/>
      <hub type='usb'><address type='usb' bus='0' port='1'/></hub>
      <input type='mouse' bus='usb'/><hub type='usb'/>
      <input type='mouse' bus='usb'/><input type='mouse' bus='usb'/>""")
    assert [v for v in values(d, "-device") if v.startswith("usb-")] == [
        "usb-hub,id=hub0,bus=usb.0,port=1", "usb-hub,id=hub1,bus=usb.0,port=2",
        "usb-mouse,id=input0,bus=usb.0,port=1.1", "usb-mouse,id=input1,bus=usb.0,port=1.2",
        "usb-mouse,id=input2,bus=usb.0,port=1.3"]
    assert model.parse(model.to_xml(d)).domain == d


def test_a_usb_port_below_a_missing_hub_is_refused() -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        devices("<controller type='usb' index='0'/><input type='mouse' bus='usb'>"
                "<address type='usb' bus='0' port='2.1'/></input>")
    [issue] = caught.value.issues
    assert issue.line is not None
    assert issue.message.startswith("USB port 2.1 (input0) is on port 2, where no <hub> is")


# --- 9p shares ----------------------------------------------------------------------------------


def test_9p_shares_render_as_libvirt() -> None:
    """libvirt 9.0's fs9p, virtio-9p-multidevs and virtio-9p-createmode."""
    d = devices("""<filesystem type='mount'><source dir='/export/a'/><target dir='/a'/>
      </filesystem>
      <filesystem accessmode='mapped' multidevs='remap' fmode='644' dmode='0750'>
        <driver type='path' wrpolicy='immediate'/><source dir='/export/b,c'/>
        <target dir='b'/><readonly/></filesystem>
      <filesystem accessmode='squash'><source dir='/export/s'/><target dir='s'/></filesystem>""")
    assert values(d, "-fsdev") == [
        "local,security_model=passthrough,id=fsdev-fs0,path=/export/a",
        "local,security_model=mapped,writeout=immediate,multidevs=remap,fmode=0644,dmode=0750,"
        "id=fsdev-fs1,path=/export/b,,c,readonly=on",
        "local,security_model=none,id=fsdev-fs2,path=/export/s"]
    assert [v for v in values(d, "-device") if v.startswith("virtio-9p")] == [
        "virtio-9p-pci,id=fs0,fsdev=fsdev-fs0,mount_tag=/a,bus=pci.0,addr=0x2",
        "virtio-9p-pci,id=fs1,fsdev=fsdev-fs1,mount_tag=b,bus=pci.0,addr=0x3",
        "virtio-9p-pci,id=fs2,fsdev=fsdev-fs2,mount_tag=s,bus=pci.0,addr=0x4"]
    assert model.parse(model.to_xml(d)).domain == d


def test_the_9p_handle_backend_qemu_dropped_is_refused() -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        devices("<filesystem><driver type='handle'/><source dir='/x'/><target dir='x'/>"
                "</filesystem>")
    assert caught.value.issues[0].line == 7
    assert "no 9p 'handle' backend" in caught.value.issues[0].message
