"""`Domain` -> libvirt domain XML. Parsing what this writes gives back an equal `Domain`."""

from __future__ import annotations

from model import units
from model.cpuset import format_cpuset
from model.domain import (
    NAMESPACE,
    Audio,
    Channel,
    Controller,
    Desired,
    Devices,
    Disk,
    Display,
    Domain,
    Features,
    Filesystem,
    Graphics,
    Interface,
    MemoryBacking,
    MemoryDevice,
    Os,
    PciAddress,
    Serial,
    Video,
    VirtioOptions,
)
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


def _address(a: PciAddress | None) -> Element | None:
    """Render a PCI `<address>` (None stays absent)."""
    if a is None:
        return None
    return Element("address", {"type": "pci", "domain": "0x0000", "bus": f"{a.bus:#04x}",
                               "slot": f"{a.slot:#04x}", "function": f"{a.function:#x}",
                               "multifunction": "on" if a.multifunction else None})


def _disk(disk: Disk) -> Element:
    """Render one `<disk>`."""
    key = "dev" if disk.type == "block" else "file"
    driver = {"name": "qemu", "type": disk.driver_type, "cache": disk.cache,
              "discard": disk.discard, "io": disk.io, "detect_zeroes": disk.detect_zeroes,
              "iothread": None if disk.iothread is None else str(disk.iothread),
              **_virtio_attrs(disk.virtio)}
    return Element("disk", {"type": disk.type, "device": disk.device}, [
        Element("driver", driver),
        Element("source", {key: disk.source}) if disk.source is not None else None,
        Element("target", {"dev": disk.target_dev, "bus": disk.target_bus,
                           "removable": _yn(disk.removable, ("on", "off"))}),
        Element("readonly") if disk.readonly else None,
        Element("boot", {"order": _num(disk.boot_order)}) if disk.boot_order else None,
        Element("serial", text=disk.serial) if disk.serial is not None else None,
        Element("shareable") if disk.shareable else None,
        Element("wwn", text=disk.wwn) if disk.wwn is not None else None,
        _address(disk.address),
    ])


def _virtio_attrs(o: VirtioOptions) -> dict[str, str | None]:
    """`<driver>` attributes of virtio options (absent when unset)."""
    return {"iommu": _yn(o.iommu, ("on", "off")) if o.iommu is not None else None,
            "ats": _yn(o.ats, ("on", "off")) if o.ats is not None else None,
            "packed": _yn(o.packed, ("on", "off")) if o.packed is not None else None}


def _virtio_driver(o: VirtioOptions) -> Element | None:
    """A `<driver>` child holding only virtio options, or None."""
    return Element("driver", _virtio_attrs(o)) if o.any() else None


def _interface(nic: Interface) -> Element:
    """Render one `<interface>`."""
    key = "network" if nic.type == "network" else "bridge"
    return Element("interface", {"type": nic.type}, [
        Element("mac", {"address": nic.mac}) if nic.mac else None,
        Element("source", {key: nic.source, **({"bridge": nic.bridge} if nic.bridge else {})})
        if nic.source else None,
        Element("model", {"type": nic.model}),
        Element("boot", {"order": _num(nic.boot_order)}) if nic.boot_order else None,
        _virtio_driver(nic.virtio),
        _address(nic.address),
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


def _controller(c: Controller) -> Element:
    """Render one `<controller>`."""
    target = {"chassis": _num(c.chassis), "port": f"{c.port:#x}" if c.port is not None else None}
    return Element("controller", {"type": c.type, "index": str(c.index), "model": c.model,
                                  "ports": _num(c.ports)}, [
        Element("target", target) if any(v is not None for v in target.values()) else None,
        _address(c.address),
    ])


def _graphics(g: Graphics) -> Element:
    """Render one `<graphics>` with its spice children."""
    kids = [
        Element("image", {"compression": g.image_compression}) if g.image_compression else None,
        Element("jpeg", {"compression": g.jpeg_compression}) if g.jpeg_compression else None,
        Element("zlib", {"compression": g.zlib_compression}) if g.zlib_compression else None,
        Element("playback", {"compression": _yn(g.playback_compression, ("on", "off"))})
        if g.playback_compression is not None else None,
        Element("streaming", {"mode": g.streaming}) if g.streaming else None,
        Element("mouse", {"mode": g.mouse}) if g.mouse else None,
        Element("clipboard", {"copypaste": _yn(g.clipboard)}) if g.clipboard is not None else None,
        Element("filetransfer", {"enable": _yn(g.filetransfer)})
        if g.filetransfer is not None else None,
        Element("listen", {"type": g.listen_type, "socket": g.socket})
        if g.listen_type != "address" else None,
    ]
    return Element("graphics", {"type": g.type, "port": _num(g.port),
                                "autoport": "no" if g.port else "yes", "listen": g.listen,
                                "passwd": g.passwd}, kids)


def _local_display(shown: Display) -> Element:
    """Render an egl-headless or dbus `<graphics>`."""
    gl = ({"enable": _yn(shown.gl) if shown.gl is not None else None,
           "rendernode": shown.rendernode})
    return Element("graphics", {"type": shown.type, "address": shown.address,
                                "p2p": "yes" if shown.p2p else None}, [
        Element("gl", gl) if any(v is not None for v in gl.values()) else None,
        Element("audio", {"id": str(shown.audio)}) if shown.audio is not None else None,
    ])


def _video(v: Video) -> Element:
    """Render one `<video>`."""
    return Element("video", children=[
        Element("model", {"type": v.model, "heads": _num(v.heads), "vram": _num(v.vram),
                          "ram": _num(v.ram), "vgamem": _num(v.vgamem)}),
        _address(v.address),
    ])


def _channel(ch: Channel) -> Element:
    """Render one `<channel>`."""
    source = None
    if ch.path is not None or ch.mode != "bind":
        source = Element("source", {"path": ch.path, "mode": ch.mode if ch.mode != "bind" else None})
    address = None
    if ch.port is not None or ch.controller:
        address = Element("address", {"type": "virtio-serial", "controller": str(ch.controller),
                                      "bus": "0", "port": _num(ch.port)})
    return Element("channel", {"type": ch.type}, [
        source, Element("target", {"type": "virtio", "name": ch.name}), address,
    ])


def _usb(port: str | None) -> Element | None:
    """Render a USB `<address>` (None stays absent)."""
    return Element("address", {"type": "usb", "bus": "0", "port": port}) if port else None


def _filesystem(fs: Filesystem) -> Element:
    """Render a virtiofs `<filesystem>` as libvirt writes it."""
    on = ("on", "off")
    binary = [
        Element("cache", {"mode": fs.cache}) if fs.cache else None,
        Element("sandbox", {"mode": fs.sandbox}) if fs.sandbox else None,
        Element("lock", {"posix": _yn(fs.posix_lock, on), "flock": _yn(fs.flock, on)})
        if fs.posix_lock is not None or fs.flock is not None else None,
        Element("thread_pool", {"size": str(fs.thread_pool)}) if fs.thread_pool is not None
        else None,
    ]
    has_binary = (fs.binary_path is not None or fs.xattr is not None
                  or any(b is not None for b in binary))
    return Element("filesystem", {"type": "mount", "accessmode": "passthrough"}, [
        Element("driver", {"type": "virtiofs", "queue": _num(fs.queue)}),
        Element("binary", {"path": fs.binary_path, "xattr": _yn(fs.xattr, on)}, binary)
        if has_binary else None,
        Element("source", {"dir": fs.source_dir}),
        Element("target", {"dir": fs.target_dir}),
        _address(fs.address),
    ])


def _devices(dev: Devices) -> Element:
    """Render `<devices>` in libvirt's usual order."""
    kids: list[Element | None] = [
        Element("emulator", text=dev.emulator) if dev.emulator else None,
        *(_disk(d) for d in dev.disks),
        *(_controller(c) for c in dev.controllers),
        *(_filesystem(f) for f in dev.filesystems),
        *(_interface(n) for n in dev.interfaces),
        *(_serial(s) for s in dev.serials),
        *(_channel(c) for c in dev.channels),
        *(Element("input", {"type": i.type, "bus": i.bus},
                  [_usb(i.usb_port), _address(i.address), _virtio_driver(i.virtio)])
          for i in dev.inputs),
        *(_graphics(g) for g in dev.graphics),
        *(_local_display(shown) for shown in dev.displays),
        *(Element("sound", {"model": s.model}, [
            *(Element("codec", {"type": c}) for c in s.codecs),
            Element("audio", {"id": str(s.audio)}) if s.audio is not None else None,
            _address(s.address),
        ]) for s in dev.sounds),
        *(_audio(a) for a in dev.audios),
        *(_video(v) for v in dev.videos),
        *(Element("redirdev", {"bus": "usb", "type": "spicevmc"}, [_usb(r.usb_port)])
          for r in dev.redirdevs),
        *(Element("watchdog", {"model": w.model, "action": w.action}, [_address(w.address)])
          for w in dev.watchdogs),
        Element("memballoon", {"model": dev.memballoon}, [_address(dev.memballoon_address)])
        if dev.memballoon else None,
        *(Element("rng", {"model": r.model}, [
            Element("backend", {"model": r.backend_model},
                    text=r.backend if r.backend_model == "random" else None),
            Element("rate", {"bytes": _num(r.rate_bytes), "period": _num(r.rate_period)})
            if r.rate_bytes or r.rate_period else None,
            _address(r.address),
            _virtio_driver(r.virtio),
        ]) for r in dev.rngs),
        Element("panic", {"model": dev.panic}) if dev.panic else None,
        *(Element("tpm", {"model": t.model}, [
            Element("backend", {"type": "emulator", "version": t.version})]) for t in dev.tpms),
        *(_memory_device(m) for m in dev.memories),
    ]
    return Element("devices", children=kids)


def _desired(desired: Desired) -> Element:
    """Render qemud's `<metadata><qemud:desired/></metadata>`."""
    return Element("metadata", children=[Element("desired", {
        "state": desired.state, "restart": desired.restart,
        "shutdown-timeout": str(desired.shutdown_timeout),
    }, namespace=NAMESPACE, prefix="qemud")])


def _os(os: Os) -> Element:
    """Render `<os>` with firmware, loader and nvram."""
    fw = None
    if os.firmware_features:
        fw = Element("firmware", children=[Element("feature", {"enabled": _yn(on), "name": n})
                                           for n, on in os.firmware_features])
    return Element("os", {"firmware": os.firmware}, [
        Element("type", {"arch": os.arch, "machine": os.machine}, text=os.type),
        fw,
        Element("loader", {"readonly": "yes", "type": "pflash", "secure": _yn(os.loader_secure)},
                text=os.loader) if os.loader is not None else None,
        Element("nvram", {"template": os.nvram_template}, text=os.nvram)
        if os.nvram is not None else None,
        *(Element("boot", {"dev": b}) for b in os.boot),
        Element("bootmenu", {"enable": _yn(os.bootmenu), "timeout": _num(os.bootmenu_timeout)})
        if os.bootmenu is not None or os.bootmenu_timeout is not None else None,
        Element("kernel", text=os.kernel) if os.kernel is not None else None,
        Element("initrd", text=os.initrd) if os.initrd is not None else None,
        Element("cmdline", text=os.cmdline) if os.cmdline is not None else None,
    ])


def _features(f: Features) -> Element:
    """Render `<features>`."""
    def state(tag: str, value: bool | None) -> Element | None:
        """An element with state='on'|'off', absent for None."""
        return Element(tag, {"state": _yn(value, ("on", "off"))}) if value is not None else None

    hyperv = None
    if f.hyperv is not None:
        kids: list[Element | None] = []
        for name, on in f.hyperv.enabled:
            attrs = {"state": _yn(on, ("on", "off"))}
            sub: list[Element | None] = []
            if name == "spinlocks":
                attrs["retries"] = _num(f.hyperv.spinlocks_retries)
            elif name == "vendor_id":
                attrs["value"] = f.hyperv.vendor_id
            elif name == "stimer" and f.hyperv.stimer_direct is not None:
                sub.append(state("direct", f.hyperv.stimer_direct))
            kids.append(Element(name, attrs, sub))
        hyperv = Element("hyperv", {"mode": f.hyperv.mode}, kids)
    kvm = [state("hidden", f.kvm_hidden), state("hint-dedicated", f.kvm_hint_dedicated),
           state("poll-control", f.kvm_poll_control), state("pv-ipi", f.kvm_pv_ipi)]
    return Element("features", children=[
        Element("acpi") if f.acpi else None,
        Element("apic") if f.apic else None,
        Element("pae") if f.pae else None,
        hyperv,
        Element("kvm", children=kvm) if any(k is not None for k in kvm) else None,
        state("pvspinlock", f.pvspinlock),
        state("smm", f.smm),
        Element("vmport", {"state": _yn(f.vmport, ("on", "off"))})
        if f.vmport is not None else None,
        state("vmcoreinfo", f.vmcoreinfo),
        Element("tcg", children=[Element("tb-cache", {"unit": "b"}, text=str(f.tb_cache))])
        if f.tb_cache is not None else None,
    ])


def _audio(a: Audio) -> Element:
    """`<audio>` with its tuning put back where libvirt has it (attributes, input, output)."""
    top = {k: v for k, v in a.settings if "/" not in k}
    kids = []
    for tag in ("input", "output"):
        attrs = {k.split("/")[1]: v for k, v in a.settings
                 if k.startswith(f"{tag}/") and k.count("/") == 1}
        tuning = {k.rsplit("/")[-1]: v for k, v in a.settings if k.startswith(f"{tag}/settings/")}
        if attrs or tuning:
            kids.append(Element(tag, attrs, [Element("settings", tuning)] if tuning else []))
    return Element("audio", {"id": str(a.id), "type": a.type, **top}, kids)


def _max_memory(d: Domain) -> Element | None:
    """`<maxMemory slots= unit=>` (None stays absent)."""
    if d.max_memory is None:
        return None
    text, unit = units.render(d.max_memory)
    return Element("maxMemory", {"slots": _num(d.max_memory_slots), "unit": unit}, text=text)


def _memory_backing(b: MemoryBacking) -> Element:
    """`<memoryBacking>` with its hugepages, source, access, allocation and switches."""
    return Element("memoryBacking", children=[
        Element("hugepages", children=[
            Element("page", {"size": str(p.size), "unit": "b",
                             "nodeset": format_cpuset(p.nodeset) if p.nodeset else None})
            for p in b.pages]) if b.hugepages else None,
        Element("nosharepages") if b.nosharepages else None,
        Element("locked") if b.locked else None,
        Element("source", {"type": b.source}) if b.source else None,
        Element("access", {"mode": b.access}) if b.access else None,
        Element("allocation", {"mode": b.allocation, "threads": _num(b.threads)})
        if b.allocation or b.threads else None,
        Element("discard") if b.discard else None,
    ])


def _memory_device(m: MemoryDevice) -> Element:
    """`<memory model=>` with its source, target and DIMM or PCI address."""
    source = [
        Element("path", text=m.path) if m.path is not None else None,
        Element("nodemask", text=format_cpuset(m.nodemask)) if m.nodemask else None,
        _size("pagesize", m.pagesize) if m.pagesize is not None else None,
        _size("alignsize", m.alignsize) if m.alignsize is not None else None,
        Element("pmem") if m.pmem else None,
    ]
    target = [
        _size("size", m.size),
        Element("node", text=str(m.node)) if m.node is not None else None,
        Element("label", children=[_size("size", m.label_size)])
        if m.label_size is not None else None,
        _size("block", m.block) if m.block is not None else None,
        _size("requested", m.requested) if m.requested is not None else None,
        Element("readonly") if m.readonly else None,
    ]
    dimm = Element("address", {"type": "dimm", "slot": _num(m.slot),
                               "base": f"{m.base:#x}" if m.base is not None else None}) \
        if m.slot is not None or m.base is not None else None
    return Element("memory", {"model": m.model, "access": m.access, "discard": _yn(m.discard)}, [
        Element("source", children=source) if any(x is not None for x in source) else None,
        Element("target", children=target),
        dimm or _address(m.address),
    ])


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
        _max_memory(d),
        _memory_backing(d.memory_backing) if d.memory_backing is not None else None,
        Element("iothreads", text=str(d.iothreads)) if d.iothreads else None,
        Element("vcpu", {"current": _num(d.vcpu.current),
                         "cpuset": format_cpuset(d.vcpu.cpuset) if d.vcpu.cpuset else None},
                text=str(d.vcpu.count)),
        _os(os),
        _features(d.features),
        Element("cpu", {"mode": cpu.mode}, [
            Element("model", text=cpu.model) if cpu.model else None,
            Element("topology", {"sockets": str(cpu.topology.sockets),
                                 "dies": str(cpu.topology.dies),
                                 "cores": str(cpu.topology.cores),
                                 "threads": str(cpu.topology.threads)})
            if cpu.topology else None,
            *(Element("feature", {"policy": f.policy, "name": f.name}) for f in cpu.features),
            Element("cache", {"level": "3" if cpu.cache == "emulate" else None,
                              "mode": cpu.cache}) if cpu.cache else None,
            Element("numa", children=[
                Element("cell", {"id": str(c.id), "cpus": format_cpuset(c.cpus) if c.cpus else None,
                                 "memory": str(c.memory), "unit": "b", "memAccess": c.mem_access,
                                 "discard": _yn(c.discard)},
                        [Element("distances", children=[
                            Element("sibling", {"id": str(i), "value": str(v)})
                            for i, v in c.distances])] if c.distances else [])
                for c in cpu.numa
            ]) if cpu.numa else None,
        ]) if cpu is not None else None,
        Element("numatune", children=[
            Element("memory" if m.cellid is None else "memnode",
                    {"cellid": _num(m.cellid), "mode": m.mode,
                     "nodeset": format_cpuset(m.nodeset)})
            for m in ([d.numatune.memory] if d.numatune.memory else []) + list(d.numatune.memnodes)
        ]) if d.numatune is not None else None,
        Element("clock", {"offset": d.clock.offset}, [
            Element("timer", {"name": t.name, "tickpolicy": t.tickpolicy,
                              "present": _yn(t.present), "frequency": _num(t.frequency),
                              "mode": t.mode}) for t in d.clock.timers
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
