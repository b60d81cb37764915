"""Domain XML -> `Domain`: every problem of a file is collected and reported at once, with its line.

Readers consume what they understand from a `Node`; whatever is left over is either on the
list of settings that do not change the guest (accepted) or reported as unsupported, so nothing
a user wrote is ever silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from model import units
from model.argv import USB_MODELS, disk_index, options
from model.domain import (
    NAMESPACE,
    BootDev,
    Clock,
    Controller,
    Cpu,
    CpuFeature,
    Desired,
    Devices,
    Disk,
    Domain,
    Features,
    Graphics,
    Input,
    Interface,
    Os,
    PowerManagement,
    Rng,
    Serial,
    Timer,
    Topology,
    Vcpu,
    Video,
    uuid_for_name,
)
from model.errors import InvalidDomainError, Issue, RenderError
from model.xml import Node, XmlError, load

M = TypeVar("M", bound=BaseModel)

IGNORED_EVERYWHERE = ("alias", "address")
"""Children libvirt adds to devices that only matter to libvirt itself; QEMU's defaults serve."""

IGNORED_TOP = ("seclabel", "resource")
"""Top-level elements of a `virsh dumpxml` that do not change the guest."""

MACHINE = re.compile(r"^(pc|q35|pc-i440fx-\d+\.\d+|pc-q35-\d+\.\d+)$")
EMULATORS = {"qemu-system-x86_64": "x86_64", "qemu-system-i386": "i686"}


@dataclass(frozen=True)
class Parsed:
    """A valid domain with the file it came from and the warnings found while reading it."""

    domain: Domain
    file: str | None
    warnings: tuple[Issue, ...] = ()
    disk_lines: tuple[int | None, ...] = ()
    """The line of each `<disk>`, in the order of `domain.devices.disks` (for conflict reports)."""


@dataclass
class _Context:
    """Collects issues and warnings while one document is read."""

    issues: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    disk_lines: list[int | None] = field(default_factory=list)

    def error(self, line: int | None, message: str) -> None:
        """Record an error; parsing goes on so that every error is reported at once."""
        self.issues.append(Issue(line, message))

    def warn(self, line: int | None, message: str) -> None:
        """Record a warning: the file is valid but something was assumed for the user."""
        self.warnings.append(Issue(line, message))


@dataclass
class _Fields:
    """Values for one model, each remembered with how the user wrote it (label) and its line."""

    node: Node
    data: dict[str, Any] = field(default_factory=dict)
    where: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def put(self, name: str, value: object, label: str, line: int | None = None) -> None:
        """Set a field unless the value is None (absent: the model's default applies)."""
        self.where[name] = (label, self.node.line if line is None else line)
        if value is not None:
            self.data[name] = value

    def attr(self, name: str, xml_name: str | None = None, node: Node | None = None) -> None:
        """Copy an attribute of `node` (default: this element) into field `name`."""
        src = node or self.node
        key = xml_name or name
        self.put(name, src.attr(key), f"<{src.tag} {key}>", src.line)

    def fail(self, name: str) -> None:
        """Mark a field whose value was already reported as wrong, to avoid a second message."""
        self.failed.add(name)


def _say(error: Any, label: str) -> str:
    """Turn one Pydantic error into a sentence in the user's terms (no raw dumps)."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    shown = repr(value) if isinstance(value, str) else str(value)
    if kind == "literal_error":
        return f"{label}: {shown} is not allowed; use one of {ctx.get('expected')}"
    if kind == "missing":
        return f"{label} is required"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{label}: {shown} is not a whole number"
    if kind == "greater_than_equal":
        return f"{label}: {shown} is too small; the minimum is {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{label}: {shown} is too large; the maximum is {ctx.get('le')}"
    if kind == "string_pattern_mismatch":
        return f"{label}: {shown} has characters or a form that is not allowed here"
    if kind in ("string_too_short", "too_short"):
        return f"{label} is empty"
    if kind in ("string_too_long", "too_long"):
        return f"{label} is too long (at most {ctx.get('max_length')} characters)"
    if kind in ("uuid_parsing", "uuid_type", "uuid_version"):
        return f"{label}: {shown} is not a valid UUID (like 4dea22b3-1d52-d8f3-2516-782e98ab3fa0)"
    if kind == "value_error":
        return f"{label}: {error['msg'].removeprefix('Value error, ')}"
    return f"{label}: {error['msg']}"


def _make(ctx: _Context, model: type[M], fields: _Fields) -> M | None:
    """Validate `fields` into `model`; translate failures into issues at the right lines."""
    try:
        return model.model_validate(fields.data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            name = str(loc[0]) if loc else ""
            if name in fields.failed:
                continue
            label, line = fields.where.get(name, (f"<{fields.node.tag}>", fields.node.line))
            ctx.error(line, _say(err, label))
        return None


def _flag(ctx: _Context, node: Node, name: str, truth: tuple[str, str] = ("yes", "no")) -> bool | None:
    """Read a libvirt switch attribute (yes/no or on/off); report anything else."""
    value = node.attr(name)
    if value is None:
        return None
    if value in truth:
        return value == truth[0]
    ctx.error(node.line, f"<{node.tag} {name}>: {value!r} is not allowed; use "
              f"'{truth[0]}' or '{truth[1]}'")
    return None


def _int(ctx: _Context, node: Node, name: str) -> int | None:
    """Read a whole-number attribute; report anything else and return None."""
    value = node.attr(name)
    if value is None:
        return None
    if value.strip().isdigit() and value.strip().isascii():
        return int(value)
    ctx.error(node.line, f"<{node.tag} {name}>: {value!r} is not a whole number")
    return None


def _leftovers(ctx: _Context, node: Node, ignore_children: Iterable[str] = ()) -> None:
    """Report attributes and children of `node` (recursively for consumed ones) nobody read."""
    node.ignore(*ignore_children)
    for name in node.leftover_attrs():
        ctx.error(node.line, f"<{node.tag}>: attribute '{name}' is not supported by qemud; "
                  "remove it or see README for what is")
    for kid in node.leftover_children():
        ctx.error(kid.line, f"<{kid.tag}> inside <{node.tag}> is not supported by qemud; "
                  "remove it or see README for what is")


def _size(ctx: _Context, node: Node) -> int | None:
    """Read `<memory unit=>N</memory>`-style sizes into bytes."""
    node.ignore_attrs("dumpCore")
    try:
        return units.to_bytes(node.text or "", node.attr("unit"))
    except ValueError as exc:
        ctx.error(node.line, f"<{node.tag}>: {exc}")
        return None


def _read_vcpu(ctx: _Context, node: Node | None) -> Vcpu | None:
    """`<vcpu placement= current=>N</vcpu>`."""
    if node is None:
        return Vcpu()
    fields = _Fields(node)
    fields.put("count", node.text, "<vcpu>")
    fields.attr("current")
    node.ignore_attrs("placement")
    _leftovers(ctx, node)
    return _make(ctx, Vcpu, fields)


def _read_cpu(ctx: _Context, node: Node) -> Cpu | None:
    """`<cpu mode= match= check=>` with `<model>`, `<topology>`, `<feature>`."""
    fields = _Fields(node)
    mode = node.attr("mode")
    fields.put("mode", mode, "<cpu mode>")
    node.ignore_attrs("match", "check", "migratable")
    model = node.child("model")
    if model is not None:
        model.ignore_attrs("fallback", "vendor_id")
        fields.put("model", model.text, "<cpu><model>", model.line)
        _leftovers(ctx, model)
    node.ignore("vendor")
    topo = node.child("topology")
    if topo is not None:
        tf = _Fields(topo)
        for name in ("sockets", "dies", "cores", "threads"):
            tf.attr(name)
        _leftovers(ctx, topo)
        topology = _make(ctx, Topology, tf)
        if topology is None:
            fields.fail("topology")
        fields.put("topology", topology, "<topology>", topo.line)
    feats = []
    for feat in node.children("feature"):
        ff = _Fields(feat)
        ff.attr("policy")
        ff.attr("name")
        _leftovers(ctx, feat)
        made = _make(ctx, CpuFeature, ff)
        if made is not None:
            feats.append(made)
    fields.put("features", tuple(feats), "<feature>")
    _leftovers(ctx, node)
    if mode in (None, "custom") and model is None:
        ctx.error(node.line, "<cpu mode='custom'> needs <model>; or use mode='host-passthrough'")
        return None
    return _make(ctx, Cpu, fields)


def _read_os(ctx: _Context, node: Node | None, line: int | None = None) -> Os | None:
    """`<os>`: type, boot devices, boot menu and direct kernel boot (`line`: the domain's)."""
    if node is None:
        ctx.error(line, "<os> is missing; add <os><type arch='x86_64'>hvm</type></os>")
        return None
    fields = _Fields(node)
    typ = node.child("type")
    if typ is None:
        ctx.error(node.line, "<os> needs <type>hvm</type>")
    else:
        fields.put("type", typ.text, "<os><type>", typ.line)
        fields.attr("arch", node=typ)
        machine = typ.attr("machine")
        if machine is not None and not MACHINE.match(machine):
            ctx.error(typ.line, f"<type machine>: {machine!r} is not supported; use 'pc', 'q35', "
                      "'pc-i440fx-X.Y' or 'pc-q35-X.Y'")
            fields.fail("machine")
        else:
            fields.put("machine", machine, "<type machine>", typ.line)
        _leftovers(ctx, typ)
    boots = []
    for boot in node.children("boot"):
        dev = boot.attr("dev")
        if dev in get_args(BootDev):
            boots.append(dev)
        else:  # reported here, at the line of the <boot> itself
            what = "is missing" if dev is None else f"{dev!r} is not allowed"
            ctx.error(boot.line, f"<boot dev>: {what}; use one of 'hd', 'cdrom', 'fd' or 'network'")
            fields.fail("boot")
        _leftovers(ctx, boot)
    fields.put("boot", tuple(boots), "<boot dev>")
    menu = node.child("bootmenu")
    if menu is not None:
        fields.put("bootmenu", _flag(ctx, menu, "enable"), "<bootmenu enable>", menu.line)
        fields.put("bootmenu_timeout", _int(ctx, menu, "timeout"), "<bootmenu timeout>", menu.line)
        _leftovers(ctx, menu)
    for name in ("kernel", "initrd", "cmdline"):
        kid = node.child(name)
        if kid is not None:
            text = kid.text
            if text is None and name != "cmdline":
                ctx.error(kid.line, f"<{name}> is empty; give the path of the file")
            fields.put(name, text, f"<{name}>", kid.line)
            _leftovers(ctx, kid)
    if fields.data.get("kernel") is None:
        for name in ("initrd", "cmdline"):
            if name in fields.data:
                ctx.error(fields.where[name][1], f"<{name}> needs <kernel> as well")
    _leftovers(ctx, node)
    return _make(ctx, Os, fields)


def _read_features(ctx: _Context, node: Node | None) -> Features | None:
    """`<features>`: acpi, apic, pae, vmport."""
    if node is None:
        return Features()
    fields = _Fields(node)
    for name in ("acpi", "apic", "pae"):
        kid = node.child(name)
        if kid is not None:
            kid.ignore_attrs("eoi")
            fields.put(name, True, f"<{name}>", kid.line)
            _leftovers(ctx, kid)
    vmport = node.child("vmport")
    if vmport is not None:
        fields.put("vmport", _flag(ctx, vmport, "state", ("on", "off")), "<vmport>", vmport.line)
        _leftovers(ctx, vmport)
    _leftovers(ctx, node)
    return _make(ctx, Features, fields)


def _read_clock(ctx: _Context, node: Node | None) -> Clock | None:
    """`<clock offset=>` and its `<timer>`s."""
    if node is None:
        return Clock()
    fields = _Fields(node)
    fields.attr("offset")
    timers = []
    for timer in node.children("timer"):
        tf = _Fields(timer)
        tf.attr("name")
        tf.attr("tickpolicy")
        tf.put("present", _flag(ctx, timer, "present"), "<timer present>")
        _leftovers(ctx, timer)
        made = _make(ctx, Timer, tf)
        if made is not None:
            timers.append(made)
    fields.put("timers", tuple(timers), "<timer>")
    _leftovers(ctx, node)
    return _make(ctx, Clock, fields)


def _read_pm(ctx: _Context, node: Node | None) -> PowerManagement | None:
    """`<pm>`: whether the guest may suspend to RAM or disk."""
    if node is None:
        return PowerManagement()
    fields = _Fields(node)
    for tag in ("suspend-to-mem", "suspend-to-disk"):
        kid = node.child(tag)
        if kid is not None:
            fields.put(tag.replace("-", "_"), _flag(ctx, kid, "enabled"), f"<{tag} enabled>",
                       kid.line)
            _leftovers(ctx, kid)
    _leftovers(ctx, node)
    return _make(ctx, PowerManagement, fields)


def _read_desired(ctx: _Context, metadata: Node | None) -> Desired | None:
    """`<metadata><qemud:desired state= restart= shutdown-timeout=/></metadata>`."""
    if metadata is None:
        return Desired()
    found = list(metadata.children("desired", NAMESPACE))
    if not found:
        return Desired()
    node = found[0]
    for extra in found[1:]:
        ctx.error(extra.line, "<qemud:desired> appears more than once; keep one")
    fields = _Fields(node)
    fields.attr("state")
    fields.attr("restart")
    fields.put("shutdown_timeout", _int(ctx, node, "shutdown-timeout"),
               "<qemud:desired shutdown-timeout>")
    if "shutdown-timeout" in node.element.attrib and "shutdown_timeout" not in fields.data:
        fields.fail("shutdown_timeout")
    _leftovers(ctx, node)
    return _make(ctx, Desired, fields)


_BUS_FOR_PREFIX = {"hd": "ide", "sd": "sata", "vd": "virtio", "fd": "fdc"}


def _read_disk(ctx: _Context, node: Node) -> Disk | None:
    """`<disk type= device=>` with driver, source, target, readonly, boot, serial."""
    fields = _Fields(node)
    fields.attr("type")
    fields.attr("device")
    node.ignore_attrs("snapshot")
    driver = node.child("driver")
    if driver is not None:
        name = driver.attr("name")
        if name not in (None, "qemu"):
            ctx.error(driver.line, f"<driver name>: {name!r} is not allowed; use 'qemu'")
        fields.attr("driver_type", "type", driver)
        fields.attr("cache", node=driver)
        fields.attr("discard", node=driver)
        _leftovers(ctx, driver)
    source = node.child("source")
    if source is not None:
        source.ignore_attrs("startupPolicy", "index")
        key = "dev" if node.attr("type") == "block" else "file"
        fields.put("source", source.attr(key), f"<source {key}>", source.line)
        _leftovers(ctx, source, IGNORED_EVERYWHERE)
    target = node.child("target")
    if target is None:
        ctx.error(node.line, "<disk> needs <target dev='vda' bus='virtio'/>")
        return None
    dev = target.attr("dev")
    bus = target.attr("bus") or _BUS_FOR_PREFIX.get((dev or "")[:2])
    target.ignore_attrs("tray", "removable", "rotation_rate")
    fields.put("target_dev", dev, "<target dev>", target.line)
    fields.put("target_bus", bus, "<target bus>", target.line)
    _leftovers(ctx, target)
    if node.child("readonly") is not None:
        fields.put("readonly", True, "<readonly>")
    boot = node.child("boot")
    if boot is not None:
        fields.put("boot_order", boot.attr("order"), "<boot order>", boot.line)
        _leftovers(ctx, boot)
    serial = node.child("serial")
    if serial is not None:
        fields.put("serial", serial.text, "<serial>", serial.line)
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "backingStore"))
    return _make(ctx, Disk, fields)


def _read_interface(ctx: _Context, node: Node) -> Interface | None:
    """`<interface type=>` with mac, model, source, boot."""
    fields = _Fields(node)
    typ = node.attr("type")
    fields.put("type", typ, "<interface type>")
    mac = node.child("mac")
    if mac is not None:
        fields.attr("mac", "address", mac)
        _leftovers(ctx, mac)
    model = node.child("model")
    if model is not None:
        fields.attr("model", "type", model)
        _leftovers(ctx, model)
    source = node.child("source")
    if source is not None:
        key = {"bridge": "bridge", "network": "network"}.get(typ or "", "bridge")
        source.ignore_attrs("portid")
        fields.put("source", source.attr(key), f"<source {key}>", source.line)
        if typ == "network":
            source.ignore_attrs("bridge")
        _leftovers(ctx, source)
    boot = node.child("boot")
    if boot is not None:
        fields.put("boot_order", boot.attr("order"), "<boot order>", boot.line)
        _leftovers(ctx, boot)
    if typ == "network":
        ctx.warn(node.line, "<interface type='network'>: qemud has no libvirt networks; the guest "
                 "is attached with qemu-bridge-helper to the network's bridge (virbr0 for "
                 "'default', else a bridge of the network's name)")
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "target", "actual"))
    return _make(ctx, Interface, fields)


def _read_graphics(ctx: _Context, node: Node) -> Graphics | None:
    """`<graphics type='vnc' port= autoport= listen=>` with an optional `<listen>`."""
    fields = _Fields(node)
    fields.attr("type")
    port = _int(ctx, node, "port") if node.attr("port") not in ("-1", None) else None
    auto = _flag(ctx, node, "autoport")
    if auto is False and port is None:
        ctx.error(node.line, "<graphics autoport='no'> needs a port (5900 or above)")
    if auto is not True:
        fields.put("port", port, "<graphics port>")
    listen = node.attr("listen")
    for kid in node.children("listen"):
        if kid.attr("type") not in ("address", None):
            ctx.error(kid.line, "<listen type>: only type='address' is supported")
        listen = kid.attr("address") or listen
        _leftovers(ctx, kid)
    fields.put("listen", listen, "<graphics listen>")
    _leftovers(ctx, node)
    return _make(ctx, Graphics, fields)


def _read_serial(ctx: _Context, node: Node) -> Serial | None:
    """`<serial>` or `<console>` with source, target port and log."""
    fields = _Fields(node)
    fields.attr("type")
    node.ignore_attrs("tty")
    source = node.child("source")
    if source is not None:
        fields.attr("path", node=source)
        fields.attr("mode", node=source)
        _leftovers(ctx, source)
    target = node.child("target")
    if target is not None:
        ttype = target.attr("type")
        if ttype not in (None, "serial", "isa-serial"):
            ctx.error(target.line, f"<target type>: {ttype!r} is not supported; use 'serial'")
        fields.attr("port", node=target)
        model = target.child("model")
        if model is not None:
            if model.attr("name") not in (None, "isa-serial"):
                ctx.error(model.line, "<model name>: only 'isa-serial' is supported")
            _leftovers(ctx, model)
        _leftovers(ctx, target)
    log = node.child("log")
    if log is not None:
        fields.attr("log", "file", log)
        fields.put("log_append", _flag(ctx, log, "append", ("on", "off")), "<log append>")
        _leftovers(ctx, log)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Serial, fields)


def _read_video(ctx: _Context, node: Node) -> Video | None:
    """`<video><model type= vram= heads= primary=/></video>`."""
    model = node.child("model")
    fields = _Fields(node)
    if model is not None:
        fields.attr("model", "type", model)
        model.ignore_attrs("vram", "heads", "primary", "ram", "vgamem", "vram64")
        _leftovers(ctx, model, ("acceleration", "resolution"))
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "driver"))
    return _make(ctx, Video, fields)


def _read_rng(ctx: _Context, node: Node) -> Rng | None:
    """`<rng model='virtio'>` with a random backend and an optional rate."""
    fields = _Fields(node)
    fields.attr("model")
    backend = node.child("backend")
    if backend is not None:
        if backend.attr("model") != "random":
            ctx.error(backend.line, "<backend model>: only 'random' is supported")
        fields.put("backend", backend.text, "<backend>", backend.line)
        _leftovers(ctx, backend)
    rate = node.child("rate")
    if rate is not None:
        fields.attr("rate_bytes", "bytes", rate)
        fields.attr("rate_period", "period", rate)
        _leftovers(ctx, rate)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Rng, fields)


def _read_model_only(ctx: _Context, node: Node, allowed: tuple[str, ...]) -> str | None:
    """Read `<memballoon model=>` / `<panic model=>`: one model attribute, checked against `allowed`."""
    value = node.attr("model") or allowed[0]
    node.ignore_attrs("autodeflate", "freePageReporting")
    if value not in allowed:
        ctx.error(node.line, f"<{node.tag} model>: {value!r} is not supported; use "
                  + " or ".join(repr(a) for a in allowed))
        return None
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "stats", "driver"))
    return value


def _check_devices(ctx: _Context, devices: Devices, lines: dict[int, int | None],
                   os: Os | None) -> None:
    """Cross-device rules: unique targets, bus and device fit, the machine has the bus."""
    q35 = os is not None and os.machine is not None and "q35" in os.machine
    seen: dict[str, int] = {}
    units: dict[tuple[str, int], str] = {}
    for i, disk in enumerate(devices.disks):
        line = lines.get(id(disk))
        if disk.target_dev in seen:
            ctx.error(line, f"<target dev='{disk.target_dev}'> is used by two disks; "
                      "each disk needs its own")
        elif (disk.target_bus, disk_index(disk.target_dev)) in units:
            # e.g. hda and sda both on bus='sata': the same port (and the same QEMU device id)
            other = units[(disk.target_bus, disk_index(disk.target_dev))]
            ctx.error(line, f"<target dev='{disk.target_dev}'> is the same unit of "
                      f"bus='{disk.target_bus}' as <target dev='{other}'>; rename one")
        seen[disk.target_dev] = i
        units.setdefault((disk.target_bus, disk_index(disk.target_dev)), disk.target_dev)
        if disk.readonly and disk.device == "disk" and disk.target_bus in ("ide", "sata"):
            ctx.error(line, f"a <readonly/> disk cannot be on bus='{disk.target_bus}' (QEMU's "
                      "IDE hard disks are writable); use bus='virtio' or 'scsi', or a cdrom")
        if (disk.device == "floppy") != (disk.target_bus == "fdc"):
            ctx.error(line, "a floppy goes on bus='fdc', and only a floppy does")
        if disk.device == "cdrom" and disk.target_bus == "virtio":
            ctx.error(line, "a cdrom cannot be on bus='virtio'; use 'sata', 'ide' or 'scsi'")
        index = disk_index(disk.target_dev)
        if disk.target_bus == "ide" and (q35 or index > 3):
            ctx.error(line, "IDE has 4 units (hda-hdd) and only on machine 'pc'"
                      if not q35 else "machine 'q35' has no IDE bus; use bus='sata'")
        if disk.target_bus == "sata" and index > 5:
            ctx.error(line, "SATA has 6 ports (sda-sdf)")
        if disk.target_bus == "fdc" and (q35 or index > 1):
            ctx.error(line, "floppies are fda and fdb, and only on machine 'pc'")
    ports: set[int] = set()
    for port in devices.serials:  # reported at the second device of a pair
        if port.port in ports:
            ctx.error(lines.get(id(port)), f"two <serial> devices use <target port='{port.port}'>")
        ports.add(port.port)
    for extra in devices.graphics[1:]:
        ctx.error(lines.get(id(extra)), "more than one <graphics> is not supported; keep one")
    booted: list[Disk | Interface] = [d for d in devices.disks if d.boot_order is not None]
    booted += [n for n in devices.interfaces if n.boot_order is not None]
    orders: set[int] = set()
    for dev in sorted(booted, key=lambda d: lines.get(id(d)) or 0):
        if dev.boot_order in orders:
            ctx.error(lines.get(id(dev)), f"two devices have <boot order='{dev.boot_order}'>")
        orders.add(dev.boot_order or 0)
    if booted and os is not None and os.boot:
        first = min((lines.get(id(d)) or 0 for d in booted), default=0) or None
        ctx.error(first, "<os><boot dev=> and per-device <boot order=> cannot be mixed; use one")


def _read_devices(ctx: _Context, node: Node | None, os: Os | None) -> Devices | None:
    """`<devices>`: dispatch each child to its reader; unknown devices are errors."""
    if node is None:
        return Devices()
    found: dict[str, list[Any]] = {}
    lines: dict[int, int | None] = {}
    serial_ports: dict[int, Node] = {}
    consoles: list[Node] = []
    emulator: str | None = None
    emulator_line: int | None = None
    tag_lines: dict[str, list[int | None]] = {}

    readers: dict[str, Callable[[_Context, Node], Any]] = {
        "disk": _read_disk,
        "interface": _read_interface,
        "graphics": _read_graphics,
        "video": _read_video,
        "rng": _read_rng,
        "input": _read_input,
        "controller": _read_controller,
        "memballoon": lambda c, n: _read_model_only(c, n, ("virtio", "none")),
        "panic": lambda c, n: _read_model_only(c, n, ("isa",)),
    }
    for kid in node.kids():
        node.consume(kid)
        if kid.tag == "emulator":
            emulator, emulator_line = kid.text, kid.line
            _leftovers(ctx, kid)
        elif kid.tag == "serial":
            made = _read_serial(ctx, kid)
            if made is not None:
                found.setdefault("serials", []).append(made)
                serial_ports[made.port] = kid
                lines[id(made)] = kid.line
        elif kid.tag == "console":
            consoles.append(kid)
        elif kid.tag in readers:
            made = readers[kid.tag](ctx, kid)
            if made is not None:
                found.setdefault(kid.tag, []).append(made)
                tag_lines.setdefault(kid.tag, []).append(kid.line)
                lines[id(made)] = kid.line
        else:
            ctx.error(kid.line, f"<{kid.tag}> devices are not supported by qemud; remove it "
                      "(supported: disk, interface, graphics, serial, console, video, input, "
                      "controller, memballoon, panic, rng)")
    for con in consoles:
        made = _read_serial(ctx, con)
        if made is None:
            continue
        if made.port in serial_ports:
            continue  # libvirt mirrors serial port N as a console: the same device
        found.setdefault("serials", []).append(made)
        serial_ports[made.port] = con
        lines[id(made)] = con.line
    ctx.disk_lines = list(tag_lines.get("disk", []))
    if emulator is not None:
        base = Path(emulator).name
        if base not in EMULATORS:
            ctx.error(emulator_line, f"<emulator>: {base!r} is not supported; use "
                      "/usr/bin/qemu-system-x86_64 or /usr/bin/qemu-system-i386")
        elif os is not None and os.arch == "x86_64" and EMULATORS[base] == "i686":
            ctx.error(emulator_line, "<emulator> qemu-system-i386 cannot run arch='x86_64'; "
                      "use qemu-system-x86_64")
    balloons = found.get("memballoon", [])
    panics = found.get("panic", [])
    for tag in ("memballoon", "panic"):
        for line in tag_lines.get(tag, [])[1:]:  # never keep one silently: say which to remove
            ctx.error(line, f"more than one <{tag}> is not supported; keep one")
    devices = Devices(
        emulator=emulator,
        disks=tuple(found.get("disk", [])),
        interfaces=tuple(found.get("interface", [])),
        graphics=tuple(found.get("graphics", [])),
        serials=tuple(found.get("serials", [])),
        videos=tuple(found.get("video", [])),
        inputs=tuple(found.get("input", [])),
        controllers=tuple(found.get("controller", [])),
        memballoon=balloons[-1] if balloons else None,
        panic=panics[-1] if panics else None,
        rngs=tuple(found.get("rng", [])),
    )
    _check_devices(ctx, devices, lines, os)
    return devices


def _read_input(ctx: _Context, node: Node) -> Input | None:
    """`<input type= bus=>`."""
    fields = _Fields(node)
    fields.attr("type")
    fields.attr("bus")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Input, fields)


def _read_controller(ctx: _Context, node: Node) -> Controller | None:
    """`<controller type= index= model=>`: accepted; USB and SCSI models are rendered."""
    fields = _Fields(node)
    fields.attr("type")
    fields.attr("index")
    fields.attr("model")
    model = node.attr("model")
    if node.attr("type") == "usb" and model is not None and model not in USB_MODELS:
        # an unknown model must not silently become the default controller
        ctx.error(node.line, f"<controller type='usb' model>: {model!r} is not supported; use "
                  "one of " + ", ".join(repr(m) for m in USB_MODELS))
        fields.fail("model")
    node.ignore_attrs("ports", "vectors")
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "target", "model", "driver", "master"))
    return _make(ctx, Controller, fields)


def _read_text(ctx: _Context, root: Node, tag: str) -> tuple[str | None, int | None]:
    """Read the text of a single top-level element such as `<name>`; report duplicates."""
    found = list(root.children(tag))
    for extra in found[1:]:
        ctx.error(extra.line, f"<{tag}> appears more than once; keep one")
    if not found:
        return None, root.line
    _leftovers(ctx, found[0])
    return found[0].text, found[0].line


def _read_domain(ctx: _Context, root: Node) -> Domain | None:
    """Read a whole `<domain>`; returns None when any issue was found."""
    if root.tag != "domain" or root.namespace is not None:
        where = f" in namespace {root.namespace!r}" if root.namespace is not None else ""
        ctx.error(root.line, f"the root element is <{root.tag}>{where}; a domain file holds "
                  "<domain> without a namespace")
        return None
    fields = _Fields(root)
    fields.attr("type")
    root.ignore_attrs("id")
    name, name_line = _read_text(ctx, root, "name")
    fields.put("name", name, "<name>", name_line)
    raw_uuid, uuid_line = _read_text(ctx, root, "uuid")
    if raw_uuid is None and name is not None:
        ctx.warn(root.line, f"no <uuid>; using {uuid_for_name(name)}, derived from the name "
                 "(add it to the file to keep it if the name changes)")
        raw_uuid = str(uuid_for_name(name))
    elif raw_uuid is None:
        fields.fail("uuid")  # it would come from the name, whose absence is reported
    fields.put("uuid", raw_uuid, "<uuid>", uuid_line)
    for tag in ("title", "description"):
        text, line = _read_text(ctx, root, tag)
        fields.put(tag, text, f"<{tag}>", line)
    for tag, key in (("memory", "memory"), ("currentMemory", "current_memory")):
        found = list(root.children(tag))
        if found:
            size = _size(ctx, found[0])
            if size is None:
                fields.fail(key)
            fields.put(key, size, f"<{tag}>", found[0].line)
            _leftovers(ctx, found[0])
    current = fields.data.get("current_memory")
    if current is not None and current > fields.data.get("memory", current):
        ctx.error(fields.where["current_memory"][1], "<currentMemory> is larger than <memory>; "
                  "it can be at most as large")
        del fields.data["current_memory"]
        fields.fail("current_memory")
    if "memory" not in fields.data and "memory" not in fields.failed:
        ctx.error(root.line, "<memory> is missing; add e.g. <memory unit='MiB'>512</memory>")
        fields.fail("memory")

    def sub(key: str, value: object, tag: str, line: int | None) -> None:
        """Put a sub-model; a None from a reader means it already reported its errors."""
        if value is None:
            fields.fail(key)
        fields.put(key, value, f"<{tag}>", line)

    vcpu = root.child("vcpu")
    sub("vcpu", _read_vcpu(ctx, vcpu), "vcpu", vcpu.line if vcpu else None)
    cpu = root.child("cpu")
    if cpu is not None:
        sub("cpu", _read_cpu(ctx, cpu), "cpu", cpu.line)
    os_node = root.child("os")
    os = _read_os(ctx, os_node, root.line)
    sub("os", os, "os", os_node.line if os_node else None)
    for key, reader in (("features", _read_features), ("clock", _read_clock), ("pm", _read_pm)):
        kid = root.child(key)
        sub(key, reader(ctx, kid), key, kid.line if kid else None)
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        text, line = _read_text(ctx, root, tag)
        fields.put(tag, text, f"<{tag}>", line)
    metadata = root.child("metadata")
    if metadata is not None:
        metadata.ignore(*(k.tag for k in metadata.kids() if k.namespace != NAMESPACE))
        sub("desired", _read_desired(ctx, metadata), "qemud:desired", metadata.line)
        _leftovers(ctx, metadata)
    devices_node = root.child("devices")
    sub("devices", _read_devices(ctx, devices_node, os), "devices",
        devices_node.line if devices_node else None)
    _leftovers(ctx, root, IGNORED_TOP)
    domain = _make(ctx, Domain, fields)
    if domain is not None:
        _check_domain(ctx, domain, fields)
    return domain


def _check_domain(ctx: _Context, domain: Domain, fields: _Fields) -> None:
    """Whole-domain rules that need several parts: topology, emulator vs arch, CPU vs accel."""
    cpu = domain.cpu
    if cpu is not None and cpu.topology is not None:
        t = cpu.topology
        product = t.sockets * t.dies * t.cores * t.threads
        if product != domain.vcpu.count:
            ctx.error(fields.where["cpu"][1], f"<topology> gives {product} vCPUs but <vcpu> is "
                      f"{domain.vcpu.count}; they must match")
    try:
        options(domain)
    except RenderError as exc:
        ctx.error(fields.where["devices"][1], str(exc))
    if domain.type == "qemu" and cpu is not None and cpu.mode in ("host-passthrough", "host-model"):
        ctx.warn(fields.where["cpu"][1], f"<cpu mode='{cpu.mode}'> needs KVM; under "
                 "<domain type='qemu'> (TCG) the 'max' CPU model is used instead")


def parse(data: bytes, file: str | Path | None = None) -> Parsed:
    """Parse and validate one domain document.

    Returns a `Parsed` (domain and warnings). Raises `InvalidDomainError` carrying every issue,
    each with its line, and nothing else: no lxml or Pydantic exception escapes.
    """
    ctx = _Context()
    try:
        root = load(data)
    except XmlError as exc:
        raise InvalidDomainError(file, [exc.issue]) from exc
    try:
        domain = _read_domain(ctx, root)
    except RecursionError as exc:  # absurdly deep nesting
        raise InvalidDomainError(file, [Issue(None, "elements are nested too deeply")]) from exc
    if ctx.issues or domain is None:
        issues = ctx.issues or [Issue(None, "the domain is not valid")]
        raise InvalidDomainError(file, sorted(issues, key=lambda i: (i.line or 0)))
    return Parsed(domain, None if file is None else str(file), tuple(ctx.warnings),
                  tuple(ctx.disk_lines))


def parse_file(path: str | Path) -> Parsed:
    """Read and parse a domain file; an unreadable file is an `InvalidDomainError` too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidDomainError(path, [Issue(None, f"cannot read the file: {exc.strerror}")]) \
            from exc
    return parse(data, path)


__all__ = ["Parsed", "parse", "parse_file"]
