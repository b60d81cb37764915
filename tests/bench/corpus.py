"""How much of libvirt 9.0's own x86 test corpus qemud runs as is (issue 8).

`bench_corpus()` reads libvirt 9.0's `tests/qemuxml2argvdata/*.xml` (the domain files libvirt's
QEMU driver is tested on, each beside the `.args` command line libvirt renders for it, or an
`.err` when libvirt refuses it), keeps the x86 ones (`<type arch='x86_64'|'i686'>`) and prints:

- how many there are, and how many libvirt itself accepts (those with an `.args`);
- the share qemud accepts (parse, validate and render the command line) of the files libvirt
  accepts, and how many of libvirt's refused files qemud accepts too;
- the most frequent refusal reasons, with counts and one example `file:line`, and how many
  refusals have no line (the goal is none);
- the share of accepted files whose `-device` set equals libvirt's: the drivers alone, then the
  drivers with their ids (bus and addr are compared for the PCI devices both place).

The corpus is not in this repository: it is taken from Debian's libvirt 9.0 source package
(`apt-get source --download-only`, with a private apt state whose deb-src entries are derived
from this machine's own deb entries, so the system's apt configuration is untouched) and cached
in `$QEMUD_CORPUS_DIR` or `~/.cache/qemud/libvirt-9.0-qemuxml2argvdata/`. When that is not
possible the bench says so, and how to provide the directory by hand, and prints no figure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

import model
from model.errors import InvalidDomainError, ModelError

X86 = ("x86_64", "i686")
CORPUS_MEMBER = "tests/qemuxml2argvdata/"
SOURCE_PACKAGE = "libvirt"
"""The source package; the tarball found must be 9.0.0 (Debian 12's version)."""


def corpus_dir() -> Path:
    """Where the corpus is cached: `$QEMUD_CORPUS_DIR`, else under the user's cache directory."""
    explicit = os.environ.get("QEMUD_CORPUS_DIR")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qemud" / "libvirt-9.0-qemuxml2argvdata"


def _deb_src_entries(sources: Iterable[Path]) -> str:
    """deb822 stanzas for the source packages of the given `.sources` files' `deb` entries."""
    out = []
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            lines = stanza.strip().splitlines()
            if any(line.strip() == "Types: deb" for line in lines):
                out.append("\n".join("Types: deb-src" if line.strip() == "Types: deb" else line
                                     for line in lines))
    return "\n\n".join(out) + "\n"


def fetch_corpus(target: Path) -> str | None:
    """Download libvirt 9.0's source package and extract its qemuxml2argvdata into `target`.

    Uses a private apt state under a temporary directory (the system's lists and sources stay
    as they are). Returns None on success, else a sentence saying what failed.
    """
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    entries = _deb_src_entries(sources)
    if not entries.strip() or shutil.which("apt-get") is None:
        return "apt-get or a deb822 entry in /etc/apt/sources.list.d is missing"
    with tempfile.TemporaryDirectory(prefix="qemud-corpus-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "parts").mkdir()
        (tmp / "parts" / "src.sources").write_text(entries)
        (tmp / "lists" / "partial").mkdir(parents=True)
        (tmp / "download").mkdir()
        apt = ["apt-get", "-q", "-o", "Dir::Etc::SourceList=/dev/null",
               "-o", f"Dir::Etc::SourceParts={tmp / 'parts'}",
               "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}"]
        for step, cwd in ((["update"], tmp), (["source", "--download-only", SOURCE_PACKAGE],
                                              tmp / "download")):
            done = subprocess.run([*apt, *step], cwd=cwd, capture_output=True, text=True,
                                  timeout=600, check=False)
            if done.returncode != 0:
                return f"apt-get {step[0]} failed: {done.stderr.strip()[-300:]}"
        tarballs = sorted((tmp / "download").glob("libvirt_9.0.0.orig.tar.*"))
        if not tarballs:
            return "the libvirt 9.0.0 source tarball was not downloaded"
        staging = Path(tempfile.mkdtemp(prefix=".corpus-", dir=target.parent))
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers()  # files and links to their neighbours
                       if m.name.rpartition("/")[0].endswith(CORPUS_MEMBER.rstrip("/"))
                       and (m.isfile() or m.issym())]
            for member in members:
                member.name = member.name.rsplit("/", 1)[1]
                tar.extract(member, staging, filter="data")
        staging.rename(target)
    return None


def ensure_corpus() -> tuple[Path | None, str]:
    """The corpus directory, fetched on first use; (None, why) when it cannot be had."""
    target = corpus_dir()
    if target.is_dir() and any(target.glob("*.xml")):
        return target, f"cached in {target}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        why = fetch_corpus(target)
    except (OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        why = str(exc)
    if why is None:
        return target, f"fetched into {target}"
    return None, why


@dataclass(frozen=True)
class Device:
    """One `-device` of a command line: its driver, id, bus and addr (None when absent)."""

    driver: str
    id: str | None = None
    bus: str | None = None
    addr: str | None = None


def parse_device(value: str) -> Device:
    """Read a `-device` value, in QEMU's JSON form or its `driver,key=value` form."""
    if value.startswith("{"):
        data = json.loads(value)
        def get(key: str) -> str | None:
            v = data.get(key)
            return None if v is None else str(v)
        return Device(str(data["driver"]), get("id"), get("bus"), _addr(get("addr")))
    parts = re.split(r"(?<!,),(?!,)", value)
    props = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    return Device(parts[0], props.get("id"), props.get("bus"), _addr(props.get("addr")))


def _addr(addr: str | None) -> str | None:
    """A PCI addr normalised: `0x2` and `0x02.0` and `2.0` all read `2.0`."""
    if addr is None:
        return None
    slot, _, fn = addr.partition(".")
    try:
        return f"{int(slot, 16)}.{int(fn or '0', 16)}"
    except ValueError:
        return addr


def devices_of(argv: list[str]) -> list[Device]:
    """Every `-device` of an argv, in order; libvirt's old `-usb` is the PIIX3 UHCI it means."""
    out = []
    for i, a in enumerate(argv):
        if a == "-device" and i + 1 < len(argv):
            out.append(parse_device(argv[i + 1]))
        elif a == "-usb":
            out.append(Device("piix3-usb-uhci", "usb", "pci.0", "1.2"))
    return out


def implicit(xml: Path, devices: list[Device]) -> list[Device]:
    """`devices` without the memballoon and USB controller libvirt adds when the file has none.

    qemud adds neither (README: what the file does not ask for), a known, deliberate difference.
    """
    root = etree.parse(str(xml), etree.XMLParser(resolve_entities=False, no_network=True))
    drop = set()
    if root.find("devices/memballoon") is None:
        drop.add("balloon0")
    if root.find("devices/controller[@type='usb']") is None:
        drop.add("usb")
    return [d for d in devices if d.id not in drop]


def args_file_argv(text: str) -> list[str]:
    """The argv of one of libvirt's `.args` files (shell words, `\\`-continued lines)."""
    return shlex.split(text.replace("\\\n", " "))


def args_for(xml: Path) -> Path | None:
    """libvirt's command line for `xml`: the `x86_64-latest` rendering first, else the plain one."""
    stem = xml.name[:-4]
    for name in (f"{stem}.x86_64-latest.args", f"{stem}.args"):
        if (xml.parent / name).is_file():
            return xml.parent / name
    others = sorted(xml.parent.glob(f"{stem}.x86_64-*.args"))
    return others[-1] if others else None


def has_err(xml: Path) -> bool:
    """Whether libvirt's test expects an error for `xml` (an `.err` file beside it)."""
    stem = xml.name[:-4]
    return any(p.name.split(".")[0] == stem for p in xml.parent.glob(f"{stem}.*err"))


def is_x86(xml: Path) -> bool:
    """Whether a corpus file is an x86 domain (`<os><type arch='x86_64'|'i686'>`)."""
    try:
        root = etree.parse(str(xml), etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return False
    return root.findtext("os/type") is not None and \
        root.find("os/type").get("arch") in X86  # type: ignore[union-attr]


_VALUE = re.compile(r"'[^' ]*[\d/][^' ]*'|\b\d[\w.:-]*")


def reason(message: str) -> str:
    """A refusal message with its numbers and quoted paths or numbers masked (names such as
    'protocol' or 'sdl' are kept), to group like refusals."""
    return _VALUE.sub("…", message)


@dataclass(frozen=True)
class Outcome:
    """What qemud made of one corpus file."""

    file: Path
    libvirt_accepts: bool
    issues: tuple[model.Issue, ...] = ()
    drivers_equal: bool | None = None
    ids_equal: bool | None = None
    placement_equal: bool | None = None
    explicit_equal: bool | None = None
    """The drivers equal once libvirt's implicit memballoon and USB controller are left out."""


def judge(xml: Path) -> Outcome:
    """Parse and render one corpus file; compare its devices with libvirt's `.args` when any."""
    args = args_for(xml)
    try:
        parsed = model.parse_file(xml)
        ours = model.command_line(parsed.domain)
    except InvalidDomainError as exc:
        return Outcome(xml, args is not None, exc.issues)
    except ModelError as exc:
        return Outcome(xml, args is not None, (model.Issue(getattr(exc, "line", None), str(exc)),))
    if args is None:
        return Outcome(xml, False)
    mine, theirs = devices_of(ours), devices_of(args_file_argv(args.read_text()))
    drivers = Counter(d.driver for d in mine) == Counter(d.driver for d in theirs)
    ids = Counter((d.driver, d.id) for d in mine) == Counter((d.driver, d.id) for d in theirs)
    explicit = Counter(d.driver for d in mine) == Counter(d.driver for d in implicit(xml, theirs))
    placed_theirs = {d.id: (d.bus, d.addr) for d in theirs if d.addr is not None}
    placed_mine = {d.id: (d.bus, d.addr) for d in mine if d.addr is not None}
    placement = placed_mine == placed_theirs
    return Outcome(xml, True, (), drivers, ids, placement, explicit)


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f}%)" if whole else f"{part}/0"


def bench_corpus(top: int = 15) -> None:
    """Print the corpus figures (see the module docstring)."""
    directory, how = ensure_corpus()
    if directory is None:
        print(f"libvirt corpus: not available ({how}); skipped. Put libvirt 9.0's "
              "tests/qemuxml2argvdata/ in $QEMUD_CORPUS_DIR (or "
              f"{corpus_dir()}) to measure it")
        return
    files = sorted(p for p in directory.glob("*.xml") if is_x86(p))
    outcomes = [judge(p) for p in files]
    libvirt_ok = [o for o in outcomes if o.libvirt_accepts]
    accepted = [o for o in libvirt_ok if not o.issues]
    refused = [o for o in libvirt_ok if o.issues]
    print(f"libvirt 9.0 corpus ({how}): {len(files)} x86 files, {len(libvirt_ok)} of them "
          f"accepted by libvirt (with an .args)")
    refused_by_libvirt = [o for o in outcomes if not o.libvirt_accepts and has_err(o.file)]
    print(f"corpus: qemud accepts {_pct(len(accepted), len(libvirt_ok))} of libvirt's accepted "
          f"x86 files; of the {len(refused_by_libvirt)} libvirt refuses (an .err), qemud accepts "
          f"{sum(1 for o in refused_by_libvirt if not o.issues)}; "
          f"{len(files) - len(libvirt_ok) - len(refused_by_libvirt)} have neither (libvirt's "
          "xml2xml-only inputs)")
    unlocated = sum(1 for o in refused if any(i.line is None for i in o.issues))
    print(f"corpus: refusals without a line: {unlocated} of {len(refused)}")
    counts: Counter[str] = Counter()
    sole: Counter[str] = Counter()
    example: dict[str, str] = {}
    for o in refused:
        keys = {reason(i.message) for i in o.issues}
        for key in keys:
            counts[key] += 1
            sole[key] += len(keys) == 1
            first = next(i for i in o.issues if reason(i.message) == key)
            example.setdefault(key, first.render(o.file.name))
    print("corpus: top refusal reasons (files refused for it; of them, files refused for it "
          "alone):")
    for key, n in counts.most_common(top):
        print(f"  {n:4d} {sole[key]:4d}  {key[:150]}")
        print(f"             e.g. {example[key][:150]}")
    print(f"corpus: -device drivers equal libvirt's: "
          f"{_pct(sum(1 for o in accepted if o.drivers_equal), len(accepted))}; drivers and ids: "
          f"{_pct(sum(1 for o in accepted if o.ids_equal), len(accepted))}; PCI bus/addr of every "
          f"placed device: {_pct(sum(1 for o in accepted if o.placement_equal), len(accepted))}")
    print(f"corpus: -device drivers equal once libvirt's implicit memballoon and USB controller "
          "(which qemud does not add) are left out: "
          f"{_pct(sum(1 for o in accepted if o.explicit_equal), len(accepted))}")


def main() -> int:
    """Run the corpus bench alone (`python -m tests.bench.corpus`)."""
    bench_corpus(top=int(os.environ.get("QEMUD_CORPUS_TOP", "15")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
