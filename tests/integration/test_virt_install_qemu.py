"""Real QEMU shows the guest of each virt-install file the same devices under qemud as under libvirt.

For every file in tests/data/virt-install (virt-install --print-xml and virsh dumpxml of Debian 12's
virt-install 4.1 / libvirt 9.0), two QEMUs are started paused (`-S`, no guest code runs):

* qemud's: `model.command_line(domain, runtime, descriptors)` for the file as it is;
* libvirt's: the file's `.args` (`virsh domxml-to-native`), libvirt's own command line.

Each is asked over QMP for `info qtree` (every device: driver, bus, PCI slot.function, the PCI ids
and BAR sizes the guest reads from config space) and `query-pci`. The guest-visible devices of the
two must be equal, PCI addresses included, but for `ALLOWED`, an explicit per-file list of the
differences qemud makes on purpose, each with its reason. libvirt's parsed `-device` options
(driver, bus, addr) must also all appear in what QEMU reports for libvirt's command line, so the
comparison is anchored to what libvirt wrote, not only to what QEMU made of it.

`query-pci` under `-S` lists only bus 0 (the firmware has not numbered the secondary buses yet),
so devices behind root ports come from `info qtree`; bus 0 of `query-pci` is cross-checked with it.

Only the host side is substituted (`substitute`, identically for both command lines, each change
recorded in failure messages): disk images (always: the paths may exist on a libvirt host, and
must never be opened here) -> blank qcow2/raw files made with `qemu-img` (CD-ROM
images -> empty raw files), UEFI variable stores -> copies of the firmware's template, libvirt's
master key -> a random file, sockets -> a temporary directory, libvirt's monitor -> ours, tap and
bridge netdevs -> `user` with the same id (the NIC device, its id, MAC and address are kept), a
spice TCP port -> a unix socket, and `-accel kvm` -> `-accel tcg` with `-cpu max` when KVM cannot
run here (nested KVM does not: `kvm_runs()` asks QEMU). No device option is changed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import model
from reconciler.uefi import descriptors
from tests.support.qmp import Qmp

pytestmark = pytest.mark.qemu

DATA = Path(__file__).resolve().parents[1] / "data" / "virt-install"
FILES = sorted(DATA.glob("*.xml"))
NAMES = [p.name.removesuffix(".xml") for p in FILES]
QEMU = "/usr/bin/qemu-system-x86_64"
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0
WORKERS = 2

ALLOWED: dict[str, set[tuple[str, str]]] = {
    # libvirt adds a virtio memballoon to a domain without <memballoon> (virt-install's win11
    # profile writes none); qemud adds no device the file does not ask for (README). libvirt
    # puts it behind the fourth root port, 00:02.3, which stays empty under qemud (the PCI
    # function and the virtio device on its virtio bus).
    "win11": {("libvirt", "00:02.3/00.0 virtio-balloon-pci"),
              ("libvirt", "00:02.3/00.0 virtio-bus virtio-balloon-device")},
}
"""Per file: (which side has it, "PCI path + driver" prefix of the device) allowed to differ."""


# --------------------------------------------------------------------------------------------
# Host-side substitutions.

@cache
def kvm_runs() -> bool:
    """Whether QEMU can start a KVM guest here (nested KVM fails creating the vCPU)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    proc = subprocess.run([QEMU, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-nodefaults",
                           "-display", "none", "-S", "-qmp", "stdio"],
                          input=b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
                          capture_output=True, timeout=START_TIMEOUT, check=False)
    return proc.returncode == 0


def keyval(text: str) -> list[tuple[str, str]]:
    """QEMU's key=value,... syntax (',,' is a comma) as pairs; a bare first word has key ''."""
    parts = text.replace(",,", "\0").split(",")
    out = []
    for i, part in enumerate(parts):
        key, eq, val = part.partition("=")
        if not eq and i == 0:
            key, val = "", key
        out.append((key, val.replace("\0", ",")))
    return out


def unkeyval(pairs: list[tuple[str, str]]) -> str:
    """The inverse of `keyval`."""
    return ",".join(v.replace(",", ",,") if not k else f"{k}={v.replace(',', ',,')}"
                    for k, v in pairs)


@dataclass
class Launch:
    """One command line adapted to this machine, and what QEMU reported for it."""

    label: str
    argv: list[str]
    qmp: Path
    notes: list[str] = field(default_factory=list)
    qtree: str = ""
    pci: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None
    stderr: str = ""

    def report(self) -> str:
        """QEMU's stderr, the substitutions and the argv, for failure messages."""
        return (f"{self.label}: {self.problem}\n--- QEMU stderr ---\n{self.stderr.strip()}\n"
                "--- substitutions ---\n" + "\n".join(self.notes) +
                f"\n--- argv ---\n{shlex.join(self.argv)}")


def _image(path: Path, fmt: str, cdrom: bool) -> None:
    """A blank image in `fmt` (an empty file for a raw CD-ROM)."""
    if fmt == "raw" and cdrom:
        path.write_bytes(b"")
        return
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "16M"], check=True,
                   capture_output=True)


def _vars_template(code: str) -> Path:
    """The variable-store template shipped beside firmware `code` (OVMF_CODE* -> OVMF_VARS*)."""
    for desc in descriptors():
        if desc.code == code and desc.template:
            return Path(desc.template)
    raise AssertionError(f"no firmware descriptor names {code}")


def substitute(label: str, argv: list[str], work: Path, qmp: Path) -> Launch:
    """`argv` with the host side replaced as the module docstring lists; devices untouched."""
    out = Launch(label, [], qmp)
    note = out.notes.append
    tcg = not kvm_runs()
    formats: dict[str, str] = {}  # file node -> format driver, from the format -blockdev
    code = ""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-blockdev" and argv[i + 1].startswith("{"):
            spec = json.loads(argv[i + 1])
            if isinstance(spec.get("file"), str):
                formats[spec["file"]] = spec["driver"]
        elif arg == "-blockdev":
            spec = dict(keyval(argv[i + 1]))
            if "file" in spec:
                formats[spec["file"]] = spec["driver"]
    for i, arg in enumerate(argv[:-1]):
        if arg == "-blockdev" and "pflash0" in argv[i + 1]:
            text = argv[i + 1]
            spec = json.loads(text) if text.startswith("{") else dict(keyval(text))
            code = spec.get("filename", code)
    args = iter(argv)
    n = 0

    def fresh(name: str) -> Path:
        nonlocal n
        n += 1
        return work / f"{n}-{Path(name).name}"

    for arg in args:
        if arg not in ("-blockdev", "-drive", "-object", "-chardev", "-netdev", "-spice",
                       "-accel", "-cpu"):
            out.argv.append(arg)
            continue
        value = next(args)
        new = value
        if arg == "-accel" and value == "kvm" and tcg:
            new = "tcg"
        elif arg == "-cpu" and tcg:
            new = "max"
        elif arg == "-blockdev" and value.startswith("{"):
            spec = json.loads(value)
            if spec["driver"] == "file" and spec["filename"] != code:
                path = fresh(spec["filename"])
                if "pflash1" in spec["node-name"]:
                    shutil.copyfile(_vars_template(code), path)
                else:
                    _image(path, formats.get(spec["node-name"], "raw"),
                           spec["filename"].endswith(".iso"))
                spec["filename"] = str(path)
                new = json.dumps(spec)
        elif arg == "-blockdev":
            pairs = keyval(value)
            spec = dict(pairs)
            if spec.get("driver") == "file" and spec["filename"] != code:
                path = fresh(spec["filename"])
                shutil.copyfile(_vars_template(code), path)
                new = unkeyval([(k, str(path) if k == "filename" else v) for k, v in pairs])
        elif arg == "-drive":
            pairs = keyval(value)
            spec = dict(pairs)
            if "file" in spec:
                path = fresh(spec["file"])
                _image(path, spec.get("format", "raw"), spec["file"].endswith(".iso"))
                new = unkeyval([(k, str(path) if k == "file" else v) for k, v in pairs])
        elif arg == "-object" and value.startswith("{") and json.loads(value).get("file"):
            spec = json.loads(value)
            path = fresh(spec["file"])
            path.write_bytes(os.urandom(32))
            spec["file"] = str(path)
            new = json.dumps(spec)
        elif arg == "-chardev" and value.startswith("socket,"):
            pairs = keyval(value)
            spec = dict(pairs)
            if spec.get("id") == "charmonitor" and Path(spec["path"]) != qmp:
                path = qmp
            elif Path(spec["path"]).parent.is_dir() and str(qmp.parent) in spec["path"]:
                path = Path(spec["path"])
            else:
                path = qmp.parent / Path(spec["path"]).name
            new = unkeyval([(k, str(path) if k == "path" else v) for k, v in pairs])
        elif arg == "-netdev":
            spec = (json.loads(value) if value.startswith("{") else
                    {"type": keyval(value)[0][1], **dict(keyval(value)[1:])})
            if spec["type"] in ("tap", "bridge"):
                new = f"user,id={spec['id']}"
        elif arg == "-spice" and "unix=on" not in value:
            pairs = [(k, v) for k, v in keyval(value) if k not in ("port", "addr", "tls-port")]
            new = unkeyval([("unix", "on"), ("addr", str(qmp.parent / "spice.sock")), *pairs])
        if new != value:
            note(f"{arg} {value} -> {new}")
        out.argv += [arg, new]
    if "-S" not in out.argv:
        out.argv.append("-S")
    return out


# --------------------------------------------------------------------------------------------
# QMP and QEMU.

def run(launch: Launch, work: Path) -> Launch:
    """Start `launch.argv`, record `info qtree` and `query-pci`, quit; never leaves QEMU running."""
    log = work / f"{launch.label}.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen(launch.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        qmp = Qmp(launch.qmp, proc, START_TIMEOUT)
        try:
            launch.qtree = qmp.execute("human-monitor-command", **{"command-line": "info qtree"})
            launch.pci = qmp.execute("query-pci")
            qmp.execute("quit")
        finally:
            qmp.close()
        proc.wait(EXIT_TIMEOUT)
    except Exception as exc:  # reported with QEMU's stderr
        launch.problem = f"{type(exc).__name__}: {exc}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(EXIT_TIMEOUT)
    launch.stderr = log.read_text(errors="replace")
    return launch


# --------------------------------------------------------------------------------------------
# What the guest sees.

GUEST_PROPS = ("port", "nr", "cad", "unit", "iobase", "irq", "index", "name", "chassis", "mac",
               "max_outputs", "ram_size", "vram_size", "vram64_size_mb", "vgamem_mb", "vectors",
               "p2", "p3", "multifunction", "address", "secure")
"""qtree properties the guest can observe (location, identity, sizes); host-side ones are not."""

_DEV = re.compile(r'^( *)dev: ([^,]+), id "(.*)"$')
_BUS = re.compile(r"^( *)bus: (\S+)$")
_PCI = re.compile(r"^ *class (.+), addr ([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]), "
                  r"pci id ([0-9a-f]{4}):([0-9a-f]{4}) \(sub ([0-9a-f]{4}):([0-9a-f]{4})\)$")
_BAR = re.compile(r"^ *bar (\d+): (\S+) at \S+ \[(0x[0-9a-f]+)\]$")
_PROP = re.compile(r"^ *([\w-]+) = (.*)$")


@dataclass
class Dev:
    """One device of `info qtree`."""

    driver: str
    qdev_id: str
    bus: str
    parent: Dev | None
    props: dict[str, str] = field(default_factory=dict)
    pci: str = ""  # "slot.function" on its bus
    ids: str = ""  # class, vendor:device, subsystem
    bars: list[str] = field(default_factory=list)

    def path(self) -> str:
        """Its PCI path from the root: slot.function of each PCI ancestor, '/'-separated."""
        chain = []
        dev: Dev | None = self
        while dev is not None:
            if dev.pci:
                chain.append(dev.pci)
            dev = dev.parent
        return "/".join(reversed(chain))

    def where(self) -> str:
        """The device's location: PCI path, else the PCI path of its controller and its bus."""
        if self.pci:
            return f"00:{self.path()}"
        return f"00:{self.path()} {self.bus}" if self.path() else self.bus

    def key(self) -> str:
        """Everything about it that the guest sees, as one comparable line."""
        props = " ".join(f"{k}={self.props[k]}" for k in GUEST_PROPS if k in self.props)
        pci = f" [{self.ids}] bars {','.join(self.bars)}" if self.pci else ""
        return f"{self.where()} {self.driver}{pci} {props}".rstrip()


def qtree_devices(text: str) -> list[Dev]:
    """Parse `info qtree`: every device with its bus, parent, properties and PCI identity."""
    devs: list[Dev] = []
    stack: list[tuple[int, Dev | str]] = []  # (indent, device or bus name)
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        m, b = _DEV.match(line), _BUS.match(line)
        if m or b:
            while stack and stack[-1][0] >= indent:
                stack.pop()
        if m:
            bus = next((s for _, s in reversed(stack) if isinstance(s, str)), "")
            parent = next((s for _, s in reversed(stack) if isinstance(s, Dev)), None)
            dev = Dev(m.group(2), m.group(3), bus, parent)
            devs.append(dev)
            stack.append((indent, dev))
        elif b:
            stack.append((indent, b.group(2)))
        elif stack and isinstance(stack[-1][1], Dev):
            owner = stack[-1][1]
            if p := _PCI.match(line):
                owner.pci = f"{p.group(3)}.{p.group(4)}"
                owner.ids = (f"{p.group(1)} {p.group(5)}:{p.group(6)} "
                             f"sub {p.group(7)}:{p.group(8)}")
            elif bar := _BAR.match(line):
                owner.bars.append(f"{bar.group(1)}:{bar.group(2)}:{bar.group(3)}")
            elif prop := _PROP.match(line):
                owner.props[prop.group(1)] = prop.group(2)
    return devs


def root_bus(pci: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """query-pci's bus 0: (slot.function, vendor:device) of each device."""
    out = set()
    for bus in pci:
        if bus["bus"] != 0:
            continue
        for d in bus["devices"]:
            out.add((f"{d['slot']:02x}.{d['function']}",
                     f"{d['id']['vendor']:04x}:{d['id']['device']:04x}"))
    return out


def libvirt_pci(argv: list[str]) -> set[str]:
    """'00:path driver' of every PCI -device in libvirt's command line, from its bus and addr."""
    paths = {"pcie.0": "", "pci.0": ""}
    out = set()
    for i, arg in enumerate(argv[:-1]):
        if arg != "-device":
            continue
        d = json.loads(argv[i + 1])
        if "addr" not in d or d.get("bus") not in paths:
            continue
        slot, _, fn = str(d["addr"]).partition(".")
        here = f"{int(slot, 16):02x}.{int(fn or '0', 16)}"
        path = f"{paths[d['bus']]}/{here}".lstrip("/")
        if "id" in d:
            paths[d["id"]] = path
        out.add(f"00:{path} {d['driver']}")
    return out


# --------------------------------------------------------------------------------------------
# The launches.

@dataclass
class Pair:
    """qemud's and libvirt's launch of one file."""

    qemud: Launch
    libvirt: Launch


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pair]]:
    """Start both command lines of every file (two files at a time); map file name -> Pair."""
    root = tmp_path_factory.mktemp("virt-install-qemu")
    short = Path(tempfile.mkdtemp(prefix="viq-", dir="/tmp"))  # unix socket paths max 107 bytes
    fw = descriptors()
    launches: list[tuple[Launch, Path]] = []
    out: dict[str, Pair] = {}
    try:
        for name in NAMES:
            for side in ("qemud", "libvirt"):
                work, sockets = root / name / side, short / f"{name}.{side}"
                work.mkdir(parents=True)
                sockets.mkdir()
                if side == "qemud":
                    runtime = model.Runtime(qmp_socket=sockets / "qmp.sock",
                                            pidfile=work / "qemu.pid",
                                            console_log=work / "console.log", state_dir=work)
                    domain = model.parse_file(DATA / f"{name}.xml").domain
                    argv = model.command_line(domain, runtime, fw)
                else:
                    argv = shlex.split((DATA / f"{name}.args").read_text())
                launches.append((substitute(f"{name}.{side}", argv, work, sockets / "qmp.sock"),
                                 work))
        with ThreadPoolExecutor(WORKERS) as pool:
            done = list(pool.map(lambda lw: run(*lw), launches))
        for name in NAMES:
            by_label = {launch.label: launch for launch in done}
            out[name] = Pair(by_label[f"{name}.qemud"], by_label[f"{name}.libvirt"])
        yield out
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _started(launch: Launch) -> list[Dev]:
    """The devices QEMU reported for `launch`; fails with its stderr and argv if it did not start."""
    assert launch.problem is None, launch.report()
    return qtree_devices(launch.qtree)


def _allowed(name: str, side: str, key: str) -> bool:
    """Whether device `key`, seen only on `side`, is an `ALLOWED` difference of file `name`."""
    return any(s == side and key.startswith(prefix) for s, prefix in ALLOWED.get(name, set()))


@pytest.mark.parametrize("name", NAMES)
def test_qemu_accepts_both_command_lines(pairs: dict[str, Pair], name: str) -> None:
    assert _started(pairs[name].qemud)
    assert _started(pairs[name].libvirt)


@pytest.mark.parametrize("name", NAMES)
def test_the_guest_sees_libvirts_devices(pairs: dict[str, Pair], name: str) -> None:
    ours = {d.key() for d in _started(pairs[name].qemud)}
    theirs = {d.key() for d in _started(pairs[name].libvirt)}
    only_qemud = sorted(k for k in ours - theirs if not _allowed(name, "qemud", k))
    only_libvirt = sorted(k for k in theirs - ours if not _allowed(name, "libvirt", k))
    assert (only_qemud, only_libvirt) == ([], []), (
        "guest-visible devices differ\n--- only under qemud ---\n" + "\n".join(only_qemud) +
        "\n--- only under libvirt ---\n" + "\n".join(only_libvirt))


@pytest.mark.parametrize("name", NAMES)
def test_every_allowed_difference_is_real(pairs: dict[str, Pair], name: str) -> None:
    # an allowlist entry that no longer matches anything must go
    keys = {"qemud": {d.key() for d in _started(pairs[name].qemud)},
            "libvirt": {d.key() for d in _started(pairs[name].libvirt)}}
    for side, prefix in ALLOWED.get(name, set()):
        other = "libvirt" if side == "qemud" else "qemud"
        assert any(k.startswith(prefix) for k in keys[side]), (side, prefix)
        assert not any(k.startswith(prefix) for k in keys[other]), (other, prefix)


@pytest.mark.parametrize("name", NAMES)
def test_libvirts_devices_are_where_its_command_line_puts_them(pairs: dict[str, Pair],
                                                               name: str) -> None:
    launch = pairs[name].libvirt
    reported = {f"{d.where()} {d.driver}" for d in _started(launch) if d.pci}
    assert libvirt_pci(launch.argv) <= reported
    assert len(libvirt_pci(launch.argv)) >= 15  # root ports, controllers, disk, NIC, video...


@pytest.mark.parametrize("name", NAMES)
def test_query_pci_agrees_with_qtree_on_bus_0(pairs: dict[str, Pair], name: str) -> None:
    for launch in (pairs[name].qemud, pairs[name].libvirt):
        devs = _started(launch)
        from_qtree = {(d.pci, d.ids.split(" sub ")[0].split()[-1]) for d in devs
                      if d.pci and d.parent is not None and not d.parent.pci}
        assert root_bus(launch.pci) == from_qtree, launch.label
