"""`Domain` -> libvirt domain XML. Parsing what this writes gives back an equal `Domain`."""

from __future__ import annotations

from model import units
from model.cpuset import format_cpuset
from model.domain import (
    NAMESPACE,
    QEMU_NAMESPACE,
    Audio,
    Channel,
    CharSource,
    Console,
    Controller,
    Cputune,
    Desired,
    Devices,
    Disk,
    Display,
    Domain,
    Features,
    Filesystem,
    Graphics,
    Input,
    Interface,
    Iommu,
    IoTune,
    MemoryBacking,
    MemoryDevice,
    Os,
    Parallel,
    PciAddress,
    QemuCommandline,
    Redirdev,
    Serial,
    Shmem,
    Smartcard,
    Sysinfo,
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


def _size(tag: str, size: int, **attrs: str | None) -> Element:
    """Render a byte count in the largest exact binary unit (with other `attrs`)."""
    text, unit = units.render(size)
    return Element(tag, {"unit": unit, **attrs}, text=text)


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
        Element("source", {key: disk.source, "startupPolicy": disk.startup_policy})
        if disk.source is not None else None,
        Element("target", {"dev": disk.target_dev, "bus": disk.target_bus,
                           "removable": _yn(disk.removable, ("on", "off")),
                           "rotation_rate": _num(disk.rotation_rate)}),
        Element("readonly") if disk.readonly else None,
        Element("boot", {"order": _num(disk.boot_order)}) if disk.boot_order else None,
        Element("serial", text=disk.serial) if disk.serial is not None else None,
        Element("shareable") if disk.shareable else None,
        Element("wwn", text=disk.wwn) if disk.wwn is not None else None,
        _iotune(disk.iotune),
        _address(disk.address),
        Element("address", {"type": "drive", "controller": str(disk.drive.controller),
                            "bus": str(disk.drive.bus), "target": str(disk.drive.target),
                            "unit": str(disk.drive.unit)}) if disk.drive is not None else None,
    ])


def _iotune(tune: IoTune | None) -> Element | None:
    """`<iotune>` with one child a limit set (and the group), or None."""
    if tune is None:
        return None
    group = [Element("group_name", text=tune.group_name)] if tune.group_name is not None else []
    return Element("iotune", {}, [*(Element(name, text=str(value))
                                    for name, value in tune.limits().items()), *group])


def _virtio_attrs(o: VirtioOptions) -> dict[str, str | None]:
    """`<driver>` attributes of virtio options (absent when unset)."""
    return {"iommu": _yn(o.iommu, ("on", "off")) if o.iommu is not None else None,
            "ats": _yn(o.ats, ("on", "off")) if o.ats is not None else None,
            "packed": _yn(o.packed, ("on", "off")) if o.packed is not None else None}


def _virtio_driver(o: VirtioOptions) -> Element | None:
    """A `<driver>` child holding only virtio options, or None."""
    return Element("driver", _virtio_attrs(o)) if o.any() else None


def _nic_driver(nic: Interface) -> Element | None:
    """The `<driver>` of a NIC: virtio options, virtio-net settings and offloads, or None."""
    drv = nic.driver
    on = ("on", "off")
    if not nic.virtio.any() and not drv.any():
        return None
    attrs = {"name": drv.name, "txmode": drv.txmode, "queues": _num(drv.queues),
             "rx_queue_size": _num(drv.rx_queue_size), "tx_queue_size": _num(drv.tx_queue_size),
             "ioeventfd": _yn(drv.ioeventfd, on), "event_idx": _yn(drv.event_idx, on),
             "rss": _yn(drv.rss, on), "rss_hash_report": _yn(drv.rss_hash_report, on),
             **_virtio_attrs(nic.virtio)}
    return Element("driver", attrs, [
        Element("host", {n: _yn(v, on) for n, v in drv.host}) if drv.host else None,
        Element("guest", {n: _yn(v, on) for n, v in drv.guest}) if drv.guest else None,
    ])


def _nic_source(nic: Interface) -> Element | None:
    """The `<source>` of a NIC: bridge or network, or a socket netdev's address and port."""
    if nic.type in ("server", "client", "mcast", "udp"):
        local = None
        if nic.type == "udp":
            local = Element("local", {"address": nic.local_address, "port": _num(nic.local_port)})
        return Element("source", {"address": nic.socket_address, "port": _num(nic.socket_port)},
                       [local])
    key = "network" if nic.type == "network" else "bridge"
    if not nic.source:
        return None
    return Element("source", {key: nic.source, **({"bridge": nic.bridge} if nic.bridge else {})})


def _interface(nic: Interface) -> Element:
    """Render one `<interface>`."""
    ips = []
    for family, value in (("ipv4", nic.user_ipv4), ("ipv6", nic.user_ipv6)):
        if value is not None:
            address, _, prefix = value.partition("/")
            ips.append(Element("ip", {"address": address, "family": family, "prefix": prefix}))
    rom = None
    if (nic.rom_bar, nic.rom_file, nic.rom_enabled) != (None, None, None):
        rom = Element("rom", {"bar": _yn(nic.rom_bar, ("on", "off")), "file": nic.rom_file,
                              "enabled": _yn(nic.rom_enabled)})
    target = None
    if nic.target_dev is not None or nic.target_managed is not None:
        target = Element("target", {"dev": nic.target_dev,
                                    "managed": _yn(nic.target_managed)})
    return Element("interface", {"type": nic.type}, [
        Element("mac", {"address": nic.mac}) if nic.mac else None,
        _nic_source(nic),
        *ips,
        target,
        Element("script", {"path": nic.script}) if nic.script else None,
        Element("downscript", {"path": nic.downscript}) if nic.downscript else None,
        Element("model", {"type": nic.model}),
        Element("boot", {"order": _num(nic.boot_order)}) if nic.boot_order else None,
        _nic_driver(nic),
        rom,
        _address(nic.address),
    ])


def _char_kids(src: CharSource) -> list[Element | None]:
    """`<source>` (two for udp) and `<protocol>` of a character device, as libvirt writes them."""
    if src.type == "udp":
        bind = None
        if src.bind_host is not None or src.bind_service is not None:
            bind = Element("source", {"mode": "bind", "host": src.bind_host,
                                      "service": _num(src.bind_service)})
        return [bind, Element("source", {"mode": "connect", "host": src.host,
                                         "service": _num(src.service)})]
    reconnect = None
    if src.reconnect is not None:
        reconnect = Element("reconnect", {"enabled": "yes" if src.reconnect else "no",
                                          "timeout": _num(src.reconnect or None)})
    source = None
    if src.type == "spiceport":
        source = Element("source", {"channel": src.spice_channel})
    elif src.type == "tcp":
        source = Element("source", {"mode": src.mode, "host": src.host,
                                    "service": _num(src.service)}, [reconnect])
    elif src.path is not None or src.mode != "bind" or src.append is not None:
        # keep mode='connect' even without a path
        source = Element("source", {"path": src.path,
                                    "mode": src.mode if src.mode != "bind" else None,
                                    "append": _yn(src.append, ("on", "off"))}, [reconnect])
    protocol = Element("protocol", {"type": "telnet"}) if src.telnet else None
    return [source, protocol]


def _redirdev(r: Redirdev) -> Element:
    """Render one `<redirdev>`: spicevmc, or its character device."""
    kids = _char_kids(r.source) if r.source is not None else []
    return Element("redirdev", {"bus": "usb", "type": r.source.type if r.source else "spicevmc"},
                   [*kids, Element("boot", {"order": _num(r.boot_order)})
                    if r.boot_order is not None else None, _usb(r.usb_port)])


def _smartcard(c: Smartcard) -> Element:
    """Render one `<smartcard>`."""
    attrs: dict[str, str | None] = {"mode": c.mode}
    if c.mode == "passthrough":
        attrs["type"] = c.source.type if c.source is not None else "spicevmc"
    return Element("smartcard", attrs, [
        *(_char_kids(c.source) if c.source is not None else []),
        *(Element("certificate", text=cert) for cert in c.certificates),
        Element("database", text=c.database) if c.database is not None else None,
    ])


def _input(i: Input) -> Element:
    """Render one `<input>` (an evdev one has no bus; host devices have their `<source>`)."""
    source = None
    if i.type == "evdev":
        source = Element("source", {"dev": i.evdev, "grab": i.grab, "grabToggle": i.grab_toggle,
                                    "repeat": _yn(i.repeat, ("on", "off"))})
    elif i.evdev is not None:
        source = Element("source", {"evdev": i.evdev})
    return Element("input", {"type": i.type, "bus": None if i.type == "evdev" else i.bus},
                   [source, _usb(i.usb_port), _address(i.address), _virtio_driver(i.virtio)])


def _serial(port: Serial) -> Element:
    """Render one `<serial>`."""
    log = None
    if port.log is not None or port.log_append:  # keep append='on' even without a file
        log = Element("log", {"file": port.log, "append": _yn(port.log_append or None,
                                                               ("on", "off"))})
    address = None
    if port.iobase is not None or port.irq is not None:
        address = Element("address", {"type": "isa", "iobase": None if port.iobase is None
                                      else f"{port.iobase:#x}",
                                      "irq": None if port.irq is None else f"{port.irq:#x}"})
    target_type = "isa-debug" if port.target_type == "isa-debug" else None
    return Element("serial", {"type": port.type}, [
        *_char_kids(port), Element("target", {"type": target_type, "port": str(port.port)}),
        log, address,
    ])


def _console(con: Console) -> Element:
    """Render one virtio `<console>`."""
    return Element("console", {"type": con.type},
                   [*_char_kids(con), Element("target", {"type": "virtio"})])


def _parallel(par: Parallel) -> Element:
    """Render one `<parallel>`."""
    return Element("parallel", {"type": par.type},
                   [*_char_kids(par), Element("target", {"port": str(par.port)})])


def _controller(c: Controller) -> Element:
    """Render one `<controller>`."""
    target = {"chassis": _num(c.chassis), "port": f"{c.port:#x}" if c.port is not None else None,
              "hotplug": _yn(c.hotplug, ("on", "off"))}
    driver = {"queues": _num(c.queues), "cmd_per_lun": _num(c.cmd_per_lun),
              "max_sectors": _num(c.max_sectors), "ioeventfd": _yn(c.ioeventfd, ("on", "off")),
              "iothread": _num(c.iothread), **_virtio_attrs(c.virtio)}
    return Element("controller", {"type": c.type, "index": str(c.index), "model": c.model,
                                  "ports": _num(c.ports), "vectors": _num(c.vectors)}, [
        Element("master", {"startport": str(c.master)}) if c.master is not None else None,
        Element("driver", driver) if any(v is not None for v in driver.values()) else None,
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
        *(Element("channel", {"name": name, "mode": mode}) for name, mode in g.channels),
        Element("audio", {"id": str(g.audio)}) if g.audio is not None else None,
        Element("gl", {"enable": _yn(g.gl) if g.gl is not None else None,
                       "rendernode": g.rendernode})
        if g.gl is not None or g.rendernode is not None else None,
    ]
    return Element("graphics", {"type": g.type, "port": _num(g.port),
                                "tlsPort": _num(g.tls_port), "defaultMode": g.default_mode,
                                "autoport": "no" if g.port else "yes", "listen": g.listen,
                                "passwd": g.passwd, "sharePolicy": g.share_policy}, kids)


def _shmem(mem: Shmem) -> Element:
    """Render one `<shmem>`."""
    msi = {"vectors": _num(mem.vectors), "ioeventfd": _yn(mem.ioeventfd, ("on", "off"))}
    return Element("shmem", {"name": mem.name, "role": mem.role}, [
        Element("model", {"type": mem.model}),
        Element("size", {"unit": "b"}, text=str(mem.size)),
        Element("server", {"path": mem.server}) if mem.model == "ivshmem-doorbell" else None,
        Element("msi", msi) if any(v is not None for v in msi.values()) else None,
        _address(mem.address),
    ])


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
                          "ram": _num(v.ram), "vgamem": _num(v.vgamem)},
                [Element("resolution", {"x": str(v.resolution[0]), "y": str(v.resolution[1])})
                 if v.resolution is not None else None]),
        _address(v.address),
    ])


def _channel(ch: Channel) -> Element:
    """Render one `<channel>`."""
    kids: list[Element | None] = []
    if ch.source is not None:
        kids = _char_kids(ch.source)
    elif ch.type == "qemu-vdagent":
        if ch.vdagent_clipboard is not None or ch.vdagent_mouse is not None:
            kids = [Element("source", children=[
                Element("clipboard", {"copypaste": _yn(ch.vdagent_clipboard)})
                if ch.vdagent_clipboard is not None else None,
                Element("mouse", {"mode": ch.vdagent_mouse}) if ch.vdagent_mouse else None])]
    elif ch.path is not None or ch.mode != "bind" or ch.reconnect is not None:
        reconnect = None
        if ch.reconnect is not None:
            reconnect = Element("reconnect", {"enabled": "yes" if ch.reconnect else "no",
                                              "timeout": _num(ch.reconnect or None)})
        kids = [Element("source", {"path": ch.path,
                                   "mode": ch.mode if ch.mode != "bind" else None}, [reconnect])]
    address = None
    if ch.port is not None or ch.controller:
        address = Element("address", {"type": "virtio-serial", "controller": str(ch.controller),
                                      "bus": "0", "port": _num(ch.port)})
    return Element("channel", {"type": ch.type}, [
        *kids, Element("target", {"type": "virtio", "name": ch.name}), address,
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
        *(_parallel(p) for p in dev.parallels),
        *(_console(c) for c in dev.consoles),
        *(_channel(c) for c in dev.channels),
        *(_input(i) for i in dev.inputs),
        *(_graphics(g) for g in dev.graphics),
        *(_local_display(shown) for shown in dev.displays),
        *(Element("sound", {"model": s.model}, [
            *(Element("codec", {"type": c}) for c in s.codecs),
            Element("audio", {"id": str(s.audio)}) if s.audio is not None else None,
            _address(s.address),
        ]) for s in dev.sounds),
        *(_audio(a) for a in dev.audios),
        *(_video(v) for v in dev.videos),
        *(_redirdev(r) for r in dev.redirdevs),
        Element("redirfilter", children=[
            Element("usbdev", {
                "class": None if r.usb_class is None else f"0x{r.usb_class:02X}",
                "vendor": None if r.vendor is None else f"0x{r.vendor:04X}",
                "product": None if r.product is None else f"0x{r.product:04X}",
                "version": None if r.version is None
                else f"{r.version >> 8:X}.{r.version & 0xFF:02X}",
                "allow": _yn(r.allow)}) for r in dev.redirfilter]) if dev.redirfilter else None,
        *(_smartcard(c) for c in dev.smartcards),
        *(Element("vsock", {"model": "virtio"}, [
            Element("cid", {"auto": "yes"} if v.cid is None
                    else {"auto": "no", "address": str(v.cid)}),
            _address(v.address)]) for v in dev.vsocks),
        *(Element("watchdog", {"model": w.model, "action": w.action}, [_address(w.address)])
          for w in dev.watchdogs),
        Element("memballoon", {"model": dev.memballoon,
                               "autodeflate": _yn(dev.memballoon_deflate, ("on", "off")),
                               "freePageReporting": _yn(dev.memballoon_free_page_reporting,
                                                        ("on", "off"))},
                [_virtio_driver(dev.memballoon_virtio),
                 Element("stats", {"period": str(dev.memballoon_stats)})
                 if dev.memballoon_stats is not None else None,
                 _address(dev.memballoon_address)])
        if dev.memballoon else None,
        *(Element("rng", {"model": r.model}, [
            Element("backend", {"model": r.backend_model,
                                "type": r.egd.type if r.egd is not None else None},
                    _char_kids(r.egd) if r.egd is not None else [],
                    text=r.backend if r.backend_model == "random" else None),
            Element("rate", {"bytes": _num(r.rate_bytes), "period": _num(r.rate_period)})
            if r.rate_bytes or r.rate_period else None,
            _address(r.address),
            _virtio_driver(r.virtio),
        ]) for r in dev.rngs),
        Element("panic", {"model": dev.panic}) if dev.panic else None,
        Element("panic", {"model": "hyperv"}) if dev.hyperv_panic else None,
        *(Element("tpm", {"model": t.model}, [
            Element("backend", {"type": "emulator", "version": t.version})]) for t in dev.tpms),
        *(_shmem(mem) for mem in dev.shmems),
        *(Element("filesystem", {
            "type": "mount", "accessmode": f.accessmode, "multidevs": f.multidevs,
            "fmode": f"{f.fmode:04o}" if f.fmode is not None else None,
            "dmode": f"{f.dmode:04o}" if f.dmode is not None else None}, [
                Element("driver", {"type": "path", "wrpolicy": f.writeout}),
                Element("source", {"dir": f.source_dir}), Element("target", {"dir": f.target_dir}),
                Element("readonly") if f.readonly else None, _address(f.address)])
          for f in dev.shares_9p),
        *(Element("hub", {"type": "usb"}, [
            Element("address", {"type": "usb", "bus": "0", "port": h.usb_port})
            if h.usb_port is not None else None]) for h in dev.hubs),
        *(_memory_device(m) for m in dev.memories),
        _iommu(dev.iommu),
    ]
    return Element("devices", children=kids)


def _iommu(iommu: Iommu | None) -> Element | None:
    """`<iommu model=>` with its `<driver>` switches and `<address>`, or None."""
    if iommu is None:
        return None
    on = ("on", "off")
    driver = {"intremap": _yn(iommu.intremap, on), "caching_mode": _yn(iommu.caching_mode, on),
              "eim": _yn(iommu.eim, on), "iotlb": _yn(iommu.iotlb, on),
              "aw_bits": _num(iommu.aw_bits)}
    return Element("iommu", {"model": iommu.model}, [
        Element("driver", driver) if any(v is not None for v in driver.values()) else None,
        _address(iommu.address)])


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
        Element("acpi", children=[Element("table", {"type": kind}, text=path)
                                  for kind, path in os.acpi_tables]) if os.acpi_tables else None,
        Element("smbios", {"mode": os.smbios_mode}) if os.smbios_mode else None,
        Element("bios", {"useserial": _yn(os.bios_useserial),
                         "rebootTimeout": _num(os.reboot_timeout)})
        if os.bios_useserial is not None or os.reboot_timeout is not None else None,
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
           state("poll-control", f.kvm_poll_control), state("pv-ipi", f.kvm_pv_ipi),
           Element("dirty-ring", {"state": "on", "size": str(f.kvm_dirty_ring)})
           if f.kvm_dirty_ring is not None else None]
    return Element("features", children=[
        Element("acpi") if f.acpi else None,
        Element("apic", {"eoi": _yn(f.apic_eoi, ("on", "off"))}) if f.apic else None,
        Element("pae") if f.pae else None,
        hyperv,
        Element("kvm", children=kvm) if any(k is not None for k in kvm) else None,
        state("pvspinlock", f.pvspinlock),
        state("smm", f.smm),
        Element("vmport", {"state": _yn(f.vmport, ("on", "off"))})
        if f.vmport is not None else None,
        state("vmcoreinfo", f.vmcoreinfo),
        state("pmu", f.pmu),
        Element("tcg", children=[Element("tb-cache", {"unit": "b"}, text=str(f.tb_cache))])
        if f.tb_cache is not None else None,
        Element("ioapic", {"driver": f.ioapic}) if f.ioapic is not None else None,
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
        Element("genid", text=str(d.genid)) if d.genid is not None else None,
        _desired(d.desired),
        _size("memory", d.memory, dumpCore=_yn(d.dump_core, ("on", "off"))),
        _size("currentMemory", d.current_memory) if d.current_memory is not None else None,
        _max_memory(d),
        _memory_backing(d.memory_backing) if d.memory_backing is not None else None,
        Element("iothreads", text=str(d.iothreads)) if d.iothreads else None,
        Element("vcpu", {"current": _num(d.vcpu.current),
                         "cpuset": format_cpuset(d.vcpu.cpuset) if d.vcpu.cpuset else None},
                text=str(d.vcpu.count)),
        _cputune(d.cputune) if d.cputune is not None else None,
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
        Element("clock", {"offset": d.clock.offset, "timezone": d.clock.timezone,
                          "adjustment": "reset" if d.clock.reset else _num(d.clock.adjustment),
                          "basis": d.clock.basis, "start": _num(d.clock.start)}, [
            Element("timer", {"name": t.name, "tickpolicy": t.tickpolicy,
                              "present": _yn(t.present), "frequency": _num(t.frequency),
                              "mode": t.mode, "track": t.track}) for t in d.clock.timers
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
        *_sysinfo(d.sysinfo),
        _qemu_commandline(d.qemu_commandline) if d.qemu_commandline is not None else None,
    ])


def _qemu_commandline(cmd: QemuCommandline) -> Element:
    """`<qemu:commandline>` with its args and environment, in libvirt's QEMU namespace."""
    def qemu(tag: str, attrs: dict[str, str | None]) -> Element:
        """One element of the namespace."""
        return Element(tag, attrs, namespace=QEMU_NAMESPACE, prefix="qemu")

    return Element("commandline", children=[
        *(qemu("arg", {"value": a}) for a in cmd.args),
        *(qemu("env", {"name": n, "value": v}) for n, v in cmd.env)],
        namespace=QEMU_NAMESPACE, prefix="qemu")


def _sysinfo(info: Sysinfo | None) -> list[Element]:
    """`<sysinfo type='smbios'>` and `<sysinfo type='fwcfg'>` (each only when it has entries)."""
    if info is None:
        return []

    def block(tag: str, entries: tuple[tuple[str, str], ...]) -> Element | None:
        """One SMBIOS block of named entries."""
        return Element(tag, children=[Element("entry", {"name": k}, text=v) for k, v in entries]
                       ) if entries else None

    out: list[Element] = []
    smbios = [block("bios", info.bios), block("system", info.system),
              *(block("baseBoard", b) for b in info.base_boards), block("chassis", info.chassis),
              Element("oemStrings", children=[Element("entry", text=v) for v in info.oem_strings])
              if info.oem_strings else None]
    if any(e is not None for e in smbios):
        out.append(Element("sysinfo", {"type": "smbios"}, smbios))
    if info.fw_cfg:
        out.append(Element("sysinfo", {"type": "fwcfg"}, [
            Element("entry", {"name": b.name, "file": b.file}, text=b.value) for b in info.fw_cfg]))
    return out


def _cputune(tune: Cputune) -> Element:
    """`<cputune>` with its pins."""
    return Element("cputune", children=[
        *(Element("vcpupin", {"vcpu": str(v), "cpuset": format_cpuset(c)})
          for v, c in tune.vcpupins),
        Element("emulatorpin", {"cpuset": format_cpuset(tune.emulatorpin)})
        if tune.emulatorpin is not None else None,
        *(Element("iothreadpin", {"iothread": str(t), "cpuset": format_cpuset(c)})
          for t, c in tune.iothreadpins),
    ])


def to_xml(d: Domain) -> bytes:
    """Serialise a domain as libvirt domain XML (UTF-8), including qemud's desired state."""
    return serialise(to_element(d))
