"""Generators of valid `model.domain.Domain` objects: a Hypothesis strategy and a fast plain one.

Both share one builder (`_build`), written against a tiny `_Chooser` interface, so the rules that
make a domain valid live in one place:

* `domains()` is a Hypothesis strategy exploring the whole model with wide ranges (memory up to
  16 PiB, 255 vCPUs, 3-letter disk names, XML-safe unicode text with commas, spaces, `&`, `<`...).
* `random_domain(rng, index)` is deterministic for a given `random.Random` state and fast (well
  under a millisecond), with realistic values QEMU can actually start (memory up to 4 GiB, real
  machine types, CPU models and flags); `write_domains` writes many of them as `<name>.xml`.

Validity by construction follows `model/domain.py` (field validators) and the cross-checks in
`model/parse.py` (`_check_devices`, `_check_domain`) and `model/argv.py` (`RenderError`s):
unique target devs and disk addresses (bus + unit), bus/device fit, no IDE or floppy on q35, no
read-only IDE/SATA hard disk, topology product == vCPU count with APIC IDs below 255, at most 3
distinct `<boot dev>`s, `<boot dev>` and `<boot order>` exclusive, unique boot orders and serial
ports (0-3), no USB inputs without a USB controller, cirrus only as the first video, one ramfb,
SCSI targets within the adapter's range, and few enough devices for the 30 free PCI slots. Every
text is stripped (the parser strips element text) and XML-safe (no C0 controls, surrogates or
U+FFFE/U+FFFF, which lxml cannot write).

`edge_domains()` adds hand-built domains sitting exactly at those limits.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

import model
from model import units
from model.domain import (
    MAX_RTC_ADJUSTMENT,
    MAX_RTC_START,
    Clock,
    Controller,
    Cpu,
    CpuFeature,
    Desired,
    Devices,
    Disk,
    Domain,
    DriveAddress,
    Features,
    Graphics,
    Input,
    Interface,
    IoTune,
    Os,
    PowerManagement,
    Rng,
    Serial,
    Timer,
    Topology,
    Vcpu,
    Video,
)

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Vocabulary: values QEMU 7.2 (Debian's qemu-system-x86) really has, so generated domains start.

MACHINES: tuple[str | None, ...] = (
    None, "pc", "q35", "pc-i440fx-7.2", "pc-i440fx-6.2", "pc-i440fx-5.2", "pc-i440fx-4.2",
    "pc-i440fx-2.12", "pc-q35-7.2", "pc-q35-7.1", "pc-q35-6.2", "pc-q35-5.2", "pc-q35-4.2",
    "pc-q35-2.12",
)
CPU_MODELS = (
    "qemu64", "qemu32", "kvm64", "Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell",
    "Broadwell-noTSX", "Skylake-Client", "Skylake-Server", "Cascadelake-Server", "Icelake-Server",
    "EPYC", "EPYC-Rome", "Opteron_G5", "core2duo", "Penryn", "Conroe", "pentium3", "athlon",
    "phenom", "Dhyana", "max", "base",
)
CPU_FLAGS = (
    "vmx", "svm", "aes", "avx", "avx2", "sse4.2", "sse4.1", "ssse3", "pcid", "x2apic",
    "hypervisor", "pdpe1gb", "rdrand", "tsc-deadline", "arat", "xsave", "pclmulqdq", "popcnt",
    "f16c", "fma", "movbe", "smep", "erms", "abm", "monitor", "topoext", "npt", "invtsc",
)
EMULATOR_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/qemu 7.2, custom/bin")
USB_MODELS: tuple[str | None, ...] = (
    None, "qemu-xhci", "piix3-uhci", "piix4-uhci", "ehci", "ich9-ehci1", "nec-xhci",
    "ich9-uhci1", "none",
)
SCSI_MODELS: tuple[str | None, ...] = (None, "virtio-scsi", "lsilogic", "auto")
OTHER_CONTROLLERS: dict[str, tuple[str | None, ...]] = {
    "ide": (None, "piix3", "piix4", "ich6"),
    "sata": (None,),
    "pci": ("pci-root", "pcie-root", "pcie-root-port", "pci-bridge"),
    "virtio-serial": (None, "virtio"),
    "fdc": (None,),
}
LISTENS = ("127.0.0.1", "0.0.0.0", "::1", "::", "localhost")
RNG_BACKENDS = ("/dev/urandom", "/dev/random")

MAX_TARGET = {"virtio-scsi-pci": 255, "lsi": 7}
"""Highest SCSI target id each adapter takes (QEMU: 'bad scsi device id' beyond)."""

MAX_DISK_INDEX = 26 + 26**2 + 26**3 - 1
"""Largest index a target dev name can have (three letters, 'zzz')."""

_CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f"
_NOT_XML = "\ufffe\uffff"


def dev_name(prefix: str, index: int) -> str:
    """Target dev name of a disk index in libvirt's scheme: 0 -> 'a', 25 -> 'z', 26 -> 'aa'."""
    letters = ""
    index += 1
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


# --------------------------------------------------------------------------------------------
# The chooser interface and its two implementations.


class _Chooser(Protocol):
    """What the builder needs from a source of randomness."""

    wide: bool

    def int(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        ...

    def flag(self, p: float = 0.5) -> bool:
        """True with probability about `p` (Hypothesis ignores `p`)."""
        ...

    def pick(self, options: Sequence[T]) -> T:
        """One of `options` (Hypothesis shrinks towards the first)."""
        ...

    def text(self, kind: str) -> str:
        """A stripped, XML-safe text of a kind listed in `_TEXTS` / `_POOLS`."""
        ...


def _xml_chars(extra_excluded: str = "", allow_newlines: bool = False) -> st.SearchStrategy[str]:
    """XML 1.0-safe characters (no surrogates, no U+FFFE/FFFF, no C0 controls), biased to tricky ones."""
    excluded = _CONTROL + _NOT_XML + extra_excluded
    if allow_newlines:
        excluded = "".join(c for c in excluded if c not in "\n\t\r")
    tricky = [c for c in " ,&<>'\"=;:\\é日😀\u00a0\u2028\x85" if c not in excluded]
    if allow_newlines:
        tricky += ["\n", "\t", "\r"]
    return st.one_of(
        st.sampled_from(tricky),
        st.characters(codec="utf-8", exclude_characters=excluded),
    )


def _stripped(alphabet: st.SearchStrategy[str], min_size: int, max_size: int,
              ok: Callable[[str], bool] = bool) -> st.SearchStrategy[str]:
    """Texts over `alphabet`, stripped, non-empty and accepted by `ok`."""
    return st.text(alphabet, min_size=min_size, max_size=max_size).map(str.strip).filter(
        lambda s: bool(s) and ok(s))


_SEGMENT = _stripped(_xml_chars("/"), 1, 24, lambda s: s not in (".", ".."))

_TEXTS: dict[str, st.SearchStrategy[str]] = {
    # a name fits a file name once ".json" or ".console.log" is added: at most 200 UTF-8 bytes
    "name": _stripped(_xml_chars("/"), 1, 200,
                      lambda s: not s.startswith(".") and len(s.encode()) <= 200),
    "title": _stripped(_xml_chars(), 1, 60),
    "prose": _stripped(_xml_chars(allow_newlines=True), 1, 300),
    "segment": _SEGMENT,
    "cmdline": _stripped(_xml_chars(), 1, 120),
    "serial": st.from_regex(r"\A[A-Za-z0-9_.+\-][A-Za-z0-9_.+\- ]{0,18}[A-Za-z0-9_.+\-]\Z|"
                            r"\A[A-Za-z0-9_.+\-]\Z"),
    "bridge": st.from_regex(r"\A[A-Za-z0-9_.:\-]{1,15}\Z"),
    "cpu_name": st.one_of(st.sampled_from(CPU_MODELS), st.from_regex(r"\A[A-Za-z0-9_.\-]+\Z")),
    "flag_name": st.one_of(st.sampled_from(CPU_FLAGS), st.from_regex(r"\A[A-Za-z0-9_.\-]+\Z")),
}
"""Hypothesis text strategies by kind (wide: any XML-safe unicode)."""

_POOLS: dict[str, tuple[str, ...]] = {
    "name": ("web", "db primary", "build, nightly", "naïve-café", "日本語のVM", "Ωmega-test", "a&b <c>",
             "émoji 😀", "it's \"quoted\"", "x=y;z", "Ωmega x"),
    "title": ("Web server", "Build box, nightly", "Café «prod»", "R&D <test>", "文字 title"),
    "prose": ("Serves the intranet.", "Line one\nline two, with a comma", "Ünïcödé & <markup>",
              "Tabs\tand \"quotes\"", "Ends with an emoji 😀"),
    "segment": ("images", "my disks", "a,b", "vm images, 2024", "ça va", "日本", "x y,z", "data"),
    "cmdline": ("console=ttyS0", "console=ttyS0 panic=-1", "root=/dev/vda1 ro quiet",
                "init=/bin/sh a,b=c"),
    "serial": ("SER001", "disk-0.a", "QM 0001", "abc_def+1", "X"),
    "bridge": ("br0", "virbr0", "default", "lan.10", "br-ext"),
    "cpu_name": CPU_MODELS,
    "flag_name": CPU_FLAGS,
}
"""Plain pools by kind for `random_domain` (realistic, still with commas, spaces and unicode)."""


class _HypothesisChooser:
    """Chooser drawing from Hypothesis (so failures shrink)."""

    wide = True

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def int(self, lo: int, hi: int) -> int:
        value: int = self._draw(st.integers(lo, hi))
        return value

    def flag(self, p: float = 0.5) -> bool:
        value: bool = self._draw(st.booleans())
        return value

    def pick(self, options: Sequence[T]) -> T:
        value: T = self._draw(st.sampled_from(options))
        return value

    def text(self, kind: str) -> str:
        value: str = self._draw(_TEXTS[kind])
        return value


class _RandomChooser:
    """Chooser over `random.Random`: fast and deterministic."""

    wide = False

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def int(self, lo: int, hi: int) -> int:
        span = hi - lo + 1
        if span < 1 << 52:  # random() has 53 bits: exact enough, and 5x faster than randint
            return lo + int(self._rng.random() * span)
        return self._rng.randrange(lo, hi + 1)

    def flag(self, p: float = 0.5) -> bool:
        return self._rng.random() < p

    def pick(self, options: Sequence[T]) -> T:
        return options[int(self._rng.random() * len(options))]

    def text(self, kind: str) -> str:
        pool = _POOLS[kind]
        return pool[int(self._rng.random() * len(pool))]


# --------------------------------------------------------------------------------------------
# The builder: a valid Domain by construction.


def _path(c: _Chooser, root: str, suffix: str = "") -> str:
    """An absolute path under `root` with 1-2 generated segments (commas, spaces, unicode)."""
    segments = [c.text("segment") for _ in range(c.int(1, 2))]
    return "/".join([root, *segments]) + suffix


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _vcpu(c: _Chooser) -> Vcpu:
    if c.wide:
        count = c.pick((1, 2, 4, 255)) if c.flag() else c.int(1, 255)
    else:
        count = c.pick((1, 1, 2, 2, 3, 4, 8)) if c.flag(0.97) else 255
    current = c.int(1, count) if c.flag(0.2) else None
    return Vcpu(count=count, current=current)


def max_apic_id(t: Topology) -> int:
    """The highest APIC ID QEMU gives this topology (a power-of-two wide field per level)."""
    tw, cw, dw = ((n - 1).bit_length() for n in (t.threads, t.cores, t.dies))
    return ((t.sockets - 1) << (dw + cw + tw) | (t.dies - 1) << (cw + tw)
            | (t.cores - 1) << tw | (t.threads - 1))


def _topology(c: _Chooser, count: int) -> Topology:
    """A topology of `count` vCPUs whose APIC IDs stay below 255 (QEMU without x2APIC)."""
    sockets = c.pick(_divisors(count))
    rest = count // sockets
    dies = c.pick(_divisors(rest))
    rest //= dies
    cores = c.pick(_divisors(rest))
    topology = Topology(sockets=sockets, dies=dies, cores=cores, threads=rest // cores)
    if max_apic_id(topology) > 254:  # sparse IDs: one level a power of two wide too many
        topology = Topology(sockets=count)
    return topology


def _cpu(c: _Chooser, vcpus: int) -> Cpu | None:
    if not c.flag(0.5):
        return None
    mode = c.pick(("custom", "host-passthrough", "host-model", "maximum"))
    model_name = c.text("cpu_name") if mode == "custom" or c.flag(0.2) else None
    topology = _topology(c, vcpus) if c.flag(0.4) else None
    names: list[str] = []
    for _ in range(c.int(0, 3)):
        name = c.text("flag_name")
        if name not in names:
            names.append(name)
    policies = ("require", "force", "optional", "disable", "forbid")
    features = tuple(CpuFeature(policy=c.pick(policies), name=n) for n in names)
    return Cpu(mode=mode, model=model_name, topology=topology, features=features)


def _memory(c: _Chooser) -> tuple[int, int | None]:
    mib = units.UNITS["MiB"]
    if c.wide:
        kind = c.int(0, 3)
        if kind == 0:
            memory = c.int(1, 65536) * mib
        elif kind == 1:
            memory = c.int(1, 4 * 1024 * 1024) * 1024
        elif kind == 2:
            memory = c.int(1, 1 << 20)
        else:
            memory = c.int(1, units.MAX_BYTES)
    else:
        memory = c.pick((64, 128, 256, 512, 1024, 2048, 4096)) * mib
        if c.flag(0.2):
            memory = c.int(64 * 1024, 1024 * 1024) * 1024  # an odd KiB count, e.g. 219100 KiB
    current = c.int(1, memory) if c.flag(0.2) else None
    if current is not None and not c.wide:
        current = memory - (memory // 4 if c.flag() else 0)
    return memory, current


def _os(c: _Chooser, machine: str | None, arch: str | None, boot_mode: str) -> Os:
    boot: list[str] = []
    if boot_mode == "os":
        remaining = ["hd", "cdrom", "network", "fd"]
        for _ in range(c.int(1, 3)):  # the PC firmware takes at most 3
            dev = c.pick(remaining)
            remaining.remove(dev)
            boot.append(dev)
    bootmenu = c.pick((None, True, False)) if c.flag(0.3) else None
    timeout = c.int(0, 65535) if c.flag(0.2) else None
    kernel = initrd = cmdline = None
    if c.flag(0.25):
        kernel = _path(c, "/var/lib/qemud/kernels", "/vmlinuz")
        initrd = _path(c, "/var/lib/qemud/kernels", "/initrd.img") if c.flag(0.7) else None
        cmdline = c.text("cmdline") if c.flag(0.7) else None
    return Os(arch=arch, machine=machine, boot=tuple(boot),
              bootmenu=bootmenu, bootmenu_timeout=timeout, kernel=kernel, initrd=initrd,
              cmdline=cmdline)


def _controllers(c: _Chooser, q35: bool) -> tuple[list[Controller], str | None, str | None]:
    """Controllers, plus the USB and SCSI models that rule what other devices may do."""
    out: list[Controller] = []
    usb_model: str | None = None
    scsi_model: str | None = None
    if c.flag(0.4):
        usb_model = c.pick(USB_MODELS)
        out.append(Controller(type="usb", index=0, model=usb_model))
    if c.flag(0.3):
        scsi_model = c.pick(SCSI_MODELS)
        out.append(Controller(type="scsi", index=0, model=scsi_model))
    for _ in range(c.int(0, 2)):
        kind = c.pick(tuple(OTHER_CONTROLLERS))
        chosen = c.pick(OTHER_CONTROLLERS[kind])
        if kind == "pci":  # the root bus the machine has (index 0), ports only on q35's
            chosen = c.pick(("pcie-root", "pcie-root-port") if q35 else ("pci-root", "pci-bridge"))
        # one IDE, SATA or floppy controller (index 0) is all a machine has
        index = c.int(0, 3) if kind in ("pci", "virtio-serial") and chosen not in (
            "pci-root", "pcie-root") else 0
        if q35 and kind in ("ide", "fdc"):
            continue  # q35 has neither
        if not any(x.type == kind and x.index == index for x in out):
            out.append(Controller(type=kind, index=index, model=chosen))
    return out, usb_model, scsi_model


_PREFIX = {"ide": "hd", "sata": "sd", "scsi": "sd", "virtio": "vd", "fdc": "fd"}


def _disks(c: _Chooser, q35: bool, scsi_limit: int) -> list[Disk]:
    disks: list[Disk] = []
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    limits = {"ide": 3, "sata": 5, "fdc": 1, "scsi": scsi_limit,
              "virtio": MAX_DISK_INDEX if c.wide else 40}
    for _ in range(c.int(0, 6 if c.wide else 4)):
        device = c.pick(("disk", "cdrom") if q35 else ("disk", "cdrom", "floppy"))
        if device == "floppy":
            bus = "fdc"
        elif device == "cdrom":
            bus = c.pick(("sata", "scsi") if q35 else ("ide", "sata", "scsi"))
        else:
            bus = c.pick(("virtio", "sata", "scsi") if q35 else ("virtio", "ide", "sata", "scsi"))
        index = c.int(0, limits[bus]) if c.flag(0.3) else c.int(0, min(limits[bus], 3))
        # Mostly the usual prefix for the bus; sometimes another one, which libvirt allows.
        prefix = _PREFIX[bus] if c.flag(0.85) else c.pick(("hd", "sd", "vd", "fd"))
        name = dev_name(prefix, index)
        if name in names or (bus, index) in addresses:
            continue
        names.add(name)
        addresses.add((bus, index))
        kind = c.pick(("file", "block"))
        if device == "disk" or c.flag(0.6):
            if kind == "block":
                source: str | None = _path(c, "/dev/disk/by-id")
            else:
                ext = c.pick((".qcow2", ".img", ".iso", ""))
                source = _path(c, "/var/lib/qemud/images", ext or "/disk")
        else:
            source = None
        readonly = (device != "disk" or bus not in ("ide", "sata")) and c.flag(0.3)
        iotune = None
        if source is not None and c.flag(0.15):
            rate = c.int(1, 10**9)
            iotune = IoTune(total_bytes_sec=rate, total_bytes_sec_max=rate + c.int(0, 10**6),
                            read_iops_sec=c.int(0, 10**5), write_iops_sec=c.int(1, 10**5),
                            group_name=f"group-{name}" if c.flag(0.3) else None)
        disks.append(Disk(
            type=kind, device=device, source=source, target_dev=name,
            target_bus=bus,
            driver_type=c.pick((None, "raw", "qcow2")),
            cache=c.pick((None, "default", "none", "writethrough", "writeback", "directsync",
                          "unsafe")) if c.flag(0.4) else None,
            discard=c.pick(("unmap", "ignore")) if c.flag(0.3) else None,
            readonly=readonly,
            serial=c.text("serial") if c.flag(0.3) else None,
            iotune=iotune,
        ))
    return disks


def _mac(c: _Chooser) -> str:
    first = c.int(0, 255) & 0xFE | 0x02  # unicast, locally administered
    rest = [c.int(0, 255) for _ in range(5)]
    return ":".join(f"{b:02x}" for b in [first, *rest])


def _interfaces(c: _Chooser) -> list[Interface]:
    nics = []
    for _ in range(c.int(0, 3)):
        kind = c.pick(("user", "bridge", "network"))
        name = None if kind == "user" else c.text("bridge")
        nics.append(Interface(
            type=kind,
            # a network must be defined to be used: libvirt's 'default' (tests: its test data)
            source="default" if kind == "network" else name,
            mac=_mac(c) if c.flag(0.5) else None,
            model=c.pick(("rtl8139", "virtio", "e1000", "e1000e", "ne2k_pci", "pcnet",
                          "vmxnet3")),
        ))
    return nics


def _serials(c: _Chooser) -> list[Serial]:
    ports = [p for p in range(4) if c.flag(0.25)]
    out = []
    for port in ports:
        kind = c.pick(("pty", "file", "unix", "null"))
        path = None
        if kind in ("file", "unix") or (c.flag(0.2) and kind == "pty"):  # a live pty's path
            path = _path(c, "/var/lib/qemud/serial", ".sock" if kind == "unix" else ".log")
        log = _path(c, "/var/log/qemud", ".log") if c.flag(0.3) else None
        out.append(Serial(type=kind, port=port, path=path,
                          mode=c.pick(("bind", "connect")), log=log, log_append=c.flag(0.3)))
    return out


def _videos(c: _Chooser) -> list[Video]:
    """Up to three adapters, or the one 'none' (which stands alone, as in libvirt)."""
    if c.flag(0.1):
        return [Video(model="none")]
    out: list[Video] = []
    shown = 0
    for _ in range(c.int(0, 3)):
        choices = ["vga", "virtio", "qxl", "bochs"]
        if shown == 0:
            choices.append("cirrus")
        if not any(v.model == "ramfb" for v in out):
            choices.append("ramfb")
        kind = c.pick(choices)
        shown += kind != "none"
        out.append(Video(model=kind))
    return out


def _inputs(c: _Chooser, usb_ok: bool) -> list[Input]:
    combos = [("mouse", "ps2"), ("keyboard", "ps2"), ("tablet", "virtio"), ("mouse", "virtio"),
              ("keyboard", "virtio")]
    if usb_ok:
        combos += [("tablet", "usb"), ("mouse", "usb"), ("keyboard", "usb")]
    out = []
    for _ in range(c.int(0, 4)):
        kind, bus = c.pick(combos)
        out.append(Input(type=kind, bus=bus))
    return out


def _rngs(c: _Chooser) -> list[Rng]:
    out = []
    for _ in range(c.int(0, 2)):
        backend = c.pick(RNG_BACKENDS) if not c.wide or c.flag() else _path(c, "/dev")
        rate_bytes = rate_period = None
        if c.flag(0.3):
            rate_bytes = c.int(1, 2**63 - 1 if c.wide else 1 << 20)
            rate_period = c.int(1, 2**32 - 1 if c.wide else 60000) if c.flag(0.7) else None
        elif c.flag(0.1):
            rate_period = c.int(1, 60000)
        out.append(Rng(backend=backend, rate_bytes=rate_bytes, rate_period=rate_period))
    return out


def _features(c: _Chooser) -> Features:
    """acpi, apic (with its eoi), pae and vmport, each in any state."""
    apic = c.flag(0.7)
    return Features(acpi=c.flag(0.7), apic=apic, pae=c.flag(0.3),
                    apic_eoi=c.pick((None, True, False)) if apic else None,
                    vmport=c.pick((None, True, False)))


def _clock(c: _Chooser, timers: tuple[Timer, ...]) -> Clock:
    """A `<clock>` of any offset libvirt has, with what that offset takes."""
    offset = c.pick(("utc", "localtime", "variable", "absolute", "timezone"))
    return Clock(offset=offset, timers=timers,
                 reset=offset in ("utc", "localtime") and c.flag(0.2),
                 adjustment=c.int(-MAX_RTC_ADJUSTMENT, MAX_RTC_ADJUSTMENT)
                 if offset == "variable" and c.flag(0.8) else None,
                 basis=c.pick((None, "utc", "localtime")) if offset == "variable" else None,
                 start=c.int(0, MAX_RTC_START) if offset == "absolute" else None,
                 timezone=c.pick(("Europe/Paris", "UTC", "America/New_York", "EST5EDT",
                                  "<+03>-3")) if offset == "timezone" else None)


def _boot_orders(c: _Chooser, disks: list[Disk], nics: list[Interface]
                 ) -> tuple[list[Disk], list[Interface]]:
    """Give some disks and NICs distinct `<boot order>`s."""
    used: set[int] = set()
    top = 2**31 - 1 if c.wide else 20

    def order() -> int | None:
        if not c.flag(0.5):
            return None
        value = c.int(1, top)
        if value in used:
            value = next(i for i in itertools.count(1) if i not in used)
        used.add(value)
        return value

    disks = [d.model_copy(update={"boot_order": order()}) for d in disks]
    nics = [n.model_copy(update={"boot_order": order()}) for n in nics]
    return disks, nics


def _build(c: _Chooser, name: str | None = None) -> Domain:
    """Build one valid domain; `name` overrides the generated one."""
    machine = c.pick(MACHINES)
    q35 = machine is not None and "q35" in machine
    arch = c.pick((None, "x86_64", "i686"))
    emulator = None
    if c.flag(0.3):
        binaries = ["qemu-system-x86_64"] if arch == "x86_64" else ["qemu-system-x86_64",
                                                                    "qemu-system-i386"]
        directory = c.pick(EMULATOR_DIRS) if not c.wide or c.flag() else _path(c, "/opt")
        emulator = f"{directory}/{c.pick(binaries)}"
    vcpu = _vcpu(c)
    controllers, usb_model, scsi_model = _controllers(c, q35)
    scsi_limit = MAX_TARGET["lsi" if scsi_model == "lsilogic" else "virtio-scsi-pci"]
    disks = _disks(c, q35, scsi_limit if c.wide else min(scsi_limit, 7))
    nics = _interfaces(c)
    boot_mode = c.pick(("none", "os", "device"))
    if boot_mode == "device":
        disks, nics = _boot_orders(c, disks, nics)
    memory, current = _memory(c)
    policies: dict[str, tuple[str | None, ...]] = {
        "rtc": (None, "delay", "catchup"), "pit": (None, "delay", "catchup", "discard")}
    timers = []
    for _ in range(c.int(0, 3)):
        timer = c.pick(("rtc", "pit", "hpet", "kvmclock", "tsc", "hypervclock"))
        timers.append(Timer(name=timer, tickpolicy=c.pick(policies.get(timer, (None,))),
                            present=c.pick((None, True, False)),
                            track=c.pick((None, "guest", "wall", "realtime")) if timer == "rtc"
                            else None))
    # <currentMemory> below <memory> is applied through the balloon: it needs one
    balloon = "virtio" if current is not None and current < memory else c.pick(
        (None, "virtio", "none"))
    devices = Devices(
        emulator=emulator,
        disks=tuple(disks),
        interfaces=tuple(nics),
        graphics=(Graphics(
            port=c.pick((None, c.int(5900, 65535))),
            listen=c.pick(LISTENS),
        ),) if c.flag(0.4) else (),
        serials=tuple(_serials(c)),
        videos=tuple(_videos(c)),
        inputs=tuple(_inputs(c, usb_model != "none")),
        controllers=tuple(controllers),
        memballoon=balloon,
        memballoon_deflate=c.pick((True, False)) if balloon == "virtio" and c.flag(0.2) else None,
        panic=c.pick((None, "isa")),
        rngs=tuple(_rngs(c)),
    )
    lifecycle = ("destroy", "restart")
    return Domain(
        type=c.pick(("qemu", "kvm")),
        name=name if name is not None else c.text("name"),
        uuid=uuid.UUID(int=c.int(0, 2**128 - 1)),
        title=c.text("title") if c.flag(0.3) else None,
        description=c.text("prose") if c.flag(0.3) else None,
        memory=memory,
        dump_core=c.pick((None, True, False)),
        current_memory=current,
        vcpu=vcpu,
        cpu=_cpu(c, vcpu.count),
        os=_os(c, machine, arch, boot_mode),
        features=_features(c),
        clock=_clock(c, tuple(timers)),
        on_poweroff=c.pick(lifecycle),
        on_reboot=c.pick(lifecycle),
        on_crash=c.pick((*lifecycle, "preserve", "rename-restart")),
        pm=PowerManagement(suspend_to_mem=c.pick((None, True, False)),
                           suspend_to_disk=c.pick((None, True, False))),
        devices=devices,
        desired=Desired(state=c.pick(("stopped", "running")),
                        restart=c.pick(("on-failure", "always", "never")),
                        shutdown_timeout=c.int(1, 2**31 if c.wide else 600)),
    )


# --------------------------------------------------------------------------------------------
# Hand-built domains at the limits the model allows (each one just within a QEMU 7.2 limit).

_EDGE_UUID = uuid.UUID("00000000-0000-4000-8000-0000000000e0")


def _edge_disk(dev: str, bus: str, device: str = "disk", **extra: Any) -> Disk:
    source = None if extra.pop("empty", False) else f"/var/lib/qemud/edge/{dev}, {bus}.img"
    return Disk(device=device, target_dev=dev, target_bus=bus, source=source, **extra)


def edge_domains() -> dict[str, Domain]:
    """Domains at the model's limits, which QEMU must still accept (`tests/integration`).

    * `edge-pc`: 255 vCPUs, 3 `<boot dev>`s, an empty IDE cdrom with cache and discard set, the
      last IDE (hdd), SATA (sdf), floppy (fdb) and virtio-scsi (id 255, LUN 16383) units, a 3-letter
      virtio disk (vdzzz), serial ports 0-3, VNC on port 65535, rng rate at QEMU's maxima.
    * `edge-q35`: 254 vCPUs in 127 sockets of 2 cores (APIC ID 253), lsilogic's last target
      (id 7), boot orders 2**31-1 and 1.
    * `edge-pci-full`: exactly 30 PCI devices (the root bus's free slots) and a floppy with a
      boot order (rendered as `-global isa-fdc.bootindexA`).
    """
    base = {"type": "qemu", "memory": 256 * units.UNITS["MiB"], "features": Features(acpi=True)}
    pc = Domain(
        name="edge-pc", uuid=_EDGE_UUID, **base,
        vcpu=Vcpu(count=255, current=1),
        cpu=Cpu(mode="custom", model="qemu64", features=(CpuFeature(name="x2apic"),)),
        os=Os(arch="x86_64", machine="pc", boot=("cdrom", "hd", "network"), bootmenu=True,
              bootmenu_timeout=65535),
        devices=Devices(
            disks=(
                _edge_disk("hda", "ide", "cdrom", empty=True, cache="none", discard="unmap"),
                _edge_disk("hdd", "ide", driver_type="qcow2", serial="A" * 20),
                _edge_disk("sdf", "sata", driver_type="raw", cache="writeback"),
                _edge_disk("fdb", "fdc", "floppy"),
                _edge_disk("sdiv", "scsi", readonly=True,
                           drive=DriveAddress(target=255, unit=16383)),
                _edge_disk("vdzzz", "virtio", driver_type="qcow2", readonly=True),
            ),
            interfaces=(Interface(type="user", model="e1000"),),
            graphics=(Graphics(port=65535),),
            serials=(Serial(type="pty", port=0),
                     Serial(type="file", port=1, path="/var/log/qemud/edge, com2.log"),
                     Serial(type="unix", port=2, path="/run/qemud/edge com3.sock"),
                     Serial(type="null", port=3)),
            videos=(Video(model="vga"), Video(model="ramfb"), Video(model="virtio")),
            inputs=(Input(type="tablet", bus="usb"), Input(type="keyboard", bus="usb"),
                    Input(type="mouse", bus="usb")),
            controllers=(Controller(type="usb", model="qemu-xhci"),
                         Controller(type="scsi", model="virtio-scsi")),
            rngs=(Rng(rate_bytes=2**63 - 1, rate_period=2**32 - 1),),
        ),
    )
    q35 = Domain(
        name="edge-q35", uuid=uuid.UUID(int=_EDGE_UUID.int + 1), **base,
        vcpu=Vcpu(count=254),
        cpu=Cpu(mode="maximum", topology=Topology(sockets=127, cores=2)),
        os=Os(machine="q35"),
        devices=Devices(
            disks=(
                _edge_disk("sda", "scsi", "cdrom", empty=True),
                _edge_disk("sdh", "scsi", driver_type="qcow2", boot_order=2**31 - 1,
                           drive=DriveAddress(unit=7)),
                _edge_disk("sdf", "sata", "cdrom", readonly=True),
            ),
            interfaces=(Interface(type="user", model="virtio", boot_order=1),),
            controllers=(Controller(type="scsi", model="lsilogic"),),
        ),
    )
    pci_disks = tuple(_edge_disk(dev_name("vd", i), "virtio") for i in range(16))
    full = Domain(
        name="edge-pci-full", uuid=uuid.UUID(int=_EDGE_UUID.int + 2), **base,
        os=Os(machine="pc"),
        devices=Devices(
            disks=(_edge_disk("fda", "fdc", "floppy", boot_order=1),
                   _edge_disk("sda", "sata"), _edge_disk("sdb", "scsi"), *pci_disks),
            interfaces=tuple(Interface(type="user", model=m)
                             for m in ("virtio", "e1000", "rtl8139", "vmxnet3")),
            videos=(Video(model="vga"),),
            inputs=(Input(type="tablet", bus="virtio"), Input(type="mouse", bus="virtio"),
                    Input(type="keyboard", bus="virtio")),
            controllers=(Controller(type="usb", model="piix3-uhci"),),
            memballoon="virtio",
            rngs=(Rng(), Rng()),
        ),
    )
    return {d.name: d for d in (pc, q35, full)}


# --------------------------------------------------------------------------------------------
# Public API.


@st.composite
def domains(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Domain:
    """Hypothesis strategy of valid domains across the whole model."""
    return _build(_HypothesisChooser(draw))


def random_domain(rng: random.Random, index: int) -> Domain:
    """A valid, realistic domain drawn from `rng`; `index` makes its name unique (`vm-0042 ...`)."""
    c = _RandomChooser(rng)
    name = f"vm-{index:04d}"
    if c.flag(0.5):
        name += " " + c.text("name")
    return _build(c, name)


def write_domains(directory: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Write `count` random domains (seeded) into `directory` as `<name>.xml`; return the paths."""
    rng = random.Random(seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        domain = random_domain(rng, i)
        path = out / f"{domain.name}.xml"
        path.write_bytes(model.to_xml(domain))
        paths.append(path)
    return paths


__all__ = ["dev_name", "domains", "edge_domains", "max_apic_id", "random_domain",
           "write_domains"]
