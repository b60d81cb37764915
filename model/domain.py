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


class Desired(Frozen):
    """`<qemud:desired state= restart= shutdown-timeout=>`: what the reconciler should make true."""

    state: Literal["running", "stopped"] = "stopped"
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    shutdown_timeout: Positive = 60


class Vcpu(Frozen):
    """`<vcpu current=>count</vcpu>`: maximum and (optionally) initially online vCPUs."""

    count: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    current: Positive | None = None

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


class Cpu(Frozen):
    """`<cpu mode=>` with an optional `<model>`, `<topology>` and `<feature>`s."""

    mode: Literal["host-passthrough", "host-model", "custom", "maximum"] = "custom"
    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None
    topology: Topology | None = None
    features: tuple[CpuFeature, ...] = ()


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

    @model_validator(mode="after")
    def _boot_order_fits(self) -> Os:
        """Guarantee what QEMU's PC firmware takes: at most 3 boot devices, none twice."""
        if len(set(self.boot)) != len(self.boot):
            raise ValueError("a <boot dev=> appears twice; give each device once")
        if len(self.boot) > 3:
            raise ValueError("at most 3 <boot dev=> are supported by the PC firmware")
        return self


class Features(Frozen):
    """`<features>`: the switches qemud renders (vmport and pae are accepted for completeness)."""

    acpi: bool = False
    apic: bool = False
    pae: bool = False
    vmport: bool | None = None


class Timer(Frozen):
    """`<clock><timer name= tickpolicy= present=/>`."""

    name: Literal["rtc", "pit", "hpet", "kvmclock", "tsc", "hypervclock", "platform"]
    tickpolicy: Literal["delay", "catchup", "merge", "discard"] | None = None
    present: bool | None = None


class Clock(Frozen):
    """`<clock offset=>` with timers."""

    offset: Literal["utc", "localtime"] = "utc"
    timers: tuple[Timer, ...] = ()


Lifecycle = Literal["destroy", "restart", "preserve", "rename-restart"]


class Disk(Frozen):
    """`<disk type= device=>`: a file or block device seen by the guest as a disk, cdrom or floppy."""

    type: Literal["file", "block"] = "file"
    device: Literal["disk", "cdrom", "floppy"] = "disk"
    driver_type: Literal["raw", "qcow2"] | None = None
    cache: Literal["default", "none", "writethrough", "writeback", "directsync", "unsafe"] | None = (
        None
    )
    discard: Literal["unmap", "ignore"] | None = None
    source: str | None = None
    target_dev: Annotated[str, Field(pattern=r"^(hd|sd|vd|fd)[a-z]{1,3}$")]
    target_bus: Literal["ide", "sata", "scsi", "virtio", "fdc"]
    readonly: bool = False
    boot_order: BootOrder | None = None
    serial: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+\- ]{1,20}$")] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Disk:
        """Guarantee a disk has a source, and only cdroms and floppies can be empty."""
        if self.source is None and self.device == "disk":
            raise ValueError("a disk needs <source>; only a cdrom or a floppy may be empty")
        if self.source == "":  # QEMU: A block device must be specified for "file"
            raise ValueError("<source> names no file; give its path, or remove <source>")
        return self


class Interface(Frozen):
    """`<interface type=>`: user (slirp) networking, a host bridge, or a named network's bridge."""

    type: Literal["user", "bridge", "network"]
    mac: Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")] | None = None
    model: Literal["virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "vmxnet3"] = (
        "rtl8139"
    )
    source: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,15}$")] | None = None
    boot_order: BootOrder | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _lower_mac(cls, value: object) -> object:
        """Normalise MAC addresses to lower case, as libvirt prints them."""
        return value.lower() if isinstance(value, str) else value

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
    """`<graphics type='vnc' port= autoport= listen=>`; port None means automatic."""

    type: Literal["vnc"] = "vnc"
    port: Annotated[int, Field(ge=5900, le=65535)] | None = None
    listen: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:\-]+$")] = "127.0.0.1"


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
    """`<video><model type=/></video>`."""

    model: Literal["vga", "cirrus", "qxl", "virtio", "bochs", "ramfb", "none"] = "vga"


class Input(Frozen):
    """`<input type= bus=>`."""

    type: Literal["tablet", "mouse", "keyboard"]
    bus: Literal["usb", "ps2", "virtio"] = "ps2"

    @model_validator(mode="after")
    def _ps2_has_no_tablet(self) -> Input:
        """Guarantee the combination exists in QEMU (there is no PS/2 tablet)."""
        if self.type == "tablet" and self.bus == "ps2":
            raise ValueError("a tablet cannot be on the ps2 bus; use bus='usb' or bus='virtio'")
        return self


class Rng(Frozen):
    """`<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>`."""

    model: Literal["virtio"] = "virtio"
    backend: str = "/dev/urandom"
    rate_bytes: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    """QEMU's `max-bytes`: below 2**63."""
    rate_period: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    """QEMU's `period` in ms: a uint32."""


class Controller(Frozen):
    """`<controller type= index= model=>`: only USB and SCSI controllers change the command line."""

    type: Literal["usb", "scsi", "ide", "sata", "pci", "virtio-serial", "fdc"]
    index: NonNegative = 0
    model: str | None = None


class Devices(Frozen):
    """`<devices>`: everything qemud renders, in document order within each kind."""

    emulator: str | None = None
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    serials: tuple[Serial, ...] = ()
    videos: tuple[Video, ...] = ()
    inputs: tuple[Input, ...] = ()
    controllers: tuple[Controller, ...] = ()
    memballoon: Literal["virtio", "none"] | None = None
    panic: Literal["isa"] | None = None
    rngs: tuple[Rng, ...] = ()


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
    vcpu: Vcpu = Vcpu()
    cpu: Cpu | None = None
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
