"""`Domain` -> libvirt domain XML. Parsing what this writes gives back an equal `Domain`."""

from __future__ import annotations

from model import units
from model.domain import NAMESPACE, Desired, Devices, Disk, Domain, Interface, Serial
from model.xml import Element, serialise


def _yn(value: bool | None, truth: tuple[str, str] = ("yes", "no")) -> str | None:
    """Render an optional switch as libvirt's yes/no (or on/off); None stays absent."""
    if value is None:
        return None
    return truth[0] if value else truth[1]


def _num(value: int | None) -> str | None:
    """Render an optional number as text; None stays absent."""
    return None if value is None else str(value)


def _size(tag: str, size: int) -> Element:
    """Render a byte count in the largest exact binary unit."""
    text, unit = units.render(size)
    return Element(tag, {"unit": unit}, text=text)


def _disk(disk: Disk) -> Element:
    """Render one `<disk>`."""
    key = "dev" if disk.type == "block" else "file"
    driver = {"name": "qemu", "type": disk.driver_type, "cache": disk.cache,
              "discard": disk.discard}
    return Element("disk", {"type": disk.type, "device": disk.device}, [
        Element("driver", driver),
        Element("source", {key: disk.source}) if disk.source is not None else None,
        Element("target", {"dev": disk.target_dev, "bus": disk.target_bus}),
        Element("readonly") if disk.readonly else None,
        Element("boot", {"order": _num(disk.boot_order)}) if disk.boot_order else None,
        Element("serial", text=disk.serial) if disk.serial is not None else None,
    ])


def _interface(nic: Interface) -> Element:
    """Render one `<interface>`."""
    key = "network" if nic.type == "network" else "bridge"
    return Element("interface", {"type": nic.type}, [
        Element("mac", {"address": nic.mac}) if nic.mac else None,
        Element("source", {key: nic.source}) if nic.source else None,
        Element("model", {"type": nic.model}),
        Element("boot", {"order": _num(nic.boot_order)}) if nic.boot_order else None,
    ])


def _serial(port: Serial) -> Element:
    """Render one `<serial>`."""
    source = None
    if port.path is not None or port.mode != "bind":  # keep mode='connect' even without a path
        source = Element("source", {"path": port.path,
                                    "mode": port.mode if port.mode != "bind" else None})
    log = None
    if port.log is not None or port.log_append:  # keep append='on' even without a file
        log = Element("log", {"file": port.log, "append": _yn(port.log_append or None,
                                                               ("on", "off"))})
    return Element("serial", {"type": port.type}, [
        source, Element("target", {"port": str(port.port)}), log,
    ])


def _devices(dev: Devices) -> Element:
    """Render `<devices>` in libvirt's usual order."""
    kids: list[Element | None] = [
        Element("emulator", text=dev.emulator) if dev.emulator else None,
        *(_disk(d) for d in dev.disks),
        *(Element("controller", {"type": c.type, "index": str(c.index), "model": c.model})
          for c in dev.controllers),
        *(_interface(n) for n in dev.interfaces),
        *(_serial(s) for s in dev.serials),
        *(Element("input", {"type": i.type, "bus": i.bus}) for i in dev.inputs),
        *(Element("graphics", {"type": g.type, "port": _num(g.port),
                               "autoport": "no" if g.port else "yes", "listen": g.listen})
          for g in dev.graphics),
        *(Element("video", children=[Element("model", {"type": v.model})]) for v in dev.videos),
        Element("memballoon", {"model": dev.memballoon}) if dev.memballoon else None,
        *(Element("rng", {"model": r.model}, [
            Element("backend", {"model": "random"}, text=r.backend),
            Element("rate", {"bytes": _num(r.rate_bytes), "period": _num(r.rate_period)})
            if r.rate_bytes or r.rate_period else None,
        ]) for r in dev.rngs),
        Element("panic", {"model": dev.panic}) if dev.panic else None,
    ]
    return Element("devices", children=kids)


def _desired(desired: Desired) -> Element:
    """Render qemud's `<metadata><qemud:desired/></metadata>`."""
    return Element("metadata", children=[Element("desired", {
        "state": desired.state, "restart": desired.restart,
        "shutdown-timeout": str(desired.shutdown_timeout),
    }, namespace=NAMESPACE, prefix="qemud")])


def to_element(d: Domain) -> Element:
    """Build the element tree of a domain (see `to_xml`)."""
    os = d.os
    cpu = d.cpu
    return Element("domain", {"type": d.type}, [
        Element("name", text=d.name),
        Element("uuid", text=str(d.uuid)),
        Element("title", text=d.title) if d.title is not None else None,
        Element("description", text=d.description) if d.description is not None else None,
        _desired(d.desired),
        _size("memory", d.memory),
        _size("currentMemory", d.current_memory) if d.current_memory is not None else None,
        Element("vcpu", {"current": _num(d.vcpu.current)}, text=str(d.vcpu.count)),
        Element("os", children=[
            Element("type", {"arch": os.arch, "machine": os.machine}, text=os.type),
            *(Element("boot", {"dev": b}) for b in os.boot),
            Element("bootmenu", {"enable": _yn(os.bootmenu), "timeout": _num(os.bootmenu_timeout)})
            if os.bootmenu is not None or os.bootmenu_timeout is not None else None,
            Element("kernel", text=os.kernel) if os.kernel is not None else None,
            Element("initrd", text=os.initrd) if os.initrd is not None else None,
            Element("cmdline", text=os.cmdline) if os.cmdline is not None else None,
        ]),
        Element("features", children=[
            Element("acpi") if d.features.acpi else None,
            Element("apic") if d.features.apic else None,
            Element("pae") if d.features.pae else None,
            Element("vmport", {"state": _yn(d.features.vmport, ("on", "off"))})
            if d.features.vmport is not None else None,
        ]),
        Element("cpu", {"mode": cpu.mode}, [
            Element("model", text=cpu.model) if cpu.model else None,
            Element("topology", {"sockets": str(cpu.topology.sockets),
                                 "dies": str(cpu.topology.dies),
                                 "cores": str(cpu.topology.cores),
                                 "threads": str(cpu.topology.threads)})
            if cpu.topology else None,
            *(Element("feature", {"policy": f.policy, "name": f.name}) for f in cpu.features),
        ]) if cpu is not None else None,
        Element("clock", {"offset": d.clock.offset}, [
            Element("timer", {"name": t.name, "tickpolicy": t.tickpolicy,
                              "present": _yn(t.present)}) for t in d.clock.timers
        ]),
        Element("on_poweroff", text=d.on_poweroff),
        Element("on_reboot", text=d.on_reboot),
        Element("on_crash", text=d.on_crash),
        Element("pm", children=[
            Element("suspend-to-mem", {"enabled": _yn(d.pm.suspend_to_mem)})
            if d.pm.suspend_to_mem is not None else None,
            Element("suspend-to-disk", {"enabled": _yn(d.pm.suspend_to_disk)})
            if d.pm.suspend_to_disk is not None else None,
        ]),
        _devices(d.devices),
    ])


def to_xml(d: Domain) -> bytes:
    """Serialise a domain as libvirt domain XML (UTF-8), including qemud's desired state."""
    return serialise(to_element(d))
