"""Frozen Pydantic models of a libvirt domain, named after libvirt's own elements and attributes.

Only what qemud can render is modelled. Field names follow the XML (`current_memory` is
`<currentMemory>`, `on_poweroff` is `<on_poweroff>`); sizes are bytes; booleans are the
libvirt yes/no and on/off switches. Construct instances with `model.parse`, which reports
problems with file and line; direct construction is for tests and generators.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAMESPACE = "urn:qemud:1"
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
"""libvirt's QEMU namespace: `<qemu:commandline>`, its escape hatch to QEMU's own options."""
"""XML namespace of the project's `<qemud:desired>` element inside `<metadata>`."""

_NAME_UUID_NS = uuidlib.UUID("6f1c1a4e-2d0b-4e6b-9a53-1b7c0d6e2f10")

Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
BootOrder = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""A `<boot order=>`: QEMU's `bootindex` is an int32."""

MAX_VCPUS = 255
MAX_IOTHREADS = 64
"""A bound on `<iothreads>` (libvirt has none; each is a host thread)."""
"""Most vCPUs QEMU starts on pc and q35 without x2APIC interrupt remapping (TCG refuses more)."""


class Frozen(BaseModel):
    """Base of every model: immutable, hashable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def uuid_for_name(name: str) -> uuidlib.UUID:
    """Derive the stable uuid used when a file has no `<uuid>`: the same name always gives the same uuid."""
    return uuidlib.uuid5(_NAME_UUID_NS, name)


def mac_for(uuid: uuidlib.UUID, index: int) -> str:
    """Derive a stable locally administered MAC in QEMU's 52:54:00 range for NIC `index` of a domain."""
    digest = uuidlib.uuid5(uuid, f"nic{index}").bytes
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*digest[:3])


class PciAddress(Frozen):
    """`<address type='pci' domain= bus= slot= function= multifunction=>`: where the guest sees a device.

    Bus N is the bus behind `<controller type='pci' index='N'>` (0 is the root bus).
    """

    domain: Literal[0] = 0
    bus: Annotated[int, Field(ge=0, le=255)] = 0
    slot: Annotated[int, Field(ge=0, le=31)]
    function: Annotated[int, Field(ge=0, le=7)] = 0
    multifunction: bool = False


class DriveAddress(Frozen):
    """`<address type='drive' controller= bus= target= unit=>`: where a disk sits on its controller.

    Controller N is `<controller type='ide|sata|scsi|fdc' index='N'>`; what each number means
    (an IDE bus and unit, an AHCI port, a SCSI channel, id and LUN) is the bus's business
    (`model.argv.drive_of`, which also gives libvirt's default for a disk without one).
    """

    controller: Annotated[int, Field(ge=0, le=255)] = 0
    bus: Annotated[int, Field(ge=0, le=255)] = 0
    target: Annotated[int, Field(ge=0, le=255)] = 0
    unit: Annotated[int, Field(ge=0, le=16383)] = 0


class Desired(Frozen):
    """`<qemud:desired state= restart= shutdown-timeout=>`: what the reconciler should make true."""

    state: Literal["running", "stopped"] = "stopped"
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    shutdown_timeout: Positive = 60


class Vcpu(Frozen):
    """`<vcpu current=>count</vcpu>`: maximum and (optionally) initially online vCPUs."""

    count: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    current: Positive | None = None
    cpuset: frozenset[int] | None = None
    """`cpuset=`: the host CPUs QEMU may run on (`model.host_cpus`); None: any."""

    @model_validator(mode="after")
    def _current_within_count(self) -> Vcpu:
        """Guarantee 1 <= current <= count."""
        if self.current is not None and self.current > self.count:
            raise ValueError(f"current={self.current} exceeds the vcpu count {self.count}")
        return self


class Topology(Frozen):
    """`<cpu><topology sockets= dies= cores= threads=/>`."""

    sockets: Positive = 1
    dies: Positive = 1
    cores: Positive = 1
    threads: Positive = 1


class CpuFeature(Frozen):
    """`<cpu><feature policy= name=/>`."""

    policy: Literal["force", "require", "optional", "disable", "forbid"] = "require"
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$")]


class NumaCell(Frozen):
    """`<cpu><numa><cell id= cpus= memory= unit=/>`: one guest NUMA node (memory in bytes)."""

    id: Annotated[int, Field(ge=0)]
    cpus: frozenset[int]
    memory: Positive
    mem_access: Literal["shared", "private"] | None = None
    """`<cell memAccess=>`: whether helpers may map this cell's memory (overrides memoryBacking's)."""
    discard: bool | None = None
    """`<cell discard=>`: free this cell's file-backed memory at exit (overrides `<discard/>`)."""
    distances: tuple[tuple[NonNegative, Annotated[int, Field(ge=10, le=255)]], ...] = ()
    """`<distances><sibling id= value=/>`: (cell id, distance) as written (10 is local)."""


class Cpu(Frozen):
    """`<cpu mode=>` with an optional `<model>`, `<topology>`, `<feature>`s and NUMA cells."""

    mode: Literal["host-passthrough", "host-model", "custom", "maximum"] = "custom"
    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None
    topology: Topology | None = None
    features: tuple[CpuFeature, ...] = ()
    numa: tuple[NumaCell, ...] = ()
    cache: Literal["emulate", "passthrough", "disable"] | None = None
    """`<cache level='3' mode='emulate'/>`, `<cache mode='passthrough'|'disable'/>`."""


NumaMode = Literal["strict", "preferred", "interleave"]


class NumaMemory(Frozen):
    """`<numatune><memory mode= nodeset=/>` or `<memnode cellid= mode= nodeset=/>`.

    The host NUMA nodes the guest's memory (of every cell, or of cell `cellid`) comes from.
    """

    mode: NumaMode = "strict"
    nodeset: frozenset[int]
    cellid: Annotated[int, Field(ge=0)] | None = None


class Numatune(Frozen):
    """`<numatune>`: a default memory policy and per-cell ones (applied to NUMA cells' memory)."""

    memory: NumaMemory | None = None
    memnodes: tuple[NumaMemory, ...] = ()


BootDev = Literal["hd", "cdrom", "fd", "network"]


AbsPath = Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")]
"""An absolute host path without control characters."""


class Os(Frozen):
    """`<os>`: `<type arch= machine=>hvm</type>`, boot order, boot menu and direct kernel boot."""

    type: Literal["hvm"] = "hvm"
    arch: Literal["x86_64", "i686"] | None = None
    machine: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None
    boot: tuple[BootDev, ...] = ()
    bootmenu: bool | None = None
    bootmenu_timeout: Annotated[int, Field(ge=0, le=65535)] | None = None
    acpi_tables: tuple[tuple[Literal["slic", "msdm"], AbsPath], ...] = ()
    """`<acpi><table type=>FILE</table>`: extra ACPI tables given to the guest (type, file)."""
    smbios_mode: Literal["sysinfo", "emulate"] | None = None
    """`<smbios mode=>`: 'sysinfo' gives the guest the `<sysinfo type='smbios'>` tables."""
    reboot_timeout: Annotated[int, Field(ge=-1, le=65535)] | None = None
    """`<bios rebootTimeout=>`: ms before the BIOS retries booting when nothing boots (-1: never)."""
    bios_useserial: bool | None = None
    """`<bios useserial=>`: SeaBIOS's screen on the serial port too (QEMU's sga device)."""
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    firmware: Literal["bios", "efi"] | None = None
    """`<os firmware=>`: 'efi' picks UEFI from QEMU's firmware descriptors (see model.firmware)."""
    firmware_features: tuple[tuple[Literal["secure-boot", "enrolled-keys"], bool], ...] = ()
    """`<firmware><feature enabled= name=/></firmware>`: what the chosen firmware must (not) have."""
    loader: str | None = None
    """`<loader>`: an explicit firmware code file (then `nvram` or the runtime's vars file)."""
    loader_secure: bool | None = None
    nvram: str | None = None
    """`<nvram>`: the VM's UEFI variable store; None: `vars.fd` in the runtime's state folder."""
    nvram_template: str | None = None

    @model_validator(mode="after")
    def _firmware_consistent(self) -> Os:
        """Guarantee firmware features only with firmware='efi', and a loader for nvram."""
        if self.firmware_features and self.firmware != "efi":
            raise ValueError("<firmware><feature> needs <os firmware='efi'>")
        if self.firmware == "bios" and (self.loader or self.nvram):
            raise ValueError("firmware='bios' takes no <loader> or <nvram>")
        if self.nvram is not None and self.loader is None and self.firmware != "efi":
            raise ValueError("<nvram> needs <loader> or firmware='efi'")
        return self

    @model_validator(mode="after")
    def _boot_order_fits(self) -> Os:
        """Guarantee what QEMU's PC firmware takes: at most 3 boot devices, none twice."""
        if len(set(self.boot)) != len(self.boot):
            raise ValueError("a <boot dev=> appears twice; give each device once")
        if len(self.boot) > 3:
            raise ValueError("at most 3 <boot dev=> are supported by the PC firmware")
        return self


HypervName = Literal["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer",
                     "reset", "vendor_id", "frequencies", "reenlightenment", "tlbflush", "ipi",
                     "evmcs", "avic"]
"""The Hyper-V enlightenments of `<features><hyperv>` that QEMU 7.2 has (as libvirt names them)."""


class Hyperv(Frozen):
    """`<hyperv mode=>`: enlightenments for Windows guests, each on or off, with their values."""

    mode: Literal["custom", "passthrough"] = "custom"
    enabled: tuple[tuple[HypervName, bool], ...] = ()
    """(name, state) in document order."""
    spinlocks_retries: Annotated[int, Field(ge=4095, le=2**32 - 1)] | None = None
    vendor_id: Annotated[str, Field(pattern=r"^[ -~]{1,12}$")] | None = None
    stimer_direct: bool | None = None


class Features(Frozen):
    """`<features>`: acpi, apic, pae, vmport, hyperv, kvm, pvspinlock and smm."""

    acpi: bool = False
    apic: bool = False
    pae: bool = False
    vmport: bool | None = None
    hyperv: Hyperv | None = None
    kvm_hidden: bool | None = None
    kvm_hint_dedicated: bool | None = None
    kvm_poll_control: bool | None = None
    kvm_pv_ipi: bool | None = None
    pvspinlock: bool | None = None
    smm: bool | None = None
    vmcoreinfo: bool | None = None
    """`<vmcoreinfo state=>`: the vmcoreinfo device (guest kernel crash dump info)."""
    tb_cache: Positive | None = None
    """`<tcg><tb-cache unit=>`: TCG's translation block cache, bytes (TCG only)."""
    pmu: bool | None = None
    """`<pmu state=>`: the guest's performance monitoring unit."""
    kvm_dirty_ring: Annotated[int, Field(ge=1024, le=65536)] | None = None
    """`<kvm><dirty-ring state='on' size=>`: KVM's dirty ring size (entries; KVM only)."""
    ioapic: Literal["qemu", "kvm"] | None = None
    """`<ioapic driver=>`: the I/O APIC emulated by QEMU (kernel_irqchip=split) or by KVM."""
    apic_eoi: bool | None = None
    """`<apic eoi=>`: KVM's paravirtual end-of-interrupt (`-cpu ...,kvm-pv-eoi=`)."""

    @model_validator(mode="after")
    def _eoi_on_apic(self) -> Features:
        """Guarantee eoi only with the APIC it belongs to (`<apic eoi=>`)."""
        if self.apic_eoi is not None and not self.apic:
            raise ValueError("eoi is an attribute of <apic>")
        return self

    @field_validator("kvm_dirty_ring")
    @classmethod
    def _power_of_two(cls, size: int | None) -> int | None:
        """Guarantee a dirty ring size KVM accepts: a power of two."""
        if size is not None and size & (size - 1):
            raise ValueError("the dirty ring size must be a power of two, 1024 to 65536")
        return size


class Timer(Frozen):
    """`<clock><timer name= tickpolicy= present= frequency= mode=/>` (x86 timers QEMU has)."""

    name: Literal["rtc", "pit", "hpet", "kvmclock", "tsc", "hypervclock", "platform"]
    tickpolicy: Literal["delay", "catchup", "merge", "discard"] | None = None
    present: bool | None = None
    frequency: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    """tsc only: the guest's TSC frequency in Hz."""
    mode: Literal["auto", "native", "emulate", "paravirt", "smpsafe"] | None = None
    """tsc only: accepted as libvirt does (its QEMU driver renders nothing for it)."""
    track: Literal["guest", "wall", "realtime"] | None = None
    """rtc only: what the RTC follows (QEMU's `-rtc clock=vm|host|rt`). libvirt's 'boot' is
    refused by its QEMU driver too, so it is not a value here."""

    @model_validator(mode="after")
    def _as_qemu_has_it(self) -> Timer:
        """Guarantee what QEMU can do: frequency and mode on tsc, tick policies it implements.

        As libvirt's QEMU driver: no 'platform' timer; rtc takes delay or catchup, pit delay,
        catchup or discard; the other timers take no tick policy.
        """
        if self.name != "tsc" and (self.frequency is not None or self.mode is not None):
            raise ValueError("only the tsc timer takes frequency and mode")
        if self.name != "rtc" and self.track is not None:
            raise ValueError("only the rtc timer takes track (QEMU's -rtc clock=); remove it")
        if self.name == "platform":
            raise ValueError("QEMU has no 'platform' timer (libvirt's QEMU driver refuses it "
                             "too); remove it")
        allowed = {"rtc": ("delay", "catchup"), "pit": ("delay", "catchup", "discard")}
        policy = self.tickpolicy
        if policy is not None and policy not in allowed.get(self.name, ()):
            can = allowed.get(self.name)
            raise ValueError(
                f"the {self.name} timer cannot take tickpolicy='{policy}' in QEMU; " + (
                    "use " + " or ".join(f"'{p}'" for p in can) if can else
                    "only rtc and pit have a tick policy; remove it"))
        return self


MAX_RTC_START = 253402300799
"""9999-12-31T23:59:59 UTC: the last second a QEMU `-rtc base=` date (and libvirt) can name."""
MAX_RTC_ADJUSTMENT = 100 * 366 * 86400
"""A century, in seconds: the furthest a variable clock may be set from the host's."""


class Clock(Frozen):
    """`<clock offset= adjustment= basis= start= timezone=>` with timers, as libvirt reads it.

    - utc, localtime: the guest's RTC starts at the host's UTC or local time (`reset`: libvirt's
      adjustment='reset', which QEMU does on every start anyway);
    - variable: `adjustment` seconds from the host's UTC (basis utc) or local time (basis
      localtime) at each start, the guest free to move it while it runs;
    - absolute: the RTC starts at `start` (seconds since the epoch, UTC) on every start;
    - timezone: the host's clock in time zone `timezone` (QEMU's localtime with `TZ` set).
    A numeric adjustment on utc or localtime is libvirt's shorthand for variable with that basis;
    the parser turns it into that.
    """

    offset: Literal["utc", "localtime", "variable", "absolute", "timezone"] = "utc"
    timers: tuple[Timer, ...] = ()
    adjustment: Annotated[int, Field(ge=-MAX_RTC_ADJUSTMENT, le=MAX_RTC_ADJUSTMENT)] | None = None
    basis: Literal["utc", "localtime"] | None = None
    reset: bool = False
    start: Annotated[int, Field(ge=0, le=MAX_RTC_START)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=255,
                                   pattern=r"^[A-Za-z0-9_+\-:/.,<>]+$")] | None = None

    @model_validator(mode="after")
    def _fits_offset(self) -> Clock:
        """Guarantee each attribute goes with the offset that uses it, and what it needs is set."""
        uses = (("adjustment", self.adjustment, ("variable",)),
                ("basis", self.basis, ("variable",)), ("start", self.start, ("absolute",)),
                ("timezone", self.timezone, ("timezone",)),
                ("adjustment='reset'", self.reset or None, ("utc", "localtime")))
        for name, value, offsets in uses:
            if value is not None and self.offset not in offsets:
                raise ValueError(f"{name} goes with offset='{offsets[0]}'" + (
                    f" or '{offsets[1]}'" if len(offsets) > 1 else "") + f", not "
                    f"'{self.offset}'; remove it")
        if self.offset == "absolute" and self.start is None:
            raise ValueError("offset='absolute' needs start= (seconds since 1970 UTC, the RTC's "
                             "time at every start)")
        if self.offset == "timezone" and self.timezone is None:
            raise ValueError("offset='timezone' needs timezone= (like 'Europe/Paris')")
        return self


Lifecycle = Literal["destroy", "restart", "preserve", "rename-restart"]


class VirtioOptions(Frozen):
    """`<driver iommu= ats= packed=>` of a virtio device (QEMU's iommu_platform, ats, packed)."""

    iommu: bool | None = None
    ats: bool | None = None
    packed: bool | None = None

    def any(self) -> bool:
        """Whether any option is set."""
        return any(v is not None for v in (self.iommu, self.ats, self.packed))


def _virtio_only(options: VirtioOptions, is_virtio: bool) -> None:
    """Raise when virtio options are set on a device that is not a virtio one."""
    if options.any() and not is_virtio:
        raise ValueError("<driver> iommu, ats and packed are options of virtio devices; remove "
                         "them or use the virtio model/bus")


THROTTLE_MAX = 10**15
"""QEMU's largest throttling rate or burst (THROTTLE_VALUE_MAX)."""
Throttle = Annotated[int, Field(ge=0, le=THROTTLE_MAX)]
"""One `<iotune>` value; 0 means no limit, as in libvirt."""
IOTUNE_RATES = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
                "total_iops_sec", "read_iops_sec", "write_iops_sec")
"""The six `<iotune>` rates; each also has `<NAME_max>` (a burst rate) and `<NAME_max_length>` (s)."""


class IoTune(Frozen):
    """`<iotune>` of a disk: QEMU's I/O throttling (rates, burst rates and lengths, a group).

    Values are libvirt's: bytes or operations per second, burst lengths in seconds; 0 or absent
    means no limit. Disks naming the same `group_name` share one set of limits in QEMU.
    """

    total_bytes_sec: Throttle = 0
    read_bytes_sec: Throttle = 0
    write_bytes_sec: Throttle = 0
    total_iops_sec: Throttle = 0
    read_iops_sec: Throttle = 0
    write_iops_sec: Throttle = 0
    total_bytes_sec_max: Throttle = 0
    read_bytes_sec_max: Throttle = 0
    write_bytes_sec_max: Throttle = 0
    total_iops_sec_max: Throttle = 0
    read_iops_sec_max: Throttle = 0
    write_iops_sec_max: Throttle = 0
    total_bytes_sec_max_length: Throttle = 0
    read_bytes_sec_max_length: Throttle = 0
    write_bytes_sec_max_length: Throttle = 0
    total_iops_sec_max_length: Throttle = 0
    read_iops_sec_max_length: Throttle = 0
    write_iops_sec_max_length: Throttle = 0
    size_iops_sec: Throttle = 0
    group_name: Annotated[str, Field(min_length=1, max_length=200,
                                     pattern=r"^[^\x00-\x1f\x7f]+$")] | None = None

    def limits(self) -> dict[str, int]:
        """The values set (non-zero), by libvirt element name, group name left out."""
        return {name: value for name, value in self if name != "group_name" and value}

    @model_validator(mode="after")
    def _as_qemu_accepts(self) -> IoTune:
        """Guarantee QEMU's rules: total or read/write, a burst needs its rate, lengths a burst."""
        v = self.limits()
        for unit in ("bytes", "iops"):
            for suffix in ("", "_max", "_max_length"):
                total, read, write = (f"{k}_{unit}_sec{suffix}" for k in ("total", "read", "write"))
                if total in v and (read in v or write in v):
                    raise ValueError(f"<{total}> and <{read}>/<{write}> cannot be set together "
                                     "(QEMU refuses it); keep the total or the read/write pair")
        for rate in IOTUNE_RATES:
            base, burst, length = v.get(rate, 0), v.get(f"{rate}_max", 0), v.get(f"{rate}_max_length", 0)
            if burst and not base:
                raise ValueError(f"<{rate}_max> needs <{rate}> (a burst rate above a rate)")
            if burst and burst < base:
                raise ValueError(f"<{rate}_max> ({burst}) is below <{rate}> ({base}); a burst "
                                 "rate cannot be lower than the rate")
            if length and not burst:
                raise ValueError(f"<{rate}_max_length> needs <{rate}_max> (the burst it lasts)")
            if length and burst and length > THROTTLE_MAX // burst:
                raise ValueError(f"<{rate}_max_length> is too long for <{rate}_max> "
                                 f"(their product must stay within {THROTTLE_MAX})")
        if self.size_iops_sec and not any(f"{k}_iops_sec" in v for k in ("total", "read", "write")):
            raise ValueError("<size_iops_sec> needs an operations limit (<total_iops_sec>, "
                             "<read_iops_sec> or <write_iops_sec>) to count against")
        if self.group_name is not None and not v:
            raise ValueError("<group_name> without any limit has no effect in QEMU; add a limit "
                             "or remove it")
        return self


class Disk(Frozen):
    """`<disk type= device=>`: a file or block device seen by the guest as a disk, cdrom or floppy."""

    type: Literal["file", "block"] = "file"
    device: Literal["disk", "cdrom", "floppy"] = "disk"
    driver_type: Literal["raw", "qcow2"] | None = None
    cache: Literal["default", "none", "writethrough", "writeback", "directsync", "unsafe"] | None = (
        None
    )
    discard: Literal["unmap", "ignore"] | None = None
    io: Literal["threads", "native", "io_uring"] | None = None
    detect_zeroes: Literal["off", "on", "unmap"] | None = None
    iothread: Annotated[int, Field(ge=1, le=MAX_IOTHREADS)] | None = None
    """`<driver iothread=N>`: the I/O thread (of `<iothreads>`) serving a virtio disk."""
    virtio: VirtioOptions = VirtioOptions()
    source: str | None = None
    target_dev: Annotated[str, Field(pattern=r"^(hd|sd|vd|fd)[a-z]{1,3}$")]
    target_bus: Literal["ide", "sata", "scsi", "virtio", "fdc", "usb"]
    removable: bool | None = None
    """`<target removable='on'|'off'>` (USB disks only): the guest sees removable media."""
    rotation_rate: Annotated[int, Field(ge=1, le=65534)] | None = None
    """`<target rotation_rate=>` (ide, sata, scsi disks): 1 reports an SSD, else the rpm."""
    readonly: bool = False
    boot_order: BootOrder | None = None
    serial: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+\- ]{1,20}$")] | None = None
    shareable: bool = False
    wwn: Annotated[str, Field(pattern=r"^(0x)?[0-9a-fA-F]{16}$")] | None = None
    iotune: IoTune | None = None
    """`<iotune>`: I/O throttling of this disk (or of its group)."""
    address: PciAddress | None = None
    drive: DriveAddress | None = None
    """`<address type='drive'>` of an ide, sata, scsi or fdc disk; None: libvirt's default
    from the target dev name (`model.argv.drive_of`)."""
    startup_policy: Literal["mandatory", "requisite", "optional"] | None = None
    """`<source startupPolicy=>` of a cdrom or floppy: 'optional' starts the VM with the drive
    empty when the image is missing (`model.argv.without_missing`); the others (every start
    is a cold boot) need it."""

    @model_validator(mode="after")
    def _consistent(self) -> Disk:
        """Guarantee a disk has a source, and only cdroms and floppies can be empty."""
        _virtio_only(self.virtio, self.target_bus == "virtio")
        if self.source is None and self.device == "disk":
            raise ValueError("a disk needs <source>; only a cdrom or a floppy may be empty")
        if self.source == "":  # QEMU: A block device must be specified for "file"
            raise ValueError("<source> names no file; give its path, or remove <source>")
        if self.address is not None and self.target_bus != "virtio":
            raise ValueError(f"a disk on bus='{self.target_bus}' has no PCI address of its own; "
                             "remove <address type='pci'>")
        if self.shareable and self.driver_type == "qcow2" and not self.readonly:
            raise ValueError("<shareable/> needs a raw image: two guests writing one qcow2 "
                             "corrupt it (libvirt and QEMU refuse it too); use type='raw'")
        if self.startup_policy not in (None, "mandatory") and self.device == "disk":
            raise ValueError("startupPolicy 'requisite' and 'optional' are for a cdrom or "
                             "floppy (libvirt refuses them on a disk too); remove it")
        if self.drive is not None and self.target_bus not in ("ide", "sata", "scsi", "fdc"):
            raise ValueError(f"a disk on bus='{self.target_bus}' has no drive address; remove "
                             "<address type='drive'>")
        if self.wwn is not None and self.target_bus not in ("ide", "sata", "scsi"):
            raise ValueError("<wwn> is only for ide, sata and scsi disks")
        if self.io == "native" and self.cache not in ("none", "directsync"):
            raise ValueError("io='native' needs cache='none' or 'directsync' (QEMU needs O_DIRECT "
                             "for it)")
        if self.rotation_rate is not None and (self.target_bus not in ("ide", "sata", "scsi")
                                               or self.device != "disk"):
            raise ValueError("<target rotation_rate> is for ide, sata and scsi hard disks (QEMU "
                             "has it on ide-hd and scsi-hd only); remove it")
        if self.iotune is not None and self.source is None:
            raise ValueError("<iotune> on an empty drive has no effect (QEMU throttles media, "
                             "and there is none); add a <source> or remove <iotune>")
        if self.detect_zeroes == "unmap" and self.discard != "unmap":
            raise ValueError("detect_zeroes='unmap' needs discard='unmap' (QEMU refuses it "
                             "otherwise); or use detect_zeroes='on'")
        return self


HostOffload = Literal["csum", "gso", "tso4", "tso6", "ecn", "ufo", "mrg_rxbuf"]
GuestOffload = Literal["csum", "tso4", "tso6", "ecn", "ufo"]
QueueSize = Literal[256, 512, 1024]
"""virtio-net's rx/tx queue sizes: a power of two from 256 to 1024 (QEMU's limits)."""


class NicDriver(Frozen):
    """`<interface><driver>` of a virtio NIC: virtio-net-pci properties and the netdev's queues.

    `name` 'vhost' asks for the kernel's vhost-net (tap netdevs only); 'qemu' for QEMU's own.
    `host`/`guest` are `<host csum= ...>`/`<guest ...>` offloads as (name, on) in document order.
    """

    name: Literal["qemu", "vhost"] | None = None
    txmode: Literal["iothread", "timer"] | None = None
    queues: Annotated[int, Field(ge=1, le=256)] | None = None
    rx_queue_size: QueueSize | None = None
    tx_queue_size: QueueSize | None = None
    ioeventfd: bool | None = None
    event_idx: bool | None = None
    rss: bool | None = None
    rss_hash_report: bool | None = None
    host: tuple[tuple[HostOffload, bool], ...] = ()
    guest: tuple[tuple[GuestOffload, bool], ...] = ()

    def any(self) -> bool:
        """Whether anything is set (the default driver renders nothing)."""
        return self != NicDriver()


IfName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,15}$")]
"""A Linux network interface name (at most 15 bytes)."""


class Interface(Frozen):
    """`<interface type=>`: slirp, a host bridge or a network's, a tap, or a socket netdev.

    type 'ethernet' is a tap device; 'server', 'client', 'mcast' and 'udp' are QEMU socket
    netdevs linking guests directly.
    """

    type: Literal["user", "bridge", "network", "ethernet", "server", "client", "mcast", "udp"]
    mac: Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")] | None = None
    model: Literal["virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "vmxnet3"] = (
        "rtl8139"
    )
    source: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,15}$")] | None = None
    bridge: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,15}$")] | None = None
    """type='network' only: the network's bridge, resolved from libvirt's definition of the
    network when parsed (`model.parse.HostFacts`), written back as `<source bridge=>`."""
    boot_order: BootOrder | None = None
    address: PciAddress | None = None
    virtio: VirtioOptions = VirtioOptions()
    driver: NicDriver = NicDriver()
    socket_address: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:_\-]+$")] | None = None
    """server/client/mcast/udp: `<source address=>`, the peer's (or the listening) address."""
    socket_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    local_address: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:_\-]+$")] | None = None
    """udp: `<source><local address= port=>`, this end."""
    local_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    target_dev: IfName | None = None
    """ethernet: `<target dev=>`, the tap device (QEMU creates it unless managed='no')."""
    target_managed: bool | None = None
    """ethernet: `<target managed='no'>`: the tap exists already (created by the user)."""
    script: str | None = None
    """ethernet: `<script path=>`, run by QEMU with the tap's name once it exists."""
    downscript: str | None = None
    user_ipv4: Annotated[str, Field(pattern=r"^[0-9.]+/[0-9]{1,2}$")] | None = None
    """user only: `<ip family='ipv4' address= prefix=>`, slirp's network (QEMU `net=`)."""
    user_ipv6: Annotated[str, Field(pattern=r"^[0-9A-Fa-f:]+/[0-9]{1,3}$")] | None = None
    """user only: `<ip family='ipv6' address= prefix=>`, slirp's IPv6 prefix."""
    rom_bar: bool | None = None
    """`<rom bar='on'|'off'>`: whether the NIC's option ROM is mapped (QEMU `rombar`)."""
    rom_file: str | None = None
    """`<rom file=>`: the option ROM to load instead of QEMU's."""
    rom_enabled: bool | None = None
    """`<rom enabled='no'>`: no option ROM at all (QEMU `romfile=` empty)."""

    @model_validator(mode="after")
    def _virtio_options(self) -> Interface:
        """Guarantee virtio options only on a virtio NIC."""
        _virtio_only(self.virtio, self.model == "virtio")
        if self.driver.any() and self.model != "virtio" and self.driver != NicDriver(
                name=self.driver.name):
            raise ValueError("<driver> txmode, queues, queue sizes, offloads, rss, ioeventfd and "
                             "event_idx are virtio-net settings; use <model type='virtio'>")
        return self

    @model_validator(mode="after")
    def _socket_and_tap_settings(self) -> Interface:
        """Guarantee socket netdevs have their address and port, and tap settings stay on taps."""
        sock = self.type in ("server", "client", "mcast", "udp")
        if sock and self.socket_port is None:
            raise ValueError(f"type='{self.type}' needs <source address='...' port='...'/>")
        if self.type in ("client", "mcast", "udp") and self.socket_address is None:
            raise ValueError(f"type='{self.type}' needs <source address='...'/>")
        if not sock and (self.socket_address is not None or self.socket_port is not None):
            raise ValueError(f"type='{self.type}' takes no <source address= port=>")
        if self.type == "udp" and (self.local_address is None or self.local_port is None):
            raise ValueError("type='udp' needs <source><local address='...' port='...'/>")
        if self.type != "udp" and (self.local_address is not None or self.local_port is not None):
            raise ValueError("only type='udp' has <source><local>")
        if self.type != "user" and (self.user_ipv4 or self.user_ipv6):
            raise ValueError("<ip> sets user networking's addresses; qemud does not configure "
                             f"them for type='{self.type}' (do it in the guest)")
        tap = (self.target_dev, self.target_managed, self.script, self.downscript)
        if self.type != "ethernet" and any(v is not None for v in tap):
            raise ValueError("<target dev>, <script> and <downscript> are read for "
                             "type='ethernet' only")
        if self.target_managed is False and self.target_dev is None:
            raise ValueError("<target managed='no'> needs dev=, the existing tap's name")
        if self.driver.name == "vhost" and self.type in ("bridge", "network"):
            raise ValueError("<driver name='vhost'>: qemud joins bridges through QEMU's bridge "
                             "helper, whose netdev has no vhost; remove name='vhost'")
        if (self.driver.queues or 1) > 1 and self.type != "ethernet":
            raise ValueError(f"<driver queues>: a type='{self.type}' netdev has one queue pair; "
                             "multiqueue needs type='ethernet' (a multiqueue tap)")
        return self

    @field_validator("mac", mode="before")
    @classmethod
    def _lower_mac(cls, value: object) -> object:
        """Normalise MAC addresses to lower case, as libvirt prints them."""
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bridge_only_for_networks(self) -> Interface:
        """Guarantee a resolved bridge only on a type='network' interface."""
        if self.bridge is not None and self.type != "network":
            raise ValueError("only type='network' has a resolved <source bridge=>")
        return self

    @model_validator(mode="after")
    def _source_matches_type(self) -> Interface:
        """Guarantee bridge and network interfaces name their source, and user ones do not."""
        if self.type in ("bridge", "network") and self.source is None:
            what = "bridge" if self.type == "bridge" else "network"
            raise ValueError(f"type='{self.type}' needs <source {what}='...'/>")
        if self.type not in ("bridge", "network") and self.source is not None:
            raise ValueError(f"type='{self.type}' takes no <source> bridge or network")
        return self


SpiceChannel = Literal["main", "display", "inputs", "cursor", "playback", "record",
                       "smartcard", "usbredir", "webdav"]
"""The spice channels `<graphics><channel name=>` may name (QEMU's spice channel names)."""


class Graphics(Frozen):
    """`<graphics type='vnc'|'spice' port= autoport= listen= passwd=>`; port None means automatic."""

    type: Literal["vnc", "spice"] = "vnc"
    port: Annotated[int, Field(ge=5900, le=65535)] | None = None
    listen: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:\-]+$")] = "127.0.0.1"
    listen_type: Literal["address", "none", "socket"] = "address"
    """`<listen type=>`: an address (`listen`), no listener at all, or a unix socket."""
    socket: Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")] | None = None
    """`<listen type='socket' socket=>`: the socket's path; None: `<type>.sock` in the runtime
    folder (as libvirt puts it in the domain's own folder)."""
    passwd: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]*$")] | None = (
        None
    )
    image_compression: Literal["auto_glz", "auto_lz", "quic", "glz", "lz", "off"] | None = None
    """spice only: `<image compression=>`."""
    jpeg_compression: Literal["auto", "never", "always"] | None = None
    zlib_compression: Literal["auto", "never", "always"] | None = None
    playback_compression: bool | None = None
    streaming: Literal["filter", "all", "off"] | None = None
    mouse: Literal["server", "client"] | None = None
    clipboard: bool | None = None
    filetransfer: bool | None = None
    tls_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """spice only: `tlsPort=`, served with the certificates in `SPICE_X509_DIR`."""
    default_mode: Literal["any", "secure", "insecure"] | None = None
    """spice only: `defaultMode=`, the mode of the channels `channels` does not name."""
    channels: tuple[tuple[SpiceChannel, Literal["secure", "insecure", "any"]], ...] = ()
    """spice only: `<channel name= mode=>` in document order."""
    gl: bool | None = None
    """spice only: `<gl enable=>`, OpenGL on a host render node (local clients only)."""
    rendernode: Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")] | None = None
    audio: Positive | None = None
    """VNC only: `<audio id=>`, the audiodev whose sound VNC clients hear."""
    share_policy: Literal["allow-exclusive", "force-shared", "ignore"] | None = None
    """VNC only: `sharePolicy=`, how QEMU treats a client asking for exclusive access."""

    @model_validator(mode="after")
    def _spice_options_need_spice(self) -> Graphics:
        """Guarantee the spice-only settings are only on spice graphics, TLS where asked for."""
        spice_only = (self.image_compression, self.jpeg_compression, self.zlib_compression,
                      self.playback_compression, self.streaming, self.mouse, self.clipboard,
                      self.filetransfer, self.tls_port, self.default_mode, self.gl,
                      self.rendernode)
        if self.type == "vnc" and (any(v is not None for v in spice_only) or self.channels):
            raise ValueError("image, jpeg, zlib, playback, streaming, mouse, clipboard, "
                             "filetransfer, tlsPort, defaultMode, channel and gl are spice "
                             "settings; VNC has none of them")
        if self.type == "spice" and self.share_policy is not None:
            raise ValueError("sharePolicy is a VNC setting; spice has none")
        if self.type == "spice" and self.audio is not None:
            raise ValueError("<audio id=> in <graphics> is for VNC; spice carries sound with "
                             "<audio type='spice'>")
        secure = self.default_mode == "secure" or any(m == "secure" for _, m in self.channels)
        if secure and self.tls_port is None:
            raise ValueError("a secure spice channel needs TLS: give tlsPort=")
        if self.tls_port is not None and (self.port is None or self.listen_type != "address"):
            raise ValueError("spice over TLS needs port= on an address too (QEMU cannot choose "
                             "spice ports, and TLS is for TCP clients)")
        if self.type == "vnc" and self.passwd is not None and len(self.passwd) > 8:
            raise ValueError("a VNC password has at most 8 characters")
        return self


class Display(Frozen):
    """`<graphics type='egl-headless'|'dbus'>`: a display of QEMU's own, not a VNC/spice server.

    egl-headless renders with OpenGL on a host render node (for VNC or spice beside it); dbus
    exports the display (and audio) on D-Bus: peer to peer (clients connect through QMP
    `add_client`) or on the bus at `address`.
    """

    type: Literal["egl-headless", "dbus"]
    rendernode: Annotated[str, Field(pattern=r"^/[^\x00-\x1f,]*$")] | None = None
    gl: bool | None = None
    """dbus: `<gl enable=>` (OpenGL on a render node)."""
    address: Annotated[str, Field(pattern=r"^[^\x00-\x1f]+$")] | None = None
    """dbus: the D-Bus address of the bus to export on (None: `p2p`)."""
    p2p: bool = False
    audio: Positive | None = None
    """dbus: `<audio id=>`, the audiodev exported with the display."""

    @model_validator(mode="after")
    def _dbus_needs_a_way_in(self) -> Display:
        """Guarantee a dbus display says how clients reach it, and dbus settings stay on dbus."""
        if self.type == "dbus" and not self.p2p and self.address is None:
            raise ValueError("a dbus display needs p2p='yes' or address=")
        if self.type == "egl-headless" and (self.gl is not None or self.address is not None
                                            or self.p2p or self.audio is not None):
            raise ValueError("gl enable, address, p2p and audio are dbus settings")
        return self


CharType = Literal["pty", "file", "unix", "null", "dev", "tcp", "udp", "pipe", "spiceport"]
"""libvirt's character device types that qemud renders (QEMU's pty, file, socket, null,
serial/parallel, udp and pipe chardev backends)."""

Service = Annotated[int, Field(ge=0, le=65535)]
"""A TCP or UDP port, as libvirt's `service=`."""
Host = Annotated[str, Field(pattern=r"^[0-9A-Za-z.:_\-]*$")]


class CharSource(Frozen):
    """A character device's host side: `type=`, `<source>` (or two for udp), `<protocol>`.

    `mode` is the socket's side: 'bind' listens (QEMU `server=on,wait=off`), 'connect' dials.
    For udp `host`/`service` are where datagrams go and `bind_host`/`bind_service` the local end.
    """

    type: CharType = "pty"
    path: str | None = None
    mode: Literal["bind", "connect"] = "bind"
    host: Host | None = None
    service: Service | None = None
    bind_host: Host | None = None
    bind_service: Service | None = None
    telnet: bool = False
    """`<protocol type='telnet'>` (tcp only); False is 'raw'."""
    reconnect: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """`<reconnect enabled='yes' timeout=N>` in seconds; 0 is `enabled='no'`; tcp and unix."""
    append: bool | None = None
    """`<source append='on'|'off'>` of a file."""
    spice_channel: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] | None = None
    """spiceport: `<source channel=>`, the spice port's name the client opens."""

    @model_validator(mode="after")
    def _source_matches_type(self) -> CharSource:
        """Guarantee each type has what QEMU needs, and nothing another type's."""
        if self.type in ("file", "unix", "dev", "pipe") and not self.path:
            raise ValueError(f"type='{self.type}' needs <source path='...'/>")
        if self.path is not None and self.type not in ("file", "unix", "dev", "pipe", "pty"):
            raise ValueError(f"type='{self.type}' takes no <source path>")  # pty: libvirt's live
        if self.type not in ("tcp", "udp") and (self.host or self.service is not None):
            raise ValueError(f"type='{self.type}' takes no host= or service=")
        if self.type == "tcp" and self.service is None:
            raise ValueError("type='tcp' needs <source service='PORT'/>")
        if self.type == "udp" and self.service is None:
            raise ValueError("type='udp' needs <source mode='connect' service='PORT'/>")
        if self.type != "udp" and (self.bind_host or self.bind_service is not None):
            raise ValueError("only type='udp' has a second, bind-side <source>")
        if self.telnet and self.type != "tcp":
            raise ValueError("<protocol type='telnet'> is for type='tcp' only")
        if self.reconnect is not None and (self.type not in ("tcp", "unix")
                                           or self.mode != "connect"):
            raise ValueError("<reconnect> is for tcp and unix sources with mode='connect'")
        if self.append is not None and self.type != "file":
            raise ValueError("<source append=> is for type='file' only")
        if (self.type == "spiceport") != (self.spice_channel is not None):
            raise ValueError("type='spiceport' needs <source channel='...'/>, and only it takes "
                             "one")
        return self


class Serial(CharSource):
    """`<serial type=>` (and a `<console>` that stands for a serial port): a guest serial port."""

    port: Annotated[int, Field(ge=0, le=3)] = 0
    """QEMU has 4 ISA serial ports (COM1-COM4)."""
    log: str | None = None
    log_append: bool = False
    target_type: Literal["isa-serial", "isa-debug"] = "isa-serial"
    """`<target type='isa-debug'>`: QEMU's isa-debugcon (SeaBIOS/OVMF debug output) instead."""
    iobase: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    """`<address type='isa' iobase= irq=>`: the port's I/O base (debugcon: 0x402 if absent)."""
    irq: Annotated[int, Field(ge=0, le=15)] | None = None


class Console(CharSource):
    """`<console><target type='virtio'>`: a virtio console (QEMU `virtconsole`, guest hvc0...)."""


class Parallel(CharSource):
    """`<parallel type=>`: an ISA parallel port (QEMU `isa-parallel`, LPT1-LPT3)."""

    port: Annotated[int, Field(ge=0, le=2)] = 0


class Video(Frozen):
    """`<video><model type= heads= vram= ram= vgamem=/></video>`; sizes in KiB as libvirt has them."""

    model: Literal["vga", "cirrus", "qxl", "virtio", "bochs", "ramfb", "none"] = "vga"
    heads: Annotated[int, Field(ge=1, le=16)] | None = None
    vram: Annotated[int, Field(ge=1024, le=2**22)] | None = None
    ram: Annotated[int, Field(ge=1024, le=2**22)] | None = None
    vgamem: Annotated[int, Field(ge=1024, le=2**22)] | None = None
    resolution: tuple[Annotated[int, Field(ge=1, le=16384)],
                      Annotated[int, Field(ge=1, le=16384)]] | None = None
    """`<model><resolution x= y=/>`: the display size the guest starts with (qxl, virtio)."""
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _resolution_where_qemu_has_it(self) -> Video:
        """Guarantee a resolution only on qxl and virtio, the adapters with xres/yres."""
        if self.resolution is not None and self.model not in ("qxl", "virtio"):
            raise ValueError(f"<resolution> is for qxl and virtio video; QEMU's {self.model} "
                             "has no settable resolution (the guest picks it); remove it")
        return self


class Input(Frozen):
    """`<input type= bus=>`.

    'passthrough' hands a host evdev device to the guest (virtio-input-host-pci); 'evdev' feeds
    a host keyboard or mouse to the guest's own input devices (QEMU's input-linux object).
    """

    type: Literal["tablet", "mouse", "keyboard", "passthrough", "evdev"]
    bus: Literal["usb", "ps2", "virtio"] = "ps2"
    usb_port: Annotated[str, Field(pattern=r"^[1-9][0-9]?(\.[1-9][0-9]?){0,4}$")] | None = None
    address: PciAddress | None = None
    virtio: VirtioOptions = VirtioOptions()
    evdev: Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")] | None = None
    """passthrough: `<source evdev=>`; evdev: `<source dev=>` (a /dev/input/event* file)."""
    grab: Literal["all"] | None = None
    """evdev: `<source grab='all'>`: the grab takes every host input device."""
    grab_toggle: Literal["ctrl-ctrl", "alt-alt", "shift-shift", "meta-meta", "scrolllock",
                         "ctrl-scrolllock"] | None = None
    repeat: bool | None = None

    @model_validator(mode="after")
    def _host_devices(self) -> Input:
        """Guarantee a host device for passthrough (virtio) and evdev, and only for them."""
        host = self.type in ("passthrough", "evdev")
        if host != (self.evdev is not None):
            raise ValueError(f"type='{self.type}' " + ("needs <source> naming the host's "
                             "/dev/input/event* device" if host else "takes no <source>"))
        if self.type == "passthrough" and self.bus != "virtio":
            raise ValueError("type='passthrough' is on bus='virtio' (virtio-input-host-pci)")
        if self.type == "evdev" and (self.bus != "ps2" or self.address or self.usb_port):
            raise ValueError("type='evdev' is no guest device: it takes no bus= or <address>")
        if self.type != "evdev" and (self.grab or self.grab_toggle or self.repeat is not None):
            raise ValueError("grab, grabToggle and repeat are for type='evdev'")
        return self

    @model_validator(mode="after")
    def _ps2_has_no_tablet(self) -> Input:
        """Guarantee the combination exists in QEMU (no PS/2 tablet), virtio options on virtio."""
        _virtio_only(self.virtio, self.bus == "virtio")
        if self.type == "tablet" and self.bus == "ps2":
            raise ValueError("a tablet cannot be on the ps2 bus; use bus='usb' or bus='virtio'")
        return self


class Rng(Frozen):
    """`<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>`."""

    model: Literal["virtio"] = "virtio"
    backend: str = "/dev/urandom"
    backend_model: Literal["random", "builtin", "egd"] = "random"
    """'builtin': QEMU's own generator (rng-builtin), no host device; 'egd': an EGD daemon."""
    egd: CharSource | None = None
    """egd only: `<backend model='egd' type=>` with its source, where the daemon listens."""
    virtio: VirtioOptions = VirtioOptions()
    rate_bytes: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    """QEMU's `max-bytes`: below 2**63."""
    rate_period: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    """QEMU's `period` in ms: a uint32."""
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _egd_has_source(self) -> Rng:
        """Guarantee an egd backend has its character device, and only an egd backend."""
        if (self.backend_model == "egd") != (self.egd is not None):
            raise ValueError("<backend model='egd'> needs type= and its <source> (and only egd "
                             "takes them)")
        return self


class Tpm(Frozen):
    """`<tpm model='tpm-tis'|'tpm-crb'><backend type='emulator' version=/></tpm>`: an swtpm beside QEMU."""

    model: Literal["tpm-tis", "tpm-crb"] = "tpm-tis"
    version: Literal["1.2", "2.0"] = "2.0"


class Controller(Frozen):
    """`<controller type= index= model= ports=>`: USB, SCSI, virtio-serial and PCI bridges and ports."""

    type: Literal["usb", "scsi", "ide", "sata", "pci", "virtio-serial", "fdc", "ccid"]
    index: NonNegative = 0
    model: str | None = None
    ports: Annotated[int, Field(ge=1, le=31)] | None = None
    """usb (qemu-xhci, nec-xhci) ports, or virtio-serial ports (`max_ports`)."""
    chassis: Annotated[int, Field(ge=0, le=255)] | None = None
    """pcie-root-port and pci-bridge `<target chassis=>` (chassisNr for a bridge)."""
    port: Annotated[int, Field(ge=0, le=255)] | None = None
    """pcie-root-port `<target port=>`."""
    hotplug: bool | None = None
    """pcie-root-port and pci-root `<target hotplug=>` (off: the guest cannot hot-plug there)."""
    master: Annotated[int, Field(ge=0, le=4)] | None = None
    """A USB companion controller's `<master startport=>` (ich9-uhci1..3 beside ich9-ehci1)."""
    queues: Annotated[int, Field(ge=1, le=1024)] | None = None
    """virtio-scsi `<driver queues=>` (num_queues)."""
    cmd_per_lun: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    max_sectors: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    ioeventfd: bool | None = None
    iothread: Annotated[int, Field(ge=1, le=MAX_IOTHREADS)] | None = None
    """virtio-scsi `<driver iothread=>`: the I/O thread serving the controller."""
    vectors: Annotated[int, Field(ge=0, le=1024)] | None = None
    """virtio-serial `vectors=` (MSI-X vectors)."""
    virtio: VirtioOptions = VirtioOptions()
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _options_of_its_kind(self) -> Controller:
        """Guarantee each option is on the controller that has it."""
        scsi = self.type == "scsi" and self.model in (None, "auto", "virtio-scsi")  # the default
        if not scsi and any(v is not None for v in (self.queues, self.cmd_per_lun,
                                                    self.max_sectors, self.ioeventfd,
                                                    self.iothread)):
            raise ValueError("<driver> queues, cmd_per_lun, max_sectors, ioeventfd and "
                             "iothread are options of a virtio-scsi controller (the default "
                             "model); remove them or the other model")
        if self.vectors is not None and self.type != "virtio-serial":
            raise ValueError("vectors= is an option of the virtio-serial controller")
        virtio = self.type == "virtio-serial" or scsi
        _virtio_only(self.virtio, virtio)
        if self.master is not None and self.model not in ("ich9-uhci1", "ich9-uhci2",
                                                          "ich9-uhci3"):
            raise ValueError("<master> is for the ich9-uhci1..3 companions of an ich9-ehci1")
        if self.hotplug is not None and self.model not in ("pcie-root-port", "pci-root"):
            raise ValueError("<target hotplug> is for pcie-root-port and pci-root controllers")
        return self


class Channel(Frozen):
    """`<channel type=><target type='virtio' name=/>`: a virtio-serial port.

    unix (its socket in the runtime folder unless `path`), spicevmc (the spice agent), pty,
    qemu-vdagent (QEMU's own clipboard/mouse agent, for VNC), or any other character device
    (tcp, udp, file, null, dev, pipe) held in `source`.
    """

    type: Literal["unix", "spicevmc", "pty", "qemu-vdagent", "tcp", "udp", "file", "null", "dev",
                  "pipe", "spiceport"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] | None = None
    path: str | None = None
    """unix only; None means the runtime folder's `<name>` socket (libvirt's channel dir), or
    `channel<N>.sock` for nameless channel N."""
    mode: Literal["bind", "connect"] = "bind"
    reconnect: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """unix with mode='connect': `<reconnect>` seconds (0: enabled='no')."""
    source: CharSource | None = None
    """tcp, udp, file, null, dev and pipe channels: the character device."""
    vdagent_clipboard: bool | None = None
    """qemu-vdagent: `<source><clipboard copypaste=>`."""
    vdagent_mouse: Literal["client", "server"] | None = None
    """qemu-vdagent: `<source><mouse mode=>` ('client': the agent reports absolute positions)."""
    controller: NonNegative = 0
    port: Annotated[int, Field(ge=1, le=30)] | None = None
    """The virtio-serial port (`nr`); None assigns the next free one, as libvirt does."""

    @model_validator(mode="after")
    def _name_fits_type(self) -> Channel:
        """Guarantee a spicevmc/vdagent name, a connecting socket's path, settings per type."""
        if self.type in ("spicevmc", "qemu-vdagent") and self.name not in (None,
                                                                          "com.redhat.spice.0"):
            raise ValueError(f"a {self.type} channel is the spice agent's: name it "
                             "'com.redhat.spice.0' or leave the name out")
        if self.type != "unix" and self.path is not None:
            raise ValueError(f"type='{self.type}' takes no <source path>")
        if self.type == "unix" and self.path is None and self.mode == "connect":
            raise ValueError("mode='connect' needs <source path='...'/>: the socket to connect to")
        if self.reconnect is not None and (self.type != "unix" or self.mode != "connect"):
            raise ValueError("<reconnect> is for tcp and unix sources with mode='connect'")
        relayed = self.type in ("tcp", "udp", "file", "null", "dev", "pipe", "spiceport")
        if relayed != (self.source is not None) or (self.source is not None
                                                    and self.source.type != self.type):
            raise ValueError(f"type='{self.type}' and its character device disagree")
        if self.type != "qemu-vdagent" and (self.vdagent_clipboard is not None
                                            or self.vdagent_mouse is not None):
            raise ValueError("<source><clipboard>/<mouse> are for type='qemu-vdagent'")
        return self


class Sound(Frozen):
    """`<sound model=>` with optional `<codec type=>`s and `<audio id=>`."""

    model: Literal["ich9", "ich6", "ac97", "usb", "es1370", "sb16", "pcspk"]
    """HD Audio (ich9, ich6), AC97, USB audio, ES1370 (PCI), Sound Blaster 16 (ISA) and the PC
    speaker (a machine property)."""
    codecs: tuple[Literal["duplex", "micro", "output"], ...] = ()
    audio: Positive | None = None
    """The id of the `<audio>` backend; None is the first one."""
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _codecs_need_hda(self) -> Sound:
        """Guarantee codecs only on HD Audio (ich6, ich9)."""
        if self.codecs and self.model not in ("ich6", "ich9"):
            raise ValueError(f"<codec> is for the HD Audio models ich6 and ich9, not {self.model!r}")
        if self.address is not None and self.model in ("sb16", "pcspk"):
            raise ValueError(f"the {self.model} sound device has no PCI or USB address")
        return self


class Shmem(Frozen):
    """`<shmem name=>`: memory shared with other VMs or host programs (ivshmem), in /dev/shm.

    ivshmem-plain maps `/dev/shm/<name>`; ivshmem-doorbell talks to an `ivshmem-server` on a
    unix socket (`server`, by default libvirt's path) that interrupts the peers.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,200}$")]
    model: Literal["ivshmem-plain", "ivshmem-doorbell"] = "ivshmem-plain"
    size: Annotated[int, Field(ge=1024 * 1024)] = 4 * 1024 * 1024
    """Bytes; a power of two (QEMU's BAR), at least 1 MiB."""
    role: Literal["master", "peer"] | None = None
    server: Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")] | None = None
    """ivshmem-doorbell: the server's socket (None: libvirt's /var/lib/libvirt/shmem-NAME-sock)."""
    vectors: Annotated[int, Field(ge=1, le=1024)] | None = None
    ioeventfd: bool | None = None
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Shmem:
        """Guarantee a power-of-two size and doorbell settings only on a doorbell."""
        if self.size & (self.size - 1):
            raise ValueError("the shared memory size must be a power of two (4 MiB by default)")
        if self.model == "ivshmem-plain" and (self.server is not None or self.vectors is not None
                                               or self.ioeventfd is not None):
            raise ValueError("<server> and <msi> are for model 'ivshmem-doorbell'")
        return self


UsbPort = Annotated[str, Field(pattern=r"^[1-9][0-9]?(\.[1-9][0-9]?){0,4}$")]
"""A USB port path: a root port, then the port on each hub below it ('1.2.3')."""


class Hub(Frozen):
    """`<hub type='usb'>`: a USB hub (8 ports) on a root port or on another hub's port."""

    usb_port: UsbPort | None = None


class Audio(Frozen):
    """`<audio id= type=>`: where guest sound goes; 'none' drops it, 'spice' sends it to the client."""

    id: Positive
    type: Literal["none", "spice", "alsa", "oss", "file", "pulseaudio", "jack", "sdl", "dbus"]
    settings: tuple[tuple[str, str], ...] = ()
    """libvirt's tuning as (where, value) in document order: `timerPeriod`, `path` (file),
    `input/voices`, `output/settings/frequency`..., each a name `model.argv` knows."""


class Redirdev(Frozen):
    """`<redirdev bus='usb' type=>`: a USB device redirected into the guest (QEMU `usb-redir`).

    `source` None is type 'spicevmc' (the spice client's devices); else a usbredir peer on a
    character device (tcp, unix...), e.g. `usbredirserver` on the host or another machine.
    """

    usb_port: Annotated[str, Field(pattern=r"^[1-9][0-9]?(\.[1-9][0-9]?){0,4}$")] | None = None
    source: CharSource | None = None
    boot_order: BootOrder | None = None


class UsbFilterRule(Frozen):
    """`<redirfilter><usbdev class= vendor= product= version= allow=/>`: one usbredir filter rule.

    None matches any value (libvirt's -1); `version` is the device's BCD release (0x0110 for
    '1.10').
    """

    usb_class: Annotated[int, Field(ge=0, le=0xFF)] | None = None
    vendor: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    product: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    version: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    allow: bool


class Smartcard(Frozen):
    """`<smartcard mode=>` on a USB CCID reader (QEMU `usb-ccid`).

    'host' and 'host-certificates' emulate a card from the host's NSS database
    (`ccid-card-emulated`); 'passthrough' relays a remote card over `source` (None: spicevmc,
    the spice client's card) with `ccid-card-passthru`.
    """

    mode: Literal["host", "host-certificates", "passthrough"]
    certificates: tuple[Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f,]+$")], ...] = ()
    """host-certificates: the three NSS certificate nicknames."""
    database: str | None = None
    """host-certificates: the NSS database folder (None: /etc/pki/nssdb, as libvirt)."""
    source: CharSource | None = None

    @model_validator(mode="after")
    def _mode_settings(self) -> Smartcard:
        """Guarantee three certificates exactly for host-certificates, a source only to relay."""
        if self.mode == "host-certificates" and len(self.certificates) != 3:
            raise ValueError("mode='host-certificates' needs exactly three <certificate>s")
        if self.mode != "host-certificates" and (self.certificates or self.database):
            raise ValueError("<certificate> and <database> are for mode='host-certificates'")
        if self.mode != "passthrough" and self.source is not None:
            raise ValueError(f"mode='{self.mode}' takes no type= or <source>; the card is the "
                             "host's")
        return self


class Vsock(Frozen):
    """`<vsock model='virtio'><cid auto= address=/>`: a host-guest socket (vhost-vsock-pci).

    `cid` None is `auto='yes'`: qemud derives a stable context id from the domain's uuid
    (`model.argv.vsock_cid`) instead of probing the host for a free one as libvirt does.
    """

    cid: Annotated[int, Field(ge=3, le=2**32 - 2)] | None = None
    address: PciAddress | None = None


class Watchdog(Frozen):
    """`<watchdog model= action=>`."""

    model: Literal["i6300esb", "ib700"]
    action: Literal["reset", "shutdown", "poweroff", "pause", "none", "inject-nmi"] = "reset"
    address: PciAddress | None = None


class Share9p(Frozen):
    """A 9p `<filesystem>`: a host folder QEMU itself serves to the guest (virtio-9p-pci).

    `<driver type='path'>` (or none); accessmode passthrough, mapped or squash as QEMU's
    security_model; the guest mounts it by its tag.
    """

    source_dir: Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")]
    target_dir: Annotated[str, Field(min_length=1, max_length=31)]
    """The 9p mount tag (QEMU allows 31 bytes)."""
    accessmode: Literal["passthrough", "mapped", "squash"] = "passthrough"
    readonly: bool = False
    writeout: Literal["immediate"] | None = None
    """`<driver wrpolicy='immediate'>`."""
    multidevs: Literal["default", "remap", "forbid", "warn"] | None = None
    fmode: Annotated[int, Field(ge=0, le=0o777)] | None = None
    dmode: Annotated[int, Field(ge=0, le=0o777)] | None = None
    address: PciAddress | None = None


class Filesystem(Frozen):
    """A virtiofs `<filesystem>`: a host folder shared with the guest through a virtiofsd.

    `<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>`; the guest
    mounts it by its tag. The `<binary>` settings are virtiofsd's options (None: virtiofsd's default).
    """

    source_dir: Annotated[str, Field(min_length=1)]
    """`<source dir=>`: the host folder, an absolute path."""
    target_dir: Annotated[str, Field(min_length=1, max_length=36)]
    """`<target dir=>`: the mount tag the guest sees (QEMU's `tag`, at most 36 bytes)."""
    queue: Annotated[int, Field(ge=1, le=1024)] | None = None
    """`<driver queue=>`: QEMU's `queue-size` (a power of two, at most 1024)."""
    binary_path: str | None = None
    """`<binary path=>`: the virtiofsd to run (default: QEMU's vhost-user descriptor's)."""
    xattr: bool | None = None
    cache: Literal["none", "always"] | None = None
    sandbox: Literal["namespace", "chroot"] | None = None
    posix_lock: bool | None = None
    flock: bool | None = None
    thread_pool: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    address: PciAddress | None = None

    @field_validator("source_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """The shared folder is an absolute host path (virtiofsd is not run from the file's folder)."""
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path")
        return value

    @field_validator("target_dir")
    @classmethod
    def _tag(cls, value: str) -> str:
        """The tag fits the 36 bytes of virtio-fs's config space."""
        if len(value.encode()) > 36:
            raise ValueError(f"the mount tag {value!r} is longer than QEMU's 36 bytes")
        return value

    @field_validator("queue")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        """QEMU refuses a queue size that is not a power of two."""
        if value is not None and value & (value - 1):
            raise ValueError(f"{value} is not a power of two (QEMU's queue-size must be one)")
        return value


class Hugepage(Frozen):
    """`<hugepages><page size= unit= nodeset=/>`: the page size (bytes) of some or all NUMA cells."""

    size: Positive
    nodeset: frozenset[int] | None = None


class MemoryBacking(Frozen):
    """`<memoryBacking>`: how guest RAM is backed on the host (model/memory.py renders it).

    `hugepages` is `<hugepages>` (its `pages`, or the host's default page size when none);
    `source` the backing (anonymous RAM, a file in the runtime folder, a memfd); `access`
    'shared' lets helpers such as virtiofsd map it; `allocation` 'immediate' preallocates it
    (with `threads`); `discard` frees file-backed memory at exit; `locked` keeps it in RAM;
    `nosharepages` turns KSM off for the guest.
    """

    hugepages: bool = False
    pages: tuple[Hugepage, ...] = ()
    source: Literal["anonymous", "file", "memfd"] | None = None
    access: Literal["shared", "private"] | None = None
    allocation: Literal["immediate", "ondemand"] | None = None
    threads: Positive | None = None
    discard: bool = False
    locked: bool = False
    nosharepages: bool = False


class MemoryDevice(Frozen):
    """`<memory model=>` in `<devices>`: a DIMM, NVDIMM, virtio-mem or virtio-pmem device.

    Sizes are bytes. `path` is the backing file an nvdimm/virtio-pmem names (`<source><path>`);
    `nodemask`/`pagesize` the `<source>` of a dimm/virtio-mem; `node`, `label_size`, `block`,
    `requested`, `readonly` come from `<target>`; `slot`/`base` from `<address type='dimm'>`.
    """

    model: Literal["dimm", "nvdimm", "virtio-mem", "virtio-pmem"]
    access: Literal["shared", "private"] | None = None
    discard: bool | None = None
    path: str | None = None
    nodemask: frozenset[int] | None = None
    pagesize: Positive | None = None
    pmem: bool = False
    alignsize: Positive | None = None
    size: Positive
    node: NonNegative | None = None
    label_size: Positive | None = None
    block: Positive | None = None
    requested: NonNegative | None = None
    readonly: bool = False
    slot: NonNegative | None = None
    base: NonNegative | None = None
    address: PciAddress | None = None


class Iommu(Frozen):
    """`<iommu model=>`: the guest's IOMMU, Intel's VT-d (intel-iommu) or virtio-iommu.

    The `<driver>` switches are intel-iommu's: interrupt remapping, caching mode, extended
    interrupt mode, device IOTLB and the address width in bits. A virtio IOMMU sits on the root
    PCI bus (libvirt calls it an integrated device).
    """

    model: Literal["intel", "virtio"]
    intremap: bool | None = None
    caching_mode: bool | None = None
    eim: bool | None = None
    iotlb: bool | None = None
    aw_bits: Literal[39, 48] | None = None
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Iommu:
        """Guarantee driver switches only on intel, eim only with intremap, virtio on bus 0."""
        switches = (self.intremap, self.caching_mode, self.eim, self.iotlb, self.aw_bits)
        if self.model == "virtio" and any(v is not None for v in switches):
            raise ValueError("<iommu model='virtio'> has no <driver> settings (they are "
                             "intel-iommu's); remove them")
        if self.model == "intel" and self.address is not None:
            raise ValueError("<iommu model='intel'> is not a PCI device; remove <address>")
        if self.eim and not self.intremap:
            raise ValueError("<driver eim='on'> needs intremap='on' (extended interrupt mode "
                             "is part of interrupt remapping)")
        if self.address is not None and self.address.bus != 0:
            raise ValueError("a virtio IOMMU must sit on the root bus (bus='0x00'), as libvirt "
                             "requires")
        return self


class Devices(Frozen):
    """`<devices>`: everything qemud renders, in document order within each kind."""

    emulator: str | None = None
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    displays: tuple[Display, ...] = ()
    """egl-headless and dbus `<graphics>` (at most one)."""
    serials: tuple[Serial, ...] = ()
    consoles: tuple[Console, ...] = ()
    """Virtio consoles only (a `<console>` with a serial target is one of `serials`)."""
    parallels: tuple[Parallel, ...] = ()
    videos: tuple[Video, ...] = ()
    inputs: tuple[Input, ...] = ()
    controllers: tuple[Controller, ...] = ()
    memballoon: Literal["virtio", "none"] | None = None
    memballoon_address: PciAddress | None = None
    memballoon_deflate: bool | None = None
    """`<memballoon autodeflate=>`: the guest deflates the balloon when it runs out of memory."""
    memballoon_free_page_reporting: bool | None = None
    """`<memballoon freePageReporting=>`: the guest reports free pages to the host."""
    memballoon_virtio: VirtioOptions = VirtioOptions()
    memballoon_stats: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """`<memballoon><stats period=>`: seconds between the guest's memory statistics (QEMU's
    guest-stats-polling-interval; read them with `qom-get ... guest-stats`); 0: none."""
    panic: Literal["isa"] | None = None
    hyperv_panic: bool = False
    """`<panic model='hyperv'>`: the Hyper-V crash MSRs (a CPU property, beside an isa one)."""
    rngs: tuple[Rng, ...] = ()
    channels: tuple[Channel, ...] = ()
    sounds: tuple[Sound, ...] = ()
    audios: tuple[Audio, ...] = ()
    redirdevs: tuple[Redirdev, ...] = ()
    redirfilter: tuple[UsbFilterRule, ...] = ()
    """The filter of every `<redirdev>`'s USB devices, rules in order (none: all allowed)."""
    smartcards: tuple[Smartcard, ...] = ()
    vsocks: Annotated[tuple[Vsock, ...], Field(max_length=1)] = ()
    watchdogs: tuple[Watchdog, ...] = ()
    shmems: tuple[Shmem, ...] = ()
    hubs: tuple[Hub, ...] = ()
    tpms: Annotated[tuple[Tpm, ...], Field(max_length=1)] = ()
    filesystems: tuple[Filesystem, ...] = ()
    shares_9p: tuple[Share9p, ...] = ()
    """9p `<filesystem>`s (QEMU's own server), numbered after the virtiofs ones."""
    memories: tuple[MemoryDevice, ...] = ()
    """`<memory model=>` devices (memory hotplug: they need `Domain.max_memory`)."""
    iommu: Iommu | None = None


class PowerManagement(Frozen):
    """`<pm><suspend-to-mem enabled=/><suspend-to-disk enabled=/></pm>` (None: QEMU's default)."""

    suspend_to_mem: bool | None = None
    suspend_to_disk: bool | None = None


MAX_NAME_BYTES = 200
"""Longest domain name in UTF-8 bytes: `<name>.console.log` and the status file's temporary
`.<name>.json.XXXXXXXX.tmp` must fit in a 255-byte file name."""


SMBIOS_FIELDS: dict[str, tuple[str, ...]] = {
    "bios": ("vendor", "version", "date", "release"),
    "system": ("manufacturer", "product", "version", "serial", "uuid", "sku", "family"),
    "baseBoard": ("manufacturer", "product", "version", "serial", "asset", "location"),
    "chassis": ("manufacturer", "version", "serial", "asset", "sku"),
}
"""The `<entry name=>`s of each `<sysinfo type='smbios'>` block (libvirt's names, QEMU's keys)."""

Entries = tuple[tuple[str, str], ...]
"""(name, value) pairs in document order."""


class FwCfg(Frozen):
    """`<sysinfo type='fwcfg'><entry name= [file=]>`: a blob the guest reads from fw_cfg."""

    name: Annotated[str, Field(pattern=r"^opt/[^\x00-\x1f]{1,51}$")]
    """Under opt/ (QEMU reserves the rest), at most 55 bytes."""
    value: str | None = None
    file: Annotated[str, Field(pattern=r"^/[^\x00-\x1f]*$")] | None = None

    @model_validator(mode="after")
    def _value_or_file(self) -> FwCfg:
        """Guarantee exactly one of a value or a file."""
        if (self.value is None) == (self.file is None):
            raise ValueError("a fw_cfg entry has either text or file=, not both or neither")
        return self


class Sysinfo(Frozen):
    """`<sysinfo type='smbios'>` (SMBIOS tables 0, 1, 2, 3 and 11) and `<sysinfo type='fwcfg'>`."""

    bios: Entries = ()
    system: Entries = ()
    base_boards: tuple[Entries, ...] = ()
    chassis: Entries = ()
    oem_strings: tuple[str, ...] = ()
    fw_cfg: tuple[FwCfg, ...] = ()


CpuSet = frozenset[int]


class Cputune(Frozen):
    """`<cputune>` pins: the host CPUs of vCPU, emulator and I/O threads.

    The emulator's threads are all the others. qemud applies the pins before the guest runs.
    """

    vcpupins: tuple[tuple[Annotated[int, Field(ge=0)], CpuSet], ...] = ()
    emulatorpin: CpuSet | None = None
    iothreadpins: tuple[tuple[Positive, CpuSet], ...] = ()

    @model_validator(mode="after")
    def _one_pin_each(self) -> Cputune:
        """Guarantee one pin per vCPU and I/O thread, none of them empty."""
        for what, pins in (("vcpu", self.vcpupins), ("iothread", self.iothreadpins)):
            ids = [i for i, _ in pins]
            if len(ids) != len(set(ids)):
                raise ValueError(f"each {what} is pinned once; remove the second <{what}pin>")
        if any(not cpus for _, cpus in (*self.vcpupins, *self.iothreadpins)) or (
                self.emulatorpin is not None and not self.emulatorpin):
            raise ValueError("a pin's cpuset names no CPU")
        return self


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class QemuCommandline(Frozen):
    """`<qemu:commandline>`: arguments appended to QEMU's command line, and its environment.

    Passed as written (libvirt marks such a domain tainted: qemud cannot check them).
    """

    args: tuple[str, ...] = ()
    env: tuple[tuple[EnvName, str], ...] = ()


class Domain(Frozen):
    """A whole `<domain>`: the guest's hardware, lifecycle actions and qemud's desired state."""

    type: Literal["kvm", "qemu"]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    uuid: uuidlib.UUID
    title: str | None = None
    description: str | None = None
    genid: uuidlib.UUID | None = None
    """`<genid>`: the VM generation ID the guest sees (vmgenid); change it to tell the guest it
    was cloned or restored."""
    memory: Positive
    dump_core: bool | None = None
    """`<memory dumpCore=>`: whether the guest's memory goes into QEMU's core dumps
    (`-machine dump-guest-core=`; off unless 'on', as libvirt renders it)."""
    current_memory: Positive | None = None
    memory_backing: MemoryBacking | None = None
    max_memory: Positive | None = None
    """`<maxMemory slots= unit=>`: the most memory hotplug may reach (bytes)."""
    max_memory_slots: NonNegative | None = None
    vcpu: Vcpu = Vcpu()
    cpu: Cpu | None = None
    cputune: Cputune | None = None
    numatune: Numatune | None = None
    iothreads: Annotated[int, Field(ge=0, le=MAX_IOTHREADS)] = 0
    """`<iothreads>N</iothreads>`: QEMU I/O threads iothread1..N for virtio disks."""
    os: Os = Os()
    features: Features = Features()
    clock: Clock = Clock()
    on_poweroff: Lifecycle = "destroy"
    on_reboot: Lifecycle = "restart"
    on_crash: Lifecycle = "destroy"
    pm: PowerManagement = PowerManagement()
    devices: Devices = Devices()
    sysinfo: Sysinfo | None = None
    qemu_commandline: QemuCommandline | None = None
    desired: Desired = Desired()

    @field_validator("name")
    @classmethod
    def _libvirt_name(cls, value: str) -> str:
        """Apply libvirt's rules to names: no '/', no control characters, not only white space."""
        if "/" in value:
            raise ValueError(f"name {value!r} contains '/', which libvirt forbids")
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError(f"name {value!r} contains a control character")
        if not value.strip():
            raise ValueError("name is empty")
        if value.startswith("."):
            raise ValueError(f"name {value!r} starts with '.', which would hide its files")
        size = len(value.encode())
        if size > MAX_NAME_BYTES:
            raise ValueError(f"name is {size} bytes in UTF-8; at most {MAX_NAME_BYTES} fit in the "
                             "file names qemud derives from it (logs, status); shorten it")
        return value

    @field_validator("on_poweroff", "on_reboot")
    @classmethod
    def _qemu_lifecycle(cls, value: str) -> str:
        """Refuse what QEMU cannot do on a power-off or reboot: keep a stopped guest, rename one.

        libvirt's QEMU driver refuses them too; `<on_crash>preserve` (pause the guest) is kept.
        """
        if value in ("preserve", "rename-restart"):
            raise ValueError(f"'{value}' is not supported by qemud (nor by libvirt's QEMU "
                             "driver); use 'destroy' or 'restart'")
        return value

    @model_validator(mode="after")
    def _memory_consistent(self) -> Domain:
        """Guarantee currentMemory never exceeds memory."""
        if self.current_memory is not None and self.current_memory > self.memory:
            raise ValueError("currentMemory is larger than memory")
        return self
