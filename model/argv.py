"""`Domain` -> QEMU command line: a pure function, never a shell string.

The command line is built the way libvirt builds it (`-nodefaults`, `-no-user-config`, one
`-drive if=none` plus one `-device` per disk, chardevs for serial ports) so QEMU's defaults never
add hardware the domain did not ask for. Values QEMU parses as comma-separated options are escaped
(`,` -> `,,`), so paths with commas and spaces work.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model import units
from model.domain import Controller, Disk, Domain, Serial, Video, mac_for
from model.errors import RenderError

Option = tuple[str, ...]
"""One option with its value(s), e.g. ("-m", "512"); a flag alone is ("-nodefaults",)."""


@dataclass(frozen=True)
class Runtime:
    """Where a running VM's files live; the process layer chooses them, the command line names them.

    `console_log` receives serial port 0's output; port N gets `<stem>.N.log` beside it.
    """

    qmp_socket: Path
    pidfile: Path
    console_log: Path

    def serial_log(self, port: int) -> Path:
        """The log file of serial port `port` (port 0 is the console log)."""
        if port == 0:
            return self.console_log
        return self.console_log.with_suffix(f".{port}.log")


def esc(value: str | Path) -> str:
    """Escape a value for QEMU's comma-separated option syntax (`,` becomes `,,`)."""
    return str(value).replace(",", ",,")


def emulator(d: Domain) -> str:
    """The QEMU binary: `<emulator>` when given, else chosen from `<type arch=>`."""
    if d.devices.emulator:
        return d.devices.emulator
    return "qemu-system-i386" if d.os.arch == "i686" else "qemu-system-x86_64"


def is_q35(d: Domain) -> bool:
    """Whether the machine is a Q35 (PCIe, AHCI built in, no IDE or floppy controller)."""
    return d.os.machine is not None and "q35" in d.os.machine


def _machine(d: Domain) -> Option:
    """`-machine TYPE,...` with ACPI, vmport and HPET switches."""
    parts = [d.os.machine or "pc"]
    if not d.features.acpi:
        parts.append("acpi=off")
    if d.features.vmport is not None:
        parts.append("vmport=" + ("on" if d.features.vmport else "off"))
    if any(t.name == "hpet" and t.present is False for t in d.clock.timers):
        parts.append("hpet=off")
    parts.append("dump-guest-core=off")
    return ("-machine", ",".join(parts))


def _cpu(d: Domain) -> Iterator[Option]:
    """`-cpu`: host passthrough under KVM, `max` under TCG, or a named model with features."""
    cpu = d.cpu
    if cpu is None:
        return
    if cpu.mode in ("host-passthrough", "host-model"):
        name = "host" if d.type == "kvm" else "max"
    elif cpu.mode == "maximum":
        name = "max"
    else:
        name = cpu.model or "qemu64"
    flags = [("-" if f.policy in ("disable", "forbid") else "+") + f.name for f in cpu.features]
    yield ("-cpu", ",".join([name, *flags]))


def _smp(d: Domain) -> Option:
    """`-smp current,maxcpus=count[,topology]`."""
    count = d.vcpu.count
    parts = [str(d.vcpu.current or count), f"maxcpus={count}"]
    topo = d.cpu.topology if d.cpu is not None else None
    if topo is not None:
        # QEMU numbers APIC IDs with a power-of-two field per level; without x2APIC (TCG has
        # none) the highest must stay below 255: 'current -smp configuration requires ... X2APIC'
        t, c, d_ = ((n - 1).bit_length() for n in (topo.threads, topo.cores, topo.dies))
        top = ((topo.sockets - 1) << (d_ + c + t) | (topo.dies - 1) << (c + t)
               | (topo.cores - 1) << t | (topo.threads - 1))
        if top >= MAX_APIC_ID:
            raise RenderError(f"<topology> sockets={topo.sockets} dies={topo.dies} cores="
                              f"{topo.cores} threads={topo.threads} needs APIC ID {top}, but QEMU "
                              f"allows up to {MAX_APIC_ID - 1} here; use powers of two for cores "
                              "and threads, or fewer vCPUs")
        parts.append(f"sockets={topo.sockets}")
        if topo.dies > 1:
            parts.append(f"dies={topo.dies}")
        parts += [f"cores={topo.cores}", f"threads={topo.threads}"]
    return ("-smp", ",".join(parts))


MAX_APIC_ID = 255
"""APIC IDs QEMU allows without x2APIC interrupt remapping: 0-254."""

_BOOT_LETTER = {"hd": "c", "cdrom": "d", "fd": "a", "network": "n"}


def _boot(d: Domain) -> Iterator[Option]:
    """`-boot order=...,menu=on,splash-time=...` from `<os>`."""
    parts = []
    if d.os.boot:
        parts.append("order=" + "".join(_BOOT_LETTER[b] for b in d.os.boot))
    if d.os.bootmenu is not None:
        parts.append("menu=" + ("on" if d.os.bootmenu else "off"))
        if d.os.bootmenu and d.os.bootmenu_timeout is not None:
            parts.append(f"splash-time={d.os.bootmenu_timeout}")
    if parts:
        yield ("-boot", ",".join(parts))


def _kernel(d: Domain) -> Iterator[Option]:
    """Direct kernel boot: `-kernel`, `-initrd`, `-append`."""
    if d.os.kernel:
        yield ("-kernel", d.os.kernel)
    if d.os.initrd:
        yield ("-initrd", d.os.initrd)
    if d.os.cmdline:
        yield ("-append", d.os.cmdline)


def _clock(d: Domain) -> Iterator[Option]:
    """`-rtc` and the PIT tick policy."""
    rtc = f"base={d.clock.offset}"
    if any(t.name == "rtc" and t.tickpolicy == "catchup" for t in d.clock.timers):
        rtc += ",driftfix=slew"
    yield ("-rtc", rtc)
    if d.type == "kvm" and any(t.name == "pit" and t.tickpolicy == "delay"
                               for t in d.clock.timers):
        yield ("-global", "kvm-pit.lost_tick_policy=delay")


def _lifecycle(d: Domain) -> Iterator[Option]:
    """`-no-reboot` and the panic action, from `<on_reboot>` and `<on_crash>`."""
    if d.on_reboot == "destroy":
        yield ("-no-reboot",)
    yield ("-action", "panic=" + ("pause" if d.on_crash == "preserve" else "shutdown"))


def _pm(d: Domain) -> Iterator[Option]:
    """`<pm>` as the chipset's S3/S4 switches."""
    chip = "ICH9-LPC" if is_q35(d) else "PIIX4_PM"
    for value, prop in ((d.pm.suspend_to_mem, "disable_s3"), (d.pm.suspend_to_disk, "disable_s4")):
        if value is not None:
            yield ("-global", f"{chip}.{prop}={0 if value else 1}")


_USB_MODELS = {
    None: None,
    "piix3-uhci": "piix3-usb-uhci",
    "piix4-uhci": "piix4-usb-uhci",
    "ehci": "usb-ehci",
    "ich9-ehci1": "ich9-usb-ehci1",
    "qemu-xhci": "qemu-xhci",
    "nec-xhci": "nec-usb-xhci",
    "ich9-uhci1": None,
    "ich9-uhci2": None,
    "ich9-uhci3": None,
    "none": None,
}
USB_MODELS = tuple(m for m in _USB_MODELS if m is not None)
SCSI_TARGETS = {"virtio-scsi-pci": (255, "sdiv"), "lsi": (7, "sdh")}
"""Highest SCSI id (`scsi-id=`, from the dev name) each adapter takes, and that dev name."""
SCSI_MODELS = {None: "virtio-scsi-pci", "virtio-scsi": "virtio-scsi-pci", "lsilogic": "lsi",
               "auto": "virtio-scsi-pci"}


def _usb_controller(d: Domain) -> str | None:
    """The USB host controller device to add, or None when the guest has no USB."""
    usb = [c for c in d.devices.controllers if c.type == "usb" and c.index == 0]
    needed = any(i.bus == "usb" for i in d.devices.inputs)
    if usb:
        models = [c.model for c in usb]
        if "none" in models:
            if needed:
                raise RenderError("USB input devices need a USB controller, but it is model='none'")
            return None
        chosen = [_USB_MODELS.get(m) for m in models if _USB_MODELS.get(m)]
        if chosen:
            return chosen[0]
    if not usb and not needed:
        return None
    return "qemu-xhci" if is_q35(d) else "piix3-usb-uhci"


def _scsi_controller(d: Domain) -> str | None:
    """The SCSI host adapter device to add, or None when no disk is on bus='scsi'."""
    if not any(disk.target_bus == "scsi" for disk in d.devices.disks):
        return None
    scsi: list[Controller] = [c for c in d.devices.controllers if c.type == "scsi" and c.index == 0]
    model = scsi[0].model if scsi else None
    if model not in SCSI_MODELS:
        raise RenderError(f"SCSI controller model {model!r} is not supported; use 'virtio-scsi' "
                          "or 'lsilogic'")
    adapter = SCSI_MODELS[model]
    top, last = SCSI_TARGETS[adapter]
    for disk in d.devices.disks:
        if disk.target_bus == "scsi" and disk_index(disk.target_dev) > top:
            raise RenderError(f"<target dev='{disk.target_dev}'>: the {model or 'virtio-scsi'} "
                              f"SCSI controller has targets sda to {last}; use one of those")
    return adapter


def disk_index(dev: str) -> int:
    """Index of a target dev name: hda -> 0, hdb -> 1, vdz -> 25, sdaa -> 26 (libvirt's scheme)."""
    index = 0
    for ch in dev[2:]:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def _disk(d: Domain, disk: Disk) -> Iterator[Option]:
    """One disk: `-drive if=none,...` for the backend and `-device` for what the guest sees."""
    idx = disk_index(disk.target_dev)
    cd = disk.device == "cdrom"
    bus = disk.target_bus
    if bus == "ide":
        alias = f"ide0-{idx // 2}-{idx % 2}"
        dev = [("ide-cd" if cd else "ide-hd"), f"bus=ide.{idx // 2}", f"unit={idx % 2}"]
    elif bus == "sata":
        alias = f"sata0-0-{idx}"
        dev = [("ide-cd" if cd else "ide-hd"), f"bus={'ide' if is_q35(d) else 'sata0'}.{idx}"]
    elif bus == "scsi":
        alias = f"scsi0-0-0-{idx}"
        dev = [("scsi-cd" if cd else "scsi-hd"), "bus=scsi0.0", "channel=0", f"scsi-id={idx}",
               "lun=0"]
    elif bus == "virtio":
        alias = f"virtio-disk{idx}"
        dev = ["virtio-blk-pci"]
    else:
        alias = f"fdc0-0-{idx}"
        dev = ["floppy", f"unit={idx}"]
    drive = [f"file={esc(disk.source)}"] if disk.source is not None else []
    if disk.source is not None:
        drive.append(f"format={disk.driver_type or 'raw'}")
    drive += ["if=none", f"id=drive-{alias}"]
    if disk.readonly or cd:
        drive.append("readonly=on")
    if disk.source is not None:  # QEMU refuses these on an empty drive (no driver or file)
        if disk.cache not in (None, "default"):
            drive.append(f"cache={disk.cache}")
        if disk.discard is not None:
            drive.append(f"discard={disk.discard}")
    yield ("-drive", ",".join(drive))
    dev += [f"drive=drive-{alias}", f"id={alias}"]
    if disk.boot_order is not None and bus == "fdc":  # QEMU's floppy has no bootindex; the fdc has
        yield ("-global", f"isa-fdc.bootindex{'AB'[idx]}={disk.boot_order}")
    elif disk.boot_order is not None:
        dev.append(f"bootindex={disk.boot_order}")
    if disk.serial is not None and bus != "fdc":
        dev.append(f"serial={esc(disk.serial)}")
    yield ("-device", ",".join(dev))


_NIC_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e",
                "rtl8139": "rtl8139", "ne2k_pci": "ne2k_pci", "pcnet": "pcnet",
                "vmxnet3": "vmxnet3"}


def bridge_of(source: str | None, network: bool) -> str:
    """The host bridge a NIC joins: the bridge itself, or virbr0 for libvirt's 'default' network."""
    if network and source == "default":
        return "virbr0"
    return source or "virbr0"


def _nics(d: Domain) -> Iterator[Option]:
    """`-netdev` + `-device` for each `<interface>`, with a stable MAC when none is given."""
    for i, nic in enumerate(d.devices.interfaces):
        net = f"hostnet{i}"
        if nic.type == "user":
            yield ("-netdev", f"user,id={net}")
        else:
            yield ("-netdev", f"bridge,id={net},br={bridge_of(nic.source, nic.type == 'network')}")
        dev = [_NIC_DEVICES[nic.model], f"netdev={net}", f"id=net{i}",
               f"mac={nic.mac or mac_for(d.uuid, i)}"]
        if nic.boot_order is not None:
            dev.append(f"bootindex={nic.boot_order}")
        yield ("-device", ",".join(dev))


def _chardev(port: Serial, cid: str, runtime: Runtime | None) -> str:
    """The `-chardev` backend of one serial port, logging pty and unix ports to a file."""
    if port.type == "pty":
        parts = ["pty", f"id={cid}"]
    elif port.type == "file":
        parts = ["file", f"id={cid}", f"path={esc(port.path or '')}"]
    elif port.type == "unix":
        server = "server=on,wait=off" if port.mode == "bind" else "server=off"
        parts = ["socket", f"id={cid}", f"path={esc(port.path or '')}", server]
    else:
        parts = ["null", f"id={cid}"]
    log: str | Path | None = port.log
    append = port.log_append
    if log is None and runtime is not None and port.type in ("pty", "unix"):
        log, append = runtime.serial_log(port.port), True
    if log is not None:
        parts += [f"logfile={esc(log)}", f"logappend={'on' if append else 'off'}"]
    return ",".join(parts)


def _serials(d: Domain, runtime: Runtime | None) -> Iterator[Option]:
    """`-chardev` + `-device isa-serial` for each serial port (and console standing for one)."""
    for port in d.devices.serials:
        cid = f"charserial{port.port}"
        yield ("-chardev", _chardev(port, cid, runtime))
        yield ("-device", f"isa-serial,chardev={cid},id=serial{port.port},index={port.port}")


def _display(d: Domain) -> Iterator[Option]:
    """`-vnc` for VNC graphics (a fixed display, or the first free one), else `-display none`."""
    if not d.devices.graphics:
        yield ("-display", "none")
        return
    g = d.devices.graphics[0]
    host = f"[{g.listen}]" if ":" in g.listen else g.listen
    if g.port is None:
        yield ("-vnc", f"{host}:0,to=99")
    else:
        yield ("-vnc", f"{host}:{g.port - 5900}")


_VIDEO = {"vga": ("VGA", "secondary-vga"), "cirrus": ("cirrus-vga", None),
          "qxl": ("qxl-vga", "qxl"), "virtio": ("virtio-vga", "virtio-gpu-pci"),
          "bochs": ("bochs-display", "bochs-display"), "ramfb": ("ramfb", "ramfb")}


def _videos(d: Domain) -> Iterator[Option]:
    """`-device` for each video adapter; the first one is the primary VGA."""
    shown = [v for v in d.devices.videos if v.model != "none"]
    if not d.devices.videos and d.devices.graphics:
        # like libvirt, graphics without any <video> get the default adapter, not a blank screen
        shown = [Video()]
    if sum(v.model == "ramfb" for v in shown) > 1:  # QEMU: duplicate fw_cfg file name
        raise RenderError("video model 'ramfb' can be used only once")
    for i, video in enumerate(shown):
        primary, secondary = _VIDEO[video.model]
        device = primary if i == 0 else secondary
        if device is None:
            raise RenderError(f"video model {video.model!r} can only be the first video device")
        yield ("-device", f"{device},id=video{i}")


_INPUT = {("tablet", "usb"): "usb-tablet", ("mouse", "usb"): "usb-mouse",
          ("keyboard", "usb"): "usb-kbd", ("tablet", "virtio"): "virtio-tablet-pci",
          ("mouse", "virtio"): "virtio-mouse-pci", ("keyboard", "virtio"): "virtio-keyboard-pci"}


def _inputs(d: Domain) -> Iterator[Option]:
    """`-device` for USB and virtio input devices (PS/2 mouse and keyboard are built in)."""
    for i, inp in enumerate(d.devices.inputs):
        device = _INPUT.get((inp.type, inp.bus))
        if device is None:
            continue
        bus = ",bus=usb.0" if inp.bus == "usb" else ""
        yield ("-device", f"{device},id=input{i}{bus}")


def _misc(d: Domain) -> Iterator[Option]:
    """Balloon, random number generators and the panic device."""
    if d.devices.memballoon == "virtio":
        yield ("-device", "virtio-balloon-pci,id=balloon0")
    for i, rng in enumerate(d.devices.rngs):
        yield ("-object", f"rng-random,id=objrng{i},filename={esc(rng.backend)}")
        dev = f"virtio-rng-pci,rng=objrng{i},id=rng{i}"
        if rng.rate_bytes is not None:
            dev += f",max-bytes={rng.rate_bytes},period={rng.rate_period or 1000}"
        yield ("-device", dev)
    if d.devices.panic == "isa":
        yield ("-device", "pvpanic")


PCI_SLOTS = 30
"""Free slots on the root bus of pc and q35 with -nodefaults (32 less host bridge and PIIX/ICH9)."""
_PCI_DEVICES = frozenset(
    {m for m in _USB_MODELS.values() if m is not None} | set(SCSI_MODELS.values())
    | set(_NIC_DEVICES.values()) | {v for pair in _VIDEO.values() for v in pair if v}
    | {v for v in _INPUT.values() if v.endswith("-pci")}
    | {"ahci", "virtio-blk-pci", "virtio-balloon-pci", "virtio-rng-pci"}
) - {"ramfb"}
"""The `-device`s that take a PCI slot (ramfb, ISA, IDE, SCSI and USB devices do not)."""


def options(d: Domain, runtime: Runtime | None = None) -> list[Option]:
    """The command line grouped by option: the emulator first, then one tuple per option.

    With `runtime`, the QMP monitor, the pidfile and console logs are included; without it the
    result is what `reconcile argv` shows, like `virsh domxml-to-native`.
    """
    out: list[Option] = [(emulator(d),)]
    out.append(("-name", f"guest={esc(d.name)},debug-threads=on"))
    out.append(("-uuid", str(d.uuid)))
    if runtime is not None:
        out.append(("-pidfile", str(runtime.pidfile)))
        out.append(("-chardev",
                    f"socket,id=charmonitor,path={esc(runtime.qmp_socket)},server=on,wait=off"))
        out.append(("-mon", "chardev=charmonitor,id=monitor,mode=control"))
    out += [("-no-user-config",), ("-nodefaults",), ("-msg", "timestamp=on")]
    out.append(_machine(d))
    out.append(("-accel", "kvm" if d.type == "kvm" else "tcg"))
    out += _cpu(d)
    out.append(("-m", str(units.to_mib(d.memory))))
    out.append(_smp(d))
    out += _clock(d)
    out += _lifecycle(d)
    out += _pm(d)
    out += _boot(d)
    out += _kernel(d)
    usb = _usb_controller(d)
    if usb is not None:
        out.append(("-device", f"{usb},id=usb"))
    scsi = _scsi_controller(d)
    if scsi is not None:
        out.append(("-device", f"{scsi},id=scsi0"))
    if not is_q35(d) and any(disk.target_bus == "sata" for disk in d.devices.disks):
        out.append(("-device", "ahci,id=sata0"))
    for disk in d.devices.disks:
        out += _disk(d, disk)
    out += _nics(d)
    out += _serials(d, runtime)
    out += _display(d)
    out += _videos(d)
    out += _inputs(d)
    out += _misc(d)
    used = sum(1 for o in out if o[0] == "-device" and o[1].split(",", 1)[0] in _PCI_DEVICES)
    if used > PCI_SLOTS:
        raise RenderError(f"the devices need {used} PCI slots but the machine has {PCI_SLOTS} "
                          "(qemud adds no PCI bridges); remove some devices")
    return out


def command_line(d: Domain, runtime: Runtime | None = None) -> list[str]:
    """The QEMU argv (a list, never a shell string) for domain `d`; see `options`."""
    return [arg for option in options(d, runtime) for arg in option]
