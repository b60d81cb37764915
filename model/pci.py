"""Guest PCI topology: where each device sits, honouring `<address type='pci'>`, else as libvirt does.

Pure: `assign` takes the PCI devices the command line will have (in libvirt's assignment order)
and returns a slot for each. Explicit addresses are kept; the others are placed the way libvirt
9.0 places them, so that a `virt-install --print-xml` file and libvirt's `virsh dumpxml` of it
give the guest the same topology:

* the root bus (bus 0) reserves slot 0 (host bridge), and slot 1 on 'pc' (PIIX3) or slot 0x1f
  on 'q35' (ICH9: LPC, SATA, SMBus);
* fixed homes when free: the primary video card at 00:02.0 ('pc') or 00:01.0 ('q35'), the
  ich9 sound card at 00:1b.0 ('q35'), the piix3-uhci USB controller at 00:01.2 ('pc');
* pcie-root-ports are packed eight to a slot of the root bus (multifunction);
* on 'q35', a PCI Express device goes alone on the first free pcie-root-port (one is added when
  none is free, plus a spare one for hotplug, as libvirt does); a conventional PCI device goes
  behind a declared bridge (dmi-to-pci-bridge at 00:1e.0, pcie-to-pci-bridge, pci-bridge),
  else on the root bus (libvirt would add a pcie-to-pci-bridge for it: the one difference);
* on 'pc', every device takes the next free slot of bus 0, then of pci-bridges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from model.domain import PciAddress
from model.errors import RenderError

Kind = Literal["pcie", "pci", "root-port", "bridge", "dmi-bridge"]
"""pcie: a PCI Express endpoint; pci: conventional PCI; root-port: pcie-root-port;
bridge: pci-bridge or pcie-to-pci-bridge (a bus of 32 slots for conventional devices, slot 0
its own); dmi-bridge: dmi-to-pci-bridge (ICH9's i82801b11, every slot of its bus free)."""


@dataclass(frozen=True)
class Request:
    """One PCI device to place: its QEMU id, kind, explicit address, and a preferred home."""

    id: str
    kind: Kind
    address: PciAddress | None = None
    home: PciAddress | None = None
    """Where libvirt puts it when free (primary video, ich9 sound, piix3-uhci)."""
    index: int | None = None
    """For root ports and bridges: the controller index, i.e. the bus number behind it."""
    function: int = 0
    """The function it takes in a slot of its own (an ich9-ehci1 takes 7, as libvirt puts it)."""
    follows: str | None = None
    """The id of a device whose slot it shares, at `function` (a USB companion and its EHCI)."""


@dataclass(frozen=True)
class Placement:
    """The result of `assign`: an address per id, and the root ports `assign` had to add."""

    addresses: dict[str, PciAddress]
    added_root_ports: tuple[int, ...] = ()
    """Controller indexes of pcie-root-ports added (their ids are pci.N, their addresses in
    `addresses`)."""
    added_bridges: tuple[int, ...] = ()
    """Controller indexes of pci-bridges added ('pc') for buses that addresses name."""


@dataclass
class _Bus:
    """The free slots of one bus."""

    index: int
    kind: Literal["root", "root-port", "bridge"]
    used: set[tuple[int, int]] = field(default_factory=set)

    def free(self, slot: int, function: int = 0) -> bool:
        """Whether a slot/function is free (and exists on this kind of bus)."""
        if self.kind == "root-port" and slot != 0:
            return False
        return (slot, function) not in self.used

    def slot_free(self, slot: int) -> bool:
        """Whether every function of a slot is free."""
        return all(self.free(slot, f) for f in range(8))


def bus_id(index: int, q35: bool) -> str:
    """QEMU's id of bus `index`: pcie.0 / pci.0 for the root bus, pci.N behind controller N."""
    if index == 0:
        return "pcie.0" if q35 else "pci.0"
    return f"pci.{index}"


def render(address: PciAddress, q35: bool) -> str:
    """`bus=...,addr=0xS[.0xF][,multifunction=on]` for a -device value."""
    addr = f"{address.slot:#x}" + (f".{address.function:#x}" if address.function else "")
    text = f"bus={bus_id(address.bus, q35)},addr={addr}"
    return text + (",multifunction=on" if address.multifunction else "")


def assign(requests: Sequence[Request], q35: bool) -> Placement:
    """Place every request; raise RenderError for a clash or an address on a missing bus."""
    buses: dict[int, _Bus] = {0: _Bus(0, "root")}
    for req in requests:
        if req.kind in ("root-port", "bridge", "dmi-bridge") and req.index is not None:
            buses[req.index] = _Bus(req.index, "root-port" if req.kind == "root-port" else "bridge")
            if req.kind == "bridge":  # a bridge's slot 0 is its own (SHPC); libvirt never uses it
                buses[req.index].used.update((0, f) for f in range(8))
    added: list[int] = []
    bridges: list[int] = []
    for req in requests:  # a bus an address names but no controller declares: libvirt adds it
        a = req.address
        if a is not None and a.bus not in buses:
            buses[a.bus] = _Bus(a.bus, "root-port" if q35 else "bridge")
            if q35:
                added.append(a.bus)
            else:
                buses[a.bus].used.update((0, f) for f in range(8))
                bridges.append(a.bus)
    root = buses[0]
    root.used.add((0, 0))
    reserved = 0x1F if q35 else 1
    # ICH9: LPC 1f.0, SATA 1f.2, SMBus 1f.3; PIIX3: ISA 1.0, IDE 1.1, PM 1.3 (1.2 is USB's home)
    chipset = {(reserved, f) for f in range(8)} - ({(1, 2)} if not q35 else set())
    root.used.update(chipset)
    out: dict[str, PciAddress] = {}
    for req in requests:  # explicit addresses first: they are the user's (or libvirt's) choice
        if req.address is None:
            continue
        a = req.address
        bus = buses[a.bus]
        if a.bus == 0 and (a.slot == 0 or (a.slot, a.function) in chipset):
            raise RenderError(f"device {req.id}: slot {a.slot:#04x} of bus 0 belongs to the "
                              "chipset; use another slot")
        if bus.kind == "root-port" and a.slot != 0:
            raise RenderError(f"device {req.id}: a pcie-root-port has only slot 0, not "
                              f"{a.slot:#04x}")
        if not bus.free(a.slot, a.function):
            raise RenderError(f"device {req.id}: PCI address {a.bus:02x}:{a.slot:02x}."
                              f"{a.function} is used by two devices")
        bus.used.add((a.slot, a.function))
        out[req.id] = a
    for req in requests:  # fixed homes
        h = req.home
        if req.address is None and h is not None and buses[h.bus].free(h.slot, h.function):
            buses[h.bus].used.add((h.slot, h.function))
            out[req.id] = h
    pending = [r for r in requests if r.id not in out]
    ports = [r for r in pending if r.kind == "root-port"]
    _pack_root_ports(root, [r.id for r in ports] + [f"pci.{i}" for i in added], out)
    for index in bridges:
        out[f"pci.{index}"] = _next_slot({0: root}, f"pci.{index}")
    free_ports = [i for i, b in sorted(buses.items()) if b.kind == "root-port" and b.free(0)]
    implicit = len(added)
    next_index = max(buses) + 1
    for req in pending:
        if req.kind == "root-port":
            continue
        if q35 and req.kind == "pcie":
            if not free_ports:
                added.append(next_index)
                free_ports.append(next_index)
                buses[next_index] = _Bus(next_index, "root-port")
                next_index += 1
            index = free_ports.pop(0)
            buses[index].used.add((0, 0))
            out[req.id] = PciAddress(bus=index, slot=0)
        elif req.follows is not None and req.follows in out and buses[
                out[req.follows].bus].free(out[req.follows].slot, req.function):
            lead = out[req.follows]  # libvirt: "all companions in the same slot"
            buses[lead.bus].used.add((lead.slot, req.function))
            out[req.id] = PciAddress(bus=lead.bus, slot=lead.slot, function=req.function)
        else:
            out[req.id] = _next_slot(buses, req.id, bridges_first=q35, function=req.function)
    if len(added) > implicit:  # libvirt leaves one empty root port for hotplug when it adds any
        added.append(next_index)
    _pack_root_ports(root, [f"pci.{i}" for i in added[implicit:]], out)
    _mark_multifunction(out)
    return Placement(out, tuple(added), tuple(bridges))


def _mark_multifunction(out: dict[str, PciAddress]) -> None:
    """Turn on multifunction for function 0 of every slot whose other functions are in use.

    QEMU refuses a device at function N>0 of a slot whose function 0 is a single-function
    device; libvirt sets the bit on function 0 the same way when the file leaves it out.
    """
    shared = {(a.bus, a.slot) for a in out.values() if a.function != 0}
    for rid, a in out.items():
        if a.function == 0 and not a.multifunction and (a.bus, a.slot) in shared:
            out[rid] = a.model_copy(update={"multifunction": True})


def _pack_root_ports(root: _Bus, ids: list[str], out: dict[str, PciAddress]) -> None:
    """Give root ports consecutive functions of free root-bus slots, eight per slot."""
    slot = 1
    while ids:
        while not root.slot_free(slot):
            slot += 1
            if slot > 31:
                raise RenderError("the root PCI bus has no free slot left for pcie-root-ports")
        group, ids = ids[:8], ids[8:]
        for function, pid in enumerate(group):
            root.used.add((slot, function))
            out[pid] = PciAddress(bus=0, slot=slot, function=function,
                                  multifunction=function == 0 and len(group) > 1)


def _next_slot(buses: dict[int, _Bus], what: str, bridges_first: bool = False,
               function: int = 0) -> PciAddress:
    """The first free slot (function 0, whole slot free) of bus 0, then of the pci-bridges.

    With `bridges_first` ('q35', whose PCI Express root takes no conventional device in
    libvirt's rules) the bridges' buses come before the root bus.
    """
    order = sorted(buses.items(), key=lambda kv: (bridges_first and kv[1].kind == "root", kv[0]))
    for index, bus in order:
        if bus.kind == "root-port":
            continue
        for slot in range(32):
            if bus.slot_free(slot):
                bus.used.add((slot, function))
                return PciAddress(bus=index, slot=slot, function=function)
    raise RenderError(f"device {what}: no free PCI slot left; add a "
                      "<controller type='pci' model='pci-bridge'> or remove devices")
