"""`Domain` -> QEMU command line: a pure function, never a shell string.

The command line is built the way libvirt builds it (`-nodefaults`, `-no-user-config`, one
`-drive if=none` plus one `-device` per disk, chardevs for serial ports) so QEMU's defaults never
add hardware the domain did not ask for. Values QEMU parses as comma-separated options are escaped
(`,` -> `,,`), so paths with commas and spaces work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from model import memory, pci, units
from model.cpuset import qemu_ranges
from model.domain import (
    Channel,
    CharSource,
    Clock,
    Controller,
    Cpu,
    Disk,
    Display,
    Domain,
    DriveAddress,
    Input,
    Interface,
    IoTune,
    PciAddress,
    Serial,
    Video,
    VirtioOptions,
    mac_for,
)
from model.errors import RenderError
from model.firmware import Descriptor, FirmwareChoice, choose

Option = tuple[str, ...]
"""One option with its value(s), e.g. ("-m", "512"); a flag alone is ("-nodefaults",)."""

SPICE_X509_DIR = "/etc/pki/libvirt-spice"
"""Where spice's TLS certificates are (ca-cert.pem, server-cert.pem, server-key.pem): libvirt's
default `spice_tls_x509_cert_dir`, so a libvirt host's certificates serve as they are."""

USER_QMP_SOCKET = "qmp-user.sock"
"""The users' own QMP monitor in the VM's runtime folder (`reconcile monitor`, qmp-shell)."""


@dataclass(frozen=True)
class Runtime:
    """Where a running VM's files live; the process layer chooses them, the command line names them.

    `console_log` receives serial port 0's output; port N gets `<stem>.N.log` beside it.
    """

    qmp_socket: Path
    pidfile: Path
    console_log: Path
    state_dir: Path | None = None
    """Where the VM's persistent state lives (e.g. ~/.qemud/state/<uuid>/): its UEFI variables."""
    hugepages: memory.HugepageHost | None = None
    """The host's hugetlbfs mounts and free pages (read by the caller when the VM needs them)."""

    def serial_log(self, port: int) -> Path:
        """The log file of serial port `port` (port 0 is the console log)."""
        if port == 0:
            return self.console_log
        return self.console_log.with_suffix(f".{port}.log")

    @property
    def folder(self) -> Path:
        """The VM's runtime folder: the one holding the QMP socket (guest agent, spice sockets)."""
        return self.qmp_socket.parent

    def fs_socket(self, index: int) -> Path:
        """The vhost-user socket of `<filesystem>` number `index`'s virtiofsd: `fs<index>-fs.sock`."""
        return self.folder / f"fs{index}-fs.sock"

    def tpm_socket(self, index: int) -> Path:
        """The control socket of `<tpm>` number `index`'s swtpm: `tpm<index>-swtpm.sock` in the folder."""
        return self.folder / f"tpm{index}-swtpm.sock"

    @property
    def user_qmp_socket(self) -> Path:
        """The second QMP monitor, for users and their tools: `qmp-user.sock` in the folder.

        The daemon keeps `qmp_socket` to itself (QEMU serves one client per monitor at a time);
        this one is free for `reconcile monitor`, qmp-shell and scripts.
        """
        return self.folder / USER_QMP_SOCKET


At = Callable[[str], str]
"""Gives the `,bus=...,addr=...` suffix of a PCI device's -device value from its id."""


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


def _machine(d: Domain, fw: FirmwareChoice | None) -> Option:
    """`-machine TYPE,...` with ACPI, vmport, SMM, HPET switches and the UEFI flash drives."""
    parts = [d.os.machine or "pc"]
    if not d.features.acpi:
        parts.append("acpi=off")
    if d.features.vmport is not None:
        parts.append("vmport=" + ("on" if d.features.vmport else "off"))
    smm = d.features.smm
    if fw is not None and fw.requires_smm:
        if smm is False:
            raise RenderError("the chosen UEFI firmware needs SMM (Secure Boot), but "
                              "<smm state='off'> disables it; remove that or ask for "
                              "<feature enabled='no' name='secure-boot'/>")
        smm = True
    if smm is not None:
        parts.append("smm=" + ("on" if smm else "off"))
    if any(t.name == "hpet" and t.present is False for t in d.clock.timers):
        parts.append("hpet=off")
    speakers = [i for i, snd in enumerate(d.devices.sounds) if snd.model == "pcspk"]
    if speakers:
        parts.append(f"pcspk-audiodev=audio{sound_audiodev(d, speakers[0])}")
    if d.features.ioapic is not None:
        parts.append("kernel_irqchip=" + ("split" if d.features.ioapic == "qemu" else "on"))
    parts.append("dump-guest-core=" + _on(d.dump_core is True))
    parts += memory.machine_props(d)
    if fw is not None:
        parts += ["pflash0=pflash0", "pflash1=pflash1"]
    return ("-machine", ",".join(parts))


def _firmware(fw: FirmwareChoice | None) -> Iterator[Option]:
    """UEFI: the read-only code and the VM's own variable store as flash block devices."""
    if fw is None:
        return
    yield ("-blockdev", f"driver=file,filename={esc(fw.code)},node-name=pflash0-file,"
           "read-only=on")
    yield ("-blockdev", f"driver={fw.code_format},file=pflash0-file,node-name=pflash0,"
           "read-only=on")
    yield ("-blockdev", f"driver=file,filename={esc(fw.vars)},node-name=pflash1-file")
    yield ("-blockdev", f"driver={fw.vars_format},file=pflash1-file,node-name=pflash1")
    if fw.requires_smm:
        yield ("-global", "driver=cfi.pflash01,property=secure,value=on")


_HV_PROPS = {"relaxed": "hv-relaxed", "vapic": "hv-vapic", "spinlocks": "hv-spinlocks",
             "vpindex": "hv-vpindex", "runtime": "hv-runtime", "synic": "hv-synic",
             "stimer": "hv-stimer", "reset": "hv-reset", "vendor_id": "hv-vendor-id",
             "frequencies": "hv-frequencies", "reenlightenment": "hv-reenlightenment",
             "tlbflush": "hv-tlbflush", "ipi": "hv-ipi", "evmcs": "hv-evmcs", "avic": "hv-avic"}


def _on(value: bool) -> str:
    """QEMU's on/off."""
    return "on" if value else "off"


def _cpu_props(d: Domain) -> list[str]:
    """CPU properties from timers, `<hyperv>`, `<kvm>` and `<pvspinlock>`, in libvirt's order."""
    props: list[str] = []
    for t in d.clock.timers:
        if t.name == "kvmclock" and t.present is not None:
            props.append(f"kvmclock={_on(t.present)}")
        elif t.name == "hypervclock" and t.present:
            props.append("hv-time=on")
        elif t.name == "tsc" and t.frequency is not None:
            props.append(f"tsc-frequency={t.frequency}")
    f = d.features
    if f.apic_eoi is not None:
        props.append(f"kvm-pv-eoi={_on(f.apic_eoi)}")
    if f.hyperv is not None:
        if f.hyperv.mode == "passthrough":
            props.append("hv-passthrough=on")
        for name, state in f.hyperv.enabled:
            if not state:
                continue  # libvirt renders only the enlightenments turned on (off is QEMU's default)
            if name == "spinlocks":
                props.append(f"hv-spinlocks={f.hyperv.spinlocks_retries or 0x1FFF:#x}")
            elif name == "vendor_id":
                props.append(f"hv-vendor-id={esc(f.hyperv.vendor_id or '')}")
            else:
                props.append(f"{_HV_PROPS[name]}=on")
            if name == "stimer" and f.hyperv.stimer_direct:
                props.append("hv-stimer-direct=on")
    if f.kvm_hidden is not None:
        props.append(f"kvm={_on(not f.kvm_hidden)}")
    if f.kvm_hint_dedicated is not None:
        props.append(f"kvm-hint-dedicated={_on(f.kvm_hint_dedicated)}")
    if f.kvm_poll_control is not None:
        props.append(f"kvm-poll-control={_on(f.kvm_poll_control)}")
    if f.kvm_pv_ipi is not None:
        props.append(f"kvm-pv-ipi={_on(f.kvm_pv_ipi)}")
    if f.pvspinlock is not None:
        props.append(f"kvm-pv-unhalt={_on(f.pvspinlock)}")
    if f.pmu is not None:
        props.append(f"pmu={_on(f.pmu)}")
    if d.devices.hyperv_panic:
        props.append("hv-crash")
    return props


def _cpu(d: Domain) -> Iterator[Option]:
    """`-cpu`: host passthrough under KVM, `max` under TCG, or a named model with features."""
    cpu = d.cpu
    props = _cpu_props(d)
    if cpu is None:
        if props:  # QEMU's default model, as libvirt names it when it must add properties
            yield ("-cpu", ",".join(["qemu64", *props]))
        return
    if cpu.mode in ("host-passthrough", "host-model"):
        name = "host" if d.type == "kvm" else "max"
    elif cpu.mode == "maximum":
        name = "max"
    elif cpu.model is None and not props and cpu.cache is None:
        return  # <cpu> with only a topology (or NUMA cells): QEMU's default model, as libvirt
    else:
        name = cpu.model or "qemu64"
    flags = [("-" if f.policy in ("disable", "forbid") else "+") + f.name for f in cpu.features]
    yield ("-cpu", ",".join([name, *flags, *_cache_props(cpu), *props]))


def _cache_props(cpu: Cpu) -> list[str]:
    """`<cache>` as libvirt 9.0 renders it (cpu-cache-*.args): l3-cache and host-cache-info."""
    host_only = cpu.mode in ("host-passthrough", "maximum")
    if cpu.cache == "emulate":
        return ["l3-cache=on", *(["host-cache-info=off"] if host_only else [])]
    if cpu.cache == "passthrough":
        return ["host-cache-info=on", "l3-cache=off"]
    if cpu.cache == "disable":
        return [*(["host-cache-info=off"] if host_only else []), "l3-cache=off"]
    return []


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


def memory_mib(d: Domain) -> int:
    """`-m`: the memory in MiB; with NUMA cells the sum of the cells, each rounded up to MiB.

    libvirt sets the total memory to the sum of the cells (numatune-memnode: 24105).
    """
    cells = d.cpu.numa if d.cpu is not None else ()
    if cells:
        return sum(units.to_mib(c.memory) for c in cells)
    return units.to_mib(d.memory)


def _numa(d: Domain, runtime: Runtime | None) -> Iterator[Option]:
    """One memory backend and one `-numa node` per `<cell>`, with `<numatune>`'s policy.

    As libvirt renders them for QEMU 7.2 machine types (which refuse `-numa node,mem=`):
    `memory-backend-ram|file|memfd,id=ram-nodeN,...,size=...[,host-nodes=...,policy=...]`
    (model/memory.py) and `node,nodeid=N,cpus=a-b,cpus=c,memdev=ram-nodeN`.
    """
    cells = d.cpu.numa if d.cpu is not None else ()
    folder = runtime.folder if runtime is not None else None
    host = runtime.hugepages if runtime is not None else None
    for cell in cells:
        region = memory.Region(f"ram-node{cell.id}", units.to_mib(cell.memory) << 20, cell.id,
                               policy=memory.policy_of(d, cell.id))
        yield from memory.backend_objects(d, region, folder, host)
        cpus = "".join(f",cpus={r}" for r in qemu_ranges(cell.cpus)) if cell.cpus else ""
        yield ("-numa", f"node,nodeid={cell.id}{cpus},memdev=ram-node{cell.id}")
    yield from memory.distance_options(d)


MAX_APIC_ID = 255
"""APIC IDs QEMU allows without x2APIC interrupt remapping: 0-254."""

_BOOT_LETTER = {"hd": "c", "cdrom": "d", "fd": "a", "network": "n"}


def _sysinfo(d: Domain) -> Iterator[Option]:
    """`-smbios type=N,...` (with `<smbios mode='sysinfo'>`) and `-fw_cfg`, as libvirt does."""
    info = d.sysinfo
    if info is None:
        return
    if d.os.smbios_mode == "sysinfo":
        tables: list[tuple[int, tuple[tuple[str, str], ...]]] = [
            (0, info.bios), (1, info.system), *((2, b) for b in info.base_boards),
            (3, info.chassis)]
        for number, entries in tables:
            if entries:
                yield ("-smbios", ",".join([f"type={number}",
                                            *(f"{k}={esc(v)}" for k, v in entries)]))
        if info.oem_strings:
            yield ("-smbios", ",".join(["type=11", *(f"value={esc(v)}"
                                                     for v in info.oem_strings)]))
    for blob in info.fw_cfg:
        what = (f"file={esc(blob.file)}" if blob.file is not None
                else f"string={esc(blob.value or '')}")
        yield ("-fw_cfg", f"name={esc(blob.name)},{what}")


def _boot(d: Domain) -> Iterator[Option]:
    """`-boot order=...,menu=on,splash-time=...` from `<os>`."""
    parts = []
    if d.os.boot:
        parts.append("order=" + "".join(_BOOT_LETTER[b] for b in d.os.boot))
    if d.os.bootmenu is not None:
        parts.append("menu=" + ("on" if d.os.bootmenu else "off"))
        if d.os.bootmenu and d.os.bootmenu_timeout is not None:
            parts.append(f"splash-time={d.os.bootmenu_timeout}")
    if d.os.reboot_timeout is not None:
        parts.append(f"reboot-timeout={d.os.reboot_timeout}")
    if parts:
        yield ("-boot", ",".join(parts))
    if d.os.bios_useserial:
        yield ("-device", "sga")


def _kernel(d: Domain) -> Iterator[Option]:
    """Direct kernel boot: `-kernel`, `-initrd`, `-append`."""
    if d.os.kernel:
        yield ("-kernel", d.os.kernel)
    if d.os.initrd:
        yield ("-initrd", d.os.initrd)
    if d.os.cmdline:
        yield ("-append", d.os.cmdline)
    for kind, path in d.os.acpi_tables:
        yield ("-acpitable", f"sig={kind.upper()},file={esc(path)}")


RTC_TRACK = {"guest": "vm", "wall": "host", "realtime": "rt"}
"""`<timer name='rtc' track=>` -> QEMU's `-rtc clock=`, as libvirt maps it."""


def rtc_base(clock: Clock, now: datetime) -> str:
    """QEMU's `-rtc base=` for `clock` when the VM starts at `now` (aware, the host's zone).

    As libvirt: utc and localtime are QEMU's own words (timezone is localtime with `TZ` set,
    see `environment`); variable is the host's UTC (basis utc) or local time (basis localtime)
    moved by the adjustment; absolute is its start second; both as `YYYY-MM-DDTHH:MM:SS`.
    """
    if clock.offset in ("utc", "localtime"):
        return clock.offset
    if clock.offset == "timezone":
        return "localtime"
    if clock.offset == "absolute":
        then = datetime.fromtimestamp(clock.start or 0, UTC)
    else:
        local = (now.utcoffset() or timedelta()) if clock.basis == "localtime" else timedelta()
        then = now.astimezone(UTC) + local + timedelta(seconds=clock.adjustment or 0)
    return then.strftime("%Y-%m-%dT%H:%M:%S")


def _clock(d: Domain, now: datetime) -> Iterator[Option]:
    """`-rtc` (base, the rtc timer's track and catchup) and the PIT tick policy."""
    rtc = f"base={rtc_base(d.clock, now)}"
    for t in d.clock.timers:
        if t.name == "rtc" and t.track is not None:
            rtc += f",clock={RTC_TRACK[t.track]}"
    if any(t.name == "rtc" and t.tickpolicy == "catchup" for t in d.clock.timers):
        rtc += ",driftfix=slew"
    yield ("-rtc", rtc)
    for t in d.clock.timers:  # catchup: QEMU's in-kernel PIT does it already (libvirt: nothing)
        if d.type == "kvm" and t.name == "pit" and t.tickpolicy in ("delay", "discard"):
            yield ("-global", f"kvm-pit.lost_tick_policy={t.tickpolicy}")


def _lifecycle(d: Domain) -> Iterator[Option]:
    """`-no-reboot` and the panic action, from `<on_reboot>` and `<on_crash>`."""
    if d.on_reboot == "destroy":
        yield ("-no-reboot",)
    yield ("-action", "panic=" + ("pause" if d.on_crash == "preserve" else "shutdown"))


def _pm(d: Domain) -> Iterator[Option]:
    """`<pm>` as the chipset's S3/S4 switches; pci-root's `<target hotplug='off'>` (ACPI)."""
    chip = "ICH9-LPC" if is_q35(d) else "PIIX4_PM"
    for value, prop in ((d.pm.suspend_to_mem, "disable_s3"), (d.pm.suspend_to_disk, "disable_s4")):
        if value is not None:
            yield ("-global", f"{chip}.{prop}={0 if value else 1}")
    root = next((c for c in d.devices.controllers if c.model == "pci-root"), None)
    if root is not None and root.hotplug is not None:
        yield ("-global", f"PIIX4_PM.acpi-root-pci-hotplug={_on(root.hotplug)}")


_USB_MODELS = {
    None: None,
    "piix3-uhci": "piix3-usb-uhci",
    "piix4-uhci": "piix4-usb-uhci",
    "ehci": "usb-ehci",
    "ich9-ehci1": "ich9-usb-ehci1",
    "qemu-xhci": "qemu-xhci",
    "nec-xhci": "nec-usb-xhci",
    "ich9-uhci1": "ich9-usb-uhci1",  # alone; beside an ich9-ehci1 with <master>: a companion
    "ich9-uhci2": "ich9-usb-uhci2",
    "ich9-uhci3": "ich9-usb-uhci3",
    "none": None,
}
USB_MODELS = tuple(m for m in _USB_MODELS if m is not None)
USB_COMPANIONS = {m: str(_USB_MODELS[m]) for m in ("ich9-uhci1", "ich9-uhci2", "ich9-uhci3")}
"""The USB 1.1 companions of an ich9-ehci1 (`<master startport=>`), and QEMU's drivers."""


def companion_function(model: str | None) -> int:
    """The PCI function of companion ich9-uhciN in its EHCI's slot: N-1, as libvirt puts it."""
    return int((model or "1")[-1]) - 1
SCSI_MODELS = {None: "virtio-scsi-pci", "auto": "virtio-scsi-pci", "lsilogic": "lsi",
               "virtio-scsi": "virtio-scsi-pci"}
"""libvirt's SCSI controller models and QEMU's drivers. Without a model qemud has always used
virtio-scsi, and keeps it: libvirt would pick lsilogic, but switching would give the running
guests of older files another disk controller at their next start (a Windows guest has no
LSI driver). `virsh dumpxml` writes the model, so libvirt's files are rendered as libvirt does."""


def has_ccid(d: Domain) -> bool:
    """Whether the guest has a USB smartcard reader: a `<smartcard>`, or a declared ccid one."""
    return bool(d.devices.smartcards) or any(c.type == "ccid" for c in d.devices.controllers)


def _usb_needed(d: Domain) -> bool:
    """Whether a device needs the USB bus: USB inputs and sound, and redirected USB devices."""
    return (any(i.bus == "usb" for i in d.devices.inputs) or bool(d.devices.redirdevs)
            or has_ccid(d) or bool(d.devices.hubs)
            or any(s.model == "usb" for s in d.devices.sounds)
            or any(disk.target_bus == "usb" for disk in d.devices.disks))


def companion_port(controllers: Sequence[Controller], c: Controller) -> int | None:
    """The first port of USB companion `c` on its ich9-ehci1, or None if `c` is no companion.

    A companion has `<master startport=>`; without it, an ich9-uhciN beside an ich9-ehci1 is
    one all the same, on ports (N-1)*2 on, as libvirt assigns them.
    """
    if c.type != "usb" or c.model not in USB_COMPANIONS:
        return None
    if c.master is not None:
        return c.master
    if any(x.type == "usb" and x.model == "ich9-ehci1" for x in controllers):
        return companion_function(c.model) * 2
    return None


def usb_companions(d: Domain) -> list[Controller]:
    """The ich9-uhci companions of USB controller 0 (see `companion_port`), in document order."""
    return [c for c in d.devices.controllers if companion_port(d.devices.controllers, c) is not None]


def usb_mains(controllers: Sequence[Controller]) -> list[Controller]:
    """The USB controllers at index 0 that are no companion (qemud renders the first)."""
    return [c for c in controllers
            if c.type == "usb" and c.index == 0 and companion_port(controllers, c) is None]


def _usb_controller(d: Domain) -> str | None:
    """The USB host controller device to add, or None when the guest has no USB."""
    usb = usb_mains(d.devices.controllers)
    needed = _usb_needed(d)
    if usb:
        models = [c.model for c in usb]
        if "none" in models:
            if needed:
                raise RenderError("USB devices (inputs, redirdev, usb sound) need a USB "
                                  "controller, but it is model='none'")
            return None
        chosen = [_USB_MODELS.get(m) for m in models if _USB_MODELS.get(m)]
        if chosen:
            return chosen[0]
    if not usb and not needed:
        return None
    return "qemu-xhci" if is_q35(d) else "piix3-usb-uhci"


def drive_of(disk: Disk) -> DriveAddress:
    """Where `disk` sits on its controller: its `<address type='drive'>`, else libvirt's default.

    libvirt's defaults from the target dev's index: IDE 2 units on 2 buses per controller,
    SATA 6 ports, SCSI 7 units (one controller more for every 7 disks), floppy 2 units.
    """
    if disk.drive is not None:
        return disk.drive
    idx = disk_index(disk.target_dev)
    if disk.target_bus == "ide":
        return DriveAddress(controller=idx // 4, bus=idx % 4 // 2, unit=idx % 2)
    if disk.target_bus == "sata":
        return DriveAddress(controller=idx // 6, unit=idx % 6)
    if disk.target_bus == "scsi":
        return DriveAddress(controller=idx // 7, unit=idx % 7)
    if disk.target_bus == "fdc":
        return DriveAddress(controller=idx // 2, unit=idx % 2)
    return DriveAddress()


def scsi_controllers(d: Domain) -> list[Controller]:
    """The SCSI controllers: those declared, then one for each index a disk needs.

    As libvirt adds them: of its default model, for each controller index a SCSI disk sits on
    that no `<controller type='scsi'>` declares.
    """
    declared = [c for c in d.devices.controllers if c.type == "scsi"]
    have = {c.index for c in declared}
    used = {drive_of(disk).controller for disk in d.devices.disks if disk.target_bus == "scsi"}
    return declared + [Controller(type="scsi", index=i) for i in sorted(used - have)]


def drive_problems(d: Domain) -> list[tuple[int, str]]:
    """(disk number, sentence) for each drive address QEMU's controllers cannot hold.

    IDE: the chipset's one controller, buses 0-1, units 0-1; SATA: one AHCI, ports 0-5;
    floppy: units 0-1; SCSI: virtio-scsi has one channel, ids 0-255 and LUNs 0-16383, lsi one
    bus of ids 0-7. Two disks at one address are refused too (QEMU would).
    """
    models = {c.index: c.model for c in scsi_controllers(d)}
    out: list[tuple[int, str]] = []
    seen: dict[tuple[str, int, int, int, int], int] = {}
    for i, disk in enumerate(d.devices.disks):
        bus = disk.target_bus
        if bus not in ("ide", "sata", "scsi", "fdc"):
            continue
        a = drive_of(disk)
        where = (f"<address type='drive' controller='{a.controller}' bus='{a.bus}' "
                 f"target='{a.target}' unit='{a.unit}'>" if disk.drive is not None
                 else f"<target dev='{disk.target_dev}'> (controller {a.controller}, unit "
                 f"{a.unit})")
        limits = {"ide": (0, 1, 0, 1), "sata": (0, 0, 0, 5), "fdc": (0, 0, 0, 1)}.get(bus)
        if bus == "scsi":  # QEMU's virtio-scsi: one channel; lsi: ids 0-7 (7 is its last)
            limits = (255, 0, 255, 16383) if SCSI_MODELS[models.get(a.controller)] != "lsi" \
                else (255, 0, 0, 7)
        assert limits is not None
        top_c, top_b, top_t, top_u = limits
        if disk.drive is None:
            pass  # a default address: the target dev name's own check says what is wrong
        elif a.controller > top_c:
            out.append((i, f"{where}: a {bus} disk goes on controller 0 (QEMU's machine has one "
                           f"{bus.upper()} controller); use controller='0'"))
        elif a.bus > top_b or a.target > top_t or a.unit > top_u:
            out.append((i, f"{where}: the {bus} controller has bus 0-{top_b}, target "
                           f"0-{top_t} and unit 0-{top_u}; use an address inside those"))
        key = (bus, a.controller, a.bus, a.target, a.unit)
        if key in seen:
            other = d.devices.disks[seen[key]].target_dev
            out.append((i, f"{where}: disk {other} sits at the same address; give each disk "
                           "its own unit"))
        seen.setdefault(key, i)
    return out


def has_ahci(d: Domain) -> bool:
    """Whether the guest has an AHCI controller: a SATA disk, or a declared one (q35's is built in)."""
    return (any(disk.target_bus == "sata" for disk in d.devices.disks)
            or any(c.type == "sata" for c in d.devices.controllers))


def _scsi_device(c: Controller, at: At) -> str:
    """`-device` of SCSI controller `c`: lsi, or virtio-scsi-pci with its `<driver>` options."""
    driver = SCSI_MODELS[c.model]
    if driver == "lsi":
        return f"lsi{at(f'scsi{c.index}')},id=scsi{c.index}"
    opts = "".join(f",{name}={value}" for name, value in (
        ("num_queues", c.queues), ("cmd_per_lun", c.cmd_per_lun),
        ("max_sectors", c.max_sectors),
        ("ioeventfd", None if c.ioeventfd is None else _on(c.ioeventfd))) if value is not None)
    thread = f",iothread=iothread{c.iothread}" if c.iothread is not None else ""
    return (f"virtio-scsi-pci{virtio_props(c.virtio)}{thread}{at(f'scsi{c.index}')},"
            f"id=scsi{c.index}{opts}")


def without_missing(d: Domain, exists: Callable[[str], bool]) -> tuple[Domain, list[Disk]]:
    """`d` for a start, with its missing optional images left out; and the disks they were.

    Each `startupPolicy='optional'` image that `exists` says is missing is taken out of its
    drive, which is left empty, as libvirt does. Pure given `exists` (the process layer
    passes `os.path.exists`).
    """
    dropped = [disk for disk in d.devices.disks if disk.startup_policy == "optional"
               and disk.source is not None and not exists(disk.source)]
    if not dropped:
        return d, []
    disks = tuple(disk.model_copy(update={"source": None}) if disk in dropped else disk
                  for disk in d.devices.disks)
    return d.model_copy(update={"devices": d.devices.model_copy(update={"disks": disks})}), dropped


def ordered_disks(d: Domain) -> list[Disk]:
    """The disks in libvirt's order, which sorts each bus's disks by target name.

    Each disk goes after the last disk of its bus whose target comes before it (libvirt's
    `virDomainDiskInsertPreAlloced`), so `vdb` written before `vda` still gets the later PCI
    slot, and the guest's /dev/vda is the file's vda.
    """
    out: list[Disk] = []
    for disk in d.devices.disks:
        at = -1
        for i in range(len(out) - 1, -1, -1):
            if out[i].target_bus != disk.target_bus:
                continue
            if disk_index(out[i].target_dev) > disk_index(disk.target_dev):
                at = i
            elif at == -1:
                at = i + 1
        out.insert(len(out) if at == -1 else at, disk)
    return out


def disk_index(dev: str) -> int:
    """Index of a target dev name: hda -> 0, hdb -> 1, vdz -> 25, sdaa -> 26 (libvirt's scheme)."""
    index = 0
    for ch in dev[2:]:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def _disk(d: Domain, disk: Disk, at: At) -> Iterator[Option]:
    """One disk: `-drive if=none,...` for the backend and `-device` for what the guest sees."""
    idx = disk_index(disk.target_dev)
    cd = disk.device == "cdrom"
    bus = disk.target_bus
    a = drive_of(disk)
    if bus == "ide":
        alias = f"ide{a.controller}-{a.bus}-{a.unit}"
        dev = [("ide-cd" if cd else "ide-hd"), f"bus=ide.{a.bus}", f"unit={a.unit}"]
    elif bus == "sata":
        alias = f"sata{a.controller}-{a.bus}-{a.unit}"
        dev = [("ide-cd" if cd else "ide-hd"), f"bus={'ide' if is_q35(d) else 'sata0'}.{a.unit}"]
    elif bus == "scsi":
        c = a.controller
        model = next((x.model for x in scsi_controllers(d) if x.index == c), None)
        if SCSI_MODELS[model] == "lsi":  # libvirt: one bus, the unit is the SCSI id
            alias = f"scsi{c}-{a.bus}-{a.unit}"
            dev = [("scsi-cd" if cd else "scsi-hd"), f"bus=scsi{c}.{a.bus}", f"scsi-id={a.unit}"]
        else:
            alias = f"scsi{c}-{a.bus}-{a.target}-{a.unit}"
            dev = [("scsi-cd" if cd else "scsi-hd"), f"bus=scsi{c}.0", f"channel={a.bus}",
                   f"scsi-id={a.target}", f"lun={a.unit}"]
    elif bus == "usb":  # libvirt 9.0's disk-usb-device
        alias = f"usb-disk{idx}"
        port = usb_ports(d).get(alias)
        dev = ["usb-storage", "bus=usb.0", *([f"port={port}"] if port else [])]
    elif bus == "virtio":
        alias = f"virtio-disk{idx}"
        thread = f",iothread=iothread{disk.iothread}" if disk.iothread is not None else ""
        dev = ["virtio-blk-pci" + virtio_props(disk.virtio) + thread + at(alias)]
    else:
        alias = f"fdc0-0-{a.unit}"
        dev = ["floppy", f"unit={a.unit}"]
    drive = [f"file={esc(disk.source)}"] if disk.source is not None else []
    if disk.source is not None:
        drive.append(f"format={disk.driver_type or 'raw'}")
    drive += ["if=none", f"id=drive-{alias}"]
    if disk.readonly or cd:
        drive.append("readonly=on")
    if disk.source is not None:  # QEMU refuses these on an empty drive (no driver or file)
        if disk.cache not in (None, "default"):
            drive.append(f"cache={disk.cache}")
        if disk.io is not None:
            drive.append(f"aio={disk.io}")
        if disk.discard is not None:
            drive.append(f"discard={disk.discard}")
        if disk.detect_zeroes is not None:
            drive.append(f"detect-zeroes={disk.detect_zeroes}")
        if disk.iotune is not None:
            drive += _throttling(disk.iotune)
    yield ("-drive", ",".join(drive))
    dev += [f"drive=drive-{alias}", f"id={alias}"]
    if disk.boot_order is not None and bus == "fdc":  # QEMU's floppy has no bootindex; the fdc has
        yield ("-global", f"isa-fdc.bootindex{'AB'[a.unit]}={disk.boot_order}")
    elif disk.boot_order is not None:
        dev.append(f"bootindex={disk.boot_order}")
    if disk.serial is not None and bus != "fdc":
        dev.append(f"serial={esc(disk.serial)}")
    if disk.wwn is not None and (not cd or bus == "scsi"):  # libvirt: scsi-cd takes one too
        wwn = disk.wwn.lower().removeprefix("0x")
        dev.append(f"wwn=0x{wwn}")
    if disk.shareable:
        dev.append("share-rw=on")
    if disk.rotation_rate is not None:
        dev.append(f"rotation_rate={disk.rotation_rate}")
    if bus == "usb":
        dev.append(f"removable={_on(bool(disk.removable))}")
    yield ("-device", ",".join(dev))


_THROTTLING = (("total_bytes_sec", "bps-total"), ("read_bytes_sec", "bps-read"),
               ("write_bytes_sec", "bps-write"), ("total_iops_sec", "iops-total"),
               ("read_iops_sec", "iops-read"), ("write_iops_sec", "iops-write"))
"""libvirt's `<iotune>` rates and QEMU's `-drive throttling.` names, in libvirt's order."""


def _throttling(tune: IoTune) -> list[str]:
    """`throttling.*` options of `-drive` for `<iotune>`; unset (0) values are left out.

    In libvirt's order: rates, burst rates, the operation size, the group, burst lengths.
    """
    v = tune.limits()
    out = [f"throttling.{q}={v[k]}" for k, q in _THROTTLING if k in v]
    out += [f"throttling.{q}-max={v[k + '_max']}" for k, q in _THROTTLING if k + "_max" in v]
    if "size_iops_sec" in v:
        out.append(f"throttling.iops-size={v['size_iops_sec']}")
    if tune.group_name is not None:
        out.append(f"throttling.group={esc(tune.group_name)}")
    out += [f"throttling.{q}-max-length={v[k + '_max_length']}" for k, q in _THROTTLING
            if k + "_max_length" in v]
    return out


_NIC_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e",
                "rtl8139": "rtl8139", "ne2k_pci": "ne2k_pci", "pcnet": "pcnet",
                "vmxnet3": "vmxnet3"}


def bridge_of(nic: Interface) -> str:
    """The host bridge a NIC joins: its bridge, or its network's (resolved or guessed).

    A network's bridge is resolved from libvirt's definition at parse time; unresolved (see
    `model.parse.HostFacts`) it is virbr0 for 'default', else the network's name.
    """
    if nic.type == "network":
        if nic.bridge is not None:
            return nic.bridge
        if nic.source == "default":
            return "virbr0"
    return nic.source or "virbr0"


def virtio_props(o: VirtioOptions) -> str:
    """`,iommu_platform=on,ats=on,packed=on` for the options set, in libvirt's order."""
    pairs = (("iommu_platform", o.iommu), ("ats", o.ats), ("packed", o.packed))
    return "".join(f",{k}={_on(v)}" for k, v in pairs if v is not None)


def _netdev(nic: Interface, net: str) -> str:
    """The `-netdev` value of one NIC, as libvirt 9.0 writes it (ids and key order)."""
    if nic.type == "user":
        parts = ["user"]
        if nic.user_ipv4 is not None:
            parts.append(f"net={nic.user_ipv4}")
        if nic.user_ipv6 is not None:
            prefix, _, length = nic.user_ipv6.partition("/")
            parts += [f"ipv6-prefix={prefix}", f"ipv6-prefixlen={length}"]
        return ",".join([*parts, f"id={net}"])
    if nic.type in ("bridge", "network"):
        return f"bridge,id={net},br={bridge_of(nic)}"
    if nic.type == "ethernet":
        # libvirt creates the tap and runs the script itself, then passes an fd; qemud has
        # QEMU do both (script= runs with the tap's name, as libvirt runs it)
        parts = ["tap", f"id={net}"]
        if nic.target_dev is not None:
            parts.append(f"ifname={esc(nic.target_dev)}")
        parts.append(f"script={esc(nic.script) if nic.script else 'no'}")
        parts.append(f"downscript={esc(nic.downscript) if nic.downscript else 'no'}")
        if nic.driver.name == "vhost":
            parts.append("vhost=on")
        if (nic.driver.queues or 1) > 1:
            parts.append(f"queues={nic.driver.queues}")
        return ",".join(parts)
    where = f"{nic.socket_address or ''}:{nic.socket_port}"
    key = {"server": "listen", "client": "connect", "mcast": "mcast", "udp": "udp"}[nic.type]
    local = (f",localaddr={nic.local_address}:{nic.local_port}" if nic.type == "udp" else "")
    return f"socket,{key}={where}{local},id={net}"


_TXMODE = {"iothread": "bh", "timer": "timer"}
_HOST_PROPS = {"csum": "csum", "gso": "gso", "tso4": "host_tso4", "tso6": "host_tso6",
               "ecn": "host_ecn", "ufo": "host_ufo", "mrg_rxbuf": "mrg_rxbuf"}


def _nic_driver_props(nic: Interface) -> str:
    """virtio-net-pci properties of `<driver>`, in libvirt's order (before netdev=)."""
    drv = nic.driver
    out: list[str] = []
    if drv.txmode is not None:
        out.append(f"tx={_TXMODE[drv.txmode]}")
    for key, flag in (("ioeventfd", drv.ioeventfd), ("event_idx", drv.event_idx)):
        if flag is not None:
            out.append(f"{key}={_on(flag)}")
    out += [f"{_HOST_PROPS[n]}={_on(v)}" for n, v in drv.host]
    out += [f"guest_{n}={_on(v)}" for n, v in drv.guest]
    if (drv.queues or 1) > 1:
        out += ["mq=on", f"vectors={2 * (drv.queues or 1) + 2}"]
    if drv.rx_queue_size is not None:
        out.append(f"rx_queue_size={drv.rx_queue_size}")
    if drv.tx_queue_size is not None:
        out.append(f"tx_queue_size={drv.tx_queue_size}")
    if drv.rss is not None:
        out.append(f"rss={_on(drv.rss)}")
    if drv.rss_hash_report is not None:
        out.append(f"hash={_on(drv.rss_hash_report)}")
    return "".join(f",{p}" for p in out)


def _nics(d: Domain, at: At) -> Iterator[Option]:
    """`-netdev` + `-device` for each `<interface>`, with a stable MAC when none is given."""
    for i, nic in enumerate(d.devices.interfaces):
        net = f"hostnet{i}"
        yield ("-netdev", _netdev(nic, net))
        dev = [_NIC_DEVICES[nic.model] + virtio_props(nic.virtio) + _nic_driver_props(nic)
               + at(f"net{i}"), f"netdev={net}", f"id=net{i}",
               f"mac={nic.mac or mac_for(d.uuid, i)}"]
        if nic.rom_enabled is False:
            dev.append("romfile=")
        elif nic.rom_file is not None:
            dev.append(f"romfile={esc(nic.rom_file)}")
        if nic.rom_bar is not None and nic.rom_enabled is not False:
            dev.append(f"rombar={int(nic.rom_bar)}")
        if nic.boot_order is not None:
            dev.append(f"bootindex={nic.boot_order}")
        yield ("-device", ",".join(dev))


def chardev_backend(src: CharSource, cid: str, parallel: bool = False) -> list[str]:
    """The `-chardev` value of a character device's host side, as libvirt 9.0 writes it.

    tcp is `socket,host=,port=` (`telnet=on`, `server=on,wait=off` when bound, `reconnect=`),
    udp `udp,host=,port=,localaddr=,localport=` (empty when not given, as libvirt has it), a
    host device `serial` (or `parallel` for a parallel port), a file `file[,append=on]`.
    """
    if src.type == "pty":
        return ["pty", f"id={cid}"]
    if src.type == "file":
        append = [f"append={_on(src.append)}"] if src.append is not None else []
        return ["file", f"id={cid}", f"path={esc(src.path or '')}", *append]
    if src.type == "dev":
        return ["parallel" if parallel else "serial", f"id={cid}", f"path={esc(src.path or '')}"]
    if src.type == "pipe":
        return ["pipe", f"id={cid}", f"path={esc(src.path or '')}"]
    if src.type == "spiceport":
        return ["spiceport", f"id={cid}", f"name={src.spice_channel}"]
    if src.type == "udp":
        return ["udp", f"id={cid}", f"host={src.host or ''}", f"port={src.service}",
                f"localaddr={src.bind_host or ''}", f"localport={src.bind_service or 0}"]
    if src.type in ("unix", "tcp"):
        where = ([f"path={esc(src.path or '')}"] if src.type == "unix" else
                 [*([f"host={src.host}"] if src.host else []), f"port={src.service}"])
        parts = ["socket", f"id={cid}", *where]
        if src.telnet:
            parts.append("telnet=on")
        parts.append("server=on,wait=off" if src.mode == "bind" else
                     "server=off" if src.type == "unix" else "")
        if src.reconnect is not None:
            parts.append(f"reconnect={src.reconnect}")
        return [p for p in parts if p]
    return ["null", f"id={cid}"]


def _chardev(port: Serial, cid: str, runtime: Runtime | None) -> str:
    """The `-chardev` backend of one serial port, logging it to a file (not a file or null one)."""
    parts = chardev_backend(port, cid)
    log: str | Path | None = port.log
    append = port.log_append
    if log is None and runtime is not None and port.type not in ("file", "null"):
        log, append = runtime.serial_log(port.port), True
    if log is not None:
        parts += [f"logfile={esc(log)}", f"logappend={'on' if append else 'off'}"]
    return ",".join(parts)


def _serials(d: Domain, runtime: Runtime | None) -> Iterator[Option]:
    """`-chardev` + `-device isa-serial` (or isa-debugcon) for each serial port."""
    for port in d.devices.serials:
        cid = f"charserial{port.port}"
        yield ("-chardev", _chardev(port, cid, runtime))
        if port.target_type == "isa-debug":
            yield ("-device", f"isa-debugcon,chardev={cid},id=serial{port.port},"
                   f"iobase={port.iobase if port.iobase is not None else 0x402}")
            continue
        isa = "".join(f",{k}={v}" for k, v in (("iobase", port.iobase), ("irq", port.irq))
                      if v is not None)
        yield ("-device", f"isa-serial,chardev={cid},id=serial{port.port},index={port.port}{isa}")


def _consoles(d: Domain) -> Iterator[Option]:
    """`-chardev` + `-device virtconsole` for each virtio `<console>`, with libvirt's ids.

    libvirt's console 0 stands for serial port 0 when the domain has one, so the virtio
    consoles are numbered after it. They take ports 0, 1... of virtio-serial controller 0.
    """
    first = 1 if d.devices.serials else 0
    for i, con in enumerate(d.devices.consoles, start=first):
        cid = f"charconsole{i}"
        yield ("-chardev", ",".join(chardev_backend(con, cid)))
        # libvirt leaves bus and nr to QEMU, which may put a console on another controller
        # than the channels expect; qemud names the place QEMU gives it with one controller
        yield ("-device", f"virtconsole,chardev={cid},id=console{i},bus=virtio-serial0.0,"
               f"nr={i - first}")


def _parallels(d: Domain) -> Iterator[Option]:
    """`-chardev` + `-device isa-parallel` for each `<parallel>`."""
    for i, par in enumerate(d.devices.parallels):
        cid = f"charparallel{i}"
        yield ("-chardev", ",".join(chardev_backend(par, cid, parallel=True)))
        yield ("-device", f"isa-parallel,chardev={cid},id=parallel{i}")


def channel_path(channel: Channel, runtime: Runtime | None, index: int = 0) -> Path:
    """Where a unix channel's socket is: its `<source path>`, else `<name>` in the runtime folder.

    The guest agent's socket of a running VM is `runtime.folder / 'org.qemu.guest_agent.0'`;
    a nameless channel's is `channel<index>.sock`. Without a runtime (`reconcile argv`) the path
    is shown relative.
    """
    if channel.path is not None:
        return Path(channel.path)
    name = channel.name or f"channel{index}.sock"
    return runtime.folder / name if runtime is not None else Path(name)


VIRTIO_SERIAL_PORTS = 31
"""QEMU's default `max_ports` of a virtio-serial controller (port 0 is the console's)."""


def virtio_serial_controllers(d: Domain) -> list[Controller]:
    """The virtio-serial controllers: those declared, plus those channels and consoles need.

    As libvirt, a controller is added (with the next index) when the channels without an
    address do not fit on the existing ones.
    """
    declared = [c for c in d.devices.controllers if c.type == "virtio-serial"]
    indexes = {c.index for c in declared}
    needed = {controller for controller, _ in channel_placement(d)}
    if d.devices.consoles:
        needed.add(0)  # virtconsoles go on the first virtio-serial controller, as libvirt's
    return declared + [Controller(type="virtio-serial", index=i) for i in sorted(needed - indexes)]


def channel_placement(d: Domain) -> list[tuple[int, int]]:
    """(controller, port `nr`) of each channel: as given, else the next free one, as libvirt.

    A controller has ports 1 to `ports`-1 (31 by default; 0 is the console's): a channel
    without an address that does not fit on controller 0 goes to the next controller with a free
    port, one being added when none has. Virtio consoles take ports 1.. of controller 0 after
    the first (QEMU numbers them before the channels).
    """
    limits = {c.index: (c.ports or VIRTIO_SERIAL_PORTS)
              for c in d.devices.controllers if c.type == "virtio-serial"}
    used: dict[int, set[int]] = {0: set(range(1, len(d.devices.consoles)))}
    for ch in d.devices.channels:
        if ch.port is not None:
            taken = used.setdefault(ch.controller, set())
            if ch.port in taken:
                raise RenderError(f"two channels use port {ch.port} of virtio-serial controller "
                                  f"{ch.controller}")
            if ch.port >= limits.get(ch.controller, VIRTIO_SERIAL_PORTS):
                raise RenderError(f"port {ch.port} is beyond the {limits[ch.controller]} ports "
                                  f"of virtio-serial controller {ch.controller} (ports=)")
            taken.add(ch.port)
    out = []
    for ch in d.devices.channels:
        if ch.port is not None:
            out.append((ch.controller, ch.port))
            continue
        controller = ch.controller
        while True:
            limit = limits.get(controller, VIRTIO_SERIAL_PORTS)
            taken = used.setdefault(controller, set())
            free = [n for n in range(1, limit) if n not in taken]
            if free:
                break
            controller = next(i for i in range(controller + 1, 256)
                              if i not in limits or len(used.get(i, set())) < limits[i] - 1)
        taken.add(free[0])
        out.append((controller, free[0]))
    return out


def _channels(d: Domain, runtime: Runtime | None) -> Iterator[Option]:
    """`-chardev` + `-device virtserialport` for each `<channel>`."""
    for i, (ch, (controller, nr)) in enumerate(zip(d.devices.channels, channel_placement(d),
                                                    strict=True)):
        cid = f"charchannel{i}"
        if ch.type == "unix":
            server = "server=on,wait=off" if ch.mode == "bind" else "server=off"
            again = f",reconnect={ch.reconnect}" if ch.reconnect is not None else ""
            yield ("-chardev", f"socket,id={cid},path={esc(channel_path(ch, runtime, i))},{server}"
                   f"{again}")
        elif ch.type == "spicevmc":
            yield ("-chardev", f"spicevmc,id={cid},name=vdagent")
        elif ch.type == "qemu-vdagent":
            opts = "".join(f",{k}={_on(v)}" for k, v in (
                ("clipboard", ch.vdagent_clipboard),
                ("mouse", None if ch.vdagent_mouse is None else ch.vdagent_mouse == "client"))
                if v is not None)
            yield ("-chardev", f"qemu-vdagent,id={cid},name=vdagent{opts}")
        elif ch.source is not None:
            yield ("-chardev", ",".join(chardev_backend(ch.source, cid)))
        else:
            yield ("-chardev", f"pty,id={cid}")
        name = ch.name or ("com.redhat.spice.0" if ch.type in ("spicevmc", "qemu-vdagent")
                           else None)
        yield ("-device", f"virtserialport,bus=virtio-serial{controller}.0,nr={nr},"
               f"chardev={cid},id=channel{i}" + (f",name={esc(name)}" if name else ""))


def _secret(sid: str, value: str) -> Option:
    """A `-object secret` holding a password (QEMU reads it from here, not from -vnc/-spice)."""
    return ("-object", f"secret,id={sid},data={esc(value)},format=raw")


def _local_display(shown: Display) -> str:
    """`-display egl-headless|dbus,...` as libvirt writes it."""
    parts: list[str] = [shown.type]
    if shown.type == "dbus":
        parts.append(f"addr={esc(shown.address)}" if shown.address is not None else "p2p=on")
        if shown.gl is not None:
            parts.append(f"gl={_on(shown.gl)}")
    if shown.rendernode is not None:
        parts.append(f"rendernode={shown.rendernode}")
    if shown.audio is not None:
        parts.append(f"audiodev=audio{shown.audio}")
    return ",".join(parts)


def _display(d: Domain, runtime: Runtime | None) -> Iterator[Option]:
    """`-vnc`/`-spice` for the graphics, `-display` for QEMU's own (egl-headless, dbus), or none."""
    for shown in d.devices.displays:
        yield ("-display", _local_display(shown))
    if not d.devices.graphics:
        if not d.devices.displays:
            yield ("-display", "none")
        return
    for g in d.devices.graphics:
        host = f"[{g.listen}]" if ":" in g.listen else g.listen
        sock = (Path(g.socket) if g.socket is not None
                else (runtime.folder if runtime is not None else Path()) / f"{g.type}.sock")
        if g.type == "vnc":
            if g.listen_type == "none":
                vnc = "none"
            elif g.listen_type == "socket":
                vnc = f"vnc=unix:{esc(sock)}"
            elif g.port is None:
                vnc = f"{host}:0,to=99"
            else:
                vnc = f"{host}:{g.port - 5900}"
            if g.share_policy is not None:
                vnc += f",share={g.share_policy}"
            if g.passwd is not None:
                yield _secret("vnc-secret", g.passwd)
                vnc += ",password-secret=vnc-secret"
            if g.audio is not None:
                vnc += f",audiodev=audio{g.audio}"
            yield ("-vnc", vnc)
            continue
        if g.listen_type == "none":  # libvirt's graphics-spice with <listen type='none'>
            parts = ["port=0"]
        elif g.listen_type == "socket" or g.port is None:
            # QEMU has no automatic spice port: a socket (in the runtime folder by default)
            parts = ["unix=on", f"addr={esc(sock)}"]
        else:
            parts = [f"port={g.port}", f"addr={g.listen}"]
        if g.tls_port is not None:
            parts.insert(1, f"tls-port={g.tls_port}")
            if parts[0] == "port=0":
                parts.insert(2, f"addr={g.listen}")
        if g.passwd is not None:
            yield _secret("spice-secret", g.passwd)
            parts.append("password-secret=spice-secret")
        else:
            parts.append("disable-ticketing=on")
        if g.image_compression is not None:
            parts.append(f"image-compression={g.image_compression}")
        if g.jpeg_compression is not None:
            parts.append(f"jpeg-wan-compression={g.jpeg_compression}")
        if g.zlib_compression is not None:
            parts.append(f"zlib-glz-wan-compression={g.zlib_compression}")
        if g.playback_compression is not None:
            parts.append(f"playback-compression={_on(g.playback_compression)}")
        if g.streaming is not None:
            parts.append(f"streaming-video={g.streaming}")
        if g.mouse is not None:
            parts.append(f"agent-mouse={_on(g.mouse == 'client')}")
        if g.clipboard is False:
            parts.append("disable-copy-paste=on")
        if g.tls_port is not None:
            parts.append(f"x509-dir={SPICE_X509_DIR}")
        mode_of = {"secure": "tls-channel", "insecure": "plaintext-channel"}
        if g.default_mode in mode_of:
            parts.append(f"{mode_of[g.default_mode]}=default")
        parts += [f"{mode_of[mode]}={name}" for name, mode in g.channels if mode in mode_of]
        if g.filetransfer is False:
            parts.append("disable-agent-file-xfer=on")
        if g.gl is not None:
            parts.append(f"gl={_on(g.gl)}")
        if g.rendernode is not None:
            parts.append(f"rendernode={esc(g.rendernode)}")
        parts.append("seamless-migration=on")
        yield ("-spice", ",".join(parts))


def has_spice(d: Domain) -> bool:
    """Whether the domain has spice graphics (spicevmc channels, redirdev and spice audio need it)."""
    return any(g.type == "spice" for g in d.devices.graphics)


_VIDEO = {"vga": ("VGA", "secondary-vga"), "cirrus": ("cirrus-vga", None),
          "qxl": ("qxl-vga", "qxl"), "virtio": ("virtio-vga", "virtio-gpu-pci"),
          "bochs": ("bochs-display", "bochs-display"), "ramfb": ("ramfb", "ramfb")}


def shown_videos(d: Domain) -> list[Video]:
    """The video adapters QEMU gets: none for model='none', the default one for bare graphics."""
    shown = [v for v in d.devices.videos if v.model != "none"]
    if not d.devices.videos and d.devices.graphics:
        # like libvirt, graphics without any <video> get the default adapter, not a blank screen
        shown = [Video()]
    return shown


QXL_RAM_KIB = 65536
"""libvirt's default qxl `ram` and `vram` (KiB) when the file gives none."""
QXL_VGAMEM_KIB = 16384
"""libvirt's default qxl `vgamem` (KiB)."""


def _videos(d: Domain, at: At) -> Iterator[Option]:
    """`-device` for each video adapter; the first one is the primary VGA."""
    shown = shown_videos(d)
    if sum(v.model == "ramfb" for v in shown) > 1:  # QEMU: duplicate fw_cfg file name
        raise RenderError("video model 'ramfb' can be used only once")
    for i, video in enumerate(shown):
        primary, secondary = _VIDEO[video.model]
        device = primary if i == 0 else secondary
        if device is None:
            raise RenderError(f"video model {video.model!r} can only be the first video device")
        parts = [device + ("" if video.model == "ramfb" else at(f"video{i}")), f"id=video{i}"]
        if video.model in ("qxl", "virtio"):  # libvirt's heads default to 1 (QEMU's qxl: 0)
            parts.append(f"max_outputs={video.heads or 1}")
        if video.model == "qxl":  # libvirt's sizes are KiB; QEMU's ram_size/vram_size are bytes
            # libvirt 9.0 always gives qxl its sizes, defaulting to 64 MiB, 64 MiB, 0 and 16 MiB
            parts.append(f"ram_size={(video.ram or QXL_RAM_KIB) * 1024}")
            parts.append(f"vram_size={(video.vram or QXL_RAM_KIB) * 1024}")
            parts.append("vram64_size_mb=0")
            parts.append(f"vgamem_mb={(video.vgamem or QXL_VGAMEM_KIB) // 1024}")
        elif video.model in ("vga", "bochs") and video.vram is not None:
            parts.append(f"vgamem_mb={video.vram // 1024}")
        if video.resolution is not None:
            parts += [f"xres={video.resolution[0]}", f"yres={video.resolution[1]}"]
        yield ("-device", ",".join(parts))


_INPUT = {("tablet", "usb"): "usb-tablet", ("mouse", "usb"): "usb-mouse",
          ("keyboard", "usb"): "usb-kbd", ("tablet", "virtio"): "virtio-tablet-pci",
          ("mouse", "virtio"): "virtio-mouse-pci", ("keyboard", "virtio"): "virtio-keyboard-pci",
          ("passthrough", "virtio"): "virtio-input-host-pci"}

USB_PORTS = {"piix3-usb-uhci": 2, "piix4-usb-uhci": 2, "usb-ehci": 6, "ich9-usb-ehci1": 6,
             "qemu-xhci": 4, "nec-usb-xhci": 4}
"""Top-level ports of each USB host controller (xhci: USB 2 and as many USB 3, `ports=` sets)."""


def usb_ports(d: Domain) -> dict[str, str]:
    """The USB port of each USB device (usb-disk<i>, input<i>, sound<i>, redir<i>): given or not.

    libvirt numbers the free top-level ports from 1: disks, inputs, sound, then redirdevs.
    When they do not fit on the controller's ports, those without an address get none (QEMU then
    chains a usb-hub by itself, where libvirt would declare one).
    """
    wanted: list[tuple[str, str | None]] = [(f"hub{i}", h.usb_port)
                                            for i, h in enumerate(d.devices.hubs)]
    wanted += [(f"usb-disk{disk_index(disk.target_dev)}", None) for disk in ordered_disks(d)
               if disk.target_bus == "usb"]
    wanted += [("ccid0", None)] if has_ccid(d) else []
    wanted += [(f"input{i}", inp.usb_port) for i, inp in enumerate(d.devices.inputs)
               if inp.bus == "usb"]
    wanted += [(f"sound{i}", None) for i, s in enumerate(d.devices.sounds) if s.model == "usb"]
    wanted += [(f"redir{i}", r.usb_port) for i, r in enumerate(d.devices.redirdevs)]
    out: dict[str, str] = {}
    for key, port in wanted:
        if port is not None:
            if port in out.values():
                raise RenderError(f"two USB devices use <address type='usb' port='{port}'>")
            out[key] = port
    controller = _usb_controller(d)
    top = USB_PORTS.get(controller or "", 2)
    given = [c.ports for c in d.devices.controllers if c.type == "usb" and c.index == 0
             and c.ports is not None]
    if controller is not None and "xhci" in controller:  # as many USB 3 ports as USB 2 ones
        top = 2 * (given[0] if given else top)
    hub_keys = [f"hub{i}" for i in range(len(d.devices.hubs))]
    for key in hub_keys:  # hubs first, on root ports (or given): devices may then go below them
        if key not in out:
            free = [str(n) for n in range(1, top + 1) if str(n) not in out.values()]
            if free:
                out[key] = free[0]
    hubs = sorted((out[k] for k in hub_keys if k in out), key=lambda p: [int(x) for x in
                                                                        p.split(".")])
    for key, port in out.items():
        parent = port.rpartition(".")[0]
        if parent and parent not in hubs:
            raise RenderError(f"USB port {port} ({key}) is on port {parent}, where no <hub> is; "
                              f"add <hub type='usb'><address type='usb' bus='0' port='{parent}'/>"
                              "</hub> or use a root port")
    auto = [key for key, port in wanted if port is None and key not in out]
    free = [str(n) for n in range(1, top + 1) if str(n) not in out.values()]
    free += [f"{hub}.{n}" for hub in hubs for n in range(1, HUB_PORTS + 1)
             if f"{hub}.{n}" not in out.values()]
    if len(auto) <= len(free):
        out.update(zip(auto, free, strict=False))
    return out


HUB_PORTS = 8
"""Ports of QEMU's usb-hub."""


_SECURITY_MODEL = {"passthrough": "passthrough", "mapped": "mapped", "squash": "none"}


def _shares_9p(d: Domain, at: At) -> Iterator[Option]:
    """`-fsdev local` + `-device virtio-9p-pci` for each 9p share, as libvirt renders them."""
    for i, share in enumerate(d.devices.shares_9p, start=len(d.devices.filesystems)):
        fid = f"fs{i}"
        parts = ["local", f"security_model={_SECURITY_MODEL[share.accessmode]}"]
        if share.writeout is not None:
            parts.append(f"writeout={share.writeout}")
        if share.multidevs is not None:
            parts.append(f"multidevs={share.multidevs}")
        if share.fmode is not None:
            parts.append(f"fmode={share.fmode:04o}")
        if share.dmode is not None:
            parts.append(f"dmode={share.dmode:04o}")
        parts += [f"id=fsdev-{fid}", f"path={esc(share.source_dir)}"]
        if share.readonly:
            parts.append("readonly=on")
        yield ("-fsdev", ",".join(parts))
        yield ("-device", f"virtio-9p-pci,id={fid},fsdev=fsdev-{fid},"
                          f"mount_tag={esc(share.target_dir)}{at(fid)}")


def _hubs(d: Domain, ports: dict[str, str]) -> Iterator[Option]:
    """`-device usb-hub` for each `<hub>`, on its port."""
    for i, _ in enumerate(d.devices.hubs):
        port = f",port={ports[f'hub{i}']}" if f"hub{i}" in ports else ""
        yield ("-device", f"usb-hub,id=hub{i},bus=usb.0{port}")


def _inputs(d: Domain, ports: dict[str, str], at: At) -> Iterator[Option]:
    """`-device` for USB and virtio input devices (PS/2 mouse and keyboard are built in)."""
    for i, inp in enumerate(d.devices.inputs):
        if inp.type == "evdev":
            yield ("-object", _input_linux(inp, f"input{i}"))
            continue
        device = _INPUT.get((inp.type, inp.bus))
        if device is None:
            continue
        if inp.type == "passthrough":  # libvirt's order: id, evdev, then bus/addr
            yield ("-device", f"{device}{virtio_props(inp.virtio)},id=input{i},"
                   f"evdev={esc(inp.evdev or '')}{at(f'input{i}')}")
            continue
        port = ports.get(f"input{i}")
        where = ",bus=usb.0" + (f",port={port}" if port else "") if inp.bus == "usb" else ""
        yield ("-device", f"{device}{virtio_props(inp.virtio)}"
               f"{at(f'input{i}') if inp.bus == 'virtio' else ''},"
               f"id=input{i}{where}")


def _input_linux(inp: Input, oid: str) -> str:
    """`-object input-linux` for an `<input type='evdev'>`, with libvirt's properties."""
    parts = ["input-linux", f"id={oid}", f"evdev={esc(inp.evdev or '')}"]
    if inp.repeat is not None:
        parts.append(f"repeat={_on(inp.repeat)}")
    if inp.grab == "all":
        parts.append("grab_all=on")
    if inp.grab_toggle is not None:
        parts.append(f"grab-toggle={inp.grab_toggle}")
    return ",".join(parts)


def audio_ids(d: Domain) -> dict[int, str]:
    """The audiodevs: each `<audio>`, else libvirt's default when sound needs one.

    The default is id 1: 'spice' with spice graphics, else 'none'.
    """
    out: dict[int, str] = {a.id: a.type for a in d.devices.audios}
    if not out and d.devices.sounds:
        out[1] = "spice" if has_spice(d) else "none"
    return out


def _kebab(name: str) -> str:
    """Turn libvirt's camelCase audio names into QEMU's keys: timerPeriod -> timer-period."""
    return re.sub(r"(?<=[a-z])([A-Z]+)", lambda m: "-" + m.group(1).lower(), name)


_VERBATIM = frozenset({"path", "serverName", "name", "streamName", "clientName", "connectPorts"})
"""Audio settings whose values are names, passed on as written (no yes/no -> on/off)."""


def _audiodev(aid: int, kind: str, settings: tuple[tuple[str, str], ...]) -> str:
    """`-audiodev driver,id=audioN,...` with libvirt's tuning (`in.`/`out.` for directions).

    `file` is QEMU's `wav` driver and `pulseaudio` its `pa`; yes/no become on/off; the
    server of pulseaudio is `server` (jack's, per direction, `server-name`).
    """
    parts = [{"file": "wav", "pulseaudio": "pa"}.get(kind, kind), f"id=audio{aid}"]
    for where, value in settings:
        direction, _, name = where.rpartition("/")
        prefix = {"input": "in.", "output": "out."}.get(direction.split("/")[0], "")
        text = value if name in _VERBATIM else {"yes": "on", "no": "off"}.get(value, value)
        key = "server" if (kind, where) == ("pulseaudio", "serverName") else _kebab(name)
        parts.append(f"{prefix}{key}={esc(text)}")
    return ",".join(parts)


_SOUND = {"ich9": "ich9-intel-hda", "ich6": "intel-hda", "ac97": "AC97", "usb": "usb-audio",
          "es1370": "ES1370", "sb16": "sb16"}
"""QEMU's device of each `<sound model>` (pcspk is the machine's `pcspk-audiodev`)."""
PCI_SOUND = ("ich9", "ich6", "ac97", "es1370")
"""The sound models on the PCI bus."""


def sound_audiodev(d: Domain, index: int) -> int:
    """The audiodev id of sound card `index`: its `<audio id=>`, else the first backend."""
    snd = d.devices.sounds[index]
    audios = audio_ids(d)
    aid = snd.audio if snd.audio is not None else min(audios)
    if aid not in audios:
        raise RenderError(f"<sound> names <audio id='{aid}'>, which does not exist")
    return aid


def _sounds(d: Domain, ports: dict[str, str], at: At) -> Iterator[Option]:
    """`-audiodev` for each backend, then the sound cards (HD Audio with their codecs)."""
    audios = audio_ids(d)
    tuning = {a.id: a.settings for a in d.devices.audios}
    for aid, kind in audios.items():
        yield ("-audiodev", _audiodev(aid, kind, tuning.get(aid, ())))
    for i, snd in enumerate(d.devices.sounds):
        aid = sound_audiodev(d, i)
        sid = f"sound{i}"
        if snd.model == "pcspk":
            continue  # the machine's own speaker: -machine pcspk-audiodev
        if snd.model == "usb":
            port = f",port={ports[sid]}" if sid in ports else ""
            yield ("-device", f"usb-audio,id={sid},audiodev=audio{aid},bus=usb.0{port}")
        elif snd.model in ("ac97", "es1370", "sb16"):
            where = at(sid) if snd.model in PCI_SOUND else ""  # sb16 sits on the ISA bus
            yield ("-device", f"{_SOUND[snd.model]}{where},id={sid},audiodev=audio{aid}")
        else:
            yield ("-device", f"{_SOUND[snd.model]}{at(sid)},id={sid}")
            for j, codec in enumerate(snd.codecs or ("duplex",)):
                yield ("-device", f"hda-{codec},id={sid}-codec{j},bus={sid}.0,cad={j},"
                       f"audiodev=audio{aid}")


def _redirdevs(d: Domain, ports: dict[str, str]) -> Iterator[Option]:
    """`-chardev` (spicevmc, or the usbredir peer's) + `-device usb-redir` per `<redirdev>`."""
    for i, r in enumerate(d.devices.redirdevs):
        cid = f"charredir{i}"
        chardev = (f"spicevmc,id={cid},name=usbredir" if r.source is None
                   else ",".join(chardev_backend(r.source, cid)))
        yield ("-chardev", chardev)
        boot = f",bootindex={r.boot_order}" if r.boot_order is not None else ""
        port = f",port={ports[f'redir{i}']}" if f"redir{i}" in ports else ""
        rules = _usb_filter(d)
        yield ("-device", f"usb-redir,chardev={cid},id=redir{i}{rules}{boot},bus=usb.0{port}")


def _usb_filter(d: Domain) -> str:
    """`,filter=class:vendor:product:version:allow|...` of `<redirfilter>`, as libvirt writes it."""
    if not d.devices.redirfilter:
        return ""
    def hexed(value: int | None, width: int) -> str:
        """A rule's number in libvirt's form; -1 matches any."""
        return "-1" if value is None else f"0x{value:0{width}X}"
    rules = [":".join((hexed(r.usb_class, 2), hexed(r.vendor, 4), hexed(r.product, 4),
                       hexed(r.version, 4), str(int(r.allow)))) for r in d.devices.redirfilter]
    return ",filter=" + "|".join(rules)


def _smartcards(d: Domain, ports: dict[str, str]) -> Iterator[Option]:
    """`-device usb-ccid` (the reader, libvirt's ccid0) and one card device per `<smartcard>`.

    host: `ccid-card-emulated,backend=nss-emulated`; host-certificates: `backend=certificates`
    with cert1-3 and `db=` (libvirt's default /etc/pki/nssdb); passthrough: a chardev
    (spicevmc name=smartcard, or the relay's) and `ccid-card-passthru`.
    """
    if not has_ccid(d):
        return
    port = f",port={ports['ccid0']}" if "ccid0" in ports else ""
    yield ("-device", f"usb-ccid,id=ccid0,bus=usb.0{port}")
    for i, card in enumerate(d.devices.smartcards):
        where = f"id=smartcard{i},bus=ccid0.0"
        if card.mode == "host":
            yield ("-device", f"ccid-card-emulated,backend=nss-emulated,{where}")
        elif card.mode == "host-certificates":
            certs = ",".join(f"cert{n}={esc(c)}" for n, c in enumerate(card.certificates, 1))
            db = esc(card.database or "/etc/pki/nssdb")
            yield ("-device", f"ccid-card-emulated,backend=certificates,{certs},db={db},{where}")
        else:
            cid = f"charsmartcard{i}"
            yield ("-chardev", f"spicevmc,id={cid},name=smartcard" if card.source is None
                   else ",".join(chardev_backend(card.source, cid)))
            yield ("-device", f"ccid-card-passthru,chardev={cid},{where}")


def vsock_cid(d: Domain) -> int | None:
    """The guest's vsock context id: as given, else derived from the uuid (`<cid auto='yes'>`).

    libvirt probes the host for a free id at each start; qemud keeps the id stable for a domain
    (3 to 2**32-2, from its uuid) so that host services can rely on it. Two domains whose ids
    collide are told so by QEMU at start (the id is taken).
    """
    if not d.devices.vsocks:
        return None
    given = d.devices.vsocks[0].cid
    return given if given is not None else 3 + d.uuid.int % (2**32 - 4)


def _vsocks(d: Domain, at: At) -> Iterator[Option]:
    """`-device vhost-vsock-pci` with the guest's context id (libvirt's id vsock0)."""
    cid = vsock_cid(d)
    if cid is not None:
        yield ("-device", f"vhost-vsock-pci,id=vsock0,guest-cid={cid}{at('vsock0')}")


SHMEM_SERVER = "/var/lib/libvirt/shmem-{name}-sock"
"""libvirt's socket of an ivshmem-server when `<server>` names none."""


def _shmems(d: Domain, at: At) -> Iterator[Option]:
    """ivshmem-plain on `/dev/shm/<name>`, or ivshmem-doorbell on its server's socket.

    As libvirt renders them: the plain one's memory is a shared file backend.
    """
    for i, mem in enumerate(d.devices.shmems):
        sid = f"shmem{i}"
        role = "" if mem.role is None else f",master={_on(mem.role == 'master')}"
        if mem.model == "ivshmem-plain":
            yield ("-object", f"memory-backend-file,id=shmmem-{sid},"
                              f"mem-path=/dev/shm/{mem.name},"
                              f"size={mem.size},share=on")
            yield ("-device", f"ivshmem-plain,id={sid},memdev=shmmem-{sid}{role}{at(sid)}")
            continue
        vectors = f",vectors={mem.vectors}" if mem.vectors is not None else ""
        ioeventfd = _on(mem.ioeventfd if mem.ioeventfd is not None else True)
        yield ("-device", f"ivshmem-doorbell,id={sid},chardev=char{sid}{role}{vectors},"
                          f"ioeventfd={ioeventfd}{at(sid)}")
        server = mem.server or SHMEM_SERVER.format(name=mem.name)
        yield ("-chardev", f"socket,id=char{sid},path={esc(server)}")


def _watchdogs(d: Domain, at: At) -> Iterator[Option]:
    """`-device i6300esb|ib700` and the watchdog action (one action for all watchdogs)."""
    actions = {w.action for w in d.devices.watchdogs}
    if len(actions) > 1:
        raise RenderError("QEMU has one watchdog action; give every <watchdog> the same action=")
    for i, w in enumerate(d.devices.watchdogs):
        place = at(f"watchdog{i}") if w.model == "i6300esb" else ""
        yield ("-device", f"{w.model}{place},id=watchdog{i}")
    if actions:
        yield ("-action", f"watchdog={actions.pop()}")


def _tpms(d: Domain, runtime: Runtime | None) -> Iterator[Option]:
    """`-tpmdev emulator` on swtpm's socket and the TPM device, with libvirt 9.0's ids.

    Without a runtime (`reconcile argv`) the socket is shown relative, like a channel's.
    """
    for i, tpm in enumerate(d.devices.tpms):
        path = runtime.tpm_socket(i) if runtime is not None else Path(f"tpm{i}-swtpm.sock")
        yield ("-tpmdev", f"emulator,id=tpm-tpm{i},chardev=chrtpm")
        yield ("-chardev", f"socket,id=chrtpm,path={esc(path)}")
        yield ("-device", f"{tpm.model},tpmdev=tpm-tpm{i},id=tpm{i}")


def _filesystems(d: Domain, runtime: Runtime | None, at: At) -> Iterator[Option]:
    """virtiofs: a chardev on virtiofsd's socket and `vhost-user-fs-pci`, with libvirt 9.0's ids.

    Without a runtime (`reconcile argv`) the socket is shown relative, like a channel's.
    """
    for i, fs in enumerate(d.devices.filesystems):
        path = runtime.fs_socket(i) if runtime is not None else Path(f"fs{i}-fs.sock")
        yield ("-chardev", f"socket,id=chr-vu-fs{i},path={esc(path)}")
        queue = f",queue-size={fs.queue}" if fs.queue is not None else ""
        yield ("-device", f"vhost-user-fs-pci,id=fs{i},chardev=chr-vu-fs{i}{queue},"
               f"tag={esc(fs.target_dir)}{at(f'fs{i}')}")


def _misc(d: Domain, at: At) -> Iterator[Option]:
    """Balloon, random number generators and the panic device."""
    devs = d.devices
    if devs.memballoon == "virtio":
        extra = "".join(f",{k}={_on(v)}" for k, v in (
            ("deflate-on-oom", devs.memballoon_deflate),
            ("free-page-reporting", devs.memballoon_free_page_reporting)) if v is not None)
        if devs.memballoon_stats is not None:  # libvirt sets it over QMP; the same property
            extra += f",guest-stats-polling-interval={devs.memballoon_stats}"
        yield ("-device", f"virtio-balloon-pci{virtio_props(devs.memballoon_virtio)}"
               f"{at('balloon0')},id=balloon0{extra}")
    for i, rng in enumerate(d.devices.rngs):
        if rng.backend_model == "builtin":
            yield ("-object", f"rng-builtin,id=objrng{i}")
        elif rng.egd is not None:
            yield ("-chardev", ",".join(chardev_backend(rng.egd, f"charrng{i}")))
            yield ("-object", f"rng-egd,id=objrng{i},chardev=charrng{i}")
        else:
            yield ("-object", f"rng-random,id=objrng{i},filename={esc(rng.backend)}")
        dev = f"virtio-rng-pci{virtio_props(rng.virtio)}{at(f'rng{i}')},rng=objrng{i},id=rng{i}"
        if rng.rate_bytes is not None:
            dev += f",max-bytes={rng.rate_bytes},period={rng.rate_period or 1000}"
        yield ("-device", dev)
    if d.genid is not None:
        yield ("-device", f"vmgenid,guid={d.genid},id=vmgenid0")
    if d.devices.panic == "isa":
        yield ("-device", "pvpanic")
    if d.features.vmcoreinfo:
        yield ("-device", "vmcoreinfo")


def _iommu(d: Domain, at: Callable[[str], str]) -> Iterator[Option]:
    """`<iommu>`: intel-iommu with its switches (libvirt's order), or virtio-iommu on bus 0.

    First of the devices, as libvirt puts it: QEMU wants the IOMMU before the PCI devices it
    translates for.
    """
    iommu = d.devices.iommu
    if iommu is None:
        return
    if iommu.model == "virtio":
        yield ("-device", f"virtio-iommu,id=iommu0{at('iommu0')}")
        return
    props = [("intremap", iommu.intremap), ("caching-mode", iommu.caching_mode),
             ("eim", iommu.eim), ("device-iotlb", iommu.iotlb)]
    text = "".join(f",{k}={_on(v)}" for k, v in props if v is not None)
    if iommu.aw_bits is not None:
        text += f",aw-bits={iommu.aw_bits}"
    yield ("-device", f"intel-iommu,id=iommu0{text}")


def balloon_target(d: Domain) -> int | None:
    """The balloon target in bytes to set after start (QMP `balloon`), or None.

    It is `<currentMemory>` when below `<memory>`. QEMU has no command-line option for it: the
    process layer sets it once QEMU runs, as libvirt does.
    """
    if d.current_memory is None or d.current_memory >= d.memory:
        return None
    return d.current_memory


_BRIDGES: dict[str, tuple[str, pci.Kind]] = {
    "pcie-root-port": ("pcie-root-port", "root-port"), "pci-bridge": ("pci-bridge", "bridge"),
    "pcie-to-pci-bridge": ("pcie-pci-bridge", "bridge"),
    "dmi-to-pci-bridge": ("i82801b11-bridge", "dmi-bridge")}
PCIE_ONLY_CONTROLLERS = ("pcie-root", "pcie-root-port", "pcie-to-pci-bridge", "dmi-to-pci-bridge")
"""PCI controller models that need the PCI Express root of machine 'q35'."""
PCI_CONTROLLER_MODELS = ("pci-root", "pcie-root", *_BRIDGES)
"""`<controller type='pci' model=>` values qemud renders."""
_PCIE_DEVICES = frozenset({"virtio-blk-pci", "virtio-net-pci", "virtio-balloon-pci", "virtio-rng-pci",
                           "virtio-serial-pci", "virtio-scsi-pci", "virtio-vga", "virtio-gpu-pci",
                           "virtio-tablet-pci", "virtio-mouse-pci", "virtio-keyboard-pci",
                           "qemu-xhci", "nec-usb-xhci", "e1000e", "vmxnet3", "bochs-display",
                           "pcie-pci-bridge", "vhost-user-fs-pci", "vhost-vsock-pci",
                           "virtio-input-host-pci", "virtio-mem-pci", "virtio-pmem-pci"})
"""PCI Express endpoints: on 'q35' libvirt puts each behind its own pcie-root-port."""


def _pci_controllers(d: Domain) -> list[Controller]:
    """The pcie-root-ports and bridges to render, by index.

    Index 0 is always the root bus; a pcie-root-port needs the PCI Express root of 'q35'.
    """
    q35 = is_q35(d)
    return sorted((c for c in d.devices.controllers if c.type == "pci" and c.index > 0
                   and c.model in _BRIDGES and (q35 or c.model not in PCIE_ONLY_CONTROLLERS)),
                  key=lambda c: c.index)


def _pci_requests(d: Domain) -> list[pci.Request]:
    """Every PCI device of the command line, in libvirt's assignment order, with its address."""
    q35 = is_q35(d)
    reqs: list[pci.Request] = []

    def add(rid: str, driver: str, address: PciAddress | None,
            home: PciAddress | None = None, *, function: int = 0,
            follows: str | None = None) -> None:
        """Queue one device; its kind follows from the QEMU driver."""
        kind: pci.Kind = "pcie" if driver in _PCIE_DEVICES else "pci"
        reqs.append(pci.Request(rid, kind, address, home, function=function, follows=follows))

    for c in _pci_controllers(d):
        _, kind = _BRIDGES[c.model or ""]
        home = PciAddress(slot=0x1E) if kind == "dmi-bridge" else None  # ICH9's own, as libvirt
        reqs.append(pci.Request(f"pci.{c.index}", kind, c.address, home, c.index))
    shown = shown_videos(d)
    if shown and shown[0].model != "ramfb":
        add("video0", _VIDEO[shown[0].model][0], shown[0].address,
            PciAddress(slot=1 if q35 else 2))
    iommu = d.devices.iommu
    if iommu is not None and iommu.model == "virtio":  # conventional kind: on the root bus
        reqs.append(pci.Request("iommu0", "pci", iommu.address))
    for i, nic in enumerate(d.devices.interfaces):
        add(f"net{i}", _NIC_DEVICES[nic.model], nic.address)
    for i, snd in enumerate(d.devices.sounds):
        if snd.model in PCI_SOUND:
            home = PciAddress(slot=0x1B) if q35 and snd.model == "ich9" else None
            add(f"sound{i}", _SOUND[snd.model], snd.address, home)
    usb = _usb_controller(d)
    usb_decl = next(iter(usb_mains(d.devices.controllers)), None)
    companions = usb_companions(d)
    companion_ids = {id(c): i for i, c in enumerate(companions)}
    serials = virtio_serial_controllers(d)
    ahci = not q35 and has_ahci(d)
    sata_decl = next((c for c in d.devices.controllers if c.type == "sata" and c.index == 0), None)
    done: set[str] = set()
    for c in [*d.devices.controllers, *serials, *scsi_controllers(d)]:  # document order first
        if id(c) in companion_ids and usb is not None:
            i = companion_ids[id(c)]  # by identity: two companions may be equal
            if f"usb-companion{i}" not in done:  # on q35, libvirt's USB slot 0x1d, as ICH9's
                function = companion_function(c.model)
                home = PciAddress(slot=0x1D, function=function,
                                  multifunction=c.model == "ich9-uhci1") if q35 else None
                add(f"usb-companion{i}", USB_COMPANIONS[c.model or ""], c.address, home,
                    function=function, follows="usb")  # in its EHCI's slot, as libvirt
                done.add(f"usb-companion{i}")
        elif c.type == "usb" and c.index == 0 and usb is not None and "usb" not in done:
            home = PciAddress(slot=1, function=2) if not q35 and usb == "piix3-usb-uhci" else None
            if q35 and usb == "ich9-usb-ehci1" and companions:
                home = PciAddress(slot=0x1D, function=7)
            add("usb", usb, usb_decl.address if usb_decl else None, home,
                function=7 if usb == "ich9-usb-ehci1" and companions else 0)
            done.add("usb")
        elif c.type == "scsi" and f"scsi{c.index}" not in done:
            add(f"scsi{c.index}", SCSI_MODELS[c.model], c.address)
            done.add(f"scsi{c.index}")
        elif c.type == "virtio-serial" and f"virtio-serial{c.index}" not in done:
            add(f"virtio-serial{c.index}", "virtio-serial-pci", c.address)
            done.add(f"virtio-serial{c.index}")
        elif c.type == "sata" and c.index == 0 and ahci and "sata0" not in done:
            add("sata0", "ahci", c.address)
            done.add("sata0")
    if usb is not None and "usb" not in done:
        add("usb", usb, None,
            PciAddress(slot=1, function=2) if not q35 and usb == "piix3-usb-uhci" else None)
    if ahci and "sata0" not in done:
        add("sata0", "ahci", sata_decl.address if sata_decl else None)
    for disk in ordered_disks(d):
        if disk.target_bus == "virtio":
            add(f"virtio-disk{disk_index(disk.target_dev)}", "virtio-blk-pci", disk.address)
    for i, fs in enumerate(d.devices.filesystems):  # libvirt places filesystems after disks
        add(f"fs{i}", "vhost-user-fs-pci", fs.address)
    for i, share in enumerate(d.devices.shares_9p, start=len(d.devices.filesystems)):
        add(f"fs{i}", "virtio-9p-pci", share.address)
    for mid, mem in zip(memory.device_ids(d), d.devices.memories, strict=True):
        if mem.model in ("virtio-mem", "virtio-pmem"):
            add(mid, memory.DEVICE_DRIVER[mem.model], mem.address)
    if d.devices.memballoon == "virtio":
        add("balloon0", "virtio-balloon-pci", d.devices.memballoon_address)
    for i, rng in enumerate(d.devices.rngs):
        add(f"rng{i}", "virtio-rng-pci", rng.address)
    for vsock in d.devices.vsocks:
        add("vsock0", "vhost-vsock-pci", vsock.address)
    for i, w in enumerate(d.devices.watchdogs):
        if w.model == "i6300esb":
            add(f"watchdog{i}", "i6300esb", w.address)
    for i, video in enumerate(shown[1:], start=1):
        if video.model != "ramfb":
            add(f"video{i}", _VIDEO[video.model][1] or "", video.address)
    for i, inp in enumerate(d.devices.inputs):
        if inp.bus == "virtio":
            add(f"input{i}", _INPUT[(inp.type, inp.bus)], inp.address)
    for i, shared in enumerate(d.devices.shmems):
        add(f"shmem{i}", shared.model, shared.address)
    return reqs


def _pci_bridges(d: Domain, placement: pci.Placement, at: At) -> Iterator[Option]:
    """`-device` for each pcie-root-port and bridge, declared or added, with libvirt's ids."""
    declared = _pci_controllers(d)
    added = [Controller(type="pci", index=i, model="pcie-root-port")
             for i in placement.added_root_ports]
    added += [Controller(type="pci", index=i, model="pci-bridge") for i in placement.added_bridges]
    for c in sorted([*declared, *added], key=lambda c: c.index):
        driver, kind = _BRIDGES[c.model or ""]
        pid = f"pci.{c.index}"
        if kind == "root-port":
            a = placement.addresses[pid]
            port = c.port if c.port is not None else (a.slot << 3 | a.function)
            chassis = c.chassis if c.chassis is not None else c.index
            hotplug = f",hotplug={_on(c.hotplug)}" if c.hotplug is not None else ""
            yield ("-device", f"pcie-root-port,port={port:#x},chassis={chassis},id={pid}"
                              f"{hotplug}{at(pid)}")
        elif driver == "pci-bridge":
            chassis = c.chassis if c.chassis is not None else c.index
            yield ("-device", f"pci-bridge,chassis_nr={chassis},id={pid}{at(pid)}")
        elif kind == "dmi-bridge":
            yield ("-device", f"i82801b11-bridge,id={pid}{at(pid)}")
        else:
            yield ("-device", f"pcie-pci-bridge,id={pid}{at(pid)}")


def options(d: Domain, runtime: Runtime | None = None,
            firmware: Sequence[Descriptor] | None = None,
            now: datetime | None = None) -> list[Option]:
    """The command line grouped by option: the emulator first, then one tuple per option.

    With `runtime`, the QMP monitors (the daemon's, then the users'), the pidfile and console
    logs are included; without it the result is what `reconcile argv` shows, like `virsh
    domxml-to-native`. `firmware` is QEMU's firmware descriptors (`/usr/share/qemu/firmware/
    *.json`, read by the caller with `model.firmware.parse_descriptor`): `<os firmware='efi'>`
    picks from them. None means they were not read: the firmware is then shown as a
    placeholder path (fine for `reconcile argv`; QEMU refuses to start with it). `now` is when
    the VM starts (an aware datetime in the host's zone; the current time when None): a
    variable `<clock>` is counted from it.
    """
    q35 = is_q35(d)
    fw = choose(d, firmware, runtime.state_dir if runtime is not None else None)
    placement = pci.assign(_pci_requests(d), q35)

    def at(rid: str) -> str:
        """The bus/addr suffix of device `rid`."""
        return "," + pci.render(placement.addresses[rid], q35)

    out: list[Option] = [(emulator(d),)]
    out.append(("-name", f"guest={esc(d.name)},debug-threads=on"))
    out.append(("-uuid", str(d.uuid)))
    out += _sysinfo(d)
    if runtime is not None:
        out.append(("-pidfile", str(runtime.pidfile)))
        out.append(("-chardev",
                    f"socket,id=charmonitor,path={esc(runtime.qmp_socket)},server=on,wait=off"))
        out.append(("-mon", "chardev=charmonitor,id=monitor,mode=control"))
        out.append(("-chardev", f"socket,id=charmonitor-user,path={esc(runtime.user_qmp_socket)}"
                                ",server=on,wait=off"))
        out.append(("-mon", "chardev=charmonitor-user,id=monitor-user,mode=control"))
    out += [("-no-user-config",), ("-nodefaults",), ("-msg", "timestamp=on")]
    out += _firmware(fw)
    out.append(_machine(d, fw))
    tb = d.features.tb_cache
    ring = d.features.kvm_dirty_ring
    out.append(("-accel", ("kvm" if ring is None else f"kvm,dirty-ring-size={ring}")
                if d.type == "kvm" else "tcg" if tb is None else f"tcg,tb-size={units.to_mib(tb)}"))
    out += _cpu(d)
    folder = runtime.folder if runtime is not None else None
    host = runtime.hugepages if runtime is not None else None
    if host is not None:
        memory.check_host(d, host)
    out.append(memory.memory_option(d, memory_mib(d)))
    out += memory.pc_ram(d, memory_mib(d) << 20, folder, host)
    out += memory.overcommit(d)
    out.append(_smp(d))
    out += _numa(d, runtime)
    out += [("-object", f"iothread,id=iothread{i}") for i in range(1, d.iothreads + 1)]
    out += _clock(d, now if now is not None else datetime.now().astimezone())
    out += _lifecycle(d)
    out += _pm(d)
    out += _boot(d)
    out += _kernel(d)
    out += _iommu(d, at)
    out += _pci_bridges(d, placement, at)
    usb = _usb_controller(d)
    ports = usb_ports(d)
    if usb is not None:
        usb_decl = next((c for c in d.devices.controllers if c.type == "usb" and c.index == 0
                         and c.ports is not None), None)
        extra = ""
        if usb_decl is not None and "xhci" in usb:
            extra = f",p2={usb_decl.ports},p3={usb_decl.ports}"
        out.append(("-device", f"{usb}{at('usb')},id=usb{extra}"))
        for i, c in enumerate(usb_companions(d)):
            out.append(("-device", f"{USB_COMPANIONS[c.model or '']},masterbus=usb.0,"
                        f"firstport={companion_port(d.devices.controllers, c)}{at(f'usb-companion{i}')}"))
    for c in scsi_controllers(d):
        out.append(("-device", _scsi_device(c, at)))
    for c in virtio_serial_controllers(d):
        extra = f",max_ports={c.ports}" if c.ports is not None else ""
        extra += f",vectors={c.vectors}" if c.vectors is not None else ""
        out.append(("-device", f"virtio-serial-pci{virtio_props(c.virtio)}"
                    f"{at(f'virtio-serial{c.index}')},id=virtio-serial{c.index}{extra}"))
    if not q35 and has_ahci(d):
        out.append(("-device", f"ahci{at('sata0')},id=sata0"))
    for disk in ordered_disks(d):
        out += _disk(d, disk, at)
    out += _nics(d, at)
    out += _serials(d, runtime)
    out += _parallels(d)
    out += _consoles(d)
    out += _channels(d, runtime)
    out += _hubs(d, ports)
    out += _inputs(d, ports, at)
    out += _display(d, runtime)
    out += _videos(d, at)
    out += _sounds(d, ports, at)
    out += _redirdevs(d, ports)
    out += _smartcards(d, ports)
    out += _watchdogs(d, at)
    out += _shmems(d, at)
    out += _tpms(d, runtime)
    out += _filesystems(d, runtime, at)
    out += _shares_9p(d, at)
    out += memory.devices(d, folder, host, at)
    out += _misc(d, at)
    out += _vsocks(d, at)
    if d.qemu_commandline is not None:  # libvirt's escape hatch, last as libvirt puts it
        out += [(arg,) for arg in d.qemu_commandline.args]
    return out


def environment(d: Domain) -> dict[str, str]:
    """The variables QEMU's environment gets (`<qemu:env>` last, so it wins).

    `TZ` for a timezone `<clock>`, as libvirt sets it; then `<qemu:commandline>`'s `<qemu:env>`.
    """
    env = {"TZ": d.clock.timezone} if d.clock.offset == "timezone" and d.clock.timezone else {}
    return env | (dict(d.qemu_commandline.env) if d.qemu_commandline is not None else {})


def command_line(d: Domain, runtime: Runtime | None = None,
                 firmware: Sequence[Descriptor] | None = None,
                 now: datetime | None = None) -> list[str]:
    """The QEMU argv (a list, never a shell string) for domain `d`; see `options`."""
    return [arg for option in options(d, runtime, firmware, now) for arg in option]
