"""Property tests of the model: round trips, total parsing, and a command line for every valid domain.

* `parse(to_xml(d)).domain == d` for every generated domain (Hypothesis `domains()` and the plain
  `random_domain` used by the benchmarks), and for whatever `parse` accepts, `to_xml` of it parses
  back to the same domain.
* `parse` is total: random bytes and mutated documents (real samples and generated XML, with byte
  flips, truncation, inserted tags / attributes / markup, deleted and duplicated chunks, replaced
  attribute values and texts) either parse or raise `model.ModelError`, nothing else.
* `command_line` never raises for a parsed domain, with or without a `Runtime`, and every argv
  element is a `str` without NUL.
* The hand-built `edge_domains()` (each at a limit QEMU 7.2 enforces; the QEMU integration test
  starts them) are valid, and one step beyond each limit the model rejects the domain, so QEMU
  never sees a command line it refuses.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model
from model.domain import Domain, DriveAddress
from tests.support.domains import domains, edge_domains, random_domain, write_domains

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.xml"))
SAMPLE_BYTES = [p.read_bytes() for p in SAMPLES]

RUNTIME = model.Runtime(
    qmp_socket=Path("/run/qemud/vm, with comma/qmp.sock"),
    pidfile=Path("/run/qemud/vm, with comma/qemu.pid"),
    console_log=Path("/var/log/qemud/vm, with comma/console.log"),
)

SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
        HealthCheck.large_base_example]


def check_argv(domain: Domain) -> None:
    """The command line of a valid domain renders, with and without a runtime, as NUL-free strs."""
    for runtime in (None, RUNTIME):
        argv = model.command_line(domain, runtime)
        assert argv, "empty command line"
        for arg in argv:
            assert isinstance(arg, str), f"argv element {arg!r} is not a str"
            assert "\0" not in arg, f"argv element {arg!r} contains NUL"


def check_total(data: bytes) -> None:
    """`parse` either accepts `data` or raises `ModelError`; an accepted domain is fully usable."""
    try:
        parsed = model.parse(data, "fuzz.xml")
    except model.ModelError:
        return
    domain = parsed.domain
    check_argv(domain)
    again = model.parse(model.to_xml(domain)).domain
    assert again == domain, "a parsed domain does not survive to_xml -> parse"


# --------------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(domains())
def test_generated_domain_round_trips(domain: Domain) -> None:
    xml = model.to_xml(domain)
    parsed = model.parse(xml)
    assert parsed.domain == domain, xml.decode()
    check_argv(parsed.domain)


def test_random_domains_round_trip() -> None:
    rng = random.Random(1234)
    for index in range(300):
        domain = random_domain(rng, index)
        xml = model.to_xml(domain)
        assert model.parse(xml).domain == domain, xml.decode()
        check_argv(domain)


def test_random_domain_is_deterministic() -> None:
    first = [random_domain(random.Random(7), i) for i in range(20)]
    again = [random_domain(random.Random(7), i) for i in range(20)]
    assert first == again


def test_written_domains_parse_back(tmp_path: Path) -> None:
    paths = write_domains(tmp_path, 100, seed=3)
    assert len({p.name for p in paths}) == 100
    rng = random.Random(3)
    for index, path in enumerate(paths):
        assert path.name == f"{random_domain(rng, index).name}.xml"
        parsed = model.parse_file(path)
        assert f"{parsed.domain.name}.xml" == path.name


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_round_trip(sample: Path) -> None:
    check_total(sample.read_bytes())
    model.parse(sample.read_bytes())  # and they are valid


# --------------------------------------------------------------------------------------------
# Totality of parse on hostile input

TAGS = (
    "domain", "name", "uuid", "title", "description", "memory", "currentMemory", "vcpu", "cpu",
    "model", "topology", "feature", "os", "type", "boot", "bootmenu", "kernel", "initrd",
    "cmdline", "features", "acpi", "apic", "pae", "vmport", "clock", "timer", "on_poweroff",
    "on_reboot", "on_crash", "pm", "suspend-to-mem", "suspend-to-disk", "devices", "emulator",
    "disk", "driver", "source", "target", "readonly", "serial", "interface", "mac", "graphics",
    "listen", "console", "video", "input", "controller", "memballoon", "panic", "rng", "backend",
    "rate", "metadata", "address", "alias", "log", "backingStore", "seclabel", "qemud:desired",
    "sound", "x",
)
ATTRS = (
    "type", "device", "dev", "bus", "file", "path", "port", "mode", "unit", "current", "order",
    "name", "policy", "sockets", "dies", "cores", "threads", "arch", "machine", "enable",
    "timeout", "state", "restart", "shutdown-timeout", "model", "index", "address", "listen",
    "autoport", "bytes", "period", "append", "offset", "tickpolicy", "present", "enabled",
    "cache", "discard", "id", "xmlns", "xmlns:qemud", "qemud:x", "bogus",
)
VALUES = (
    "", "0", "1", "2", "3", "4", "7", "8", "255", "256", "-1", "+1", " 1", "1.5", "0x10", "5900",
    "65535", "65536", "2147483647", "2147483648", "4294967296", "9223372036854775808",
    "99999999999999999999999", "١٢", "yes", "no", "on", "off", "true", "virtio", "ide", "sata",
    "scsi", "fdc", "usb", "ps2", "q35", "pc", "pc-q35-7.2", "isapc", "hda", "hdz", "sda",
    "sdzzz", "vda", "fdb", "cdrom", "floppy", "disk", "block", "file", "network", "bridge",
    "user", "pty", "unix", "null", "connect", "bind", "KiB", "MiB", "GiB", "PiB", "b", "kvm",
    "qemu", "hvm", "x86_64", "i686", "custom", "host-model", "maximum", "lsilogic", "none",
    "ramfb", "cirrus", "qxl", "tablet", "mouse", "keyboard", "rtc", "hpet", "catchup",
    "running", "stopped", "always", "urn:qemud:1", "/dev/urandom", "/x,y z", "a/b", ".hidden",
    "é", "日本", "😀", "a\tb", "52:54:00:AA:BB:CC", "zz:zz", "0.0.0.0", "::1", "[::1]",
    "4dea22b3-1d52-d8f3-2516-782e98ab3fa0", "not-a-uuid", "&amp;", "&lt;", "&#0;", "&#1;",
    "&#x1F600;", "&undefined;",
)
RAW = (
    b"<", b">", b"/>", b"</domain>", b"<devices>", b"</devices>", b"<!DOCTYPE d [<!ENTITY e 'x'>]>",
    b"&e;", b"&#0;", b"&#xD800;", b"<![CDATA[ x ]]>", b"<!-- c -->", b"<?pi x?>",
    b"<?xml version='1.0' encoding='latin-1'?>", b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\x80",
    b"\xc3", b"\xf0\x9f\x98\x80", b"\r\n", b"<a>" * 300, b"xmlns='urn:x'",
    b"<qemud:desired xmlns:qemud='urn:qemud:1' state='running'/>",
    b"<console type='pty'><target port='0'/></console>",
    b"<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>",
)


def _text(value: str) -> bytes:
    return value.encode()


@st.composite
def snippets(draw: st.DrawFn) -> bytes:
    """A fragment to insert: raw markup, a random element, an attribute, or random bytes."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.sampled_from(RAW))
    if kind == 1:
        tag = draw(st.sampled_from(TAGS))
        attrs = draw(st.lists(st.tuples(st.sampled_from(ATTRS), st.sampled_from(VALUES)),
                              max_size=3))
        rendered = "".join(f" {a}='{v}'" for a, v in attrs)
        text = draw(st.sampled_from(VALUES))
        close = draw(st.sampled_from(("/>", f">{text}</{tag}>", ">", f"></{tag}>")))
        return _text(f"<{tag}{rendered}{close}")
    if kind == 2:
        return _text(f" {draw(st.sampled_from(ATTRS))}='{draw(st.sampled_from(VALUES))}'")
    if kind == 3:
        return _text(f"</{draw(st.sampled_from(TAGS))}>")
    return draw(st.binary(min_size=1, max_size=16))


_ATTR_VALUE = re.compile(rb"""(=\s*)(['"])(.*?)\2""", re.DOTALL)
_TEXT_NODE = re.compile(rb">([^<>]+)<")


def _spot(data: bytes, where: int, anchor: bytes | None) -> int:
    """A position in `data`: `where` modulo the length, snapped after the next `anchor` if any."""
    pos = where % (len(data) + 1)
    if anchor is not None:
        found = data.find(anchor, pos)
        if found >= 0:
            return found + len(anchor)
    return pos


OPS = ("revalue", "insert", "retext", "flip", "truncate", "delete", "duplicate", "revalue",
       "insert", "retext", "revalue")
"""Mutation kinds, weighted towards the ones that keep the XML well-formed and reach validation."""


@st.composite
def mutations(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A document from `seeds` after 1-4 random mutations."""
    data = draw(seeds)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(OPS))
        where = draw(st.integers(0, 1 << 20))
        if op == "flip" and data:
            pos = where % len(data)
            data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]
        elif op == "truncate":
            data = data[:where % (len(data) + 1)]
        elif op == "insert":
            anchor = draw(st.sampled_from((None, b">", b"'", b" ")))
            pos = _spot(data, where, anchor)
            if anchor == b"'":  # just after an attribute value: room for another attribute
                pos = min(pos, len(data))
            data = data[:pos] + draw(snippets()) + data[pos:]
        elif op == "delete":
            pos = where % (len(data) + 1)
            data = data[:pos] + data[pos + draw(st.integers(1, 200)):]
        elif op == "duplicate":
            pos = where % (len(data) + 1)
            chunk = data[pos:pos + draw(st.integers(1, 400))]
            dest = _spot(data, draw(st.integers(0, 1 << 20)), b">")
            data = data[:dest] + chunk + data[dest:]
        elif op in ("revalue", "retext"):
            found = list((_ATTR_VALUE if op == "revalue" else _TEXT_NODE).finditer(data))
            if found:
                match = found[where % len(found)]
                group = 3 if op == "revalue" else 1
                value = _text(draw(st.sampled_from(VALUES)))
                data = data[:match.start(group)] + value + data[match.end(group):]
    return data


GENERATED_XML = domains().map(model.to_xml)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(st.one_of(st.binary(max_size=2048),
                 st.text(max_size=512).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_random_bytes_raise_only_model_errors(data: bytes) -> None:
    check_total(data)


@settings(max_examples=600, deadline=None, suppress_health_check=SLOW)
@given(mutations(st.sampled_from(SAMPLE_BYTES)))
def test_mutated_samples_raise_only_model_errors(data: bytes) -> None:
    check_total(data)


@settings(max_examples=250, deadline=None, suppress_health_check=SLOW)
@given(mutations(GENERATED_XML))
def test_mutated_generated_xml_raises_only_model_errors(data: bytes) -> None:
    check_total(data)


# --------------------------------------------------------------------------------------------
# Limits QEMU 7.2 enforces: at the limit valid (and started by tests/integration), beyond invalid.

EDGES = edge_domains()


def _with(domain: Domain, **devices: Any) -> Domain:
    """A copy with some `Devices` fields replaced, unvalidated (as a careless editor would)."""
    return domain.model_copy(update={"devices": domain.devices.model_copy(update=devices)})


def _disk(domain: Domain, dev: str, **changes: Any) -> Domain:
    disks = tuple(d.model_copy(update=changes) if d.target_dev == dev else d
                  for d in domain.devices.disks)
    return _with(domain, disks=disks)


PC, Q35, FULL = EDGES["edge-pc"], EDGES["edge-q35"], EDGES["edge-pci-full"]
BEYOND = {
    # QEMU: "Invalid SMP CPUs 256" / "requires kernel irqchip and X2APIC API support"
    "256 vCPUs": PC.model_copy(update={"vcpu": PC.vcpu.model_copy(update={"count": 256})}),
    "sparse APIC IDs": Q35.model_copy(update={
        "vcpu": Q35.vcpu.model_copy(update={"count": 255}),
        "cpu": Q35.cpu.model_copy(update={"topology": Q35.cpu.topology.model_copy(  # type: ignore[union-attr]
            update={"sockets": 3, "cores": 85})})}),
    # QEMU: "Too many boot devices for PC" / "Boot device 'c' was given twice"
    "4 boot devs": PC.model_copy(update={"os": PC.os.model_copy(
        update={"boot": ("cdrom", "hd", "network", "fd")})}),
    "boot dev twice": PC.model_copy(update={"os": PC.os.model_copy(update={"boot": ("hd", "hd")})}),
    # QEMU: "Max. supported number of ISA serial ports is 4."
    "serial port 4": _with(PC, serials=(*PC.devices.serials[:3],
                                        PC.devices.serials[3].model_copy(update={"port": 4}))),
    # QEMU: "bad scsi device id: 256" / "bad scsi device id: 8"
    "virtio-scsi id 256": _disk(PC, "sdiv", drive=DriveAddress.model_construct(target=256)),
    "lsilogic id 8": _disk(Q35, "sdh", drive=DriveAddress(unit=8)),
    # QEMU: "duplicate fw_cfg file name: vgaroms/vgabios-ramfb.bin"
    "two ramfb": _with(PC, videos=(*PC.devices.videos, PC.devices.videos[1])),
    # QEMU: "Block node is read-only"
    "read-only IDE disk": _disk(PC, "hdd", readonly=True),
    # QEMU: "Duplicate ID 'ide0-1-1' for device"
    "two disks, one IDE unit": _with(PC, disks=(*PC.devices.disks, PC.devices.disks[1].model_copy(
        update={"target_dev": "sdd"}))),
    # QEMU: 'A block device must be specified for "file"'
    "empty disk source": _disk(PC, "hdd", source=""),
    # QEMU: "Parameter 'bootindex' expects int32_t"
    "boot order 2**31": _disk(Q35, "sdh", boot_order=2**31),
    # QEMU: "Parameter 'period' expects uint32_t" / "'max-bytes' parameter must be ... < 2^63"
    "rng period 2**32": _with(PC, rngs=(PC.devices.rngs[0].model_copy(
        update={"rate_period": 2**32}),)),
    "rng bytes 2**63": _with(PC, rngs=(PC.devices.rngs[0].model_copy(
        update={"rate_bytes": 2**63}),)),
    # QEMU: "PCI: no slot/function available for virtio-rng-pci, all in use or reserved".
    # The full domain's piix3-uhci sits at 00:01.2 as libvirt puts it, so 31 fit and 32 do not.
    "32 PCI devices": _with(FULL, rngs=(*FULL.devices.rngs, *FULL.devices.rngs[:1] * 2)),
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_domains_are_valid(name: str) -> None:
    domain = EDGES[name]
    assert model.parse(model.to_xml(domain)).domain == domain
    check_argv(domain)


@pytest.mark.parametrize("case", sorted(BEYOND))
def test_one_step_beyond_a_qemu_limit_is_invalid(case: str) -> None:
    xml = model.to_xml(BEYOND[case])
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(xml)
    assert caught.value.issues, case
