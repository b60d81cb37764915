"""Invalid domain files: every error path, with its exact line, all errors of a file at once.

Messages are for users: they name the element (and attribute) as written in the XML, never an
internal exception (no Pydantic dumps, no lxml jargon beyond the syntax error itself).
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest

import model
from model.domain import Domain, Video
from model.parse import REFUSED_TOP
from model.xml import MAX_BYTES
from tests.support.snippets import UUID, domain_xml

domain = domain_xml


def devices(snippet: str, **parts: str | None) -> bytes:
    """`snippet` inside <devices> (line 6) of the minimal domain: its first line is line 7."""
    return domain("<devices>\n" + textwrap.dedent(snippet).strip("\n") + "\n</devices>", **parts)


def issues(data: bytes) -> list[tuple[int | None, str]]:
    """The (line, message) of every issue; fails the test when the document is valid."""
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data)
    return [(i.line, i.message) for i in info.value.issues]


def check(data: bytes, expected: list[tuple[int | None, str]]) -> None:
    """Assert the issues' lines exactly, and that each message starts with the expected text."""
    got = issues(data)
    assert [(line, message[:len(prefix)]) for (line, message), (_, prefix)
            in zip(got, expected, strict=False)] == expected, got
    assert len(got) == len(expected), got


NOT_SUPPORTED = "is not supported by qemud; remove it or see README for what is"
DEVICES = ("devices are not supported by qemud; remove it (supported: audio, channel, console, "
           "controller, disk, filesystem, graphics, hub, input, interface, iommu, memballoon, memory, "
           "panic, parallel, redirdev, redirfilter, rng, serial, shmem, smartcard, sound, tpm, "
           "video, vsock, watchdog)")

# --- the domain, its identity and its sizes ----------------------------------------------------

TOP_LEVEL = [
    pytest.param(domain(kind="xen"), [(1, "<domain type>: 'xen' is not allowed; use one of 'kvm' "
                                          "or 'qemu'")], id="domain-type-xen"),
    pytest.param(domain(kind="lxc"), [(1, "<domain type>: 'lxc' is not allowed")],
                 id="domain-type-lxc"),
    pytest.param(domain().replace(b"<domain type='kvm'>", b"<domain>"),
                 [(1, "<domain type> is required")], id="domain-type-missing"),
    pytest.param(domain().replace(b"<domain type='kvm'>", b"<domain type='kvm' foo='bar'>"),
                 [(1, f"<domain>: attribute 'foo' {NOT_SUPPORTED}")], id="domain-unknown-attr"),
    pytest.param(domain(name="<name>a/b</name>"),
                 [(2, "<name>: name 'a/b' contains '/', which libvirt forbids")], id="name-slash"),
    pytest.param(domain(name="<name>/</name>"), [(2, "<name>: name '/' contains '/'")],
                 id="name-only-slash"),
    pytest.param(domain(name="<name></name>"), [(2, "<name> is required")], id="name-empty"),
    pytest.param(domain(name="<name/>"), [(2, "<name> is required")], id="name-self-closed"),
    pytest.param(domain(name="<name>   </name>"), [(2, "<name> is required")], id="name-blank"),
    pytest.param(domain(name=None), [(1, "<name> is required")], id="name-missing"),
    # without a name there is no uuid to derive: only the name is reported
    pytest.param(domain(name=None, uuid=None), [(1, "<name> is required")],
                 id="name-and-uuid-missing"),
    pytest.param(domain(name="<name>a&#9;b</name>"),
                 [(2, "<name>: name 'a\\tb' contains a control character")], id="name-tab"),
    pytest.param(domain(name="<name>.hidden</name>"),
                 [(2, "<name>: name '.hidden' starts with '.', which would hide its files")],
                 id="name-dot"),
    pytest.param(domain(name=f"<name>{'n' * 201}</name>"),
                 [(2, "<name> is too long (at most 200 characters)")], id="name-too-long"),
    pytest.param(domain(name=f"<name>{'名' * 90}</name>"),
                 [(2, "<name>: name is 270 bytes in UTF-8; at most 200 fit in the file names "
                   "qemud derives from it (logs, status); shorten it")], id="name-too-many-bytes"),
    pytest.param(domain(name="<name>a</name>\n  <name>b</name>"),
                 [(3, "<name> appears more than once; keep one")], id="name-twice"),
    pytest.param(domain(name="<name lang='en'>t</name>"),
                 [(2, f"<name>: attribute 'lang' {NOT_SUPPORTED}")], id="name-unknown-attr"),
    pytest.param(domain(uuid="<uuid>nope</uuid>"),
                 [(3, "<uuid>: 'nope' is not a valid UUID (like 4dea22b3-1d52-d8f3-2516-"
                      "782e98ab3fa0)")], id="uuid-invalid"),
    pytest.param(domain(uuid="<uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa</uuid>"),
                 [(3, "<uuid>: '4dea22b3-1d52-d8f3-2516-782e98ab3fa' is not a valid UUID")],
                 id="uuid-short"),
    pytest.param(domain(uuid=f"<uuid>{UUID}</uuid>\n  <uuid>{UUID}</uuid>"),
                 [(4, "<uuid> appears more than once; keep one")], id="uuid-twice"),
    pytest.param(domain("<title>a</title>\n<title>b</title>"),
                 [(7, "<title> appears more than once; keep one")], id="title-twice"),
    pytest.param(domain("<description><b>bold</b></description>"),
                 [(6, f"<b> inside <description> {NOT_SUPPORTED}")], id="description-markup"),
    pytest.param(domain(memory=None),
                 [(1, "<memory> is missing; add e.g. <memory unit='MiB'>512</memory>")],
                 id="memory-missing"),
    pytest.param(domain(memory="<memory unit='MiB'>lots</memory>"),
                 [(4, "<memory>: 'lots' is not a whole number")], id="memory-not-a-number"),
    pytest.param(domain(memory="<memory unit='mbit'>1</memory>"),
                 [(4, "<memory>: unit 'mbit' is unknown; use one of b, bytes, KB, k, KiB, MB, M, "
                      "MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB (any case), or byte")],
                 id="memory-unit"),
    pytest.param(domain(memory="<memory unit='MiB'>0</memory>"),
                 [(4, "<memory>: 0 is too small; the minimum is 1")], id="memory-zero"),
    pytest.param(domain(memory="<memory unit='MiB' slots='16'>64</memory>"),
                 [(4, f"<memory>: attribute 'slots' {NOT_SUPPORTED}")], id="memory-slots"),
    pytest.param(domain("<currentMemory unit='MiB'>128</currentMemory>"),
                 [(6, "<currentMemory> is larger than <memory>; it can be at most as large")],
                 id="current-memory-too-large"),
    pytest.param(domain("<currentMemory unit='MiB'>x</currentMemory>"),
                 [(6, "<currentMemory>: 'x' is not a whole number")], id="current-memory-nan"),
    pytest.param(domain("<vcpu>0</vcpu>"), [(6, "<vcpu>: '0' is too small; the minimum is 1")],
                 id="vcpu-zero"),
    pytest.param(domain("<vcpu>256</vcpu>"), [(6, "<vcpu>: '256' is too large; the maximum is 255")],
                 id="vcpu-too-many"),
    pytest.param(domain("<vcpu>two</vcpu>"), [(6, "<vcpu>: 'two' is not a whole number")],
                 id="vcpu-nan"),
    pytest.param(domain("<vcpu current='3'>2</vcpu>"),
                 [(6, "<vcpu>: current=3 exceeds the vcpu count 2")], id="vcpu-current-too-big"),
    pytest.param(domain("<vcpu current='0'>2</vcpu>"),
                 [(6, "<vcpu current>: '0' is too small; the minimum is 1")], id="vcpu-current-0"),
    pytest.param(domain("<vcpu cpuset='0-1,x'>2</vcpu>"),
                 [(6, "<vcpu cpuset>: 'x' in '0-1,x' is not a number, a range a-b or ^n")],
                 id="vcpu-cpuset-garbage"),
    pytest.param(domain("<vcpu cpuset='0,^0'>2</vcpu>"),
                 [(6, "<vcpu cpuset>: '0,^0' selects no CPU")], id="vcpu-cpuset-empty"),
    pytest.param(domain("<vcpu cpuset='3-1'>2</vcpu>"),
                 [(6, "<vcpu cpuset>: '3-1' in '3-1' is not a valid item (numbers 0-8191, ranges "
                      "low-high, ^n excludes one)")], id="vcpu-cpuset-backwards"),
    pytest.param(domain("<vcpu placement='auto'>2</vcpu>"),
                 [(6, "<vcpu placement>: 'auto' needs numad, which qemud does not use; use "
                      "'static' or leave it out")], id="vcpu-placement-auto"),
]

CPU = [
    pytest.param(domain("<cpu mode='weird'><model>qemu64</model></cpu>"),
                 [(6, "<cpu mode>: 'weird' is not allowed; use one of 'host-passthrough', "
                      "'host-model', 'custom' or 'maximum'")], id="cpu-mode"),
    pytest.param(domain("<cpu mode='custom'><feature policy='require' name='vmx'/></cpu>"),
                 [(6, "<cpu mode='custom'> with <feature>s needs <model>; add one (e.g. qemu64) "
                      "or use mode='host-passthrough'")], id="cpu-features-without-model"),
    pytest.param(domain("<cpu mode='custom'>\n  <model>x y</model>\n</cpu>"),
                 [(7, "<cpu><model>: 'x y' has characters or a form that is not allowed here")],
                 id="cpu-model-chars"),
    pytest.param(domain("<vcpu>4</vcpu>\n<cpu mode='host-model'>\n"
                        "  <topology sockets='1' dies='1' cores='1' threads='2'/>\n</cpu>"),
                 [(7, "<topology> gives 2 vCPUs but <vcpu> is 4; they must match")],
                 id="cpu-topology-mismatch"),
    pytest.param(domain("<cpu mode='host-model'>\n  <topology sockets='0'/>\n</cpu>"),
                 [(7, "<topology sockets>: '0' is too small; the minimum is 1")],
                 id="cpu-topology-zero"),
    pytest.param(domain("<cpu mode='custom'>\n  <model>qemu64</model>\n"
                        "  <feature policy='maybe' name='vmx'/>\n</cpu>"),
                 [(8, "<feature policy>: 'maybe' is not allowed; use one of 'force', 'require', "
                      "'optional', 'disable' or 'forbid'")], id="cpu-feature-policy"),
    pytest.param(domain("<cpu mode='host-passthrough'>\n  <cache mode='disable' x='1'/>\n</cpu>"),
                 [(7, f"<cache>: attribute 'x' {NOT_SUPPORTED}")], id="cpu-cache"),
    pytest.param(domain("<cpu mode='host-passthrough'>\n  <numa/>\n</cpu>"),
                 [(7, "<numa> has no <cell>; add one per guest NUMA node or remove it")],
                 id="cpu-numa-empty"),
]

OS = [
    pytest.param(domain(os=None),
                 [(1, "<os> is missing; add <os><type arch='x86_64'>hvm</type></os>")],
                 id="os-missing"),
    pytest.param(domain(os="<os><boot dev='hd'/></os>"), [(5, "<os> needs <type>hvm</type>")],
                 id="os-no-type"),
    pytest.param(domain(os="<os><type>xen</type></os>"),
                 [(5, "<os><type>: 'xen' is not allowed; use one of 'hvm'")], id="os-type-xen"),
    pytest.param(domain(os="<os><type arch='aarch64'>hvm</type></os>"),
                 [(5, "<type arch>: 'aarch64' is not allowed; use one of 'x86_64' or 'i686'")],
                 id="os-arch"),
    pytest.param(domain(os="<os><type machine='virt'>hvm</type></os>"),
                 [(5, "<type machine>: 'virt' is not supported; use 'pc', 'q35', 'pc-i440fx-X.Y' "
                      "or 'pc-q35-X.Y'")], id="os-machine"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <boot dev='hd'/>\n  <boot dev='usb'/>\n"
                           "</os>"),
                 [(8, "<boot dev>: 'usb' is not allowed; use one of 'hd', 'cdrom', 'fd' or "
                      "'network'")], id="os-boot-dev"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <boot dev='hd'/><boot dev='cdrom'/>"
                           "<boot dev='fd'/><boot dev='network'/>\n</os>"),
                 [(5, "<os>: at most 3 <boot dev=> are supported by the PC firmware")],
                 id="os-boot-four"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <boot dev='hd'/><boot dev='hd'/>\n</os>"),
                 [(5, "<os>: a <boot dev=> appears twice; give each device once")],
                 id="os-boot-twice"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <boot/>\n</os>"),
                 [(7, "<boot dev>: is missing; use one of 'hd', 'cdrom', 'fd' or 'network'")],
                 id="os-boot-no-dev"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <bootmenu enable='maybe'/>\n</os>"),
                 [(7, "<bootmenu enable>: 'maybe' is not allowed; use 'yes' or 'no'")],
                 id="os-bootmenu-enable"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <bootmenu enable='yes' timeout='x'/>\n"
                           "</os>"),
                 [(7, "<bootmenu timeout>: 'x' is not a whole number")], id="os-bootmenu-timeout"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <bootmenu enable='yes' timeout='65536'/>"
                           "\n</os>"),
                 [(7, "<bootmenu timeout>: 65536 is too large; the maximum is 65535")],
                 id="os-bootmenu-timeout-large"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <kernel/>\n</os>"),
                 [(7, "<kernel> is empty; give the path of the file")], id="os-kernel-empty"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <kernel>/k</kernel>\n  <initrd> </initrd>"
                           "\n</os>"),
                 [(8, "<initrd> is empty; give the path of the file")], id="os-initrd-empty"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <initrd>/i</initrd>\n</os>"),
                 [(7, "<initrd> needs <kernel> as well")], id="os-initrd-without-kernel"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <cmdline>quiet</cmdline>\n</os>"),
                 [(7, "<cmdline> needs <kernel> as well")], id="os-cmdline-without-kernel"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <loader readonly='no'>/OVMF.fd</loader>\n"
                           "</os>"),
                 [(7, "<loader readonly='no'> is not supported: UEFI code is read-only; give the "
                      "variables as <nvram>")], id="os-loader"),
    pytest.param(domain(os="<os firmware='uefi'><type>hvm</type></os>"),
                 [(5, "<os firmware>: 'uefi' is not allowed; use one of 'bios' or 'efi'")],
                 id="os-firmware"),
    pytest.param(domain(os="<os firmware='efi'>\n  <type>hvm</type>\n  <firmware>\n"
                           "    <feature enabled='yes' name='amd-sev'/>\n  </firmware>\n</os>"),
                 [(8, "<firmware><feature name>: 'amd-sev' is not known; use 'secure-boot' or "
                      "'enrolled-keys'")], id="os-firmware-feature"),
    pytest.param(domain(os="<os>\n  <type>hvm</type>\n  <firmware>\n"
                           "    <feature enabled='yes' name='secure-boot'/>\n  </firmware>\n</os>"),
                 [(5, "<os>: <firmware><feature> needs <os firmware='efi'>")],
                 id="os-firmware-feature-without-efi"),
]

FEATURES_CLOCK_LIFECYCLE = [
    pytest.param(domain("<features>\n  <acpi/>\n  <hyperv mode='custom'>\n"
                        "    <synic2 state='on'/>\n  </hyperv>\n</features>"),
                 [(9, "<synic2> inside <hyperv> is not an enlightenment QEMU 7.2 has; remove it "
                      "(supported: relaxed, vapic, spinlocks, vpindex, runtime, synic, stimer, "
                      "reset, vendor_id, frequencies, reenlightenment, tlbflush, ipi, evmcs, "
                      "avic)")], id="features-hyperv"),
    pytest.param(domain("<features>\n  <hyperv>\n    <relaxed/>\n  </hyperv>\n</features>"),
                 [(8, "<relaxed> needs state='on' or 'off'")], id="features-hyperv-no-state"),
    pytest.param(domain("<features>\n  <hyperv>\n    <spinlocks state='on' retries='10'/>\n"
                        "  </hyperv>\n</features>"),
                 [(8, "<spinlocks retries>: 10 is too small; the minimum is 4095")],
                 id="features-hyperv-spinlocks"),
    pytest.param(domain("<features>\n  <kvm>\n    <hidden state='yes'/>\n  </kvm>\n</features>"),
                 [(8, "<hidden state>: 'yes' is not allowed; use 'on' or 'off'")],
                 id="features-kvm-hidden"),
    pytest.param(domain("<features>\n  <smm state='on'>\n    <tseg unit='MiB'>48</tseg>\n"
                        "  </smm>\n</features>"),
                 [(7, "<smm><tseg> is not supported by qemud; remove it")], id="features-smm-tseg"),
    pytest.param(domain("<features>\n  <vmport state='maybe'/>\n</features>"),
                 [(7, "<vmport state>: 'maybe' is not allowed; use 'on' or 'off'")],
                 id="features-vmport"),
    pytest.param(domain("<features>\n  <acpi foo='1'/>\n</features>"),
                 [(7, f"<acpi>: attribute 'foo' {NOT_SUPPORTED}")], id="features-acpi-attr"),
    pytest.param(domain("<clock offset='sundial' zone='here'/>"),
                 [(6, f"<clock>: attribute 'zone' {NOT_SUPPORTED}"),
                  (6, "<clock offset>: 'sundial' is not allowed; use one of 'utc', 'localtime', "
                      "'variable', 'absolute' or 'timezone'")], id="clock-offset"),
    pytest.param(domain("<clock offset='utc'>\n  <timer name='foo'/>\n</clock>"),
                 [(7, "<timer name>: 'foo' is not allowed")], id="clock-timer-name"),
    pytest.param(domain("<clock offset='utc'>\n  <timer name='hpet' present='maybe'/>\n</clock>"),
                 [(7, "<timer present>: 'maybe' is not allowed; use 'yes' or 'no'")],
                 id="clock-timer-present"),
    pytest.param(domain("<clock offset='utc'>\n  <timer name='rtc' tickpolicy='fast'/>\n</clock>"),
                 [(7, "<timer tickpolicy>: 'fast' is not allowed; use one of 'delay', 'catchup', "
                      "'merge' or 'discard'")], id="clock-timer-tickpolicy"),
    pytest.param(domain("<clock offset='utc'>\n  <timer name='hpet' frequency='10'/>\n</clock>"),
                 [(7, "<timer>: only the tsc timer takes frequency and mode")],
                 id="clock-timer-frequency"),
    pytest.param(domain("<on_crash>explode</on_crash>"),
                 [(6, "<on_crash>: 'explode' is not allowed; use one of 'destroy', "
                      "'restart', 'preserve' or 'rename-restart'")], id="on-crash"),
    pytest.param(domain("<on_poweroff>halt</on_poweroff>"),
                 [(6, "<on_poweroff>: 'halt' is not allowed")], id="on-poweroff"),
    pytest.param(domain("<on_reboot>restart</on_reboot>\n<on_reboot>destroy</on_reboot>"),
                 [(7, "<on_reboot> appears more than once; keep one")], id="on-reboot-twice"),
    pytest.param(domain("<on_lockfailure>poweroff</on_lockfailure>"),
                 [(6, f"<on_lockfailure> inside <domain> {NOT_SUPPORTED}")], id="on-lockfailure"),
    pytest.param(domain("<pm>\n  <suspend-to-mem enabled='x'/>\n</pm>"),
                 [(7, "<suspend-to-mem enabled>: 'x' is not allowed; use 'yes' or 'no'")],
                 id="pm-flag"),
]

CPUTUNE = [
    pytest.param(domain("<cputune>\n  <quota>-1</quota>\n</cputune>"),
                 [(7, "<cputune><quota> is applied through the cgroup CPU controller, which "
                      "qemud does not manage; remove it (the pins are kept)")],
                 id="cputune"),
]

SYSINFO = [
    pytest.param(domain("<sysinfo/>"), [(6, "<sysinfo type>: is missing; use 'smbios' or "
                                            "'fwcfg'")], id="sysinfo-type"),
]

UNSUPPORTED_TOP = [
    pytest.param(domain(f"<{tag}/>"), [(6, f"<{tag}> inside <domain> {NOT_SUPPORTED}")], id=tag)
    for tag in ("perf", "throttlegroups")
] + [
    pytest.param(domain(f"<{tag}/>"), [(6, f"<{tag}> is not supported: {why}; remove it")],
                 id=tag)
    for tag, why in REFUSED_TOP.items()
]

DESIRED = [
    pytest.param(domain("<metadata>\n  <qemud:desired xmlns:qemud='urn:qemud:1' state='paused'/>"
                        "\n</metadata>"),
                 [(7, "<desired state>: 'paused' is not allowed; use one of 'running' or "
                      "'stopped'")], id="desired-state"),
    pytest.param(domain("<metadata>\n  <qemud:desired xmlns:qemud='urn:qemud:1' "
                        "restart='sometimes'/>\n</metadata>"),
                 [(7, "<desired restart>: 'sometimes' is not allowed; use one of 'always', "
                      "'on-failure' or 'never'")], id="desired-restart"),
    pytest.param(domain("<metadata>\n  <qemud:desired xmlns:qemud='urn:qemud:1' "
                        "shutdown-timeout='0'/>\n</metadata>"),
                 [(7, "<qemud:desired shutdown-timeout>: 0 is too small; the minimum is 1")],
                 id="desired-timeout-zero"),
    pytest.param(domain("<metadata>\n  <qemud:desired xmlns:qemud='urn:qemud:1' "
                        "shutdown-timeout='1m'/>\n</metadata>"),
                 [(7, "<desired shutdown-timeout>: '1m' is not a whole number")],
                 id="desired-timeout-nan"),
    pytest.param(domain("<metadata>\n  <qemud:desired xmlns:qemud='urn:qemud:1' autostart='yes'/>"
                        "\n</metadata>"),
                 [(7, f"<desired>: attribute 'autostart' {NOT_SUPPORTED}")],
                 id="desired-unknown-attr"),
    pytest.param(domain("<metadata>\n  <qemud:desired xmlns:qemud='urn:qemud:1'/>\n"
                        "  <qemud:desired xmlns:qemud='urn:qemud:1' state='running'/>\n"
                        "</metadata>"),
                 [(8, "<qemud:desired> appears more than once; keep one")], id="desired-twice"),
    pytest.param(domain("<metadata>\n  <qemud:wanted xmlns:qemud='urn:qemud:1'/>\n</metadata>"),
                 [(7, f"<wanted> inside <metadata> {NOT_SUPPORTED}")], id="desired-misspelt"),
]

# --- devices ------------------------------------------------------------------------------------

UNSUPPORTED_DEVICES = [
    pytest.param(devices(snippet), [(7, f"<{tag}> {DEVICES}")], id=tag)
    for tag, snippet in [
        ("inputs", "<inputs type='tablet'/>"),
        ("sounds", "<sounds model='ich9'/>"),
    ]
] + [
    # what libvirt has but qemud refuses: each with the sentence that says why
    pytest.param(devices(snippet), [(7, f"<{tag}> devices are not supported by qemud: {why}; "
                                        "remove it")], id=tag)
    for tag, snippet, why in [
        ("hostdev", "<hostdev mode='subsystem' type='pci' managed='yes'/>", "passing a host "
         "device through needs VFIO setup and privileges qemud does not manage"),
        ("lease", "<lease/>", "leases belong to libvirt's lock manager, which qemud does not have"),
    ]
]

GRAPHICS = [
    pytest.param(devices("<graphics type='spice' tlsPort='5902'/>"),
                 [(7, "<graphics>: spice over TLS needs port= on an address too (QEMU cannot "
                      "choose spice ports, and TLS is for TCP clients)")], id="graphics-spice"),
    pytest.param(devices("<graphics type='vnc'>\n  <image compression='off'/>\n</graphics>"),
                 [(7, "<graphics>: image, jpeg, zlib, playback, streaming, mouse, clipboard, "
                      "filetransfer, tlsPort, defaultMode, channel and gl are spice settings; "
                      "VNC has none of them")],
                 id="graphics-vnc-image"),
    pytest.param(devices("<graphics type='spice' port='5930'>\n  <image compression='fast'/>\n"
                         "</graphics>"),
                 [(8, "<image compression>: 'fast' is not allowed; use one of 'auto_glz', "
                      "'auto_lz', 'quic', 'glz', 'lz' or 'off'")], id="graphics-spice-image"),
    pytest.param(devices("<graphics type='vnx'/>"), [(7, "<graphics type>: 'vnx' is not allowed")],
                 id="graphics-vnx"),
    pytest.param(devices("<graphics type='vnc' autoport='no'/>"),
                 [(7, "<graphics autoport='no'> needs a port (5900 or above)")],
                 id="graphics-no-autoport-no-port"),
    pytest.param(devices("<graphics type='vnc' port='100'/>"),
                 [(7, "<graphics port>: 100 is too small; the minimum is 5900")],
                 id="graphics-port-small"),
    pytest.param(devices("<graphics type='vnc' port='65536'/>"),
                 [(7, "<graphics port>: 65536 is too large; the maximum is 65535")],
                 id="graphics-port-large"),
    pytest.param(devices("<graphics type='vnc' port='abc'/>"),
                 [(7, "<graphics port>: 'abc' is not a whole number")], id="graphics-port-nan"),
    pytest.param(devices("<graphics type='vnc' autoport='maybe'/>"),
                 [(7, "<graphics autoport>: 'maybe' is not allowed; use 'yes' or 'no'")],
                 id="graphics-autoport"),
    pytest.param(devices("<graphics type='vnc' listen='a b'/>"),
                 [(7, "<graphics listen>: 'a b' has characters or a form that is not allowed")],
                 id="graphics-listen"),
    pytest.param(devices("<graphics type='vnc'>\n  <listen type='network' network='default'/>\n"
                         "</graphics>"),
                 [(8, "<listen type>: 'network' is not supported; use 'address', 'socket' or "
                      "'none' (a libvirt network's address is not known to qemud)")],
                 id="graphics-listen-net"),
    pytest.param(devices("<graphics type='vnc' passwd='muchtoolong'/>"),
                 [(7, "<graphics>: a VNC password has at most 8 characters")],
                 id="graphics-passwd"),
    pytest.param(devices("<graphics type='vnc'/>\n<graphics type='vnc'/>"),
                 [(8, "more than one <graphics type='vnc'> is not supported; keep one (one VNC "
                      "and one spice may go together)")], id="graphics-two"),
    pytest.param(devices("<memballoon model='virtio'/>\n<memballoon model='none'/>"),
                 [(8, "more than one <memballoon> is not supported; keep one")],
                 id="memballoon-two"),
    pytest.param(devices("<panic model='isa'/>\n<panic model='isa'/>"),
                 [(8, "more than one <panic model='isa'> is not supported; keep one")],
                 id="panic-two"),
]

DISKS = [
    pytest.param(devices("""
        <disk type='file' device='disk'>
          <driver name='qemu' type='vmdk' cache='fast'/>
          <source file='/a.img'/>
          <target dev='vda' bus='virtio'/>
        </disk>"""),
                 [(8, "<driver type>: 'vmdk' is not allowed; use one of 'raw' or 'qcow2'"),
                  (8, "<driver cache>: 'fast' is not allowed; use one of 'default', 'none', "
                      "'writethrough', 'writeback', 'directsync' or 'unsafe'")],
                 id="disk-driver-type-and-cache"),
    pytest.param(devices("<disk>\n  <driver name='tap'/>\n  <source file='/a'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(8, "<driver name>: 'tap' is not allowed; use 'qemu'")], id="disk-driver-name"),
    pytest.param(devices("<disk>\n  <driver name='qemu' io='native'/>\n  <source file='/a'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(7, "<disk>: io='native' needs cache='none' or 'directsync' (QEMU needs "
                      "O_DIRECT for it)")], id="disk-driver-io"),
    pytest.param(devices("<disk>\n  <driver name='qemu' io='fast'/>\n  <source file='/a'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(8, "<driver io>: 'fast' is not allowed; use one of 'threads', 'native' or "
                      "'io_uring'")], id="disk-driver-io-value"),
    pytest.param(devices("<disk>\n  <driver name='qemu' detect_zeroes='unmap'/>\n"
                         "  <source file='/a'/>\n  <target dev='vda'/>\n</disk>"),
                 [(7, "<disk>: detect_zeroes='unmap' needs discard='unmap' (QEMU refuses it "
                      "otherwise); or use detect_zeroes='on'")], id="disk-detect-zeroes"),
    pytest.param(domain("<on_poweroff>preserve</on_poweroff>\n<on_reboot>rename-restart</on_reboot>"),
                 [(6, "<on_poweroff>: 'preserve' is not supported by qemud (nor by libvirt's QEMU "
                      "driver); use 'destroy' or 'restart'"),
                  (7, "<on_reboot>: 'rename-restart' is not supported by qemud (nor by libvirt's "
                      "QEMU driver); use 'destroy' or 'restart'")], id="lifecycle-preserve"),
    pytest.param(domain("<clock>\n<timer name='platform'/>\n<timer name='rtc' tickpolicy='merge'/>\n"
                        "<timer name='pit' tickpolicy='merge'/>\n"
                        "<timer name='hpet' tickpolicy='delay'/>\n</clock>"),
                 [(7, "<timer>: QEMU has no 'platform' timer (libvirt's QEMU driver refuses it too); "
                      "remove it"),
                  (8, "<timer>: the rtc timer cannot take tickpolicy='merge' in QEMU; use 'delay' "
                      "or 'catchup'"),
                  (9, "<timer>: the pit timer cannot take tickpolicy='merge' in QEMU; use 'delay' "
                      "or 'catchup' or 'discard'"),
                  (10, "<timer>: the hpet timer cannot take tickpolicy='delay' in QEMU; only rtc "
                       "and pit have a tick policy; remove it")], id="timers-qemu-lacks"),
    pytest.param(devices("<controller type='pci' index='1' model='pci-expander-bus'/>"),
                 [(7, "<controller type='pci' model>: 'pci-expander-bus' is not supported by "
                      "qemud; use one of 'pci-root', 'pcie-root', 'pcie-root-port', "
                      "'pci-bridge', 'pcie-to-pci-bridge'")], id="controller-pci-model"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n  <iotune>\n"
                         "    <total_bytes_sec>5</total_bytes_sec>\n"
                         "    <read_bytes_sec>5</read_bytes_sec>\n  </iotune>\n</disk>"),
                 [(10, "<iotune>: <total_bytes_sec> and <read_bytes_sec>/<write_bytes_sec> cannot "
                       "be set together (QEMU refuses it); keep the total or the read/write pair")],
                 id="iotune-total-and-read"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n  <iotune>\n"
                         "    <read_iops_sec_max>5</read_iops_sec_max>\n  </iotune>\n</disk>"),
                 [(10, "<iotune>: <read_iops_sec_max> needs <read_iops_sec> (a burst rate above "
                       "a rate)")], id="iotune-burst-without-rate"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n  <iotune>\n"
                         "    <total_iops_sec>50</total_iops_sec>\n"
                         "    <total_iops_sec_max>5</total_iops_sec_max>\n  </iotune>\n</disk>"),
                 [(10, "<iotune>: <total_iops_sec_max> (5) is below <total_iops_sec> (50); a "
                       "burst rate cannot be lower than the rate")], id="iotune-burst-below-rate"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n  <iotune>\n"
                         "    <total_bytes_sec>5</total_bytes_sec>\n"
                         "    <total_bytes_sec_max_length>3</total_bytes_sec_max_length>\n"
                         "  </iotune>\n</disk>"),
                 [(10, "<iotune>: <total_bytes_sec_max_length> needs <total_bytes_sec_max> (the "
                       "burst it lasts)")], id="iotune-length-without-burst"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n  <iotune>\n"
                         "    <group_name>g</group_name>\n  </iotune>\n</disk>"),
                 [(10, "<iotune>: <group_name> without any limit has no effect in QEMU; add a "
                       "limit or remove it")], id="iotune-group-alone"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n  <iotune>\n"
                         "    <total_bytes_sec>-1</total_bytes_sec>\n"
                         "    <total_iops_sec>x</total_iops_sec>\n"
                         "    <burst>1</burst>\n  </iotune>\n</disk>"),
                 [(11, "<iotune><total_bytes_sec>: '-1' is too small; the minimum is 0"),
                  (12, "<iotune><total_iops_sec>: 'x' is not a whole number"),
                  (13, "<burst> inside <iotune> is not supported by qemud; remove it or see "
                       "README for what is")], id="iotune-values"),
    pytest.param(devices("<disk device='cdrom'>\n  <target dev='sda' bus='sata'/>\n"
                         "  <iotune><total_bytes_sec>5</total_bytes_sec></iotune>\n</disk>"),
                 [(7, "<disk>: <iotune> on an empty drive has no effect (QEMU throttles media, "
                      "and there is none); add a <source> or remove <iotune>")],
                 id="iotune-empty-drive"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <iotune><total_bytes_sec>5</total_bytes_sec><group_name>g</group_name>"
                         "</iotune>\n</disk>\n<disk>\n  <source file='/b'/>\n  <target dev='vdb'/>\n"
                         "  <iotune><total_bytes_sec>6</total_bytes_sec><group_name>g</group_name>"
                         "</iotune>\n</disk>"),
                 [(12, "<iotune><group_name>g</group_name>: disks of one group share their "
                       "limits, and this disk's differ from <target dev='vda'>'s; make them equal "
                       "or use another group")], id="iotune-group-differs"),
    pytest.param(devices("<disk>\n  <driver name='qemu' discard='yes'/>\n  <source file='/a'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(8, "<driver discard>: 'yes' is not allowed; use one of 'unmap' or 'ignore'")],
                 id="disk-driver-discard"),
    pytest.param(devices("<disk type='network' device='disk'>\n"
                         "  <source protocol='rbd' name='pool/image'><host name='mon'/></source>\n"
                         "  <auth username='u'/>\n  <target dev='sda' bus='scsi'/>\n</disk>"),
                 [(7, "<disk type='network'> is not supported: network storage (rbd, iSCSI, NBD, "
                      "gluster, http...) needs QEMU's network block drivers and secrets qemud "
                      "does not manage; use a local file or block device")], id="disk-network"),
    pytest.param(devices("<disk type='volume'>\n  <source pool='default' volume='a.qcow2'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(7, "<disk type='volume'> is not supported: a storage-pool volume needs "
                      "libvirt's storage driver to find its path; use <disk type='file'> (or "
                      "'block') with the path `virsh vol-path` gives")], id="disk-volume"),
    pytest.param(devices("<disk type='file' device='lun'>\n  <source file='/a'/>\n"
                         "  <target dev='sda' bus='scsi'/>\n</disk>"),
                 [(7, "<disk device>: 'lun' is not allowed; use one of 'disk', 'cdrom' or "
                      "'floppy'")], id="disk-lun"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='xda' bus='xen'/>\n"
                         "</disk>"),
                 [(9, "<target dev>: 'xda' has characters or a form that is not allowed here"),
                  (9, "<target bus>: 'xen' is not allowed; use one of 'ide', 'sata', 'scsi', "
                      "'virtio', 'fdc' or 'usb'")], id="disk-target"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='sda' bus='sata' "
                         "removable='on'/>\n</disk>"),
                 [(9, "<target removable>: only USB disks (bus='usb') have removable media; "
                      "remove it")], id="disk-removable-not-usb"),
    pytest.param(devices("<disk device='cdrom'>\n  <target dev='sda' bus='usb'/>\n</disk>"),
                 [(8, "<target bus='usb'> needs a <source>: QEMU's usb-storage cannot start "
                      "without media (put an empty CD-ROM on bus='sata' or 'scsi')")],
                 id="disk-usb-empty"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='xda'/>\n</disk>"),
                 [(9, "<target dev>: 'xda' has characters"),
                  (9, "<target bus> is required")], id="disk-target-no-bus"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n</disk>"),
                 [(7, "<disk> needs <target dev='vda' bus='virtio'/>")], id="disk-no-target"),
    pytest.param(devices("<disk type='file' device='disk'>\n  <target dev='vda'/>\n</disk>"),
                 [(7, "<disk>: a disk needs <source>; only a cdrom or a floppy may be empty")],
                 id="disk-no-source"),
    pytest.param(devices("<disk type='block'>\n  <source file='/dev/sdb'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(7, "<disk>: a disk needs <source>"),
                  (8, f"<source>: attribute 'file' {NOT_SUPPORTED}")], id="disk-block-with-file"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <boot order='0'/>\n</disk>"),
                 [(10, "<boot order>: '0' is too small; the minimum is 1")], id="disk-boot-0"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <boot order='2147483648'/>\n</disk>"),
                 [(10, "<boot order>: '2147483648' is too large; the maximum is 2147483647")],
                 id="disk-boot-int32"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <serial>a/b</serial>\n</disk>"),
                 [(10, "<serial>: 'a/b' has characters or a form that is not allowed here")],
                 id="disk-serial"),
    pytest.param(devices("<disk>\n  <source file='/a' startupPolicy='mandatory' foo='1'/>\n"
                         "  <target dev='vda'/>\n</disk>"),
                 [(8, f"<source>: attribute 'foo' {NOT_SUPPORTED}")], id="disk-source-attr"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <wwn>12</wwn>\n</disk>"),
                 [(10, "<wwn>: '12' has characters or a form that is not allowed here")],
                 id="disk-wwn"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n</disk>\n"
                         "<disk>\n  <source file='/b'/>\n  <target dev='vda'/>\n</disk>"),
                 [(11, "<target dev='vda'> is used by two disks; each disk needs its own")],
                 id="disk-same-target"),
    pytest.param(devices("<disk device='cdrom'>\n  <target dev='vdb' bus='virtio'/>\n</disk>"),
                 [(7, "a cdrom cannot be on bus='virtio'; use 'sata', 'ide' or 'scsi'")],
                 id="disk-cdrom-virtio"),
    pytest.param(devices("<disk device='floppy'>\n  <target dev='sda' bus='sata'/>\n</disk>"),
                 [(7, "a floppy goes on bus='fdc', and only a floppy does")],
                 id="disk-floppy-on-sata"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='fda'/>\n</disk>"),
                 [(7, "a floppy goes on bus='fdc', and only a floppy does")],
                 id="disk-disk-on-fdc"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='hde' bus='ide'/>\n"
                         "</disk>"),
                 [(7, "IDE has 4 units (hda-hdd) and only on machine 'pc'")], id="disk-ide-hde"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='hda' bus='ide'/>\n"
                         "</disk>", os="<os><type machine='q35'>hvm</type></os>"),
                 [(7, "machine 'q35' has no IDE bus; use bus='sata'")], id="disk-ide-on-q35"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='sdg' bus='sata'/>\n"
                         "</disk>"),
                 [(7, "SATA has 6 ports (sda-sdf)")], id="disk-sata-sdg"),
    pytest.param(devices("<disk device='floppy'>\n  <target dev='fdc'/>\n</disk>"),
                 [(7, "floppies are fda and fdb, and only on machine 'pc'")], id="disk-fdc"),
    pytest.param(devices("<disk device='floppy'>\n  <target dev='fda'/>\n</disk>",
                         os="<os><type machine='pc-q35-8.2'>hvm</type></os>"),
                 [(7, "floppies are fda and fdb, and only on machine 'pc'")],
                 id="disk-floppy-on-q35"),
]

INTERFACES = [
    pytest.param(devices("<interface type='bridge'/>"),
                 [(7, "<interface>: type='bridge' needs <source bridge='...'/>")],
                 id="nic-bridge-no-source"),
    pytest.param(devices("<interface type='network'/>"),
                 [(7, "<interface>: type='network' needs <source network='...'/>")],
                 id="nic-network-no-source"),
    pytest.param(devices("<interface type='user'>\n  <source bridge='br0'/>\n</interface>"),
                 [(7, "<interface>: type='user' takes no <source>")], id="nic-user-with-source"),
    pytest.param(devices("<interface type='direct'>\n  <source dev='eth0' mode='bridge'/>\n"
                         "</interface>"),
                 [(7, "<interface type='direct'> is not supported: macvtap devices are created "
                      "by libvirt")], id="nic-direct"),
    pytest.param(devices("<interface type='user'>\n  <model type='virtio-net'/>\n</interface>"),
                 [(8, "<model type>: 'virtio-net' is not allowed; use one of 'virtio', 'e1000', "
                      "'e1000e', 'rtl8139', 'ne2k_pci', 'pcnet' or 'vmxnet3'")], id="nic-model"),
    pytest.param(devices("<interface type='user'>\n  <mac address='52:54:00:zz:00:01'/>\n"
                         "</interface>"),
                 [(8, "<mac address>: '52:54:00:zz:00:01' has characters or a form that is not "
                      "allowed here")], id="nic-mac"),
    pytest.param(devices("<interface type='bridge'>\n  <source bridge='a-very-long-bridge'/>\n"
                         "</interface>"),
                 [(8, "<source bridge>: 'a-very-long-bridge' has characters or a form")],
                 id="nic-bridge-name"),
    pytest.param(devices("<interface type='user'>\n  <bandwidth/>\n</interface>"),
                 [(8, "<bandwidth> inside <interface> is not supported: traffic shaping is "
                      "applied by libvirt with tc, which qemud does not run")],
                 id="nic-bandwidth"),
    pytest.param(devices("<interface type='user'>\n  <model type='virtio'/>\n"
                         "  <driver name='vhost' queues='4'/>\n</interface>"),
                 [(7, "<interface>: <driver queues>: a type='user' netdev has one queue pair; "
                      "multiqueue needs type='ethernet' (a multiqueue tap)")], id="nic-driver"),
    pytest.param(devices("<interface type='user'>\n  <model type='e1000'/>\n"
                         "  <driver packed='on'/>\n</interface>"),
                 [(7, "<interface>: <driver> iommu, ats and packed are options of virtio devices; "
                      "remove them or use the virtio model/bus")], id="nic-virtio-options"),
    pytest.param(devices("<interface type='user'>\n  <boot order='1'/>\n</interface>\n"
                         "<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <boot order='1'/>\n</disk>"),
                 [(10, "two devices have <boot order='1'>")], id="boot-order-twice"),
    pytest.param(devices("<disk>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
                         "  <boot order='1'/>\n</disk>",
                         os="<os><type>hvm</type><boot dev='hd'/></os>"),
                 [(7, "<os><boot dev=> and per-device <boot order=> cannot be mixed; use one")],
                 id="boot-order-and-boot-dev"),
]

SERIALS = [
    pytest.param(devices("<serial type='tcp'>\n  <source mode='bind' host='0'/>\n</serial>"),
                 [(7, "<serial>: type='tcp' needs <source service='PORT'/>")], id="serial-tcp"),
    pytest.param(devices("<serial type='vc'/>"),
                 [(7, "<serial type>: 'vc' is not supported; a virtual console needs a "
                      "graphical QEMU window")], id="serial-vc"),
    pytest.param(devices("<serial type='tcp'>\n  <source host='h' service='1' tls='yes'/>\n"
                         "</serial>"),
                 [(8, "<source tls='yes'>: TLS needs x509 certificates")], id="serial-tcp-tls"),
    pytest.param(devices("<serial type='tcp'>\n  <source mode='bind' service='1'>\n"
                         "    <reconnect enabled='yes' timeout='3'/>\n  </source>\n</serial>"),
                 [(9, "<reconnect> is for tcp and unix sources with mode='connect'")],
                 id="serial-reconnect-bind"),
    pytest.param(devices("<serial type='udp'>\n  <source mode='bind' service='1'/>\n</serial>"),
                 [(7, "<serial>: type='udp' needs <source mode='connect' service='PORT'/>")],
                 id="serial-udp-no-connect"),
    pytest.param(devices("<serial type='pty'>\n  <source append='on'/>\n</serial>"),
                 [(8, "<source append> is for type='file' only")], id="serial-append-pty"),
    pytest.param(devices("<parallel type='pty'>\n  <target port='3'/>\n</parallel>"),
                 [(8, "<target port>: '3' is too large; the maximum is 2")], id="parallel-port"),
    pytest.param(devices("<serial type='file'/>"),
                 [(7, "<serial>: type='file' needs <source path='...'/>")], id="serial-file-no-path"),
    pytest.param(devices("<serial type='unix'>\n  <source mode='connect'/>\n</serial>"),
                 [(7, "<serial>: type='unix' needs <source path='...'/>")], id="serial-unix-no-path"),
    pytest.param(devices("<serial type='unix'>\n  <source mode='listen' path='/s'/>\n</serial>"),
                 [(8, "<source mode>: 'listen' is not allowed; use one of 'bind' or 'connect'")],
                 id="serial-unix-mode"),
    pytest.param(devices("<console type='pty'>\n  <target type='xen' port='0'/>\n</console>"),
                 [(8, "<target type>: 'xen' is not supported; use 'serial' or 'isa-debug' (or "
                      "'virtio' on a <console>)")], id="console-xen"),
    pytest.param(devices("<serial type='pty'>\n  <target port='0'>\n"
                         "    <model name='16550a'/>\n  </target>\n</serial>"),
                 [(9, "<model name>: only 'isa-serial' is supported")], id="serial-model"),
    pytest.param(devices("<serial type='pty'>\n  <log file='/l' append='yes'/>\n</serial>"),
                 [(8, "<log append>: 'yes' is not allowed; use 'on' or 'off'")],
                 id="serial-log-append"),
    pytest.param(devices("<serial type='pty'>\n  <target port='-1'/>\n</serial>"),
                 [(8, "<target port>: '-1' is too small; the minimum is 0")], id="serial-port"),
    pytest.param(devices("<serial type='pty'>\n  <target port='4'/>\n</serial>"),
                 [(8, "<target port>: '4' is too large; the maximum is 3")], id="serial-port-4"),
    pytest.param(devices("<serial type='pty'><target port='0'/></serial>\n"
                         "<serial type='null'><target port='0'/></serial>"),
                 [(8, "two <serial> devices use <target port='0'>")], id="serial-same-port"),
    pytest.param(devices("<serial type='pty'>\n  <protocol type='telnet'/>\n</serial>"),
                 [(8, "<protocol type='telnet'> is for type='tcp' only; remove it")],
                 id="serial-protocol"),
]

OTHER_DEVICES = [
    pytest.param(devices("<tpm model='tpm-crb'/>"),
                 [(7, "<tpm> needs <backend type='emulator'/>: qemud runs an swtpm for it")],
                 id="tpm-no-backend"),
    pytest.param(devices("<tpm model='tpm-tis'>\n  <backend type='passthrough'>\n"
                         "    <device path='/dev/tpm0'/>\n  </backend>\n</tpm>"),
                 [(8, "<tpm><backend type>: 'passthrough' is not supported; use 'emulator' "
                      "(qemud does not hand a host TPM to a guest)"),
                  (9, "<device> inside <backend> is not supported by qemud; remove it or see "
                      "README for what is")], id="tpm-passthrough"),
    pytest.param(devices("<tpm model='tpm-spapr'><backend type='emulator'/></tpm>"),
                 [(7, "<tpm model>: 'tpm-spapr' is not allowed; use one of 'tpm-tis' or "
                      "'tpm-crb'")], id="tpm-model"),
    pytest.param(devices("<tpm><backend type='emulator' version='3.0'/></tpm>"),
                 [(7, "<backend version>: '3.0' is not allowed; use one of '1.2' or '2.0'")],
                 id="tpm-version"),
    pytest.param(devices("<tpm>\n  <backend type='emulator'>\n"
                         "    <encryption secret='6dd3e4a5-1d76-44ce-961f-f119f5aad935'/>\n"
                         "  </backend>\n</tpm>"),
                 [(9, "<tpm><backend><encryption> is not supported: qemud cannot keep the secret "
                      "that encrypts it; remove it")], id="tpm-encryption"),
    pytest.param(devices("<tpm><backend type='emulator' persistent_state='yes'/></tpm>"),
                 [(7, "<backend persistent_state> is not supported: the TPM state is always kept "
                      "in the VM's state folder; remove it")], id="tpm-persistent-state"),
    pytest.param(devices("<tpm><backend type='emulator'/></tpm>\n"
                         "<tpm><backend type='emulator'/></tpm>"),
                 [(8, "more than one <tpm> is not supported; keep one")], id="tpm-two"),
    pytest.param(devices("<video>\n  <model type='vmvga'/>\n</video>"),
                 [(8, "<model type>: 'vmvga' is not allowed; use one of 'vga', 'cirrus', 'qxl', "
                      "'virtio', 'bochs', 'ramfb' or 'none'")], id="video-model"),
    pytest.param(devices("<video><model type='cirrus'/></video>\n"
                         "<video><model type='cirrus'/></video>"),
                 [(6, "video model 'cirrus' can only be the first video device")],
                 id="video-second-cirrus"),
    pytest.param(devices("<input type='tablet' bus='ps2'/>"),
                 [(7, "<input>: a tablet cannot be on the ps2 bus; use bus='usb' or bus='virtio'")],
                 id="input-ps2-tablet"),
    pytest.param(devices("<input type='joystick' bus='virtio'/>"),
                 [(7, "<input type>: 'joystick' is not allowed; use one of 'tablet', 'mouse', "
                      "'keyboard', 'passthrough' or 'evdev'")], id="input-type"),
    pytest.param(devices("<input type='mouse' bus='xen'/>"),
                 [(7, "<input bus>: 'xen' is not allowed; use one of 'usb', 'ps2' or 'virtio'")],
                 id="input-bus"),
    pytest.param(devices("<memballoon model='xen'/>"),
                 [(7, "<memballoon model>: 'xen' is not supported; use 'virtio' or 'none'")],
                 id="memballoon-model"),
    pytest.param(devices("<panic model='pseries'/>"),
                 [(7, "<panic model>: 'pseries' is not supported; use 'isa' or 'hyperv'")],
                 id="panic-model"),
    pytest.param(devices("<rng model='virtio'>\n  <backend model='hw'>/dev/random</backend>\n"
                         "</rng>"),
                 [(8, "<backend model>: 'hw' is not supported; use 'random' (a host device), "
                      "'builtin' (QEMU's own) or 'egd' (an EGD daemon)")], id="rng-backend"),
    pytest.param(devices("<rng model='virtio-transitional'>\n"
                         "  <backend model='random'>/dev/urandom</backend>\n</rng>"),
                 [(7, "<rng model>: 'virtio-transitional' is not allowed; use one of 'virtio'")],
                 id="rng-model"),
    pytest.param(devices("<rng model='virtio'>\n  <backend model='random'>/dev/urandom</backend>\n"
                         "  <rate bytes='0'/>\n</rng>"),
                 [(9, "<rate bytes>: '0' is too small; the minimum is 1")], id="rng-rate"),
    pytest.param(devices("<controller type='foo'/>"),
                 [(7, "<controller type>: 'foo' is not allowed; use one of 'usb', 'scsi', 'ide', "
                      "'sata', 'pci', 'virtio-serial', 'fdc' or 'ccid'")],
                 id="controller-type"),
    pytest.param(devices("<controller type='usb' index='-1'/>"),
                 [(7, "<controller index>: '-1' is too small; the minimum is 0")],
                 id="controller-index"),
    pytest.param(devices("<controller type='usb' model='pci-ohci'/>"),
                 [(7, "<controller type='usb' model>: 'pci-ohci' is not supported; use one of "
                      "'piix3-uhci', 'piix4-uhci', 'ehci', 'ich9-ehci1', 'qemu-xhci', "
                      "'nec-xhci', 'ich9-uhci1', 'ich9-uhci2', 'ich9-uhci3', 'none'")],
                 id="controller-usb-model"),
    pytest.param(devices("<controller type='scsi' model='buslogic'/>\n"
                         "<disk><source file='/a'/><target dev='sda' bus='scsi'/></disk>"),
                 [(7, "<controller type='scsi' model>: 'buslogic' is not supported by qemud; use "
                      "one of 'auto', 'lsilogic', 'virtio-scsi'")], id="controller-scsi-model"),
    pytest.param(devices("<controller type='usb' model='none'/>\n"
                         "<input type='tablet' bus='usb'/>"),
                 [(6, "USB devices (inputs, redirdev, usb sound) need a USB controller, but it "
                      "is model='none'")],
                 id="controller-usb-none-with-usb-input"),
    pytest.param(devices("<emulator>bin/qemu-kvm</emulator>"),
                 [(7, "<emulator>: 'bin/qemu-kvm' is a relative path; give the QEMU binary's "
                      "full path (e.g. /usr/bin/qemu-system-x86_64)")], id="emulator-relative"),
    pytest.param(devices("<emulator>/usr/bin/qemu-system-aarch64</emulator>"),
                 [(7, "<emulator>: qemu-system-aarch64 emulates another architecture; qemud runs "
                      "x86 guests: use /usr/bin/qemu-system-x86_64")],
                 id="emulator-aarch64"),
    pytest.param(devices("<emulator>/usr/bin/qemu-system-i386</emulator>"),
                 [(7, "<emulator> qemu-system-i386 cannot run arch='x86_64'; use "
                      "qemu-system-x86_64")], id="emulator-i386-for-x86_64"),
]

ALL_ERRORS = (TOP_LEVEL + CPU + OS + FEATURES_CLOCK_LIFECYCLE + UNSUPPORTED_TOP + SYSINFO + CPUTUNE + DESIRED
              + UNSUPPORTED_DEVICES + GRAPHICS + DISKS + INTERFACES + SERIALS + OTHER_DEVICES)


@pytest.mark.parametrize(("data", "expected"), ALL_ERRORS)
def test_error_paths_with_their_lines(data: bytes, expected: list[tuple[int, str]]) -> None:
    check(data, expected)


PYDANTIC_TYPE = re.compile(r"type=[a-z_]+[,\]]")
"""How Pydantic dumps an error type (`[type=literal_error, input_value=...]`)."""


@pytest.mark.parametrize(("data", "expected"), ALL_ERRORS)
def test_messages_are_in_the_users_language(data: bytes, expected: list[tuple[int, str]]) -> None:
    for _, message in issues(data):
        for leak in ("pydantic", "Pydantic", "ValidationError", "input_value", "input_type",
                     "errors.pydantic.dev", "Traceback", "Value error,", "lxml", "model_"):
            assert leak not in message
        # `type='bridge'` quotes the user's XML; `type=literal_error` would be a dump
        assert not PYDANTIC_TYPE.search(message), message
        assert "type=" not in message.replace("type='", "")
        assert message == message.strip() and "\n" not in message
        assert message[0] in "<'\"" or message[0].isalpha()


def test_video_acceleration_off_is_accepted_but_3d_is_refused() -> None:
    # accel3d='no' is QEMU's default; 3D (virgl) would be silently dropped
    data = devices("<video>\n  <model type='virtio'>\n    <acceleration accel3d='no'/>\n"
                   "    <resolution x='1024' y='768'/>\n  </model>\n</video>")
    assert model.parse(data).domain.devices.videos == (Video(model="virtio",
                                                             resolution=(1024, 768)),)
    data = devices("<video>\n  <model type='virtio'>\n    <acceleration accel3d='yes'/>\n"
                   "    <resolution x='1024'/>\n  </model>\n</video>\n"
                   "<video>\n  <model type='vga'>\n    <resolution x='1024' y='768'/>\n"
                   "  </model>\n</video>")
    assert issues(data) == [
        (9, "<acceleration accel3d='yes'> needs virgl and a host GPU (egl-headless), which qemud "
            "does not set up; remove it"),
        (10, "<resolution> needs x= and y= (pixels)"),
        (15, "<resolution> is for qxl and virtio video; QEMU's vga has no settable resolution "
             "(the guest picks it); remove it"),
    ]


# --- all errors at once -------------------------------------------------------------------------


def test_three_independent_mistakes_give_three_issues_in_line_order() -> None:
    data = domain("""
        <vcpu>0</vcpu>
        <devices>
          <sounds model='ich9'/>
          <graphics type='vnx'/>
        </devices>
        """, kind="xen")
    assert issues(data) == [
        (1, "<domain type>: 'xen' is not allowed; use one of 'kvm' or 'qemu'"),
        (6, "<vcpu>: '0' is too small; the minimum is 1"),
        (8, f"<sounds> {DEVICES}"),
        (9, "<graphics type>: 'vnx' is not allowed; use one of 'vnc' or 'spice'"),
    ]


def test_many_mistakes_across_the_file_are_all_reported() -> None:
    data = b"""\
<domain type='kvm' foo='1'>
  <name>a/b</name>
  <uuid>not-a-uuid</uuid>
  <memory unit='XB'>1</memory>
  <os>
    <type arch='arm'>hvm</type>
    <boot dev='usb'/>
  </os>
  <clock offset='mars'/>
  <devices>
    <disk type='file' device='disk'>
      <target dev='vda' bus='virtio'/>
    </disk>
    <hostdev/>
  </devices>
  <metadata>
    <qemud:desired xmlns:qemud='urn:qemud:1' state='on'/>
  </metadata>
</domain>
"""
    got = issues(data)
    assert [line for line, _ in got] == [1, 2, 3, 4, 6, 7, 9, 11, 14, 17]
    assert got[0][1].startswith("<domain>: attribute 'foo'")
    assert got[-1][1].startswith("<desired state>: 'on' is not allowed")


def test_the_exception_renders_every_issue_as_file_line_message() -> None:
    data = domain("<vcpu>0</vcpu>\n<on_crash>boom</on_crash>")
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data, "vm.xml")
    assert info.value.file == "vm.xml"
    assert str(info.value).splitlines() == [
        "vm.xml:6: <vcpu>: '0' is too small; the minimum is 1",
        "vm.xml:7: <on_crash>: 'boom' is not allowed; use one of 'destroy', 'restart', "
        "'preserve' or 'rename-restart'",
    ]
    assert isinstance(info.value, model.ModelError)


@pytest.mark.parametrize(("issue", "file", "text"), [
    (model.Issue(3, "bad"), "a.xml", "a.xml:3: bad"),
    (model.Issue(None, "bad"), "a.xml", "a.xml: bad"),
    (model.Issue(12, "bad"), Path("/d/b.xml"), "/d/b.xml:12: bad"),
    (model.Issue(1, "bad"), None, "<input>:1: bad"),
])
def test_issue_render(issue: model.Issue, file: str | Path | None, text: str) -> None:
    assert issue.render(file) == text


# --- hardening ----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<domain type='kvm'>
  <name>&lol9;</name>
  <memory>1</memory>
  <os><type>hvm</type></os>
</domain>
"""

DOCTYPE = "a DOCTYPE is not allowed in domain files; remove it"


def test_billion_laughs_is_refused_without_expansion() -> None:
    start = time.perf_counter()
    got = issues(BILLION_LAUGHS)
    assert time.perf_counter() - start < 1.0
    assert got == [(2, DOCTYPE)]


@pytest.mark.parametrize("lines_before", [0, 1, 3])
def test_a_small_internal_entity_is_refused_too_at_the_doctype_line(lines_before: int) -> None:
    data = ("<!-- x -->\n" * lines_before
            + "<!DOCTYPE domain [<!ENTITY n 'web'>]>\n"
            + domain(name="<name>&n;</name>").decode()).encode()
    assert issues(data) == [(lines_before + 1, DOCTYPE)]


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOP-SECRET-CONTENT")
    data = (f'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
            f"<domain type='kvm'><name>&xxe;</name><memory>1</memory>"
            f"<os><type>hvm</type></os></domain>\n").encode()
    got = issues(data)
    assert got == [(2, DOCTYPE)]
    assert "TOP-SECRET" not in repr(got)


def test_external_dtd_is_refused() -> None:
    data = (b'<!DOCTYPE domain SYSTEM "http://example.invalid/domain.dtd">\n'
            + domain())
    assert issues(data) == [(1, DOCTYPE)]


def test_a_file_over_one_mib_is_refused() -> None:
    base = domain()
    data = base.replace(b"</domain>", b"<!--" + b"x" * (MAX_BYTES - len(base)) + b"--></domain>")
    assert len(data) == MAX_BYTES + 7
    assert issues(data) == [(None, f"file is {MAX_BYTES + 7} bytes; the limit is 1048576 bytes")]


def test_a_file_of_exactly_one_mib_is_accepted() -> None:
    base = domain()
    pad = MAX_BYTES - len(base) - len(b"<!---->")
    data = base.replace(b"</domain>", b"<!--" + b"x" * pad + b"--></domain>")
    assert len(data) == MAX_BYTES == 1024 * 1024
    assert model.parse(data).domain.name == "t"


def test_a_file_over_the_limit_is_refused_by_parse_file_too(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(b" " * (MAX_BYTES + 1))
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse_file(path)
    assert [(i.line, i.message) for i in info.value.issues] == [
        (None, "file is 1048577 bytes; the limit is 1048576 bytes")]


@pytest.mark.parametrize(("data", "expected"), [
    (b"<domain type='kvm'>\n  <name>x</name>\n  <memory>1</memory\n</domain>\n",
     [(4, "not well-formed XML: expected '>'")]),
    (b"<domain type='kvm'>\n  <name>x</nam>\n</domain>\n",
     [(2, "not well-formed XML: Opening and ending tag mismatch: name line 2 and nam")]),
    (b"<domain type='kvm'>\n\n\n  <name>x</name>\n",
     [(5, "not well-formed XML: Premature end of data in tag domain line 1")]),
    (b"<domain type='kvm'>\n  <name>a & b</name>\n</domain>\n",
     [(2, "not well-formed XML: xmlParseEntityRef: no name")]),
    (b"<domain type='kvm'>\n  <name>&foo;</name>\n</domain>\n",
     [(2, "not well-formed XML: Entity 'foo' not defined")]),
    (b"<domain type='kvm'>\n  <name>x</name>\n</domain>\n<domain/>\n",
     [(4, "not well-formed XML: Extra content at the end of the document")]),
    (b"<domain type='kvm' type='qemu'/>",
     [(1, "not well-formed XML: Attribute type redefined")]),
    (b"<domain type='kvm'>\n  <name>\xff</name>\n</domain>\n",
     [(2, "not well-formed XML: Invalid bytes in character encoding")]),
    (b"just text", [(1, "not well-formed XML: Start tag expected, '<' not found")]),
    (b'<?xml version="1.0" encoding="bogus"?>\n<domain/>',
     [(1, "not well-formed XML: Unsupported encoding: bogus")]),
])
def test_malformed_xml_gives_the_line_of_the_syntax_error(
        data: bytes, expected: list[tuple[int, str]]) -> None:
    check(data, expected)


@pytest.mark.parametrize("data", [b"", b"   \n\t\n", b"\n"])
def test_empty_file(data: bytes) -> None:
    assert issues(data) == [(None, "file is empty; a domain file holds one <domain> element")]


@pytest.mark.parametrize(("data", "expected"), [
    (b"<vm type='kvm'/>", [(1, "the root element is <vm>; a domain file holds <domain> without "
                               "a namespace")]),
    (b"<!-- c -->\n\n<domainsnapshot/>",
     [(3, "the root element is <domainsnapshot>; a domain file holds <domain>")]),
    (b"<network><name>default</name></network>", [(1, "the root element is <network>")]),
    (b"<d:domain xmlns:d='urn:x' type='kvm'/>",
     [(1, "the root element is <domain> in namespace 'urn:x'; a domain file holds <domain> "
          "without a namespace")]),
])
def test_wrong_root_element(data: bytes, expected: list[tuple[int, str]]) -> None:
    check(data, expected)


def test_deep_nesting_is_refused_with_a_line() -> None:
    data = domain("<devices>" + "<x>" * 300 + "</x>" * 300 + "</devices>")
    got = issues(data)
    assert len(got) == 1
    assert got[0][0] == 6


def test_unreadable_files_are_invalid_not_crashes(tmp_path: Path) -> None:
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse_file(tmp_path / "missing.xml")
    assert info.value.file == tmp_path / "missing.xml"
    assert [(i.line, i.message) for i in info.value.issues] == [
        (None, "cannot read the file: No such file or directory")]
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse_file(tmp_path)
    assert [(i.line, i.message) for i in info.value.issues] == [
        (None, "cannot read the file: Is a directory")]


@pytest.mark.parametrize("data", [
    b"\x00\x01\x02", b"\xff\xfe<\x00d\x00/\x00>\x00", b"<", b"<domain", b"<?xml?>",
    b"<domain type='kvm'><devices><disk><target/></disk></devices></domain>",
    b"<domain type='kvm'><os><type/><boot/><bootmenu/></os><cpu><topology/><feature/></cpu>"
    b"<devices><interface/><serial/><console/><graphics/><rng><backend/><rate/></rng>"
    b"<input/><controller/><video><model/></video></devices></domain>",
])
def test_only_invalid_domain_error_escapes(data: bytes) -> None:
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data)
    assert info.value.issues
    assert all(isinstance(i.message, str) and i.message for i in info.value.issues)


# --- rendering errors of directly built domains -------------------------------------------------


def test_render_error_for_a_domain_built_without_parse() -> None:
    d = model.parse(domain()).domain
    bad = d.model_copy(update={"devices": d.devices.model_copy(
        update={"videos": (Video(model="cirrus"), Video(model="cirrus"))})})
    assert isinstance(bad, Domain)
    with pytest.raises(model.RenderError, match="video model 'cirrus' can only be the first"):
        model.command_line(bad)
