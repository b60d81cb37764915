"""Domain XML -> `Domain`: every problem of a file is collected and reported at once, with its line.

Readers consume what they understand from a `Node`; whatever is left over is either on the
list of settings that do not change the guest (accepted) or reported as unsupported, so nothing
a user wrote is ever silently dropped.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from model import units
from model.argv import (
    PCI_CONTROLLER_MODELS,
    PCIE_ONLY_CONTROLLERS,
    SCSI_MODELS,
    SPICE_X509_DIR,
    USB_COMPANIONS,
    USB_MODELS,
    balloon_target,
    disk_index,
    drive_problems,
    emulator,
    is_q35,
    options,
    usb_mains,
)
from model.cpuset import CpusetError, format_cpuset, parse_cpuset
from model.domain import (
    NAMESPACE,
    QEMU_NAMESPACE,
    SMBIOS_FIELDS,
    Audio,
    BootDev,
    Channel,
    CharSource,
    Clock,
    Console,
    Controller,
    Cpu,
    CpuFeature,
    Cputune,
    Desired,
    Devices,
    Disk,
    Display,
    Domain,
    DriveAddress,
    Features,
    Filesystem,
    FwCfg,
    Graphics,
    Hub,
    Hugepage,
    Hyperv,
    Input,
    Interface,
    Iommu,
    IoTune,
    MemoryBacking,
    MemoryDevice,
    NicDriver,
    NumaCell,
    NumaMemory,
    Numatune,
    Os,
    Parallel,
    PciAddress,
    PowerManagement,
    QemuCommandline,
    Redirdev,
    Rng,
    Serial,
    Share9p,
    Shmem,
    Smartcard,
    Sound,
    Sysinfo,
    Timer,
    Topology,
    Tpm,
    UsbFilterRule,
    Vcpu,
    Video,
    VirtioOptions,
    Vsock,
    Watchdog,
    uuid_for_name,
)
from model.errors import InvalidDomainError, Issue, NetworkError, RenderError
from model.memory import check_domain as memory_check_domain
from model.memory import memory_device_problem, numa_distance_problems
from model.xml import Node, XmlError, load

M = TypeVar("M", bound=BaseModel)

UNSUPPORTED_DEVICES = {
    "hostdev": "passing a host device through needs VFIO setup and privileges qemud does not "
               "manage",
    "lease": "leases belong to libvirt's lock manager, which qemud does not have",
    "crypto": "crypto devices need a backend qemud does not set up",
}
"""libvirt devices qemud refuses, each with the sentence that says why."""

IGNORED_EVERYWHERE = ("alias",)
"""Children libvirt adds to devices that only matter to libvirt itself. (`<address>` is read by
`_address`: PCI addresses are honoured, drive/usb/virtio-serial ones read where they matter.)"""

IGNORED_TOP = ("seclabel", "resource")
"""Top-level elements of a `virsh dumpxml` that do not change the guest."""

REFUSED_TOP = {
    "idmap": "it maps user ids for containers (libvirt's LXC driver); a QEMU guest has no use "
             "for it",
    "keywrap": "AES/DEA key wrapping is for s390 guests; qemud runs x86 ones",
    "launchSecurity": "memory encryption (AMD SEV) needs host firmware and keys qemud does not "
                      "manage",
    "vcpus": "per-vCPU hotplug settings are not supported; use <vcpu current=>",
    "defaultiothread": "tuning the default I/O thread's pool is not supported",
}
"""Top-level libvirt elements qemud refuses, each with the sentence that says why."""

MACHINE = re.compile(r"^(pc|q35|pc-i440fx-[A-Za-z0-9][A-Za-z0-9.]*|pc-q35-[A-Za-z0-9][A-Za-z0-9.]*)$")
"""The machine families qemud renders (i440FX and Q35, any version, RHEL's `pc-q35-rhel9.2.0`
too); which versions exist is the emulator's to say (see `MachineCheck`)."""

MachineCheck = Callable[[str, str], "str | None"]
"""Injected by the caller: (emulator, machine) -> None when the emulator has that machine type,
else a sentence for the user (e.g. with the closest names). The model never runs programs."""
ModuleCheck = Callable[[str, str], "str | None"]
"""Injected by the caller: (emulator, QEMU module such as 'audio-pa') -> None when the emulator
can load it (or builds it in), else a sentence saying what to install."""
BridgeLookup = Callable[[str], str]
"""Injected by the caller: a libvirt network's name -> the host bridge its guests join, from the
network's definition; raises `NetworkError` (naming the file and line, and what to do) when the
network is not defined or has no bridge. The model never reads the host."""


@dataclass(frozen=True)
class HostFacts:
    """What `parse` may ask about the host, injected by the caller (reconciler/hostfacts.py).

    Each is optional: without `check_machine` any machine type of the families qemud renders is
    accepted; without `network_bridge` a `type='network'` interface keeps the bridge its file
    states (`<source bridge=>`, as libvirt's live XML has it) or, failing that, the guess
    virbr0 for 'default' and the network's name otherwise, with a warning.
    """

    check_machine: MachineCheck | None = None
    check_emulator: Callable[[str], str | None] | None = None
    """(`<emulator>` path) -> None when it is a program this process can run, else why not."""
    network_bridge: BridgeLookup | None = None
    check_module: ModuleCheck | None = None
    spice_certificates: Callable[[str], str | None] | None = None
    """(folder) -> None when it holds spice's TLS certificates QEMU can read, else what to do."""


EMULATORS = {"qemu-system-x86_64": "x86_64", "qemu-system-i386": "i686"}
"""Debian's x86 emulators by name; any other program (RHEL's /usr/libexec/qemu-kvm, a build of
your own) is taken on its word, checked by running it (`HostFacts`)."""


@dataclass(frozen=True)
class Parsed:
    """A valid domain with the file it came from and the warnings found while reading it."""

    domain: Domain
    file: str | None
    warnings: tuple[Issue, ...] = ()
    disk_lines: tuple[int | None, ...] = ()
    """The line of each `<disk>`, in the order of `domain.devices.disks`, then of `<nvram>` when
    there is one: the images the guest writes (for conflict reports; see `writable_images`)."""
    name_line: int | None = None
    """The line of `<name>` (for name clash reports)."""
    uuid_line: int | None = None
    """The line of `<uuid>`, or of `<name>` when the uuid is derived from it (uuid clashes)."""


@dataclass
class _Context:
    """Collects issues and warnings while one document is read."""

    issues: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    disk_lines: list[int | None] = field(default_factory=list)
    nvram_line: int | None = None
    filesystem_lines: list[int | None] = field(default_factory=list)
    audio_lines: list[int | None] = field(default_factory=list)
    memory_lines: list[int | None] = field(default_factory=list)
    machine_line: int | None = None
    iommu_line: int | None = None
    emulator_line: int | None = None
    name_line: int | None = None
    uuid_line: int | None = None
    host: HostFacts = HostFacts()

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


def _switch(ctx: _Context, fields: _Fields, parent: Node, tag: str, key: str | None = None, *,
            bare: bool | None = True, ignore_children: Iterable[str] = ()) -> Node | None:
    """Read a `<tag state='on|off'/>` child of `parent` into field `key` (default: the tag).

    A child without `state` means `bare` (True: on; None: the model's default). Its other attributes
    and children are reported unless listed in `ignore_children`. Returns the child, None if absent.
    """
    kid = parent.child(tag)
    if kid is None:
        return None
    state = _flag(ctx, kid, "state", ("on", "off"))
    fields.put(key or tag, bare if state is None else state, f"<{tag} state>", kid.line)
    _leftovers(ctx, kid, ignore_children)
    return kid


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
    try:
        return units.to_bytes(node.text or "", node.attr("unit"))
    except ValueError as exc:
        ctx.error(node.line, f"<{node.tag}>: {exc}")
        return None


def _virtio_options(ctx: _Context, driver: Node | None, fields: _Fields) -> None:
    """`<driver iommu= ats= packed=>` (on/off) into field `virtio` (a `VirtioOptions`)."""
    if driver is None:
        return
    values = {name: _flag(ctx, driver, name, ("on", "off")) for name in ("iommu", "ats", "packed")}
    if any(v is not None for v in values.values()):
        fields.put("virtio", VirtioOptions(**values), "<driver>", driver.line)


def _driver_only_virtio(ctx: _Context, node: Node, fields: _Fields) -> None:
    """A device's `<driver>` child that carries only virtio options (input, rng, interface)."""
    driver = node.child("driver")
    if driver is not None:
        _virtio_options(ctx, driver, fields)
        _leftovers(ctx, driver)


def _size_mib(ctx: _Context, node: Node) -> int | None:
    """A size whose unit defaults to MiB (libvirt's `<tb-cache>`), in bytes."""
    try:
        return units.to_bytes(node.text or "", "MiB")
    except ValueError as exc:
        ctx.error(node.line, f"<{node.tag}>: {exc}")
        return None


def _hex(ctx: _Context, node: Node, name: str, default: int) -> int | None:
    """Read a libvirt number that may be hex ('0x1f') or decimal; report anything else."""
    value = node.attr(name)
    if value is None:
        return default
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value, 10)
    except ValueError:
        ctx.error(node.line, f"<address {name}>: {value!r} is not a number")
        return None


def _address(ctx: _Context, node: Node, kinds: tuple[str, ...] = ("pci",)) -> PciAddress | None:
    """Read a device's `<address>`: a PCI one into `PciAddress`.

    The others libvirt writes for the device's own bus (drive, usb, virtio-serial, isa) are
    accepted here; callers read the parts that matter (USB and virtio-serial ports).
    """
    addr = node.child("address")
    if addr is None:
        return None
    kind = addr.attr("type")
    if kind not in kinds:
        ctx.error(addr.line, f"<address type>: {kind!r} is not possible for <{node.tag}>; use "
                  + " or ".join(repr(k) for k in kinds))
        return None
    if kind != "pci":
        addr.ignore_attrs("controller", "bus", "target", "unit", "port", "iobase", "irq",
                          "slot")
        _leftovers(ctx, addr)
        return None
    values = {n: _hex(ctx, addr, n, 0) for n in ("domain", "bus", "slot", "function")}
    multi = _flag(ctx, addr, "multifunction", ("on", "off"))
    _leftovers(ctx, addr)
    if any(v is None for v in values.values()) or addr.attr("slot") is None:
        if addr.attr("slot") is None:
            ctx.error(addr.line, "<address type='pci'> needs slot=")
        return None
    fields = _Fields(addr)
    for n, v in values.items():
        fields.put(n, v, f"<address {n}>")
    fields.put("multifunction", multi, "<address multifunction>")
    return _make(ctx, PciAddress, fields)


def _drive_address(ctx: _Context, node: Node) -> DriveAddress | None:
    """`<address type='drive' controller= bus= target= unit=>` of a disk, else None."""
    addr = node.child("address")
    if addr is None or addr.attr("type") != "drive":
        return None
    fields = _Fields(addr)
    for name in ("controller", "bus", "target", "unit"):
        fields.attr(name)
    return _make(ctx, DriveAddress, fields)


def _read_vcpu(ctx: _Context, node: Node | None) -> Vcpu | None:
    """`<vcpu placement= current=>N</vcpu>`."""
    if node is None:
        return Vcpu()
    fields = _Fields(node)
    fields.put("count", node.text, "<vcpu>")
    fields.attr("current")
    placement = node.attr("placement")
    if placement not in (None, "static"):
        ctx.error(node.line, f"<vcpu placement>: {placement!r} needs numad, which qemud does not "
                  "use; use 'static' or leave it out")
    cpuset = node.attr("cpuset")
    if cpuset is not None:
        try:
            fields.put("cpuset", parse_cpuset(cpuset), "<vcpu cpuset>")
        except CpusetError as exc:
            ctx.error(node.line, f"<vcpu cpuset>: {exc}")
            fields.fail("cpuset")
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
    cache = node.child("cache")
    if cache is not None:
        cache_mode = cache.attr("mode")
        level = cache.attr("level")
        fields.put("cache", cache_mode, "<cache mode>", cache.line)
        if cache_mode == "emulate" and level != "3":
            ctx.error(cache.line, "<cache mode='emulate'> needs level='3' (QEMU emulates only "
                      "the L3 cache)")
            fields.fail("cache")
        elif cache_mode in ("passthrough", "disable") and level is not None:
            ctx.error(cache.line, f"<cache mode='{cache_mode}'> takes no level; remove it")
            fields.fail("cache")
        elif cache_mode == "passthrough" and mode not in ("host-passthrough", "maximum"):
            ctx.error(cache.line, "<cache mode='passthrough'> needs <cpu mode='host-passthrough'> "
                      "or 'maximum' (the host's cache info comes with the host's CPU)")
            fields.fail("cache")
        _leftovers(ctx, cache)
    numa = node.child("numa")
    if numa is not None:
        cells = _read_numa(ctx, numa)
        if cells is None:
            fields.fail("numa")
        fields.put("numa", cells, "<numa>", numa.line)
    _leftovers(ctx, node)
    if mode in (None, "custom") and model is None and feats:
        ctx.error(node.line, "<cpu mode='custom'> with <feature>s needs <model>; add one (e.g. "
                  "qemu64) or use mode='host-passthrough'")
        return None
    return _make(ctx, Cpu, fields)


def _nodeset(ctx: _Context, node: Node, name: str) -> frozenset[int] | None:
    """A cpuset-syntax attribute (`0-3,^2`); None when absent or wrong (then reported)."""
    raw = node.attr(name)
    if raw is None:
        return None
    try:
        return parse_cpuset(raw)
    except CpusetError as exc:
        ctx.error(node.line, f"<{node.tag} {name}>: {exc}")
        return None


_CGROUP_TUNING = ("shares", "period", "quota", "global_period", "global_quota",
                  "emulator_period", "emulator_quota", "iothread_period", "iothread_quota")
"""`<cputune>` children libvirt applies through the cgroup CPU controller."""


def _read_cputune(ctx: _Context, node: Node) -> Cputune | None:
    """`<cputune>`: vcpupin, emulatorpin and iothreadpin, thread affinities qemud applies.

    CPU shares, quotas, real-time schedulers and cache tuning are refused with why.
    """
    fields = _Fields(node)
    ok = True
    for tag in _CGROUP_TUNING:
        for kid in node.children(tag):
            ok = False
            ctx.error(kid.line, f"<cputune><{tag}> is applied through the cgroup CPU controller, "
                      "which qemud does not manage; remove it (the pins are kept)")
    for tag in ("vcpusched", "iothreadsched", "emulatorsched", "cachetune", "memorytune"):
        for kid in node.children(tag):
            ok = False
            what = "real-time scheduling" if tag.endswith("sched") else "resctrl cache tuning"
            ctx.error(kid.line, f"<cputune><{tag}>: {what} is not supported by qemud; remove it")
    vcpupins: list[tuple[int | None, frozenset[int] | None]] = []
    for pin in node.children("vcpupin"):
        vcpupins.append((_int(ctx, pin, "vcpu"), _nodeset(ctx, pin, "cpuset")))
        _leftovers(ctx, pin)
    iothreadpins: list[tuple[int | None, frozenset[int] | None]] = []
    for pin in node.children("iothreadpin"):
        iothreadpins.append((_int(ctx, pin, "iothread"), _nodeset(ctx, pin, "cpuset")))
        _leftovers(ctx, pin)
    emulator = node.child("emulatorpin")
    if emulator is not None:
        fields.put("emulatorpin", _nodeset(ctx, emulator, "cpuset"), "<emulatorpin cpuset>",
                   emulator.line)
        _leftovers(ctx, emulator)
    if any(None in pin for pin in (*vcpupins, *iothreadpins)):
        return None  # reported where read
    fields.put("vcpupins", tuple(vcpupins), "<vcpupin>")
    fields.put("iothreadpins", tuple(iothreadpins), "<iothreadpin>")
    _leftovers(ctx, node)
    made = _make(ctx, Cputune, fields)
    return made if ok else None


def _read_distances(ctx: _Context, node: Node) -> tuple[tuple[int, int], ...]:
    """`<distances><sibling id= value=/>...</distances>`: (cell id, distance) pairs."""
    out = []
    for sib in node.children("sibling"):
        sid, value = _int(ctx, sib, "id"), _int(ctx, sib, "value")
        if sid is None or value is None:
            if sib.attr("id") is None or sib.attr("value") is None:
                ctx.error(sib.line, "<sibling> needs id= (a cell) and value= (10-255)")
        elif not 10 <= value <= 255:
            ctx.error(sib.line, f"<sibling value>: {value} is out of range; NUMA distances are "
                      "10 (local) to 255")
        else:
            out.append((sid, value))
        _leftovers(ctx, sib)
    _leftovers(ctx, node)
    return tuple(out)


def _read_numa(ctx: _Context, node: Node) -> tuple[NumaCell, ...] | None:
    """`<numa><cell id= cpus= memory= unit= memAccess= discard=/>...</numa>`, ordered by id.

    Cells may be written in any order (libvirt sorts them) but their ids must be 0, 1, 2...
    without gaps; a cell without cpus= is a memory-only NUMA node. None when a cell is wrong.
    """
    cells: list[tuple[NumaCell, int | None]] = []
    ok = True
    for index, cell in enumerate(node.children("cell")):
        cf = _Fields(cell)
        raw_id = cell.attr("id")
        cf.put("id", index if raw_id is None else raw_id, "<cell id>")
        cpus = _nodeset(ctx, cell, "cpus")
        if cpus is None and cell.attr("cpus") is not None:
            cf.fail("cpus")
            ok = False
        cf.put("cpus", cpus if cpus is not None else frozenset(), "<cell cpus>")
        memory = cell.attr("memory")
        if memory is None:
            ctx.error(cell.line, "<cell> needs memory= (and unit=, default KiB)")
            cf.fail("memory")
        else:
            try:
                cf.put("memory", units.to_bytes(memory, cell.attr("unit") or "KiB"),
                       "<cell memory>")
            except ValueError as exc:
                ctx.error(cell.line, f"<cell memory>: {exc}")
                cf.fail("memory")
        cf.attr("mem_access", "memAccess")
        cf.put("discard", _flag(ctx, cell, "discard"), "<cell discard>")
        distances = cell.child("distances")
        if distances is not None:
            cf.put("distances", _read_distances(ctx, distances), "<sibling>", distances.line)
        _leftovers(ctx, cell)
        made = _make(ctx, NumaCell, cf)
        if made is None or memory is None:
            ok = False
        else:
            cells.append((made, cell.line))
    _leftovers(ctx, node)
    if not cells and ok:
        ctx.error(node.line, "<numa> has no <cell>; add one per guest NUMA node or remove it")
        ok = False
    ordered = sorted(cells, key=lambda c: c[0].id)
    for index, (made, line) in enumerate(ordered):
        if made.id != index:
            ctx.error(line, f"<cell id='{made.id}'>: cell ids must be 0, 1, 2... (each once, "
                      f"in any order); there is no cell {index}")
            ok = False
            break
    return tuple(c for c, _ in ordered) if ok else None


def _read_numatune(ctx: _Context, node: Node) -> Numatune | None:
    """`<numatune><memory mode= nodeset=/><memnode cellid= mode= nodeset=/></numatune>`."""
    fields = _Fields(node)
    ok = True
    found: list[NumaMemory] = []
    for kid in [*node.children("memory"), *node.children("memnode")]:
        kf = _Fields(kid)
        mode = kid.attr("mode")
        if kid.attr("placement") not in (None, "static"):
            ctx.error(kid.line, f"<{kid.tag} placement>: {kid.attr('placement')!r} needs numad, "
                      "which qemud does not use; use a nodeset")
            ok = False
            continue
        if mode == "restrictive":
            ctx.error(kid.line, f"<{kid.tag} mode='restrictive'>: libvirt applies it with "
                      "cgroups, which qemud does not manage; use strict, preferred or interleave")
            ok = False
            continue
        kf.put("mode", mode, f"<{kid.tag} mode>")
        nodeset = _nodeset(ctx, kid, "nodeset")
        if nodeset is None:
            if kid.attr("nodeset") is None:
                ctx.error(kid.line, f"<{kid.tag}> needs nodeset= (the host NUMA nodes, e.g. "
                          "'0-1')")
            ok = False
            continue
        kf.put("nodeset", nodeset, f"<{kid.tag} nodeset>")
        if kid.tag == "memnode":
            kf.attr("cellid")
        _leftovers(ctx, kid)
        made = _make(ctx, NumaMemory, kf)
        if made is None:
            ok = False
        else:
            found.append(made)
    _leftovers(ctx, node)
    if not ok:
        return None
    fields.put("memory", next((m for m in found if m.cellid is None), None), "<memory>")
    fields.put("memnodes", tuple(m for m in found if m.cellid is not None), "<memnode>")
    return _make(ctx, Numatune, fields)


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
                      "'pc-i440fx-X.Y' or 'pc-q35-X.Y' (as `qemu-system-x86_64 -machine help` "
                      "lists them)")
            fields.fail("machine")
        else:
            fields.put("machine", machine, "<type machine>", typ.line)
            ctx.machine_line = typ.line
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
    smbios = node.child("smbios")
    if smbios is not None:
        mode = smbios.attr("mode")
        if mode == "host":
            ctx.error(smbios.line, "<smbios mode='host'> copies the host's SMBIOS tables, which "
                      "qemud does not read; use mode='sysinfo' with a <sysinfo type='smbios'>")
        else:
            fields.put("smbios_mode", mode, "<smbios mode>", smbios.line)
        _leftovers(ctx, smbios)
    bios = node.child("bios")
    if bios is not None:
        never = bios.attr("rebootTimeout") == "-1"
        fields.put("reboot_timeout", -1 if never else _int(ctx, bios, "rebootTimeout"),
                   "<bios rebootTimeout>", bios.line)
        fields.put("bios_useserial", _flag(ctx, bios, "useserial"), "<bios useserial>",
                   bios.line)
        _leftovers(ctx, bios)
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
    acpi = node.child("acpi")
    if acpi is not None:
        tables = []
        for table in acpi.children("table"):
            tables.append((table.attr("type"), table.text))
            _leftovers(ctx, table)
        fields.put("acpi_tables", tuple(tables), "<acpi><table>", acpi.line)
        _leftovers(ctx, acpi)
    fields.put("firmware", node.attr("firmware"), "<os firmware>")
    fw = node.child("firmware")
    if fw is not None:
        wishes = []
        for feat in fw.children("feature"):
            wish = feat.attr("name")
            enabled = _flag(ctx, feat, "enabled")
            if wish not in ("secure-boot", "enrolled-keys"):
                ctx.error(feat.line, f"<firmware><feature name>: {wish!r} is not known; use "
                          "'secure-boot' or 'enrolled-keys'")
            elif enabled is None:
                ctx.error(feat.line, "<firmware><feature> needs enabled='yes' or 'no'")
            else:
                wishes.append((wish, enabled))
            _leftovers(ctx, feat)
        fields.put("firmware_features", tuple(wishes), "<firmware>", fw.line)
        _leftovers(ctx, fw)
    loader = node.child("loader")
    if loader is not None:
        if loader.attr("readonly") not in (None, "yes"):
            ctx.error(loader.line, "<loader readonly='no'> is not supported: UEFI code is "
                      "read-only; give the variables as <nvram>")
        if loader.attr("type") not in (None, "pflash"):
            ctx.error(loader.line, "<loader type>: only 'pflash' is supported")
        fields.put("loader_secure", _flag(ctx, loader, "secure"), "<loader secure>", loader.line)
        fields.put("loader", loader.text, "<loader>", loader.line)
        _leftovers(ctx, loader)
    nvram = node.child("nvram")
    if nvram is not None:
        fields.put("nvram", nvram.text, "<nvram>", nvram.line)
        ctx.nvram_line = nvram.line
        fields.attr("nvram_template", "template", nvram)
        _leftovers(ctx, nvram)
    if fields.data.get("kernel") is None:
        for name in ("initrd", "cmdline"):
            if name in fields.data:
                ctx.error(fields.where[name][1], f"<{name}> needs <kernel> as well")
    _leftovers(ctx, node)
    return _make(ctx, Os, fields)


_HYPERV_NAMES = ("relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset",
                 "vendor_id", "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs", "avic")


def _read_hyperv(ctx: _Context, node: Node) -> Hyperv | None:
    """`<hyperv mode=>` with one child per enlightenment, each `state='on'|'off'`."""
    fields = _Fields(node)
    fields.attr("mode")
    enabled = []
    for kid in node.kids():
        node.consume(kid)
        if kid.tag not in _HYPERV_NAMES:
            ctx.error(kid.line, f"<{kid.tag}> inside <hyperv> is not an enlightenment QEMU 7.2 "
                      "has; remove it (supported: " + ", ".join(_HYPERV_NAMES) + ")")
            continue
        state = _flag(ctx, kid, "state", ("on", "off"))
        if state is None:
            if kid.attr("state") is None:
                ctx.error(kid.line, f"<{kid.tag}> needs state='on' or 'off'")
            continue
        enabled.append((kid.tag, state))
        if kid.tag == "spinlocks":
            fields.put("spinlocks_retries", _int(ctx, kid, "retries"), "<spinlocks retries>",
                       kid.line)
        elif kid.tag == "vendor_id":
            fields.put("vendor_id", kid.attr("value"), "<vendor_id value>", kid.line)
        elif kid.tag == "stimer":
            direct = kid.child("direct")
            if direct is not None:
                fields.put("stimer_direct", _flag(ctx, direct, "state", ("on", "off")),
                           "<direct state>", direct.line)
                _leftovers(ctx, direct)
        elif kid.tag == "tlbflush":
            kid.ignore("direct", "extended")  # libvirt 9.0's QEMU driver renders no option for them
        _leftovers(ctx, kid)
    fields.put("enabled", tuple(enabled), "<hyperv>")
    _leftovers(ctx, node)
    return _make(ctx, Hyperv, fields)


def _read_features(ctx: _Context, node: Node | None) -> Features | None:
    """`<features>`: acpi, apic, pae, vmport, hyperv, kvm, pvspinlock, smm."""
    if node is None:
        return Features()
    fields = _Fields(node)
    hyperv = node.child("hyperv")
    if hyperv is not None:
        made = _read_hyperv(ctx, hyperv)
        if made is None:
            fields.fail("hyperv")
        fields.put("hyperv", made, "<hyperv>", hyperv.line)
    kvm = node.child("kvm")
    if kvm is not None:
        for tag, key in (("hidden", "kvm_hidden"), ("hint-dedicated", "kvm_hint_dedicated"),
                         ("poll-control", "kvm_poll_control"), ("pv-ipi", "kvm_pv_ipi")):
            _switch(ctx, fields, kvm, tag, key, bare=None)
        ring = kvm.child("dirty-ring")
        if ring is not None:
            if _flag(ctx, ring, "state", ("on", "off")):
                fields.put("kvm_dirty_ring", _int(ctx, ring, "size"), "<dirty-ring size>",
                           ring.line)
            else:
                ring.ignore_attrs("size")
            _leftovers(ctx, ring)
        _leftovers(ctx, kvm)
    for tag in ("pmu", "pvspinlock", "vmcoreinfo"):
        _switch(ctx, fields, node, tag)
    smm = _switch(ctx, fields, node, "smm", ignore_children=("tseg",))
    if smm is not None and smm.child("tseg") is not None:
        ctx.error(smm.line, "<smm><tseg> is not supported by qemud; remove it")
    for name in ("acpi", "apic", "pae"):
        kid = node.child(name)
        if kid is not None:
            if name == "apic":  # paravirtual end-of-interrupt (KVM's kvm-pv-eoi)
                fields.put("apic_eoi", _flag(ctx, kid, "eoi", ("on", "off")), "<apic eoi>",
                           kid.line)
            fields.put(name, True, f"<{name}>", kid.line)
            _leftovers(ctx, kid)
    tcg = node.child("tcg")
    if tcg is not None:
        cache = tcg.child("tb-cache")
        if cache is not None:
            size = _size(ctx, cache) if cache.attr("unit") else _size_mib(ctx, cache)
            fields.put("tb_cache", size, "<tb-cache>", cache.line)
            _leftovers(ctx, cache)
        _leftovers(ctx, tcg)
    _switch(ctx, fields, node, "vmport", bare=None)
    ioapic = node.child("ioapic")
    if ioapic is not None:
        fields.put("ioapic", ioapic.attr("driver"), "<ioapic driver>", ioapic.line)
        _leftovers(ctx, ioapic)
    _leftovers(ctx, node)
    return _make(ctx, Features, fields)


def _read_clock(ctx: _Context, node: Node | None) -> Clock | None:
    """`<clock offset=>` and its `<timer>`s."""
    if node is None:
        return Clock()
    fields = _Fields(node)
    fields.attr("offset")
    fields.attr("basis")
    fields.attr("start")
    fields.attr("timezone")
    adjustment = node.attr("adjustment")
    if adjustment == "reset":
        fields.put("reset", True, "<clock adjustment>")
    elif adjustment is not None:
        fields.put("adjustment", adjustment, "<clock adjustment>")
        if node.attr("offset") in ("utc", "localtime"):  # libvirt's shorthand for variable
            fields.put("offset", "variable", "<clock offset>")
            fields.put("basis", node.attr("offset"), "<clock adjustment>")
    timers = []
    for timer in node.children("timer"):
        tf = _Fields(timer)
        tf.attr("name")
        tf.attr("tickpolicy")
        tf.put("present", _flag(ctx, timer, "present"), "<timer present>")
        tf.attr("frequency")
        tf.attr("mode")
        tf.attr("track")
        catchup = timer.child("catchup")
        if catchup is not None:  # libvirt's QEMU driver renders nothing for the catchup tuning
            catchup.ignore_attrs("threshold", "slew", "limit")
            _leftovers(ctx, catchup)
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


_UNSUPPORTED_DISKS = {
    "network": "network storage (rbd, iSCSI, NBD, gluster, http...) needs QEMU's network block "
               "drivers and secrets qemud does not manage; use a local file or block device",
    "volume": "a storage-pool volume needs libvirt's storage driver to find its path; use "
              "<disk type='file'> (or 'block') with the path `virsh vol-path` gives",
    "nvme": "passing an NVMe controller through needs VFIO, which qemud does not manage",
    "dir": "a host folder as a virtual FAT disk is not supported; use <filesystem> to share it",
    "vhostuser": "a vhost-user disk needs a storage daemon qemud does not run",
}
"""libvirt disk types qemud refuses, each with the sentence that says why."""


def _read_disk(ctx: _Context, node: Node) -> Disk | None:
    """`<disk type= device=>` with driver, source, target, readonly, boot, serial."""
    kind = node.attr("type")
    if kind in _UNSUPPORTED_DISKS:  # one sentence for the whole element, not one per part
        ctx.error(node.line, f"<disk type='{kind}'> is not supported: {_UNSUPPORTED_DISKS[kind]}")
        node.ignore(*(k.tag for k in node.kids()))
        return None
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
        fields.attr("io", node=driver)
        fields.attr("detect_zeroes", node=driver)
        fields.attr("iothread", node=driver)
        _virtio_options(ctx, driver, fields)
        _leftovers(ctx, driver)
    source = node.child("source")
    if source is not None:
        source.ignore_attrs("index")  # libvirt's own numbering of the image chain
        fields.attr("startup_policy", "startupPolicy", source)
        key = "dev" if node.attr("type") == "block" else "file"
        fields.put("source", source.attr(key), f"<source {key}>", source.line)
        _leftovers(ctx, source, IGNORED_EVERYWHERE)
    target = node.child("target")
    if target is None:
        ctx.error(node.line, "<disk> needs <target dev='vda' bus='virtio'/>")
        return None
    dev = target.attr("dev")
    bus = target.attr("bus") or _BUS_FOR_PREFIX.get((dev or "")[:2])
    target.ignore_attrs("tray")  # a live XML's tray state; QEMU starts with it closed
    fields.attr("rotation_rate", node=target)
    fields.put("target_dev", dev, "<target dev>", target.line)
    fields.put("target_bus", bus, "<target bus>", target.line)
    if target.attr("removable") is not None:
        removable = _flag(ctx, target, "removable", ("on", "off"))
        if bus != "usb":
            ctx.error(target.line, "<target removable>: only USB disks (bus='usb') have "
                      "removable media; remove it")
        fields.put("removable", removable, "<target removable>", target.line)
    if bus == "usb" and fields.data.get("source") is None:
        ctx.error(target.line, "<target bus='usb'> needs a <source>: QEMU's usb-storage cannot "
                  "start without media (put an empty CD-ROM on bus='sata' or 'scsi')")
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
    if node.child("shareable") is not None:
        fields.put("shareable", True, "<shareable>")
    wwn = node.child("wwn")
    if wwn is not None:
        fields.put("wwn", wwn.text, "<wwn>", wwn.line)
    iotune = node.child("iotune")
    if iotune is not None:
        fields.put("iotune", _read_iotune(ctx, iotune), "<iotune>", iotune.line)
    fields.put("address", _address(ctx, node, ("pci", "drive")), "<address>")
    fields.put("drive", _drive_address(ctx, node), "<address type='drive'>")
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "backingStore"))
    return _make(ctx, Disk, fields)


def _read_iotune(ctx: _Context, node: Node) -> IoTune | None:
    """`<iotune>`: one child element a limit (libvirt's names), each reported at its own line."""
    fields = _Fields(node)
    for name in IoTune.model_fields:
        kid = node.child(name)
        if kid is not None:
            fields.put(name, kid.text, f"<iotune><{name}>", kid.line)
            _leftovers(ctx, kid)
    _leftovers(ctx, node)
    return _make(ctx, IoTune, fields)


def _network_bridge(ctx: _Context, source: Node, fields: _Fields) -> None:
    """Set the bridge of `<source network=>`, or record why there is none.

    From the network's definition (`HostFacts.network_bridge`); without one, the `bridge=` the
    file states (libvirt's live XML, qemud's definition in use); else a guess, with a warning.
    """
    network = source.attr("network")
    stated = source.attr("bridge")
    lookup = ctx.host.network_bridge
    if network is None:
        return  # the model reports the missing source
    if lookup is not None:
        try:
            bridge = lookup(network)
        except NetworkError as exc:
            ctx.error(source.line, f"<source network='{network}'>: {exc.message}")
            return
        fields.put("bridge", bridge, "<source bridge>", source.line)
    elif stated is not None:
        fields.put("bridge", stated, "<source bridge>", source.line)
    else:
        guess = "virbr0" if network == "default" else network
        ctx.warn(source.line, f"<source network='{network}'>: libvirt's networks were not "
                 f"consulted; assuming the network's bridge is '{guess}' (virbr0 for 'default', "
                 "else the network's name)")


_SOCKET_NICS = ("server", "client", "mcast", "udp")
_HOST_OFFLOADS = ("csum", "gso", "tso4", "tso6", "ecn", "ufo", "mrg_rxbuf")
_GUEST_OFFLOADS = ("csum", "tso4", "tso6", "ecn", "ufo")
_NIC_REFUSED = {
    "vlan": "VLAN tags are set by libvirt on an Open vSwitch or SR-IOV port, which qemud does "
            "not manage; tag the traffic on the host bridge instead",
    "virtualport": "802.1Qbg/bh and Open vSwitch ports are set up by libvirt, which qemud does "
                   "not do; join a Linux bridge (type='bridge') instead",
    "bandwidth": "traffic shaping is applied by libvirt with tc, which qemud does not run",
    "filterref": "libvirt's network filters (nwfilter) are not available to qemud",
    "teaming": "failover teaming needs a hostdev interface, which qemud does not pass through",
    "ip": "qemud does not configure addresses for the guest or the host's tap; configure them "
          "in the guest (or the <script> of a type='ethernet' tap)",
    "route": "qemud does not add host routes for a tap; add them in the <script>",
    "portForward": "port forwarding belongs to passt, which qemud does not run",
}
"""`<interface>` children qemud cannot honour, each with why (refused at their line)."""


def _read_nic_driver(ctx: _Context, driver: Node, fields: _Fields) -> None:
    """`<driver name= txmode= queues= ...>` with `<host>`/`<guest>` offloads into `driver`."""
    _virtio_options(ctx, driver, fields)
    data: dict[str, object] = {}
    for key in ("name", "txmode"):
        if driver.attr(key) is not None:
            data[key] = driver.attr(key)
    for key in ("queues", "rx_queue_size", "tx_queue_size"):
        if driver.attr(key) is not None:
            value = _int(ctx, driver, key)
            if value is not None:
                data[key] = value
    for key in ("ioeventfd", "event_idx", "rss", "rss_hash_report"):
        value = _flag(ctx, driver, key, ("on", "off"))
        if value is not None:
            data[key] = value
    for tag, names in (("host", _HOST_OFFLOADS), ("guest", _GUEST_OFFLOADS)):
        kid = driver.child(tag)
        if kid is not None:
            pairs = [(n, _flag(ctx, kid, n, ("on", "off"))) for n in names if kid.attr(n)]
            data[tag] = tuple((n, v) for n, v in pairs if v is not None)
            _leftovers(ctx, kid)
    _leftovers(ctx, driver)
    try:
        fields.put("driver", NicDriver.model_validate(data), "<driver>", driver.line)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            where = str(err["loc"][0]) if err["loc"] else ""
            ctx.error(driver.line, _say(err, f"<driver {where}>" if where else "<driver>"))
        fields.fail("driver")


_NIC_TYPES_REFUSED = {
    "direct": "macvtap devices are created by libvirt, which qemud does not do; use "
              "type='bridge' (or type='ethernet' with a tap you created)",
    "hostdev": "passing an SR-IOV function through needs VFIO, which qemud does not manage",
    "vdpa": "vDPA devices need host setup qemud does not do",
    "vhostuser": "qemud does not start or manage vhost-user backends (DPDK, Open vSwitch)",
}


def _read_interface(ctx: _Context, node: Node) -> Interface | None:
    """`<interface type=>` with mac, model, source, boot, driver, rom and (ethernet) the tap."""
    fields = _Fields(node)
    typ = node.attr("type")
    if typ in _NIC_TYPES_REFUSED:
        ctx.error(node.line, f"<interface type='{typ}'> is not supported: "
                  f"{_NIC_TYPES_REFUSED[typ]}")
        node.ignore(*(k.tag for k in node.kids()))
        node.ignore_attrs("managed", "trustGuestRxFilters")
        return None
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
    if source is not None and typ in _SOCKET_NICS:
        fields.attr("socket_address", "address", source)
        fields.attr("socket_port", "port", source)
        local = source.child("local")
        if local is not None and typ == "udp":
            fields.attr("local_address", "address", local)
            fields.attr("local_port", "port", local)
            _leftovers(ctx, local)
        _leftovers(ctx, source)
    elif source is not None and typ == "ethernet":
        for kid in source.kids():
            if kid.tag in _NIC_REFUSED:
                source.consume(kid)
                ctx.error(kid.line, f"<{kid.tag}> inside <source> is not supported: "
                          f"{_NIC_REFUSED[kid.tag]}")
        _leftovers(ctx, source)
    elif source is not None:
        key = {"bridge": "bridge", "network": "network"}.get(typ or "", "bridge")
        source.ignore_attrs("portid")
        fields.put("source", source.attr(key), f"<source {key}>", source.line)
        if typ == "network":
            _network_bridge(ctx, source, fields)
        _leftovers(ctx, source)
    boot = node.child("boot")
    if boot is not None:
        fields.put("boot_order", boot.attr("order"), "<boot order>", boot.line)
        _leftovers(ctx, boot)
    driver = node.child("driver")
    if driver is not None:
        _read_nic_driver(ctx, driver, fields)
    rom = node.child("rom")
    if rom is not None:
        fields.put("rom_bar", _flag(ctx, rom, "bar", ("on", "off")), "<rom bar>", rom.line)
        fields.put("rom_enabled", _flag(ctx, rom, "enabled"), "<rom enabled>", rom.line)
        fields.attr("rom_file", "file", rom)
        _leftovers(ctx, rom)
    if typ == "ethernet":
        target = node.child("target")
        if target is not None:
            fields.attr("target_dev", "dev", target)
            fields.put("target_managed", _flag(ctx, target, "managed"), "<target managed>",
                       target.line)
            _leftovers(ctx, target)
        for tag in ("script", "downscript"):
            script = node.child(tag)
            if script is not None:
                fields.attr(tag, "path", script)
                _leftovers(ctx, script)
    for ip in node.children("ip") if typ == "user" else ():
        family = ip.attr("family") or "ipv4"
        if family not in ("ipv4", "ipv6"):
            ctx.error(ip.line, f"<ip family>: {family!r} is not allowed; use 'ipv4' or 'ipv6'")
        prefix = ip.attr("prefix") or ("24" if family == "ipv4" else "64")
        fields.put(f"user_{family}" if family in ("ipv4", "ipv6") else "user_ipv4",
                   f"{ip.attr('address')}/{prefix}", "<ip address>", ip.line)
        _leftovers(ctx, ip)
    for kid in node.kids():
        if kid.tag in _NIC_REFUSED and not (kid.tag == "ip" and typ == "user"):
            node.consume(kid)
            ctx.error(kid.line, f"<{kid.tag}> inside <interface> is not supported: "
                      f"{_NIC_REFUSED[kid.tag]}")
    fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "target", "actual"))
    return _make(ctx, Interface, fields)


_SPICE_CHILDREN = {"image": ("compression", "image_compression"),
                   "jpeg": ("compression", "jpeg_compression"),
                   "zlib": ("compression", "zlib_compression"),
                   "streaming": ("mode", "streaming"), "mouse": ("mode", "mouse")}


def _read_display(ctx: _Context, node: Node) -> Display | None:
    """`<graphics type='egl-headless'|'dbus'>`: `<gl rendernode= enable=>`, dbus's address/p2p.

    dbus also takes `<audio id=>`, the audiodev it exports.
    A dbus display with neither p2p nor address is refused: libvirt runs a private D-Bus
    daemon for it, which qemud does not.
    """
    fields = _Fields(node)
    kind = node.attr("type")
    fields.attr("type")
    gl = node.child("gl")
    if gl is not None:
        fields.put("rendernode", gl.attr("rendernode"), "<gl rendernode>", gl.line)
        if kind == "dbus":
            fields.put("gl", _flag(ctx, gl, "enable"), "<gl enable>", gl.line)
        elif gl.attr("enable") not in (None, "yes"):
            ctx.error(gl.line, "<graphics type='egl-headless'><gl enable='no'>: egl-headless is "
                      "OpenGL; remove <gl> or the whole display")
        gl.ignore_attrs("enable")
        _leftovers(ctx, gl)
    if kind == "dbus":
        fields.attr("address")
        fields.put("p2p", _flag(ctx, node, "p2p"), "<graphics p2p>")
        audio = node.child("audio")
        if audio is not None:
            fields.put("audio", _int(ctx, audio, "id"), "<audio id>", audio.line)
            _leftovers(ctx, audio)
        if node.attr("address") is None and node.attr("p2p") != "yes":
            ctx.error(node.line, "<graphics type='dbus'> without p2p='yes' or address= needs a "
                      "private D-Bus daemon, which qemud does not run; add p2p='yes' (clients "
                      "connect through QMP) or the address= of a bus")
            return None
    _leftovers(ctx, node)
    return _make(ctx, Display, fields)


def _read_graphics(ctx: _Context, node: Node) -> Graphics | Display | None:
    """`<graphics type='vnc'|'spice' port= autoport= listen= passwd=>` (others: `_read_display`)."""
    if node.attr("type") in ("egl-headless", "dbus"):
        return _read_display(ctx, node)
    if node.attr("type") in ("sdl", "desktop", "rdp"):
        ctx.error(node.line, f"<graphics type='{node.attr('type')}'>: "
                  + ("opens a window on the X display of whoever runs QEMU, which a daemon "
                     "has none of; use VNC or spice (remote-viewer), or dbus p2p"
                     if node.attr("type") != "rdp" else "QEMU has no RDP server; use VNC or "
                     "spice"))
        return None
    fields = _Fields(node)
    fields.attr("type")
    fields.attr("passwd")
    node.ignore_attrs("keymap")
    fields.attr("share_policy", "sharePolicy")
    if node.attr("keymap") not in (None, "en-us"):
        ctx.error(node.line, "<graphics keymap>: QEMU's keymaps are deprecated; remove it and "
                  "let the client send scancodes")
    tls = node.attr("tlsPort")
    if tls not in (None, "-1", "0"):
        fields.put("tls_port", _int(ctx, node, "tlsPort"), "<graphics tlsPort>")
        if ctx.host.spice_certificates is not None:
            why = ctx.host.spice_certificates(SPICE_X509_DIR)
            if why is not None:
                ctx.error(node.line, f"<graphics tlsPort>: {why}")
    fields.attr("default_mode", "defaultMode")
    channels: list[tuple[str | None, str | None]] = []
    for spice_channel in node.children("channel"):
        channels.append((spice_channel.attr("name"), spice_channel.attr("mode")))
        _leftovers(ctx, spice_channel)
    if channels:
        fields.put("channels", tuple(channels), "<graphics><channel>")
    heard = node.child("audio")
    if heard is not None:
        fields.put("audio", _int(ctx, heard, "id"), "<audio id>", heard.line)
        _leftovers(ctx, heard)
    gl = node.child("gl")
    if gl is not None:
        fields.put("gl", _flag(ctx, gl, "enable"), "<gl enable>", gl.line)
        fields.put("rendernode", gl.attr("rendernode"), "<gl rendernode>", gl.line)
        _leftovers(ctx, gl)
    for tag, (attr, key) in _SPICE_CHILDREN.items():
        kid = node.child(tag)
        if kid is not None:
            fields.put(key, kid.attr(attr), f"<{tag} {attr}>", kid.line)
            _leftovers(ctx, kid)
    for tag, attr, key, truth in (("playback", "compression", "playback_compression",
                                   ("on", "off")),
                                  ("clipboard", "copypaste", "clipboard", ("yes", "no")),
                                  ("filetransfer", "enable", "filetransfer", ("yes", "no"))):
        kid = node.child(tag)
        if kid is not None:
            fields.put(key, _flag(ctx, kid, attr, truth), f"<{tag} {attr}>", kid.line)
            _leftovers(ctx, kid)
    port = _int(ctx, node, "port") if node.attr("port") not in ("-1", None) else None
    auto = _flag(ctx, node, "autoport")
    local_gl = gl is not None and gl.attr("enable") == "yes" and node.attr("type") == "spice"
    if auto is False and port is None and local_gl:
        fields.put("listen_type", "none", "<graphics>")  # spice GL serves local clients only
    elif auto is False and port is None:
        ctx.error(node.line, "<graphics autoport='no'> needs a port (5900 or above)")
    if auto is not True:
        fields.put("port", port, "<graphics port>")
    listen = node.attr("listen")
    listen_type = None
    listens = list(node.children("listen"))
    for extra in listens[1:]:  # libvirt's QEMU driver refuses them too
        ctx.error(extra.line, "a second <listen>: QEMU serves a display on one address only; "
                  "keep one <listen>")
    for kid in listens:
        kind = kid.attr("type")
        first = node.attr("listen")
        if kind in ("address", None) and first and kid.attr("address") not in (None, first):
            ctx.error(kid.line, f"<graphics listen='{first}'> and <listen address="
                      f"'{kid.attr('address')}'> disagree (libvirt refuses this too); make them "
                      "the same, or drop one")
        if kind not in ("address", "none", "socket", None):
            ctx.error(kid.line, f"<listen type>: {kind!r} is not supported; use 'address', "
                      "'socket' or 'none' (a libvirt network's address is not known to qemud)")
            kid.ignore_attrs("network")
        kid.ignore_attrs("fromConfig", "autoGenerated")
        listen_type = kind if kind in ("none", "socket") else listen_type
        if kind == "socket":
            fields.put("socket", kid.attr("socket"), "<listen socket>", kid.line)
        else:
            listen = kid.attr("address") or listen
        _leftovers(ctx, kid)
    fields.put("listen", listen, "<graphics listen>")
    if listen_type is not None or "listen_type" not in fields.data:
        fields.put("listen_type", listen_type, "<listen type>")
    if node.attr("type") == "spice" and fields.data.get("port") is None and listen_type is None:
        ctx.warn(node.line, "<graphics type='spice' autoport='yes'>: QEMU cannot choose a spice "
                 "port itself, so qemud serves spice on the unix socket spice.sock in the VM's "
                 "runtime folder (remote-viewer spice+unix://PATH); give port= for TCP")
    _leftovers(ctx, node)
    return _make(ctx, Graphics, fields)


def _char_fields(ctx: _Context, node: Node, source_extras: tuple[str, ...] = ()) -> _Fields:
    """The fields every character device shares: `type`, and `<source path= mode=>`.

    `tty` (what libvirt adds for a pty) is accepted; `source_extras` are children of `<source>`
    that do not change the guest.
    """
    fields = _Fields(node)
    fields.attr("type")
    node.ignore_attrs("tty")
    source = node.child("source")
    if source is not None:
        fields.attr("path", node=source)
        fields.attr("mode", node=source)
        _leftovers(ctx, source, source_extras)
    return fields


_CHAR_SOURCE_TYPES = ("pty", "file", "unix", "null", "dev", "tcp", "udp", "pipe", "spiceport")
_CHAR_REFUSED = {
    "vc": "a virtual console needs a graphical QEMU window, which qemud does not open; use 'pty'",
    "stdio": "QEMU's standard input and output are qemud's, not a terminal; use 'pty'",
    "nmdm": "nmdm is FreeBSD's; use 'pty'",
    "spicevmc": "a spicevmc data channel is only for <channel>, <redirdev> and <smartcard>",
    "qemu-vdagent": "use 'pty' or 'unix' (the QEMU vdagent is only for <channel>)",
}


def _char_source(ctx: _Context, node: Node) -> _Fields | None:
    """Read a character device's host side into `CharSource` fields, as libvirt does.

    `type=`; `<source path= mode= host= service= append=>` (udp: a 'bind' and a 'connect'
    `<source>`); `<protocol type='raw'|'telnet'>`; `<source><reconnect enabled= timeout=>`.
    libvirt's default mode is 'connect' for tcp, 'bind' for unix (qemud's long-standing reading).
    Returns None (after reporting) for a type qemud does not render.
    """
    fields = _Fields(node)
    typ = node.attr("type") or "pty"
    node.ignore_attrs("tty")
    if typ in _CHAR_REFUSED or typ not in _CHAR_SOURCE_TYPES:
        why = _CHAR_REFUSED.get(typ, "use one of " + ", ".join(repr(t) for t in
                                                               _CHAR_SOURCE_TYPES))
        ctx.error(node.line, f"<{node.tag} type>: {typ!r} is not supported; {why}")
        return None
    fields.put("type", typ, f"<{node.tag} type>")
    sources = list(node.children("source"))
    if typ != "udp" and len(sources) > 1:
        ctx.error(sources[1].line, f"<{node.tag} type='{typ}'> takes one <source>; remove the "
                  "others")
    for source in sources:
        mode = source.attr("mode")
        if mode not in (None, "bind", "connect"):
            ctx.error(source.line, f"<source mode>: {mode!r} is not allowed; use one of 'bind' "
                      "or 'connect'")
            mode = None
        if typ == "udp":
            bind = mode == "bind"
            fields.put("bind_host" if bind else "host", source.attr("host"), "<source host>",
                       source.line)
            fields.put("bind_service" if bind else "service", source.attr("service"),
                       "<source service>", source.line)
        else:
            if typ == "tcp":
                fields.put("mode", mode or "connect", "<source mode>", source.line)
                fields.attr("host", node=source)
                fields.attr("service", node=source)
            elif typ == "spiceport":
                fields.attr("spice_channel", "channel", source)
            else:
                fields.put("mode", mode, "<source mode>", source.line)
            fields.attr("path", node=source)
            append = _flag(ctx, source, "append", ("on", "off"))
            if append is not None and typ != "file":
                ctx.error(source.line, "<source append> is for type='file' only; remove it")
            else:
                fields.put("append", append, "<source append>", source.line)
            if typ == "tcp" and _flag(ctx, source, "tls"):
                ctx.error(source.line, "<source tls='yes'>: TLS needs x509 certificates qemud "
                          "does not configure; remove tls (or set it to 'no')")
        reconnect = source.child("reconnect")
        if reconnect is not None:
            enabled = _flag(ctx, reconnect, "enabled")
            timeout = _int(ctx, reconnect, "timeout")
            dials = (mode or ("connect" if typ == "tcp" else "bind")) == "connect"
            if typ not in ("tcp", "unix") or not dials:
                ctx.error(reconnect.line, "<reconnect> is for tcp and unix sources with "
                          "mode='connect' (a listening socket has nothing to reconnect to)")
                enabled = None
            elif enabled is None:
                ctx.error(reconnect.line, "<reconnect> needs enabled='yes' (with timeout=) or "
                          "enabled='no'")
            elif enabled and not timeout:
                ctx.error(reconnect.line, "<reconnect enabled='yes'> needs timeout= (seconds, "
                          "at least 1)")
            if enabled is not None:
                fields.put("reconnect", (timeout or None) if enabled else 0, "<reconnect>",
                           reconnect.line)
            _leftovers(ctx, reconnect)
        _leftovers(ctx, source, ("seclabel",))
    if typ == "tcp" and not sources:
        fields.put("mode", "connect", "<source mode>")
    protocol = node.child("protocol")
    if protocol is not None:
        kind = protocol.attr("type")
        if kind not in ("raw", "telnet"):
            ctx.error(protocol.line, f"<protocol type>: {kind!r} is not supported; use 'raw' or "
                      "'telnet' (TLS needs certificates qemud does not configure)")
        if kind == "telnet" and typ != "tcp":
            ctx.error(protocol.line, "<protocol type='telnet'> is for type='tcp' only; remove it")
        else:
            fields.put("telnet", kind == "telnet" or None, "<protocol type>", protocol.line)
        _leftovers(ctx, protocol)
    return fields


def _read_serial(ctx: _Context, node: Node) -> Serial | None:
    """`<serial>` or `<console>` with source, target port and type, ISA address and log."""
    fields = _char_source(ctx, node)
    if fields is None:
        node.ignore("source", "protocol", "target", "log", "address")
        _leftovers(ctx, node, IGNORED_EVERYWHERE)
        return None
    target = node.child("target")
    if target is not None:
        ttype = target.attr("type")
        if ttype not in (None, "serial", "isa-serial", "isa-debug"):
            ctx.error(target.line, f"<target type>: {ttype!r} is not supported; use 'serial' "
                      "or 'isa-debug'" + (" (or 'virtio' on a <console>)"
                                          if node.tag == "console" else ""))
        if ttype == "isa-debug":
            fields.put("target_type", "isa-debug", "<target type>", target.line)
        fields.attr("port", node=target)
        model = target.child("model")
        if model is not None:
            expected = "isa-debugcon" if ttype == "isa-debug" else "isa-serial"
            if model.attr("name") not in (None, expected):
                ctx.error(model.line, f"<model name>: only {expected!r} is supported")
            _leftovers(ctx, model)
        _leftovers(ctx, target)
    addr = node.child("address")
    if addr is not None and addr.attr("type") == "isa":
        if addr.attr("iobase") is not None:
            fields.put("iobase", _hex(ctx, addr, "iobase", 0), "<address iobase>", addr.line)
        if addr.attr("irq") is not None:
            fields.put("irq", _hex(ctx, addr, "irq", 0), "<address irq>", addr.line)
    _address(ctx, node, ("isa",))
    log = node.child("log")
    if log is not None:
        fields.attr("log", "file", log)
        fields.put("log_append", _flag(ctx, log, "append", ("on", "off")), "<log append>")
        _leftovers(ctx, log)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Serial, fields)


def _read_console(ctx: _Context, node: Node) -> Console | None:
    """`<console>` with `<target type='virtio'>`: a virtio console on virtio-serial controller 0."""
    fields = _char_source(ctx, node)
    target = node.child("target")
    if target is not None:
        target.ignore_attrs("type", "port")  # port: libvirt's console index, not a setting
        _leftovers(ctx, target)
    if fields is None:
        node.ignore("source", "protocol", "log")
        _leftovers(ctx, node, IGNORED_EVERYWHERE)
        return None
    _address(ctx, node, ("virtio-serial",))
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Console, fields)


def _read_parallel(ctx: _Context, node: Node) -> Parallel | None:
    """`<parallel type=>` with its source and `<target port=>`: an isa-parallel port."""
    fields = _char_source(ctx, node)
    if fields is None:
        node.ignore("source", "protocol", "target", "address")
        _leftovers(ctx, node, IGNORED_EVERYWHERE)
        return None
    target = node.child("target")
    if target is not None:
        fields.attr("port", node=target)
        _leftovers(ctx, target)
    _address(ctx, node, ("isa",))
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Parallel, fields)


def _primary(ctx: _Context, node: Node) -> bool:
    """Whether `<video><model primary='yes'>` makes this adapter the primary (VGA) one."""
    model = node.child("model")
    return model is not None and _flag(ctx, model, "primary") is True


def _read_video(ctx: _Context, node: Node) -> Video | None:
    """`<video><model type= vram= heads= primary=/></video>`."""
    model = node.child("model")
    fields = _Fields(node)
    if model is not None:
        fields.attr("model", "type", model)
        for name in ("heads", "vram", "ram", "vgamem"):
            fields.attr(name, node=model)
        model.ignore_attrs("primary")  # read by `_primary`: it orders the adapters
        if model.attr("vram64") not in (None, "0"):
            ctx.error(model.line, "<model vram64>: 64-bit qxl VRAM is not supported by qemud; "
                      "remove it")
        accel = model.child("acceleration")
        if accel is not None:
            if accel.attr("accel3d") == "yes" or accel.attr("rendernode") is not None:
                ctx.error(accel.line, "<acceleration accel3d='yes'> needs virgl and a host GPU "
                          "(egl-headless), which qemud does not set up; remove it")
            accel.ignore_attrs("accel3d", "accel2d")
            _leftovers(ctx, accel)
        resolution = model.child("resolution")
        if resolution is not None:
            x, y = _int(ctx, resolution, "x"), _int(ctx, resolution, "y")
            kind = model.attr("type") or "vga"
            if x is None or y is None:
                ctx.error(resolution.line, "<resolution> needs x= and y= (pixels)")
            elif kind not in ("qxl", "virtio"):  # the model's rule, said at this line
                ctx.error(resolution.line, f"<resolution> is for qxl and virtio video; QEMU's "
                          f"{kind} has no settable resolution (the guest picks it); remove it")
            else:
                fields.put("resolution", (x, y), "<resolution>", resolution.line)
            _leftovers(ctx, resolution)
    fields.put("address", _address(ctx, node), "<address>")
    driver = node.child("driver")
    if driver is not None:
        ctx.error(driver.line, "<video><driver> is not supported by qemud; remove it")
    _leftovers(ctx, node, (*IGNORED_EVERYWHERE, "driver"))
    return _make(ctx, Video, fields)


def _read_rng(ctx: _Context, node: Node) -> Rng | None:
    """`<rng model='virtio'>` with a random, builtin or egd backend and an optional rate."""
    fields = _Fields(node)
    fields.attr("model")
    backend = node.child("backend")
    if backend is not None:
        kind = backend.attr("model")
        if kind not in ("random", "builtin", "egd"):
            ctx.error(backend.line, f"<backend model>: {kind!r} is not supported; use 'random' "
                      "(a host device), 'builtin' (QEMU's own) or 'egd' (an EGD daemon)")
        elif kind == "builtin" and (backend.text or "").strip():
            ctx.error(backend.line, "<backend model='builtin'> takes no device path; remove it")
        fields.put("backend_model", kind if kind in ("builtin", "egd") else None,
                   "<backend model>", backend.line)
        if kind == "egd":
            relay = _char_source(ctx, backend)
            made = _make(ctx, CharSource, relay) if relay is not None else None
            fields.put("egd", made, "<backend>", backend.line)
            if made is None:
                fields.fail("egd")
        elif kind != "builtin":
            fields.put("backend", backend.text, "<backend>", backend.line)
        _leftovers(ctx, backend)
    rate = node.child("rate")
    if rate is not None:
        fields.attr("rate_bytes", "bytes", rate)
        fields.attr("rate_period", "period", rate)
        _leftovers(ctx, rate)
    fields.put("address", _address(ctx, node), "<address>")
    _driver_only_virtio(ctx, node, fields)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    if "egd" in fields.failed:
        return None  # its character device was reported
    return _make(ctx, Rng, fields)


def _read_tpm(ctx: _Context, node: Node) -> Tpm | None:
    """`<tpm model=><backend type='emulator' version=/></tpm>`: a TPM emulated by swtpm."""
    fields = _Fields(node)
    fields.attr("model")
    backend = node.child("backend")
    if backend is None:
        ctx.error(node.line, "<tpm> needs <backend type='emulator'/>: qemud runs an swtpm for it")
        return None
    kind = backend.attr("type")
    if kind != "emulator":
        ctx.error(backend.line, f"<tpm><backend type>: {kind!r} is not supported; use "
                  "'emulator' (qemud does not hand a host TPM to a guest)")
    fields.attr("version", node=backend)
    for attr, why in (("persistent_state", "the TPM state is always kept in the VM's state "
                       "folder"), ("debug", "swtpm's log level is not configurable")):
        if backend.attr(attr) not in (None, "no" if attr == "persistent_state" else "0"):
            ctx.error(backend.line, f"<backend {attr}> is not supported: {why}; remove it")
    backend.ignore_attrs("persistent_state", "debug")
    for child, why in (("encryption", "qemud cannot keep the secret that encrypts it"),
                       ("active_pcr_banks", "qemud leaves the PCR banks at swtpm's defaults"),
                       ("source", "swtpm is always reached through its own socket")):
        kid = backend.child(child)
        if kid is not None:
            backend.consume(kid)
            ctx.error(kid.line, f"<tpm><backend><{child}> is not supported: {why}; remove it")
    _leftovers(ctx, backend)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Tpm, fields)


_9P_MODES = {"fmode": "fmode", "dmode": "dmode"}


def _read_share_9p(ctx: _Context, node: Node, driver: Node | None) -> Share9p | None:
    """A 9p `<filesystem type='mount'>` (driver 'path' or none): QEMU's own 9p server."""
    fields = _Fields(node)
    if node.attr("type") not in (None, "mount"):
        ctx.error(node.line, f"<filesystem type>: {node.attr('type')!r} is not supported; use "
                  "'mount' (a host folder)")
        return None
    fields.attr("accessmode")
    fields.attr("multidevs")
    for name in _9P_MODES:
        raw = node.attr(name)
        if raw is not None:
            try:
                fields.put(name, int(raw, 8), f"<filesystem {name}>")
            except ValueError:
                ctx.error(node.line, f"<filesystem {name}>: {raw!r} is not an octal mode such "
                          "as 0644")
    if driver is not None:
        fields.put("writeout", driver.attr("wrpolicy"), "<driver wrpolicy>", driver.line)
        driver.ignore_attrs("type")
        _leftovers(ctx, driver)
    source, target = node.child("source"), node.child("target")
    if source is not None:
        fields.put("source_dir", source.attr("dir"), "<source dir>", source.line)
        _leftovers(ctx, source)
    if target is not None:
        fields.put("target_dir", target.attr("dir"), "<target dir>", target.line)
        _leftovers(ctx, target)
    if node.child("readonly") is not None:
        fields.put("readonly", True, "<readonly>")
    fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Share9p, fields)


def _read_filesystem(ctx: _Context, node: Node) -> Filesystem | Share9p | None:
    """A virtiofs `<filesystem type='mount' accessmode='passthrough'>`.

    `<driver type='virtiofs'/>`, `<source dir=>`, `<target dir=>` and virtiofsd's `<binary>`
    settings, as libvirt 9.0 reads them; any other driver is refused with its line.
    """
    fields = _Fields(node)
    driver = node.child("driver")
    kind = driver.attr("type") if driver is not None else None
    if kind in (None, "path"):
        return _read_share_9p(ctx, node, driver)
    if kind != "virtiofs":
        why = ("QEMU 7.2 has no 9p 'handle' backend any more; use type='path' (or none)"
               if kind == "handle" else f"driver {kind!r} is unknown; use 'path' (9p) or "
               "'virtiofs'")
        ctx.error(driver.line if driver is not None else node.line, f"<filesystem>: {why}")
        return None
    ftype = node.attr("type")
    if ftype not in (None, "mount"):
        ctx.error(node.line, f"<filesystem type>: {ftype!r} is not supported; use 'mount' (a "
                  "host folder)")
        return None
    mode = node.attr("accessmode")
    if mode not in (None, "passthrough"):
        ctx.error(node.line, f"<filesystem accessmode>: {mode!r} is not supported by virtiofs; "
                  "use 'passthrough'")
        return None
    if driver is not None:
        fields.put("queue", _int(ctx, driver, "queue"), "<driver queue>", driver.line)
        _leftovers(ctx, driver)
    source = node.child("source")
    if source is None or source.attr("dir") is None:
        ctx.error(node.line if source is None else source.line,
                  "<filesystem> needs <source dir='/host/folder'/>: the folder to share")
        fields.fail("source_dir")
    else:
        fields.attr("source_dir", "dir", source)
        _leftovers(ctx, source)
    target = node.child("target")
    if target is None or target.attr("dir") is None:
        ctx.error(node.line if target is None else target.line,
                  "<filesystem> needs <target dir='TAG'/>: the tag the guest mounts "
                  "(mount -t virtiofs TAG /mnt)")
        fields.fail("target_dir")
    else:
        fields.attr("target_dir", "dir", target)
        _leftovers(ctx, target)
    readonly = node.child("readonly")
    if readonly is not None:
        ctx.error(readonly.line, "<filesystem><readonly/>: virtiofs cannot share a folder "
                  "read-only (libvirt refuses it too); remove it, or mount it read-only in "
                  "the guest")
    binary = node.child("binary")
    if binary is not None:
        fields.attr("binary_path", "path", binary)
        fields.put("xattr", _flag(ctx, binary, "xattr", ("on", "off")), "<binary xattr>",
                   binary.line)
        for tag, attr, key in (("cache", "mode", "cache"), ("sandbox", "mode", "sandbox")):
            kid = binary.child(tag)
            if kid is not None:
                fields.attr(key, attr, kid)
                _leftovers(ctx, kid)
        lock = binary.child("lock")
        if lock is not None:
            for attr, key in (("posix", "posix_lock"), ("flock", "flock")):
                fields.put(key, _flag(ctx, lock, attr, ("on", "off")), f"<lock {attr}>",
                           lock.line)
            _leftovers(ctx, lock)
        pool = binary.child("thread_pool")
        if pool is not None:
            fields.put("thread_pool", _int(ctx, pool, "size"), "<thread_pool size>", pool.line)
            _leftovers(ctx, pool)
        _leftovers(ctx, binary)
    fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Filesystem, fields)


def _page_size(ctx: _Context, node: Node, name: str = "size") -> int | None:
    """A page size attribute `name` (with `unit=`, default KiB) in bytes; None when absent/wrong."""
    raw = node.attr(name)
    if raw is None:
        return None
    try:
        return units.to_bytes(raw, node.attr("unit") or "KiB")
    except ValueError as exc:
        ctx.error(node.line, f"<{node.tag} {name}>: {exc}")
        return None


def _read_memory_backing(ctx: _Context, node: Node) -> MemoryBacking | None:
    """`<memoryBacking>`: hugepages (per-cell page sizes), source, access, allocation, switches."""
    fields = _Fields(node)
    ok = True
    huge = node.child("hugepages")
    if huge is not None:
        fields.put("hugepages", True, "<hugepages>", huge.line)
        pages: list[Hugepage] = []
        for page in huge.children("page"):
            size = _page_size(ctx, page)
            if size is None:
                if page.attr("size") is None:
                    ctx.error(page.line, "<page> needs size= (e.g. size='2048' unit='KiB')")
                ok = False
                continue
            nodeset = _nodeset(ctx, page, "nodeset")
            if nodeset is None and page.attr("nodeset") is not None:
                ok = False
            _leftovers(ctx, page)
            pf = _Fields(page)
            pf.put("size", size, "<page size>")
            pf.put("nodeset", nodeset, "<page nodeset>")
            page_made = _make(ctx, Hugepage, pf)
            if page_made is None:
                ok = False
            else:
                pages.append(page_made)
        if sum(1 for p in pages if p.nodeset is None) > 1:
            ctx.error(huge.line, "<hugepages> has more than one <page> without nodeset=; keep one "
                      "default page size and give the others a nodeset")
            ok = False
        fields.put("pages", tuple(pages), "<page>", huge.line)
        _leftovers(ctx, huge)
    source = node.child("source")
    if source is not None:
        fields.attr("source", "type", source)
        _leftovers(ctx, source)
    access = node.child("access")
    if access is not None:
        fields.attr("access", "mode", access)
        _leftovers(ctx, access)
    allocation = node.child("allocation")
    if allocation is not None:
        fields.attr("allocation", "mode", allocation)
        fields.attr("threads", node=allocation)
        _leftovers(ctx, allocation)
    for tag in ("discard", "locked", "nosharepages"):
        kid = node.child(tag)
        if kid is not None:
            fields.put(tag, True, f"<{tag}>", kid.line)
            _leftovers(ctx, kid)
    _leftovers(ctx, node)
    made = _make(ctx, MemoryBacking, fields)
    return made if ok else None


def _read_memory_device(ctx: _Context, node: Node) -> MemoryDevice | None:
    """`<memory model= access= discard=>` with `<source>`, `<target>` and `<address type='dimm'>`."""
    fields = _Fields(node)
    fields.attr("model")
    fields.attr("access")
    fields.put("discard", _flag(ctx, node, "discard"), "<memory discard>")
    source = node.child("source")
    if source is not None:
        path, line = _read_text(ctx, source, "path")
        fields.put("path", path, "<source><path>", line)
        mask = source.child("nodemask")
        if mask is not None:
            try:
                fields.put("nodemask", parse_cpuset(mask.text or ""), "<nodemask>", mask.line)
            except CpusetError as exc:
                ctx.error(mask.line, f"<nodemask>: {exc}")
                fields.fail("nodemask")
            _leftovers(ctx, mask)
        for tag, key in (("pagesize", "pagesize"), ("alignsize", "alignsize")):
            kid = source.child(tag)
            if kid is not None:
                sub_size = _size(ctx, kid)
                if sub_size is None:
                    fields.fail(key)
                fields.put(key, sub_size, f"<{tag}>", kid.line)
                _leftovers(ctx, kid)
        pmem = source.child("pmem")
        if pmem is not None:
            fields.put("pmem", True, "<pmem>", pmem.line)
            _leftovers(ctx, pmem)
        _leftovers(ctx, source)
    target = node.child("target")
    if target is None:
        ctx.error(node.line, "<memory> needs <target> with its <size> (e.g. <size "
                  "unit='MiB'>512</size>)")
        return None
    for tag, key in (("size", "size"), ("block", "block"), ("requested", "requested")):
        kid = target.child(tag)
        if kid is not None:
            sub_size = _size(ctx, kid)
            if sub_size is None:
                fields.fail(key)
            fields.put(key, sub_size, f"<{tag}>", kid.line)
            _leftovers(ctx, kid)
    node_text, node_line = _read_text(ctx, target, "node")
    fields.put("node", node_text, "<node>", node_line)
    label = target.child("label")
    if label is not None:
        label_size = label.child("size")
        if label_size is not None:
            value = _size(ctx, label_size)
            if value is None:
                fields.fail("label_size")
            fields.put("label_size", value, "<label><size>", label_size.line)
            _leftovers(ctx, label_size)
        _leftovers(ctx, label)
    readonly = target.child("readonly")
    if readonly is not None:
        fields.put("readonly", True, "<readonly>", readonly.line)
        _leftovers(ctx, readonly)
    _leftovers(ctx, target)
    address = node.child("address")
    if address is not None and address.attr("type") == "dimm":
        node.consume(address)
        fields.attr("slot", node=address)
        base = address.attr("base")
        if base is not None:
            try:
                fields.put("base", int(base, 0), "<address base>", address.line)
            except ValueError:
                ctx.error(address.line, f"<address base>: {base!r} is not a number (e.g. "
                          "0x100000000)")
                fields.fail("base")
        _leftovers(ctx, address)
    elif address is not None:
        fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    made = _make(ctx, MemoryDevice, fields)
    if made is None:
        return None
    problem = memory_device_problem(made)
    if problem is not None:
        ctx.error(node.line, f"<memory model='{made.model}'>: {problem}")
        return None
    return made


def _read_model_only(ctx: _Context, node: Node,
                     allowed: tuple[str, ...]) -> tuple[str, PciAddress | None] | None:
    """Read `<panic model=>`: a model among `allowed`, and an address."""
    value = node.attr("model") or allowed[0]
    address = _address(ctx, node, ("isa",))
    if value not in allowed:
        ctx.error(node.line, f"<{node.tag} model>: {value!r} is not supported; use "
                  + " or ".join(repr(a) for a in allowed))
        return None
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return value, address


def _read_memballoon(ctx: _Context, node: Node) -> dict[str, Any] | None:
    """`<memballoon model= autodeflate= freePageReporting=>` with virtio options and address.

    The `Devices` fields it sets, by name.
    """
    value = node.attr("model") or "virtio"
    if value not in ("virtio", "none"):
        ctx.error(node.line, f"<memballoon model>: {value!r} is not supported; use 'virtio' or "
                  "'none'")
        return None
    out: dict[str, Any] = {"memballoon": value,
                           "memballoon_address": _address(ctx, node, ("pci",))}
    for attr, key in (("autodeflate", "memballoon_deflate"),
                      ("freePageReporting", "memballoon_free_page_reporting")):
        out[key] = _flag(ctx, node, attr, ("on", "off"))
    driver = node.child("driver")
    if driver is not None:
        virtio = _Fields(driver)
        _virtio_options(ctx, driver, virtio)
        out["memballoon_virtio"] = virtio.data.get("virtio", VirtioOptions())
        _leftovers(ctx, driver)
    stats = node.child("stats")
    if stats is not None:
        period = _Fields(stats)
        period.attr("memballoon_stats", "period")
        out["memballoon_stats"] = period.data.get("memballoon_stats")
        _leftovers(ctx, stats)
    if value == "none" and any(out.get(k) is not None for k in (
            "memballoon_deflate", "memballoon_free_page_reporting", "memballoon_stats")):
        ctx.error(node.line, "<memballoon model='none'> has no balloon to deflate or report "
                  "through; remove autodeflate, freePageReporting and <stats>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return out


_RELAYED_CHANNELS = ("tcp", "udp", "file", "null", "dev", "pipe", "spiceport")


def _channel_source(ctx: _Context, node: Node) -> _Fields:
    """The host side of a `<channel>`, by its type (see `Channel`)."""
    typ = node.attr("type")
    if typ in _RELAYED_CHANNELS:
        fields = _Fields(node)
        fields.put("type", typ, "<channel type>")
        relay = _char_source(ctx, node)
        if relay is None:
            fields.fail("source")
        else:
            made = _make(ctx, CharSource, relay)
            fields.put("source", made, "<source>")
            if made is None:
                fields.fail("source")
        return fields
    if typ == "qemu-vdagent":
        fields = _Fields(node)
        fields.put("type", typ, "<channel type>")
        source = node.child("source")
        if source is not None:
            clip = source.child("clipboard")
            if clip is not None:
                fields.put("vdagent_clipboard", _flag(ctx, clip, "copypaste"),
                           "<clipboard copypaste>", clip.line)
                _leftovers(ctx, clip)
            mouse = source.child("mouse")
            if mouse is not None:
                fields.attr("vdagent_mouse", "mode", mouse)
                _leftovers(ctx, mouse)
            _leftovers(ctx, source)
        return fields
    fields = _char_fields(ctx, node, ("seclabel", "reconnect"))
    source = node.child("source")
    reconnect = source.child("reconnect") if source is not None else None
    if reconnect is not None:
        enabled = _flag(ctx, reconnect, "enabled")
        timeout = _int(ctx, reconnect, "timeout")
        if enabled is None:
            ctx.error(reconnect.line, "<reconnect> needs enabled='yes' (with timeout=) or "
                      "enabled='no'")
        elif enabled and not timeout:
            ctx.error(reconnect.line, "<reconnect enabled='yes'> needs timeout= (seconds, "
                      "at least 1)")
        else:
            fields.put("reconnect", timeout if enabled else 0, "<reconnect>", reconnect.line)
        _leftovers(ctx, reconnect)
    return fields


def _read_channel(ctx: _Context, node: Node) -> Channel | None:
    """`<channel type=>` with its host side (see `Channel`) and `<target type='virtio'>`."""
    fields = _channel_source(ctx, node)
    target = node.child("target")
    if target is None:
        ctx.error(node.line, "<channel> needs <target type='virtio' name='...'/>")
        return None
    ttype = target.attr("type")
    if ttype != "virtio":
        ctx.error(target.line, f"<channel><target type>: {ttype!r} is not supported; use "
                  "'virtio' (guestfwd needs user networking rules qemud does not write)")
        target.ignore_attrs("address", "port")  # guestfwd's, refused as a whole above
    target.ignore_attrs("state")  # the guest agent's connection state, written by libvirt
    fields.attr("name", node=target)
    _leftovers(ctx, target)
    addr = node.child("address")
    if addr is not None and addr.attr("type") == "virtio-serial":
        fields.put("controller", _hex(ctx, addr, "controller", 0), "<address controller>",
                   addr.line)
        if addr.attr("bus") not in (None, "0"):
            ctx.error(addr.line, "<address bus>: a virtio-serial controller has bus 0 only")
        fields.put("port", _hex(ctx, addr, "port", 0) or None, "<address port>", addr.line)
    _address(ctx, node, ("virtio-serial",))
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    if "source" in fields.failed:
        return None  # its character device was reported
    return _make(ctx, Channel, fields)


def _usb_port(ctx: _Context, node: Node, fields: _Fields) -> None:
    """Read `<address type='usb' bus='0' port='N'>` into the `usb_port` field."""
    addr = node.child("address")
    if addr is not None and addr.attr("type") == "usb":
        if addr.attr("bus") not in (None, "0"):
            ctx.error(addr.line, "<address bus>: qemud has one USB bus, bus='0'")
        fields.put("usb_port", addr.attr("port"), "<address port>", addr.line)


def _read_hub(ctx: _Context, node: Node) -> Hub | None:
    """`<hub type='usb'>` with its `<address type='usb' port=>`."""
    if node.attr("type") not in (None, "usb"):
        ctx.error(node.line, f"<hub type>: {node.attr('type')!r} is not supported; use 'usb'")
        return None
    fields = _Fields(node)
    _usb_port(ctx, node, fields)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Hub, fields)


def _read_sound(ctx: _Context, node: Node) -> Sound | None:
    """`<sound model=>` with `<codec type=>`s, `<audio id=>` and its address."""
    fields = _Fields(node)
    fields.attr("model")
    codecs = []
    for codec in node.children("codec"):
        codecs.append(codec.attr("type"))
        _leftovers(ctx, codec)
    fields.put("codecs", tuple(codecs), "<codec type>")
    audio = node.child("audio")
    if audio is not None:
        fields.put("audio", _int(ctx, audio, "id"), "<audio id>", audio.line)
        _leftovers(ctx, audio)
    fields.put("address", _address(ctx, node, ("pci", "usb")), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Sound, fields)


AUDIO_TOP = {"none": (), "spice": (), "alsa": (), "file": ("path",),
             "oss": ("tryMMap", "exclusive", "dspPolicy"), "pulseaudio": ("serverName",),
             "jack": (), "sdl": (), "dbus": ()}
"""The `<audio>` types qemud renders and the attributes each takes besides id, type, timerPeriod."""
AUDIO_DIRECTION = {"alsa": ("dev",), "oss": ("dev", "bufferCount", "tryPoll"),
                   "pulseaudio": ("name", "streamName", "latency"),
                   "jack": ("serverName", "clientName", "connectPorts", "exactName"),
                   "sdl": ("bufferCount",)}
"""`<input>`/`<output>` attributes of some types, besides the common ones (`AUDIO_COMMON`)."""
AUDIO_COMMON = ("mixingEngine", "fixedSettings", "voices", "bufferLength")
AUDIO_SETTINGS = ("frequency", "channels", "format")


AUDIO_MODULES = {"pulseaudio": "audio-pa", "jack": "audio-jack", "sdl": "audio-sdl",
                 "alsa": "audio-alsa", "oss": "audio-oss", "spice": "audio-spice",
                 "dbus": "audio-dbus"}
"""The QEMU module each `<audio type>` needs (checked through `HostFacts.check_module`)."""


def _read_audio(ctx: _Context, node: Node) -> Audio | None:
    """`<audio id= type=>` with libvirt's tuning (none, spice, alsa, oss, file, pulseaudio, ...).

    The types: none, spice, alsa, oss, file (a WAV file), pulseaudio, jack, sdl and dbus. The
    sound servers need QEMU's module for them (Debian: qemu-system-gui) and a server QEMU can
    reach (the session daemon's QEMU runs in the user's session); `_check_domain` checks the
    module. coreaudio and dsound are macOS and Windows backends. SDL's `driver=` (an
    environment variable for QEMU) is refused.
    """
    fields = _Fields(node)
    fields.put("id", _int(ctx, node, "id"), "<audio id>")
    kind = node.attr("type")
    if kind in ("coreaudio", "dsound"):
        host_os = "macOS" if kind == "coreaudio" else "Windows"
        ctx.error(node.line, f"<audio type>: {kind!r} is a {host_os} sound backend, which Linux "
                  "QEMU does not have; use 'pulseaudio', 'alsa', 'jack', 'sdl', 'spice', 'file' "
                  "or 'none'")
        return None
    if kind is not None and kind not in AUDIO_TOP:
        ctx.error(node.line, f"<audio type>: {kind!r} is not supported; use 'none', 'spice', "
                  "'alsa', 'oss', 'file', 'pulseaudio', 'jack', 'sdl' or 'dbus'")
        return None
    if kind == "sdl" and node.attr("driver") is not None:
        ctx.error(node.line, "<audio type='sdl' driver=>: qemud does not set SDL's audio "
                  "driver (an environment variable of QEMU); remove driver= (SDL picks one) or "
                  "use that backend directly, e.g. type='pulseaudio'")
        return None
    fields.put("type", kind, "<audio type>")
    settings: list[tuple[str, str]] = []
    for name in ("timerPeriod", *AUDIO_TOP.get(kind or "", ())):
        value = node.attr(name)
        if value is not None:
            settings.append((name, value))
    for tag in ("input", "output"):
        kid = node.child(tag)
        if kid is None:
            continue
        for name in (*AUDIO_COMMON, *AUDIO_DIRECTION.get(kind or "", ())):
            value = kid.attr(name)
            if value is not None:
                settings.append((f"{tag}/{name}", value))
        tuning = kid.child("settings")
        if tuning is not None:
            for name in AUDIO_SETTINGS:
                value = tuning.attr(name)
                if value is not None:
                    settings.append((f"{tag}/settings/{name}", value))
            _leftovers(ctx, tuning)
        _leftovers(ctx, kid)
    for where, value in settings:
        name = where.rsplit("/", 1)[-1]
        if name in ("mixingEngine", "fixedSettings", "tryPoll", "tryMMap", "exclusive",
                    "exactName"):
            ok = value in ("yes", "no")
        elif name in ("serverName", "name", "streamName", "clientName", "connectPorts"):
            ok = bool(value)
        elif name in ("path", "dev", "format"):
            ok = bool(value) and (name != "format" or value in ("u8", "s16", "s32", "u16",
                                                                   "u32", "f32"))
        else:
            ok = value.isdigit()
        if not ok:
            ctx.error(node.line, f"<audio> {where.replace('/', ' ')}={value!r} is not valid "
                      "(yes/no, a whole number, a format like s16, or a path)")
            return None
    fields.put("settings", tuple(settings), "<audio>")
    _leftovers(ctx, node)
    return _make(ctx, Audio, fields)


def _read_relay(ctx: _Context, node: Node) -> CharSource | None:
    """The character device a redirdev or passthrough smartcard talks over.

    None for spicevmc, or for a type qemud does not render (then reported).
    """
    if node.attr("type") == "spicevmc":
        for tag in ("source", "protocol"):
            kid = node.child(tag)
            if kid is not None:
                ctx.error(kid.line, f"<{node.tag} type='spicevmc'> takes no <{tag}>; remove it")
        return None
    fields = _char_source(ctx, node)
    if fields is None:
        node.ignore("source", "protocol")
        return None
    return _make(ctx, CharSource, fields)


def _read_redirdev(ctx: _Context, node: Node) -> Redirdev | None:
    """`<redirdev bus='usb' type=>`: spicevmc, or a usbredir peer on a character device."""
    fields = _Fields(node)
    ok = True
    if node.attr("bus") not in (None, "usb"):
        ctx.error(node.line, "<redirdev bus>: only 'usb' exists")
        ok = False
    if node.attr("type") is None:
        ctx.error(node.line, "<redirdev> needs type= ('spicevmc', 'tcp', 'unix'...)")
        ok = False
    relay = _read_relay(ctx, node) if node.attr("type") is not None else None
    if node.attr("type") not in (None, "spicevmc") and relay is None:
        ok = False
    fields.put("source", relay, "<source>")
    boot = node.child("boot")
    if boot is not None:
        fields.put("boot_order", boot.attr("order"), "<boot order>", boot.line)
        _leftovers(ctx, boot)
    _usb_port(ctx, node, fields)
    _address(ctx, node, ("usb",))
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Redirdev, fields) if ok else None


def _read_shmem(ctx: _Context, node: Node) -> Shmem | None:
    """`<shmem name= role=>` with `<model type=>`, `<size>`, `<server path=>`, `<msi>`."""
    fields = _Fields(node)
    fields.attr("name")
    fields.attr("role")
    kind = node.child("model")
    server = node.child("server")
    if kind is not None:
        fields.put("model", kind.attr("type"), "<model type>", kind.line)
        _leftovers(ctx, kind)
    elif server is not None:
        fields.put("model", "ivshmem-doorbell", "<shmem>")
    size = node.child("size")
    if size is not None:
        fields.put("size", _size(ctx, size), "<size>", size.line)
        _leftovers(ctx, size)
    if server is not None:
        fields.put("server", server.attr("path"), "<server path>", server.line)
        _leftovers(ctx, server)
    msi = node.child("msi")
    plain = (kind.attr("type") if kind is not None else None) in (None, "ivshmem-plain") \
        and server is None
    if msi is not None and plain:
        ctx.error(msi.line, "<msi> is for model 'ivshmem-doorbell' (with an ivshmem-server); "
                  "ivshmem-plain has no interrupts: remove <msi>")
    if msi is not None:
        if msi.attr("enabled") == "no":
            ctx.error(msi.line, "<msi enabled='no'>: QEMU's ivshmem-doorbell always uses MSI; "
                      "remove enabled='no'")
        msi.ignore_attrs("enabled")
        fields.put("vectors", _int(ctx, msi, "vectors"), "<msi vectors>", msi.line)
        fields.put("ioeventfd", _flag(ctx, msi, "ioeventfd", ("on", "off")), "<msi ioeventfd>",
                   msi.line)
        _leftovers(ctx, msi)
    fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Shmem, fields)


def _usb_version(ctx: _Context, node: Node) -> int | None:
    """A `<usbdev version='M.mm'>` as its BCD number, as libvirt reads it ('9.4' is 0x0940)."""
    value = node.attr("version")
    if value in (None, "-1"):
        return None
    major, dot, minor = (value or "").partition(".")
    if not (major.isdigit() and len(major) <= 2 and (not dot or (minor.isdigit()
                                                                 and len(minor) <= 2))):
        ctx.error(node.line, f"<usbdev version>: {value!r} is not a USB release such as '1.10'")
        return None
    return int(f"{int(major):02d}{minor.ljust(2, '0') if dot else '00'}", 16)


def _read_redirfilter(ctx: _Context, node: Node) -> tuple[UsbFilterRule, ...] | None:
    """`<redirfilter>` with its `<usbdev>` rules (class, vendor, product: hex or -1)."""
    rules = []
    ok = True
    for dev in node.children("usbdev"):
        fields = _Fields(dev)
        for name, key in (("class", "usb_class"), ("vendor", "vendor"), ("product", "product")):
            value = dev.attr(name)
            if value not in (None, "-1"):
                fields.put(key, _hex(ctx, dev, name, -1), f"<usbdev {name}>", dev.line)
        fields.put("version", _usb_version(ctx, dev), "<usbdev version>", dev.line)
        fields.put("allow", _flag(ctx, dev, "allow"), "<usbdev allow>", dev.line)
        _leftovers(ctx, dev)
        rule = _make(ctx, UsbFilterRule, fields)
        ok = ok and rule is not None
        if rule is not None:
            rules.append(rule)
    _leftovers(ctx, node)
    return tuple(rules) if ok else None


def _read_smartcard(ctx: _Context, node: Node) -> Smartcard | None:
    """`<smartcard mode=>`: host, host-certificates or passthrough (with type= and a source).

    `<address type='ccid'>` is accepted for the one reader qemud renders.
    """
    fields = _Fields(node)
    fields.attr("mode")
    mode = node.attr("mode")
    if mode == "passthrough":
        if node.attr("type") is None:
            ctx.error(node.line, "<smartcard mode='passthrough'> needs type= ('spicevmc', "
                      "'tcp', 'unix'...)")
            return None
        relay = _read_relay(ctx, node)
        if node.attr("type") != "spicevmc" and relay is None:
            return None
        fields.put("source", relay, "<source>")
    certs = list(node.children("certificate"))
    if certs:
        fields.put("certificates", tuple(c.text or "" for c in certs), "<certificate>",
                   certs[0].line)
        for c in certs:
            _leftovers(ctx, c)
    database = node.child("database")
    if database is not None:
        fields.put("database", database.text, "<database>", database.line)
        _leftovers(ctx, database)
    addr = node.child("address")
    if addr is not None and addr.attr("type") == "ccid":
        if addr.attr("controller") not in (None, "0") or addr.attr("slot") not in (None, "0"):
            ctx.error(addr.line, "<address type='ccid'>: qemud renders one reader with one "
                      "card, controller='0' slot='0'")
        addr.ignore_attrs("controller", "slot")
        node.consume(addr)
        _leftovers(ctx, addr)
    else:
        _address(ctx, node, ("ccid",))
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Smartcard, fields)


def _read_vsock(ctx: _Context, node: Node) -> Vsock | None:
    """`<vsock model='virtio'><cid auto= address=/>`."""
    fields = _Fields(node)
    if node.attr("model") not in (None, "virtio"):
        ctx.error(node.line, f"<vsock model>: {node.attr('model')!r} is not supported; use "
                  "'virtio'")
    cid = node.child("cid")
    if cid is not None:
        auto = _flag(ctx, cid, "auto")
        if auto is not True:
            if cid.attr("address") is None:
                ctx.error(cid.line, "<cid auto='no'> needs address= (3 or more)")
            fields.attr("cid", "address", cid)
        else:
            cid.ignore_attrs("address")  # a live XML's assigned cid; qemud derives its own
        _leftovers(ctx, cid)
    fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Vsock, fields)


def _read_iommu(ctx: _Context, node: Node) -> Iommu | None:
    """`<iommu model=>` with intel-iommu's `<driver>` switches and a virtio one's `<address>`."""
    fields = _Fields(node)
    fields.attr("model")
    driver = node.child("driver")
    if driver is not None:
        for name in ("intremap", "caching_mode", "eim", "iotlb"):
            fields.put(name, _flag(ctx, driver, name, ("on", "off")), f"<driver {name}>",
                       driver.line)
        fields.put("aw_bits", _int(ctx, driver, "aw_bits"), "<driver aw_bits>", driver.line)
        _leftovers(ctx, driver)
    fields.put("address", _address(ctx, node, ("pci",)), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Iommu, fields)


def _read_watchdog(ctx: _Context, node: Node) -> Watchdog | None:
    """`<watchdog model= action=>`."""
    fields = _Fields(node)
    fields.attr("model")
    action = node.attr("action")
    if action == "dump":
        ctx.error(node.line, "<watchdog action='dump'> needs a memory dump qemud cannot take; "
                  "use 'reset', 'poweroff', 'pause' or 'none'")
        return None
    fields.put("action", action, "<watchdog action>")
    fields.put("address", _address(ctx, node, ("pci", "isa")), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Watchdog, fields)


def _check_devices(ctx: _Context, devices: Devices, lines: dict[int, int | None],
                   os: Os | None) -> None:
    """Cross-device rules: unique targets, bus and device fit, the machine has the bus.

    Disks of one I/O throttling group must state the same limits.
    """
    q35 = os is not None and os.machine is not None and "q35" in os.machine
    seen: dict[str, int] = {}
    units: dict[tuple[str, int], str] = {}
    groups: dict[str, Disk] = {}
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
        # without a drive address the name is the place (libvirt's default); with one, the
        # address is checked instead (`drive_problems`)
        index = disk_index(disk.target_dev) if disk.drive is None else 0
        if disk.target_bus == "ide" and (q35 or index > 3):
            ctx.error(line, "IDE has 4 units (hda-hdd) and only on machine 'pc'"
                      if not q35 else "machine 'q35' has no IDE bus; use bus='sata'")
        if disk.target_bus == "sata" and index > 5:
            ctx.error(line, "SATA has 6 ports (sda-sdf)")
        if disk.target_bus == "fdc" and (q35 or index > 1):
            ctx.error(line, "floppies are fda and fdb, and only on machine 'pc'")
        tune = disk.iotune
        if tune is not None and tune.group_name is not None:
            leader = groups.setdefault(tune.group_name, disk)
            assert leader.iotune is not None
            if leader.iotune.limits() != tune.limits():  # QEMU would keep the last disk's
                ctx.error(line, f"<iotune><group_name>{tune.group_name}</group_name>: disks of "
                          "one group share their limits, and this disk's differ from "
                          f"<target dev='{leader.target_dev}'>'s; make them equal or use "
                          "another group")
    if len(devices.videos) > 1:
        for video in devices.videos:
            if video.model == "none":  # libvirt refuses it too
                ctx.error(lines.get(id(video)), "<video><model type='none'> means no adapter at "
                          "all: it cannot be beside others; remove it")
    seen_index: dict[tuple[str, int], Controller] = {}
    for c in devices.controllers:
        if c.type == "usb":
            continue  # companions share their ich9-ehci1's index; the rest: `usb_mains` below
        if (c.type, c.index) in seen_index:
            ctx.error(lines.get(id(c)), f"a second <controller type='{c.type}' "
                      f"index='{c.index}'> (libvirt refuses it too; QEMU would see one id "
                      "twice); give it another index or remove it")
        seen_index.setdefault((c.type, c.index), c)
    mains = usb_mains(devices.controllers)
    for c in mains[1:]:
        ctx.error(lines.get(id(c)), f"<controller type='usb' model='{c.model}'>: a second USB "
                  "controller at index 0 is a companion of the first: give it <master "
                  "startport=> (as virt-manager writes ich9-uhci1..3), or remove it")
    if any(c.master is not None for c in devices.controllers) and (
            not mains or mains[0].model != "ich9-ehci1"):  # startport of what, then?
        ctx.error(lines.get(id(next(c for c in devices.controllers if c.master is not None))),
                  "<master startport>: companions go beside an ich9-ehci1 USB controller; add "
                  "<controller type='usb' index='0' model='ich9-ehci1'/>")
    for c in devices.controllers:
        if c.type in ("sata", "ide", "fdc", "usb", "ccid") and c.index > 0:
            ctx.error(lines.get(id(c)), f"<controller type='{c.type}' index='{c.index}'>: qemud "
                      f"renders one {c.type.upper()} controller, index 0 (a second one would be "
                      "dropped); put its devices on index 0 or remove it")
        if q35 and c.type in ("ide", "fdc"):  # libvirt refuses them on q35 too
            ctx.error(lines.get(id(c)), f"<controller type='{c.type}'>: machine 'q35' has no "
                      f"{c.type.upper()} controller; use SATA (built in) or remove it")
        if c.type != "pci" or c.model is None:
            continue
        if not q35 and c.model in PCIE_ONLY_CONTROLLERS:
            ctx.error(lines.get(id(c)), f"<controller type='pci' model='{c.model}'> needs the PCI "
                      "Express root of machine 'q35'; on 'pc' use model=" +
                      ("'pci-root'" if c.model == "pcie-root" else "'pci-bridge'"))
        elif q35 and c.model == "pci-root":
            ctx.error(lines.get(id(c)), "machine 'q35' has a PCI Express root: use "
                      "model='pcie-root' for the controller with index='0'")
        elif c.model in ("pci-root", "pcie-root") and c.index != 0:
            ctx.error(lines.get(id(c)), f"<controller model='{c.model}'> is the root bus: its "
                      "index is 0")
    ports: set[int] = set()
    for port in devices.serials:  # reported at the second device of a pair
        if port.port in ports:
            ctx.error(lines.get(id(port)), f"two <serial> devices use <target port='{port.port}'>")
        ports.add(port.port)
    for extra in devices.displays[1:]:
        ctx.error(lines.get(id(extra)), f"<graphics type='{extra.type}'>: QEMU has one local "
                  f"display and <graphics type='{devices.displays[0].type}'> is it; keep one")
    heard: list[tuple[object, str, int | None]] = [
        *((x, x.type, x.audio) for x in devices.displays),
        *((x, x.type, x.audio) for x in devices.graphics)]
    for shown, kind, audio in heard:
        if audio is not None and audio not in {a.id for a in devices.audios}:
            ctx.error(lines.get(id(shown)), f"<graphics type='{kind}'><audio id='{audio}'> "
                      "names an <audio> that does not exist; add it or remove the reference")
    kinds: set[str] = set()
    for g in devices.graphics:
        if g.type in kinds:
            ctx.error(lines.get(id(g)), f"more than one <graphics type='{g.type}'> is not "
                      "supported; keep one (one VNC and one spice may go together)")
        kinds.add(g.type)
    spiceports: list[Any] = [x for x in (*devices.serials, *devices.consoles,
                                         *devices.parallels) if x.type == "spiceport"]
    relays: list[Channel | Redirdev | Smartcard] = [*devices.channels, *devices.redirdevs,
                                                    *devices.smartcards]
    spiceports += [x for x in relays if x.source is not None and x.source.type == "spiceport"]
    needs_spice: list[Any] = [*spiceports,
        *(x for x in devices.channels if x.type == "spicevmc"),
        *(x for x in devices.redirdevs if x.source is None),
        *(x for x in devices.smartcards if x.mode == "passthrough" and x.source is None),
        *(x for x in devices.audios if x.type == "spice")]
    if "spice" not in kinds:
        for item in needs_spice:
            what = type(item).__name__.lower()
            ctx.error(lines.get(id(item)), f"this <{what}> goes through spice, but the domain has "
                      "no <graphics type='spice'>; add one or remove it")
    for speaker in [x for x in devices.sounds if x.model == "pcspk"][1:]:
        ctx.error(lines.get(id(speaker)), "a machine has one PC speaker: keep one "
                  "<sound model='pcspk'>")
    ids = [a.id for a in devices.audios]
    for a in devices.audios:
        if ids.count(a.id) > 1:
            ctx.error(lines.get(id(a)), f"two <audio> have id='{a.id}'")
            break
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
    serial_ports: dict[int, Any] = {}
    auto_ports: list[Serial] = []
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
        "memballoon": _read_memballoon,
        "panic": lambda c, n: _read_model_only(c, n, ("isa", "hyperv")),
        "channel": _read_channel,
        "sound": _read_sound,
        "audio": _read_audio,
        "redirdev": _read_redirdev,
        "watchdog": _read_watchdog,
        "shmem": _read_shmem,
        "hub": _read_hub,
        "tpm": _read_tpm,
        "filesystem": _read_filesystem,
        "parallel": _read_parallel,
        "smartcard": _read_smartcard,
        "redirfilter": _read_redirfilter,
        "vsock": _read_vsock,
        "memory": _read_memory_device,
        "iommu": _read_iommu,
    }
    primary_line: int | None = None
    for kid in node.kids():
        node.consume(kid)
        if kid.tag == "emulator":
            emulator, emulator_line = kid.text, kid.line
            _leftovers(ctx, kid)
        elif kid.tag == "serial":
            made = _read_serial(ctx, kid)
            if made is not None:
                target = kid.child("target")
                if target is None or target.attr("port") is None:
                    auto_ports.append(made)
                found.setdefault("serials", []).append(made)
                lines[id(made)] = kid.line
        elif kid.tag == "console":
            consoles.append(kid)
        elif kid.tag in readers:
            read = readers[kid.tag](ctx, kid)
            if read is not None and kid.tag == "controller" and kid.attr("index") is None:
                read = _next_index(read, found.get("controller", []))
            primary = kid.tag == "video" and read is not None and _primary(ctx, kid)
            if primary and primary_line is not None:
                ctx.error(kid.line, "a second <video> with primary='yes' (libvirt refuses "
                          f"it too; the first is at line {primary_line}); keep one")
            elif primary:  # libvirt moves the primary adapter first: it is the VGA one
                primary_line = kid.line
                found.setdefault("video", []).insert(0, read)
                tag_lines.setdefault("video", []).insert(0, kid.line)
                lines[id(read)] = kid.line
            elif read is not None:
                found.setdefault(kid.tag, []).append(read)
                tag_lines.setdefault(kid.tag, []).append(kid.line)
                lines[id(read)] = kid.line
        elif kid.tag in UNSUPPORTED_DEVICES:
            ctx.error(kid.line, f"<{kid.tag}> devices are not supported by qemud: "
                      f"{UNSUPPORTED_DEVICES[kid.tag]}; remove it")
        else:
            known = ", ".join(sorted({*readers, "serial", "console"}))
            ctx.error(kid.line, f"<{kid.tag}> devices are not supported by qemud; remove it "
                      f"(supported: {known})")
    found["serials"] = _auto_serial_ports(ctx, found.get("serials", []), auto_ports, lines)
    serial_ports.update({made.port: made for made in found["serials"]})
    for con in consoles:
        target = con.child("target")
        if target is not None and target.attr("type") == "virtio":
            console = _read_console(ctx, con)
            if console is not None:
                found.setdefault("consoles", []).append(console)
                lines[id(console)] = con.line
            continue
        made = _read_serial(ctx, con)
        if made is None:
            continue
        if made.port in serial_ports:
            continue  # libvirt mirrors serial port N as a console: the same device
        found.setdefault("serials", []).append(made)
        serial_ports[made.port] = made
        lines[id(made)] = con.line
    ctx.disk_lines = list(tag_lines.get("disk", []))
    ctx.filesystem_lines = [line for fs, line in zip(found.get("filesystem", []),
                                                     tag_lines.get("filesystem", []),
                                                     strict=False) if isinstance(fs, Filesystem)]
    ctx.audio_lines = list(tag_lines.get("audio", []))
    ctx.memory_lines = list(tag_lines.get("memory", []))
    ctx.emulator_line = emulator_line
    if emulator is not None:
        base = Path(emulator).name
        if "/" in emulator and not emulator.startswith("/"):  # a bare name is found in $PATH
            ctx.error(emulator_line, f"<emulator>: {emulator!r} is a relative path; give the "
                      "QEMU binary's full path (e.g. /usr/bin/qemu-system-x86_64)")
        elif base.startswith("qemu-system-") and base not in EMULATORS:
            ctx.error(emulator_line, f"<emulator>: {base} emulates another architecture; qemud "
                      "runs x86 guests: use /usr/bin/qemu-system-x86_64")
        elif os is not None and os.arch == "x86_64" and EMULATORS.get(base) == "i686":
            ctx.error(emulator_line, "<emulator> qemu-system-i386 cannot run arch='x86_64'; "
                      "use qemu-system-x86_64")
    balloons = found.get("memballoon", [])
    panics = [model for model, _ in found.get("panic", [])]
    seen_panics: set[str] = set()
    for model, line in zip(panics, tag_lines.get("panic", []), strict=False):
        if model in seen_panics:  # one of each model (libvirt's panic-double: hyperv and isa)
            ctx.error(line, f"more than one <panic model='{model}'> is not supported; keep one")
        seen_panics.add(model)
    for tag in ("memballoon", "tpm", "vsock", "redirfilter", "iommu"):
        for line in tag_lines.get(tag, [])[1:]:  # never keep one silently: say which to remove
            ctx.error(line, f"more than one <{tag}> is not supported; keep one")
    devices = Devices(
        emulator=emulator,
        disks=tuple(found.get("disk", [])),
        interfaces=tuple(found.get("interface", [])),
        graphics=tuple(g for g in found.get("graphics", []) if isinstance(g, Graphics)),
        displays=tuple(g for g in found.get("graphics", []) if isinstance(g, Display)),
        serials=tuple(found.get("serials", [])),
        videos=tuple(found.get("video", [])),
        inputs=tuple(found.get("input", [])),
        controllers=tuple(found.get("controller", [])),
        **(balloons[-1] if balloons else {}),
        panic="isa" if "isa" in panics else None,
        hyperv_panic="hyperv" in panics,
        rngs=tuple(found.get("rng", [])),
        channels=tuple(found.get("channel", [])),
        sounds=tuple(found.get("sound", [])),
        audios=tuple(found.get("audio", [])),
        redirdevs=tuple(found.get("redirdev", [])),
        watchdogs=tuple(found.get("watchdog", [])),
        shmems=tuple(found.get("shmem", [])),
        hubs=tuple(found.get("hub", [])),
        tpms=tuple(found.get("tpm", [])[:1]),
        filesystems=tuple(f for f in found.get("filesystem", []) if isinstance(f, Filesystem)),
        shares_9p=tuple(f for f in found.get("filesystem", []) if isinstance(f, Share9p)),
        consoles=tuple(found.get("consoles", [])),
        parallels=tuple(found.get("parallel", [])),
        smartcards=tuple(found.get("smartcard", [])),
        redirfilter=found.get("redirfilter", [()])[0],
        vsocks=tuple(found.get("vsock", [])[:1]),
        memories=tuple(found.get("memory", [])),
        iommu=found.get("iommu", [None])[0],
    )
    ctx.iommu_line = tag_lines.get("iommu", [None])[0]
    _check_devices(ctx, devices, lines, os)
    return devices


def _auto_serial_ports(ctx: _Context, serials: list[Serial], auto: list[Serial],
                       lines: dict[int, int | None]) -> list[Serial]:
    """Give each `<serial>` written without `<target port>` a port as libvirt does.

    In document order, one more than the highest port of every serial known so far (those with
    a port anywhere in the file, and those already given one): `<serial/><serial/>` are ports 0
    and 1. A port beyond COM4 is reported at its line.
    """
    autos = {id(a) for a in auto}
    known = [s.port for s in serials if id(s) not in autos]
    out = []
    for serial in serials:
        made = serial
        if id(serial) in autos:
            port = max(known, default=-1) + 1
            if port > 3:
                ctx.error(lines.get(id(serial)), "no serial port is left for this <serial> (QEMU "
                          "has COM1-COM4, <target port='0'> to '3'); remove one")
                continue
            made = serial.model_copy(update={"port": port})
            lines[id(made)] = lines.pop(id(serial))
            known.append(port)
        out.append(made)
    return out


def _next_index(controller: Controller, earlier: list[Controller]) -> Controller:
    """Give a controller written without index= the next free index of its type, as libvirt does.

    virt-install writes fourteen pcie-root-ports without indexes: they become 1 to 14. A USB
    companion (ich9-uhci1..3) takes the index of the ich9-ehci1 before it, as in libvirt.
    """
    if controller.type == "usb" and controller.model in USB_COMPANIONS:
        master = next((c for c in reversed(earlier)
                       if c.type == "usb" and c.model == "ich9-ehci1"), None)
        if master is not None:
            return controller.model_copy(update={"index": master.index})
    taken = {c.index for c in earlier if c.type == controller.type}
    if controller.type == "pci" and controller.model not in ("pci-root", "pcie-root"):
        taken.add(0)  # index 0 is the root bus, even when written after its ports
    index = next(i for i in range(len(taken) + 1) if i not in taken)
    return controller.model_copy(update={"index": index})


def _read_input(ctx: _Context, node: Node) -> Input | None:
    """`<input type= bus=>`; passthrough and evdev ones with their `<source>`."""
    fields = _Fields(node)
    fields.attr("type")
    fields.attr("bus")
    source = node.child("source")
    if source is not None:
        if node.attr("type") == "evdev":
            fields.attr("evdev", "dev", source)
            fields.attr("grab", node=source)
            fields.attr("grab_toggle", "grabToggle", source)
            fields.put("repeat", _flag(ctx, source, "repeat", ("on", "off")), "<source repeat>",
                       source.line)
        else:
            fields.attr("evdev", node=source)
        _leftovers(ctx, source)
    _usb_port(ctx, node, fields)
    fields.put("address", _address(ctx, node, ("pci", "usb")), "<address>")
    _driver_only_virtio(ctx, node, fields)
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Input, fields)


CONTROLLER_MODELS: dict[str, tuple[str, ...]] = {
    "pci": PCI_CONTROLLER_MODELS,
    "scsi": tuple(m for m in SCSI_MODELS if m is not None),
    "ide": ("piix3", "piix4", "ich6"),  # libvirt's names for the chipset's own IDE
    "virtio-serial": ("virtio",),
    "sata": (), "fdc": (), "ccid": (),
}
"""The `<controller model=>` values qemud renders, by type (usb: `USB_MODELS`)."""


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
    kind = node.attr("type") or ""
    allowed = CONTROLLER_MODELS.get(kind)
    if kind != "usb" and model is not None and allowed is not None and model not in allowed:
        ctx.error(node.line, f"<controller type='{kind}' model>: {model!r} is not supported by "
                  "qemud; " + ("use one of " + ", ".join(repr(m) for m in allowed) if allowed
                               else "remove it (this controller has no models)"))
        fields.data.pop("model", None)  # reported here, not again where it would be rendered
    if node.attr("type") in ("usb", "virtio-serial"):
        fields.attr("ports")
    fields.attr("vectors")
    target = node.child("target")
    if target is not None:
        fields.attr("chassis", node=target)
        if target.attr("chassisNr") is not None:
            fields.attr("chassis", "chassisNr", target)
        fields.put("port", _hex(ctx, target, "port", -1) if target.attr("port") else None,
                   "<target port>", target.line)
        fields.put("hotplug", _flag(ctx, target, "hotplug", ("on", "off")), "<target hotplug>",
                   target.line)
        target.ignore_attrs("busNr")  # pci-bridge/pcie-root-port bus numbering: QEMU's own
        _leftovers(ctx, target)
    master = node.child("master")
    if master is not None:
        fields.put("master", master.attr("startport"), "<master startport>", master.line)
        _leftovers(ctx, master)
    driver = node.child("driver")
    if driver is not None:
        for option in ("queues", "cmd_per_lun", "max_sectors", "iothread"):
            fields.attr(option, node=driver)
        fields.put("ioeventfd", _flag(ctx, driver, "ioeventfd", ("on", "off")),
                   "<driver ioeventfd>", driver.line)
        _virtio_options(ctx, driver, fields)
        _leftovers(ctx, driver)
    name = node.child("model")
    if name is not None:
        expected = {"pcie-root-port": "pcie-root-port", "pci-bridge": "pci-bridge",
                    "pcie-to-pci-bridge": "pcie-pci-bridge",
                    "dmi-to-pci-bridge": "i82801b11-bridge"}.get(model or "")
        if name.attr("name") != expected:
            ctx.error(name.line, f"<model name>: {name.attr('name')!r} is not supported for "
                      f"model {model!r}; " + (f"use {expected!r}" if expected else
                                              "this model takes no <model name>; remove it"))
        _leftovers(ctx, name)
    fields.put("address", _address(ctx, node), "<address>")
    _leftovers(ctx, node, IGNORED_EVERYWHERE)
    return _make(ctx, Controller, fields)


def _entries(ctx: _Context, node: Node, allowed: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The `<entry name=>value</entry>`s of one SMBIOS block, each name one of `allowed`."""
    out: list[tuple[str, str]] = []
    for entry in node.children("entry"):
        name, text = entry.attr("name"), entry.element.text or ""
        if name not in allowed:
            ctx.error(entry.line, f"<{node.tag}><entry name=>: {name!r} is not an SMBIOS field of "
                      f"<{node.tag}>; use one of {', '.join(repr(a) for a in allowed)}")
        elif any(n == name for n, _ in out):
            ctx.error(entry.line, f"<{node.tag}><entry name='{name}'> is given twice; keep one")
        else:
            out.append((name, text))
        _leftovers(ctx, entry)
    _leftovers(ctx, node)
    return tuple(out)


def _read_sysinfo(ctx: _Context, nodes: list[Node]) -> Sysinfo | None:
    """Every `<sysinfo>`: SMBIOS blocks and fw_cfg entries.

    Type 'smbios' has bios, system, baseBoard (several), chassis and oemStrings; type 'fwcfg'
    has entries under opt/, each a text or a file=.
    """
    fields = _Fields(nodes[0])
    boards: list[tuple[tuple[str, str], ...]] = []
    fw_cfg: list[FwCfg] = []
    for node in nodes:
        kind = node.attr("type")
        if kind == "smbios":
            for tag, key in (("bios", "bios"), ("system", "system"), ("chassis", "chassis")):
                block = node.child(tag)
                if block is not None:
                    fields.put(key, _entries(ctx, block, SMBIOS_FIELDS[tag]), f"<{tag}>",
                               block.line)
            for board in node.children("baseBoard"):
                boards.append(_entries(ctx, board, SMBIOS_FIELDS["baseBoard"]))
            oem = node.child("oemStrings")
            if oem is not None:
                texts = []
                for entry in oem.children("entry"):
                    texts.append(entry.element.text or "")
                    _leftovers(ctx, entry)
                fields.put("oem_strings", tuple(texts), "<oemStrings>", oem.line)
                _leftovers(ctx, oem)
        elif kind == "fwcfg":
            for entry in node.children("entry"):
                blob = _Fields(entry)
                blob.attr("name")
                blob.attr("file")
                if entry.attr("file") is None:
                    blob.put("value", entry.element.text, "<entry>")
                _leftovers(ctx, entry)
                made = _make(ctx, FwCfg, blob)
                if made is not None:
                    fw_cfg.append(made)
        else:
            what = "is missing" if kind is None else f"{kind!r} is not supported"
            ctx.error(node.line, f"<sysinfo type>: {what}; use 'smbios' or 'fwcfg'")
        _leftovers(ctx, node)
    fields.put("base_boards", tuple(boards), "<baseBoard>")
    fields.put("fw_cfg", tuple(fw_cfg), "<sysinfo type='fwcfg'>")
    return _make(ctx, Sysinfo, fields)


_QEMU_NS_REFUSED = {
    "capabilities": "it changes libvirt's own record of QEMU's features, which qemud does not keep",
    "override": "it changes properties of the devices libvirt generates by their libvirt alias, "
                "which qemud does not apply",
    "deprecation": "it sets libvirt's handling of deprecated QEMU features, which qemud does not "
                   "apply (QEMU's defaults stand)",
}
"""The other elements of libvirt's QEMU namespace, and why each is refused."""
QEMU_OWN_OPTIONS = frozenset({"daemonize", "pidfile", "qmp", "qmp-pretty", "monitor", "mon",
                              "uuid", "runas", "run-with", "chroot", "incoming"})
"""QEMU options a `<qemu:arg>` may not add: qemud relies on its own (pidfile, monitor,
uuid...) to supervise the process, and these would take them over or detach QEMU."""


def _read_qemu_commandline(ctx: _Context, nodes: list[Node]) -> QemuCommandline | None:
    """`<qemu:commandline>`: `<qemu:arg value=>`s and `<qemu:env name= value=>`s, in order.

    The options qemud supervises QEMU by (`QEMU_OWN_OPTIONS`) are refused at their line; a
    warning says the rest is passed unchecked, as libvirt's taint does.
    """
    fields = _Fields(nodes[0])
    args: list[str] = []
    env: list[tuple[str | None, str]] = []
    for node in nodes:
        for kid in node.kids():
            node.consume(kid)
            if kid.namespace != QEMU_NAMESPACE or kid.tag not in ("arg", "env"):
                ctx.error(kid.line, f"<{kid.tag}> inside <qemu:commandline> is not supported; "
                          "use <qemu:arg value=> or <qemu:env name= value=>")
                continue
            if kid.tag == "arg":
                value = kid.attr("value")
                if value is None:
                    ctx.error(kid.line, "<qemu:arg> needs value=")
                elif value.startswith("-") and value.lstrip("-") in QEMU_OWN_OPTIONS:
                    ctx.error(kid.line, f"<qemu:arg value='{value}'>: qemud supervises QEMU "
                              "through this option itself; remove it")
                else:
                    args.append(value)
            else:
                env.append((kid.attr("name"), kid.attr("value") or ""))
            _leftovers(ctx, kid)
        _leftovers(ctx, node)
    ctx.warn(nodes[0].line, "<qemu:commandline> passes options to QEMU that qemud does not check "
             "(libvirt marks such a domain tainted); QEMU's own errors apply at start")
    fields.put("args", tuple(args), "<qemu:arg>")
    fields.put("env", tuple(env), "<qemu:env name>")
    return _make(ctx, QemuCommandline, fields)


def _read_text(ctx: _Context, root: Node, tag: str) -> tuple[str | None, int | None]:
    """Read the text of a single top-level element such as `<name>`; report duplicates."""
    found = list(root.children(tag))
    for extra in found[1:]:
        ctx.error(extra.line, f"<{tag}> appears more than once; keep one")
    if not found:
        return None, root.line
    _leftovers(ctx, found[0])
    return found[0].text, found[0].line


def _memory_from_cells(ctx: _Context, root: Node, fields: _Fields) -> None:
    """Without `<memory>`, the NUMA cells' sum is the memory (as libvirt); else it is missing."""
    if "memory" in fields.data or "memory" in fields.failed:
        return
    cpu = fields.data.get("cpu")
    if isinstance(cpu, Cpu) and cpu.numa:
        fields.put("memory", sum(c.memory for c in cpu.numa), "<numa>", root.line)
        return
    if "cpu" in fields.failed and root.child("cpu") is not None:
        fields.fail("memory")  # the cells' errors are reported; they may have held the memory
        return
    ctx.error(root.line, "<memory> is missing; add e.g. <memory unit='MiB'>512</memory>")
    fields.fail("memory")


CGROUP_TUNING = {
    "memtune": ("memory limits (hard, soft, swap)", "MemoryMax="),
    "blkiotune": ("block I/O weights and limits", "IOWeight= or IOReadBandwidthMax="),
}
"""Top-level tuning libvirt applies with cgroups, which qemud does not manage, and the systemd
setting of qemud's own service that limits all its VMs instead."""


def _refuse_cgroup_tuning(ctx: _Context, root: Node) -> None:
    """Refuse `<memtune>`/`<blkiotune>` with why: libvirt sets them through cgroups, not QEMU."""
    for tag, (what, systemd) in CGROUP_TUNING.items():
        for kid in root.children(tag):
            ctx.error(kid.line, f"<{tag}>: libvirt applies {what} through cgroups, which qemud "
                      f"does not manage per VM; remove it (systemd's {systemd} on the qemud "
                      "service limits all its VMs together)")
            root.consume(kid)


def _read_max_memory(ctx: _Context, node: Node, fields: _Fields) -> None:
    """`<maxMemory slots= unit=>N</maxMemory>`: the memory hotplug limit and DIMM slots."""
    size = _size(ctx, node)
    if size is None:
        fields.fail("max_memory")
    fields.put("max_memory", size, "<maxMemory>", node.line)
    fields.put("max_memory_slots", node.attr("slots"), "<maxMemory slots>", node.line)
    _leftovers(ctx, node)


def _read_iothreadids(ctx: _Context, node: Node, count: str | None, fields: _Fields) -> None:
    """`<iothreadids>`: accepted when it lists threads 1 to N (what `<iothreads>N` gives).

    libvirt writes it after `virsh iothreadadd`; other ids, or thread pool sizes, are refused
    at their line (qemud names its I/O threads iothread1..N).
    """
    listed: list[int] = []
    for thread in node.children("iothread"):
        number = _int(ctx, thread, "id")
        for attr in ("thread_pool_min", "thread_pool_max"):
            if thread.attr(attr) is not None:
                ctx.error(thread.line, f"<iothread {attr}>: I/O thread pool sizes are not "
                          "supported by qemud; remove it")
            thread.ignore_attrs(attr)
        _leftovers(ctx, thread)
        if number is not None:
            listed.append(number)
    _leftovers(ctx, node)
    total = int(count) if count is not None and count.isdigit() else len(listed)
    if sorted(listed) != list(range(1, len(listed) + 1)) or len(listed) > total:
        ctx.error(node.line, "<iothreadids>: qemud names its I/O threads 1 to N; list ids 1 to "
                  f"{max(total, 1)} or remove <iothreadids> and keep <iothreads>{total}"
                  "</iothreads>")
    elif count is None:
        fields.put("iothreads", total, "<iothreadids>", node.line)


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
    ctx.name_line, ctx.uuid_line = name_line, uuid_line
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
            if tag == "memory":
                fields.put("dump_core", _flag(ctx, found[0], "dumpCore", ("on", "off")),
                           "<memory dumpCore>", found[0].line)
            _leftovers(ctx, found[0])
    current = fields.data.get("current_memory")
    if current is not None and current > fields.data.get("memory", current):
        ctx.error(fields.where["current_memory"][1], "<currentMemory> is larger than <memory>; "
                  "it can be at most as large")
        del fields.data["current_memory"]
        fields.fail("current_memory")

    def sub(key: str, value: object, tag: str, line: int | None) -> None:
        """Put a sub-model; a None from a reader means it already reported its errors."""
        if value is None:
            fields.fail(key)
        fields.put(key, value, f"<{tag}>", line)

    max_memory = root.child("maxMemory")
    if max_memory is not None:
        _read_max_memory(ctx, max_memory, fields)
    _refuse_cgroup_tuning(ctx, root)
    backing = root.child("memoryBacking")
    if backing is not None:
        sub("memory_backing", _read_memory_backing(ctx, backing), "memoryBacking", backing.line)
    vcpu = root.child("vcpu")
    sub("vcpu", _read_vcpu(ctx, vcpu), "vcpu", vcpu.line if vcpu else None)
    cpu = root.child("cpu")
    if cpu is not None:
        sub("cpu", _read_cpu(ctx, cpu), "cpu", cpu.line)
    _memory_from_cells(ctx, root, fields)
    cputune = root.child("cputune")
    if cputune is not None:
        sub("cputune", _read_cputune(ctx, cputune), "cputune", cputune.line)
    iothreads, iothreads_line = _read_text(ctx, root, "iothreads")
    fields.put("iothreads", iothreads, "<iothreads>", iothreads_line)
    ids = root.child("iothreadids")
    if ids is not None:
        _read_iothreadids(ctx, ids, iothreads, fields)
    numatune = root.child("numatune")
    if numatune is not None:
        sub("numatune", _read_numatune(ctx, numatune), "numatune", numatune.line)
    os_node = root.child("os")
    os = _read_os(ctx, os_node, root.line)
    sub("os", os, "os", os_node.line if os_node else None)
    for key, reader in (("features", _read_features), ("clock", _read_clock), ("pm", _read_pm)):
        kid = root.child(key)
        sub(key, reader(ctx, kid), key, kid.line if kid else None)
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        text, line = _read_text(ctx, root, tag)
        if tag == "on_crash" and text in ("coredump-destroy", "coredump-restart"):
            ctx.error(line, f"<on_crash>{text}</on_crash>: libvirt dumps the guest's memory "
                      "to a file first, which qemud does not do; use "
                      f"{text.removeprefix('coredump-')!r} (or 'preserve', to dump it yourself "
                      "with QMP dump-guest-memory)")
            fields.fail(tag)
            continue
        fields.put(tag, text, f"<{tag}>", line)
    metadata = root.child("metadata")
    if metadata is not None:
        metadata.ignore(*(k.tag for k in metadata.kids() if k.namespace != NAMESPACE))
        sub("desired", _read_desired(ctx, metadata), "qemud:desired", metadata.line)
        _leftovers(ctx, metadata)
    devices_node = root.child("devices")
    sub("devices", _read_devices(ctx, devices_node, os), "devices",
        devices_node.line if devices_node else None)
    commandlines = list(root.children("commandline", QEMU_NAMESPACE))
    if commandlines:
        sub("qemu_commandline", _read_qemu_commandline(ctx, commandlines), "qemu:commandline",
            commandlines[0].line)
    for tag, why in _QEMU_NS_REFUSED.items():
        for kid in root.children(tag, QEMU_NAMESPACE):
            ctx.error(kid.line, f"<qemu:{tag}>: {why}; remove it")
    sysinfos = list(root.children("sysinfo"))
    if sysinfos:
        sub("sysinfo", _read_sysinfo(ctx, sysinfos), "sysinfo", sysinfos[0].line)
    for tag, why in REFUSED_TOP.items():
        for kid in root.children(tag):
            ctx.error(kid.line, f"<{tag}> is not supported: {why}; remove it")
    genid = root.child("genid")
    if genid is not None:
        guid = (genid.text or "").strip()
        if not guid:  # libvirt makes one up and keeps it in its copy; qemud never writes yours
            ctx.error(genid.line, "<genid/> without a value: qemud does not write to your "
                      "file; give the GUID (e.g. from uuidgen): <genid>GUID</genid>")
        else:
            fields.put("genid", guid, "<genid>", genid.line)
        _leftovers(ctx, genid)
    _leftovers(ctx, root, (*IGNORED_TOP, *REFUSED_TOP))
    domain = _make(ctx, Domain, fields)
    if domain is not None:
        _check_domain(ctx, domain, fields)
    return domain


KVM_ONLY_HYPERV = ("vpindex", "synic", "stimer", "tlbflush", "ipi")
"""Hyper-V enlightenments QEMU provides only with KVM (they all rest on VP_INDEX)."""


_SMBIOS_DATE = re.compile(r"^(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01])/([0-9]{2}|[0-9]{4})$")


def _check_sysinfo(ctx: _Context, domain: Domain, fields: _Fields) -> None:
    """Check `<sysinfo>` by libvirt's rules: tables only with `<smbios mode='sysinfo'>`, etc.

    `<smbios mode='sysinfo'>` needs SMBIOS tables (tables without it are warned about); a system
    uuid must be the domain's; a BIOS date is mm/dd/yy or mm/dd/yyyy.
    """
    info, line = domain.sysinfo, fields.where.get("sysinfo", ("", None))[1]
    has_tables = info is not None and any((info.bios, info.system, info.base_boards,
                                           info.chassis, info.oem_strings))
    if domain.os.smbios_mode == "sysinfo" and not has_tables:
        ctx.error(fields.where["os"][1], "<smbios mode='sysinfo'> needs a <sysinfo "
                  "type='smbios'> with the tables to give the guest")
    if has_tables and domain.os.smbios_mode != "sysinfo":
        ctx.warn(line, "<sysinfo type='smbios'> has no effect without <os><smbios "
                 "mode='sysinfo'/></os> (as in libvirt); add that to give the guest these tables")
    if info is None:
        return
    uuid = dict(info.system).get("uuid")
    if uuid is not None:
        try:
            same = uuidlib.UUID(uuid) == domain.uuid
        except ValueError:
            same = False
        if not same:
            ctx.error(line, f"<system><entry name='uuid'>{uuid}</entry> differs from the "
                      f"domain's <uuid> {domain.uuid}; make them equal or remove the entry")
    date = dict(info.bios).get("date")
    if date is not None and not _SMBIOS_DATE.match(date):
        ctx.error(line, f"<bios><entry name='date'>{date}</entry>: SMBIOS dates are mm/dd/yy or "
                  "mm/dd/yyyy")


def _check_numa(ctx: _Context, domain: Domain, fields: _Fields) -> None:
    """NUMA cells cover distinct vCPUs below the count; `<numatune>` names cells that exist."""
    cells = domain.cpu.numa if domain.cpu is not None else ()
    seen: set[int] = set()
    for cell in cells:
        high = max(cell.cpus, default=-1)
        if high >= domain.vcpu.count:
            ctx.error(fields.where["cpu"][1], f"<cell id='{cell.id}'> names vCPU {high}, but "
                      f"<vcpu> is {domain.vcpu.count} (vCPUs are numbered from 0)")
        if cell.cpus & seen:
            ctx.error(fields.where["cpu"][1], f"<cell id='{cell.id}'> shares vCPUs "
                      f"{format_cpuset(cell.cpus & seen)} with an earlier cell; each vCPU "
                      "belongs to one cell")
        seen |= cell.cpus
    for message in numa_distance_problems(cells):
        ctx.error(fields.where["cpu"][1], message)
    tune = domain.numatune
    if tune is None:
        return
    line = fields.where["numatune"][1]
    if not cells:  # the default <memory> applies to pc.ram's backend (model/memory.py)
        if tune.memnodes:
            ctx.error(line, "<numatune><memnode> needs <cpu><numa> cells (it sets one cell's "
                      "memory policy); add the cells or remove it")
        return
    for node in tune.memnodes:
        if node.cellid is not None and node.cellid >= len(cells):
            ctx.error(line, f"<memnode cellid='{node.cellid}'>: there is no such <cell> "
                      f"(cells 0-{len(cells) - 1})")


def _check_filesystems(ctx: _Context, domain: Domain, backing_failed: bool) -> None:
    """Check that a virtiofs share has memory virtiofsd can map (shared memfd) and its own tag.

    A `<memoryBacking>` already reported as invalid is not reported again at each share.
    """
    lines = ctx.filesystem_lines
    backing = domain.memory_backing
    shared = backing_failed or (backing is not None and backing.access == "shared")
    tags: set[str] = set()
    for fs, line in zip(domain.devices.filesystems, lines, strict=False):
        if not shared:
            ctx.error(line, "<filesystem> with <driver type='virtiofs'> needs guest memory "
                      "virtiofsd can share; add <memoryBacking><source type='memfd'/><access "
                      "mode='shared'/></memoryBacking> to <domain>")
        if fs.target_dir in tags:
            ctx.error(line, f"two <filesystem> have <target dir='{fs.target_dir}'>; each needs "
                      "its own tag")
        tags.add(fs.target_dir)


def _check_memory(ctx: _Context, domain: Domain, fields: _Fields) -> None:
    """Memory hotplug rules (model/memory.py), each at its device's line or `<maxMemory>`'s."""
    default = fields.where.get("max_memory", ("", None))[1]
    if default is None:
        default = fields.where.get("memory", ("", None))[1]
    for index, message in memory_check_domain(domain):
        line = default
        if isinstance(index, int) and index < len(ctx.memory_lines):
            line = ctx.memory_lines[index]
        elif index == "backing":
            line = fields.where["memory_backing"][1]
        ctx.error(line, message)


def _check_iommu(ctx: _Context, domain: Domain, fields: _Fields) -> None:
    """`<iommu>` against the machine, ACPI, the I/O APIC and the accelerator (libvirt's rules)."""
    iommu = domain.devices.iommu
    line = ctx.iommu_line
    if iommu is None:
        return
    if not is_q35(domain):
        ctx.error(line, f"<iommu model='{iommu.model}'> needs machine 'q35' (the PC machine "
                  "has no IOMMU)")
    if iommu.model == "virtio" and not domain.features.acpi:
        ctx.error(line, "<iommu model='virtio'> needs ACPI (the guest finds it through its "
                  "VIOT table); add <features><acpi/></features>")
    if iommu.model == "intel" and not domain.features.acpi:
        ctx.warn(line, "<iommu model='intel'> without <features><acpi/>: the guest cannot "
                 "find the IOMMU (its DMAR table is ACPI) and runs without it")
    if iommu.intremap and domain.features.ioapic != "qemu":
        ctx.error(line, "<driver intremap='on'> needs the I/O APIC emulated by QEMU; add "
                  "<ioapic driver='qemu'/> to <features>")
    if iommu.eim and domain.type != "kvm":
        ctx.error(line, "<driver eim='on'> needs KVM (QEMU refuses extended interrupt mode "
                  "under <domain type='qemu'>); use type='kvm' or remove it")


def _check_domain(ctx: _Context, domain: Domain, fields: _Fields) -> None:
    """Whole-domain rules that need several parts: topology, emulator vs arch, CPU vs accel."""
    cpu = domain.cpu
    if cpu is not None and cpu.topology is not None:
        t = cpu.topology
        product = t.sockets * t.dies * t.cores * t.threads
        if product != domain.vcpu.count:
            ctx.error(fields.where["cpu"][1], f"<topology> gives {product} vCPUs but <vcpu> is "
                      f"{domain.vcpu.count}; they must match")
    _check_numa(ctx, domain, fields)
    _check_sysinfo(ctx, domain, fields)
    if domain.cputune is not None:
        line = fields.where.get("cputune", ("", None))[1]
        for vcpu, _ in domain.cputune.vcpupins:
            if vcpu >= domain.vcpu.count:
                ctx.error(line, f"<vcpupin vcpu='{vcpu}'>: the domain has {domain.vcpu.count} "
                          f"vCPUs, numbered 0 to {domain.vcpu.count - 1}")
        for thread, _ in domain.cputune.iothreadpins:
            if thread > domain.iothreads:
                ctx.error(line, f"<iothreadpin iothread='{thread}'>: the domain has "
                          f"{domain.iothreads} <iothreads>, numbered from 1")
    if domain.features.kvm_dirty_ring is not None and domain.type != "kvm":
        ctx.error(fields.where["features"][1], "<kvm><dirty-ring> is a KVM setting; it needs "
                  "<domain type='kvm'>")
    if domain.features.tb_cache is not None and domain.type != "qemu":
        ctx.error(fields.where["features"][1], "<tcg><tb-cache> is a TCG setting; it needs "
                  "<domain type='qemu'>")
    runnable = True
    if ctx.host.check_emulator is not None and domain.devices.emulator is not None:
        why = ctx.host.check_emulator(domain.devices.emulator)
        if why is not None:
            runnable = False
            ctx.error(ctx.emulator_line, f"<emulator>: {why}")
    if runnable and ctx.host.check_machine is not None and domain.os.machine is not None:
        why = ctx.host.check_machine(emulator(domain), domain.os.machine)
        if why is not None:
            ctx.error(ctx.machine_line, f"<type machine>: {why}")
    if ctx.host.check_module is not None:
        for audio, line in zip(domain.devices.audios, ctx.audio_lines, strict=False):
            module = AUDIO_MODULES.get(audio.type)
            why = ctx.host.check_module(emulator(domain), module) if module else None
            if why is not None:
                ctx.error(line, f"<audio type='{audio.type}'>: {why}")
    for index, why in drive_problems(domain):
        ctx.error(ctx.disk_lines[index] if index < len(ctx.disk_lines) else None, why)
    for disk, line in zip(domain.devices.disks, ctx.disk_lines, strict=False):
        if disk.iothread is None:
            continue
        if disk.target_bus != "virtio":
            ctx.error(line, f"<driver iothread>: only virtio disks have an I/O thread; this one "
                      f"is on bus '{disk.target_bus}'")
        elif disk.iothread > domain.iothreads:
            ctx.error(line, f"<driver iothread='{disk.iothread}'>: there are "
                      f"{domain.iothreads} <iothreads>; add <iothreads>{disk.iothread}</iothreads>")
    _check_filesystems(ctx, domain, "memory_backing" in fields.failed)
    _check_memory(ctx, domain, fields)
    hyperv = domain.features.hyperv
    if domain.type == "qemu" and hyperv is not None:
        kvm_only = [n for n, on in hyperv.enabled if on and n in KVM_ONLY_HYPERV]
        if kvm_only:  # QEMU under TCG: "kernel doesn't allow setting HyperV VP_INDEX"
            ctx.error(fields.where["features"][1], f"<hyperv> {', '.join(kvm_only)} need KVM "
                      "(QEMU cannot emulate them under <domain type='qemu'>); use type='kvm' or "
                      "turn them off")
    _check_iommu(ctx, domain, fields)
    if balloon_target(domain) is not None and domain.devices.memballoon != "virtio":
        ctx.error(fields.where["current_memory"][1], "<currentMemory> below <memory> is set "
                  "through the balloon device; add <memballoon model='virtio'/> to <devices> "
                  "(or make <currentMemory> equal to <memory>)")
    try:
        options(domain)
    except RenderError as exc:
        ctx.error(fields.where["devices"][1], str(exc))
    if domain.type == "qemu" and cpu is not None and cpu.mode in ("host-passthrough", "host-model"):
        ctx.warn(fields.where["cpu"][1], f"<cpu mode='{cpu.mode}'> needs KVM; under "
                 "<domain type='qemu'> (TCG) the 'max' CPU model is used instead")


def parse(data: bytes, file: str | Path | None = None, host: HostFacts | None = None) -> Parsed:
    """Parse and validate one domain document.

    Returns a `Parsed` (domain and warnings). Raises `InvalidDomainError` carrying every issue,
    each with its line, and nothing else: no lxml or Pydantic exception escapes.
    `host` (see `HostFacts`) checks `<type machine>` against the emulator and resolves
    `<interface type='network'>` to its network's bridge.
    """
    ctx = _Context(host=host or HostFacts())
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
                  (*ctx.disk_lines, *([ctx.nvram_line] if domain.os.nvram else [])),
                  ctx.name_line, ctx.uuid_line or ctx.name_line)


def parse_file(path: str | Path, host: HostFacts | None = None) -> Parsed:
    """Read and parse a domain file; an unreadable file is an `InvalidDomainError` too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidDomainError(path, [Issue(None, f"cannot read the file: {exc.strerror}")]) \
            from exc
    return parse(data, path, host)


__all__ = ["BridgeLookup", "HostFacts", "MachineCheck", "Parsed", "parse", "parse_file"]
