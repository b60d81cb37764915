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


class Os(Frozen):
    """`<os>`: `<type arch= machine=>hvm</type>`, boot order, boot menu and direct kernel boot."""

    type: Literal["hvm"] = "hvm"
    arch: Literal["x86_64", "i686"] | None = None
    machine: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None
    boot: tuple[BootDev, ...] = ()
    bootmenu: bool | None = None
    bootmenu_timeout: Annotated[int, Field(ge=0, le=65535)] | None = None
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


class Timer(Frozen):
    """`<clock><timer name= tickpolicy= present= frequency= mode=/>` (x86 timers QEMU has)."""

    name: Literal["rtc", "pit", "hpet", "kvmclock", "tsc", "hypervclock", "platform"]
    tickpolicy: Literal["delay", "catchup", "merge", "discard"] | None = None
    present: bool | None = None
    frequency: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    """tsc only: the guest's TSC frequency in Hz."""
    mode: Literal["auto", "native", "emulate", "paravirt", "smpsafe"] | None = None
    """tsc only: accepted as libvirt does (its QEMU driver renders nothing for it)."""

    @model_validator(mode="after")
    def _tsc_settings(self) -> Timer:
        """Guarantee frequency and mode only on the tsc timer."""
        if self.name != "tsc" and (self.frequency is not None or self.mode is not None):
            raise ValueError("only the tsc timer takes frequency and mode")
        return self


class Clock(Frozen):
    """`<clock offset=>` with timers."""

    offset: Literal["utc", "localtime"] = "utc"
    timers: tuple[Timer, ...] = ()


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
    readonly: bool = False
    boot_order: BootOrder | None = None
    serial: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+\- ]{1,20}$")] | None = None
    shareable: bool = False
    wwn: Annotated[str, Field(pattern=r"^(0x)?[0-9a-fA-F]{16}$")] | None = None
    address: PciAddress | None = None

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
        if self.wwn is not None and self.target_bus not in ("ide", "sata", "scsi"):
            raise ValueError("<wwn> is only for ide, sata and scsi disks")
        if self.io == "native" and self.cache not in ("none", "directsync"):
            raise ValueError("io='native' needs cache='none' or 'directsync' (QEMU needs O_DIRECT "
                             "for it)")
        if self.detect_zeroes == "unmap" and self.discard != "unmap":
            raise ValueError("detect_zeroes='unmap' needs discard='unmap' (QEMU refuses it "
                             "otherwise); or use detect_zeroes='on'")
        return self


class Interface(Frozen):
    """`<interface type=>`: user (slirp) networking, a host bridge, or a named network's bridge."""

    type: Literal["user", "bridge", "network"]
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

    @model_validator(mode="after")
    def _virtio_options(self) -> Interface:
        """Guarantee virtio options only on a virtio NIC."""
        _virtio_only(self.virtio, self.model == "virtio")
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
        if self.type != "user" and self.source is None:
            what = "bridge" if self.type == "bridge" else "network"
            raise ValueError(f"type='{self.type}' needs <source {what}='...'/>")
        if self.type == "user" and self.source is not None:
            raise ValueError("type='user' takes no <source>")
        return self


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

    @model_validator(mode="after")
    def _spice_options_need_spice(self) -> Graphics:
        """Guarantee the spice-only settings are only on spice graphics."""
        spice_only = (self.image_compression, self.jpeg_compression, self.zlib_compression,
                      self.playback_compression, self.streaming, self.mouse, self.clipboard,
                      self.filetransfer)
        if self.type == "vnc" and any(v is not None for v in spice_only):
            raise ValueError("image, jpeg, zlib, playback, streaming, mouse, clipboard and "
                             "filetransfer are spice settings; VNC has none of them")
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


CharType = Literal["pty", "file", "unix", "null"]


class Serial(Frozen):
    """`<serial type=>` (and a `<console>` that stands for a serial port): a guest serial port."""

    type: CharType = "pty"
    port: Annotated[int, Field(ge=0, le=3)] = 0
    """QEMU has 4 ISA serial ports (COM1-COM4)."""
    path: str | None = None
    mode: Literal["bind", "connect"] = "bind"
    log: str | None = None
    log_append: bool = False

    @model_validator(mode="after")
    def _path_matches_type(self) -> Serial:
        """Guarantee file and unix ports have a path, and pty and null ports do not need one."""
        if self.type in ("file", "unix") and not self.path:
            raise ValueError(f"type='{self.type}' needs <source path='...'/>")
        return self


class Video(Frozen):
    """`<video><model type= heads= vram= ram= vgamem=/></video>`; sizes in KiB as libvirt has them."""

    model: Literal["vga", "cirrus", "qxl", "virtio", "bochs", "ramfb", "none"] = "vga"
    heads: Annotated[int, Field(ge=1, le=16)] | None = None
    vram: Annotated[int, Field(ge=1024, le=2**22)] | None = None
    ram: Annotated[int, Field(ge=1024, le=2**22)] | None = None
    vgamem: Annotated[int, Field(ge=1024, le=2**22)] | None = None
    address: PciAddress | None = None


class Input(Frozen):
    """`<input type= bus=>`."""

    type: Literal["tablet", "mouse", "keyboard"]
    bus: Literal["usb", "ps2", "virtio"] = "ps2"
    usb_port: Annotated[str, Field(pattern=r"^[1-9][0-9]?(\.[1-9][0-9]?){0,4}$")] | None = None
    address: PciAddress | None = None
    virtio: VirtioOptions = VirtioOptions()

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
    backend_model: Literal["random", "builtin"] = "random"
    """'builtin': QEMU's own generator (rng-builtin), no host device."""
    virtio: VirtioOptions = VirtioOptions()
    rate_bytes: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    """QEMU's `max-bytes`: below 2**63."""
    rate_period: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    """QEMU's `period` in ms: a uint32."""
    address: PciAddress | None = None


class Tpm(Frozen):
    """`<tpm model='tpm-tis'|'tpm-crb'><backend type='emulator' version=/></tpm>`: an swtpm beside QEMU."""

    model: Literal["tpm-tis", "tpm-crb"] = "tpm-tis"
    version: Literal["1.2", "2.0"] = "2.0"


class Controller(Frozen):
    """`<controller type= index= model= ports=>`: USB, SCSI, virtio-serial and PCI bridges and ports."""

    type: Literal["usb", "scsi", "ide", "sata", "pci", "virtio-serial", "fdc"]
    index: NonNegative = 0
    model: str | None = None
    ports: Annotated[int, Field(ge=1, le=31)] | None = None
    """usb (qemu-xhci, nec-xhci) ports, or virtio-serial ports (`max_ports`)."""
    chassis: Annotated[int, Field(ge=0, le=255)] | None = None
    """pcie-root-port and pci-bridge `<target chassis=>` (chassisNr for a bridge)."""
    port: Annotated[int, Field(ge=0, le=255)] | None = None
    """pcie-root-port `<target port=>`."""
    address: PciAddress | None = None


class Channel(Frozen):
    """`<channel type='unix'|'spicevmc'|'pty'><target type='virtio' name=/>`: a virtio-serial port."""

    type: Literal["unix", "spicevmc", "pty"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] | None = None
    path: str | None = None
    """unix only; None means the runtime folder's `<name>` socket (libvirt's channel dir)."""
    mode: Literal["bind", "connect"] = "bind"
    controller: NonNegative = 0
    port: Annotated[int, Field(ge=1, le=30)] | None = None
    """The virtio-serial port (`nr`); None assigns the next free one, as libvirt does."""

    @model_validator(mode="after")
    def _name_fits_type(self) -> Channel:
        """Guarantee a name (spicevmc defaults to spice's agent channel), and no path without unix."""
        if self.type == "spicevmc" and self.name not in (None, "com.redhat.spice.0"):
            raise ValueError("a spicevmc channel is the spice agent's: name it "
                             "'com.redhat.spice.0' or leave the name out")
        if self.type != "spicevmc" and self.name is None:
            raise ValueError("<target name=> is required, e.g. 'org.qemu.guest_agent.0'")
        if self.type != "unix" and self.path is not None:
            raise ValueError(f"type='{self.type}' takes no <source path>")
        if self.type == "unix" and self.path is None and self.mode == "connect":
            raise ValueError("mode='connect' needs <source path='...'/>: the socket to connect to")
        return self


class Sound(Frozen):
    """`<sound model=>` with optional `<codec type=>`s and `<audio id=>`."""

    model: Literal["ich9", "ich6", "ac97", "usb"]
    codecs: tuple[Literal["duplex", "micro", "output"], ...] = ()
    audio: Positive | None = None
    """The id of the `<audio>` backend; None is the first one."""
    address: PciAddress | None = None

    @model_validator(mode="after")
    def _codecs_need_hda(self) -> Sound:
        """Guarantee codecs only on HD Audio (ich6, ich9)."""
        if self.codecs and self.model not in ("ich6", "ich9"):
            raise ValueError(f"<codec> is for the HD Audio models ich6 and ich9, not {self.model!r}")
        return self


class Audio(Frozen):
    """`<audio id= type=>`: where guest sound goes; 'none' drops it, 'spice' sends it to the client."""

    id: Positive
    type: Literal["none", "spice", "alsa", "oss", "file", "pulseaudio", "jack", "sdl", "dbus"]
    settings: tuple[tuple[str, str], ...] = ()
    """libvirt's tuning as (where, value) in document order: `timerPeriod`, `path` (file),
    `input/voices`, `output/settings/frequency`..., each a name `model.argv` knows."""


class Redirdev(Frozen):
    """`<redirdev bus='usb' type='spicevmc'>`: a USB device of the spice client, passed through."""

    usb_port: Annotated[str, Field(pattern=r"^[1-9][0-9]?(\.[1-9][0-9]?){0,4}$")] | None = None


class Watchdog(Frozen):
    """`<watchdog model= action=>`."""

    model: Literal["i6300esb", "ib700"]
    action: Literal["reset", "shutdown", "poweroff", "pause", "none", "inject-nmi"] = "reset"
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


class Devices(Frozen):
    """`<devices>`: everything qemud renders, in document order within each kind."""

    emulator: str | None = None
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    displays: tuple[Display, ...] = ()
    """egl-headless and dbus `<graphics>` (at most one)."""
    serials: tuple[Serial, ...] = ()
    videos: tuple[Video, ...] = ()
    inputs: tuple[Input, ...] = ()
    controllers: tuple[Controller, ...] = ()
    memballoon: Literal["virtio", "none"] | None = None
    memballoon_address: PciAddress | None = None
    panic: Literal["isa"] | None = None
    rngs: tuple[Rng, ...] = ()
    channels: tuple[Channel, ...] = ()
    sounds: tuple[Sound, ...] = ()
    audios: tuple[Audio, ...] = ()
    redirdevs: tuple[Redirdev, ...] = ()
    watchdogs: tuple[Watchdog, ...] = ()
    tpms: Annotated[tuple[Tpm, ...], Field(max_length=1)] = ()
    filesystems: tuple[Filesystem, ...] = ()
    memories: tuple[MemoryDevice, ...] = ()
    """`<memory model=>` devices (memory hotplug: they need `Domain.max_memory`)."""


class PowerManagement(Frozen):
    """`<pm><suspend-to-mem enabled=/><suspend-to-disk enabled=/></pm>` (None: QEMU's default)."""

    suspend_to_mem: bool | None = None
    suspend_to_disk: bool | None = None


MAX_NAME_BYTES = 200
"""Longest domain name in UTF-8 bytes: `<name>.console.log` and the status file's temporary
`.<name>.json.XXXXXXXX.tmp` must fit in a 255-byte file name."""


class Domain(Frozen):
    """A whole `<domain>`: the guest's hardware, lifecycle actions and qemud's desired state."""

    type: Literal["kvm", "qemu"]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    uuid: uuidlib.UUID
    title: str | None = None
    description: str | None = None
    memory: Positive
    current_memory: Positive | None = None
    memory_backing: MemoryBacking | None = None
    max_memory: Positive | None = None
    """`<maxMemory slots= unit=>`: the most memory hotplug may reach (bytes)."""
    max_memory_slots: NonNegative | None = None
    vcpu: Vcpu = Vcpu()
    cpu: Cpu | None = None
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

    @model_validator(mode="after")
    def _memory_consistent(self) -> Domain:
        """Guarantee currentMemory never exceeds memory."""
        if self.current_memory is not None and self.current_memory > self.memory:
            raise ValueError("currentMemory is larger than memory")
        return self
