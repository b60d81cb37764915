"""`reconcile import`: qemud files for the domains libvirt already has.

The domains come from libvirt's config folder (`/etc/libvirt/qemu/*.xml`, default; a domain
whose `autostart/<name>.xml` link exists is wanted running, the others stopped), or from
`virsh -c URI dumpxml --inactive --security-info` when a URI is given (autostart from
`virsh list --autostart`).
Each is given qemud's desired state with `model.edit.set_state` (every other byte kept), then
validated as the reconciler would (the machine type against the emulator too) before it is
written. Nothing is overwritten: a file of the same name in the config directory, or a domain
whose name or uuid another file there already uses, is left out and reported. Every domain
that could not be carried over is reported as `file:line: message`. libvirt's UEFI variables
and TPM state of each domain written are copied into its qemud state folder (`carry_state`).
"""

from __future__ import annotations

import os
import subprocess
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import model
from model.edit import set_state
from model.parse import HostFacts
from reconciler.errors import ReconcilerError
from reconciler.paths import Layout

LIBVIRT_CONFIG = Path("/etc/libvirt/qemu")
LIBVIRT_RUN = Path("/run/libvirt/qemu")
"""Where libvirt's QEMU driver keeps `<name>.xml` (and `.pid`) for each domain it runs."""
LIBVIRT_STATE = Path("/var/lib/libvirt")
"""Where libvirt keeps what a domain file does not hold: `qemu/nvram/<name>_VARS.fd` (a UEFI
domain's variables when its `<nvram>` names no file) and `swtpm/<uuid>/tpm2|tpm1.2/` (an
emulated TPM's state)."""
VIRSH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Source:
    """One libvirt domain to import: where it came from (for messages), its XML, autostart."""

    origin: str
    data: bytes
    autostart: bool
    running: bool = False
    """libvirt runs it now: importing it would give the guest a second QEMU."""


@dataclass(frozen=True)
class Imported:
    """A domain written into the config directory."""

    name: str
    file: Path
    state: str
    origin: str


@dataclass
class Report:
    """What `import` did: the files written and each problem as `file:line: message`."""

    imported: list[Imported] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """The state carried over (UEFI variables, TPM), or said to be fresh."""


def carry_state(d: model.Domain, origin: str, libvirt: Path, state_dir: Path,
                report: Report) -> None:
    """Copy libvirt's UEFI variables and TPM state of `d` into its qemud state folder.

    Copies, so libvirt's own files stay as they were; never over a file qemud already has.
    A store that is not there is said to be fresh; one that cannot be copied is a problem.
    """
    from model.firmware import VARS_FILE
    from reconciler.paths import ensure_private_dir
    from reconciler.sidecars import TPM_STATE

    def copy(src: Path, dst: Path, what: str) -> None:
        """Copy one file (0600) unless `dst` exists; report the outcome."""
        if dst.exists():
            report.notes.append(f"{d.name}: {what}: {dst} exists already; kept")
            return
        try:
            ensure_private_dir(dst.parent)
            _write_new(dst, src.read_bytes())
        except OSError as exc:
            report.problems.append(f"{origin}: {what}: cannot copy {src} to {dst}: "
                                   f"{exc.strerror}; the VM would start with a fresh one")
            return
        report.notes.append(f"{d.name}: {what} copied from {src} into {dst}")

    if model.uses_uefi(d) and d.os.nvram is None:
        src = libvirt / "qemu" / "nvram" / f"{d.name}_VARS.fd"
        if src.is_file():
            copy(src, state_dir / VARS_FILE, "UEFI variables")
        else:
            report.notes.append(f"{d.name}: no UEFI variables at {src} (never started by "
                                "libvirt?): it starts with fresh ones from the template")
    for tpm in d.devices.tpms[:1]:
        folder = libvirt / "swtpm" / str(d.uuid) / ("tpm2" if tpm.version == "2.0" else "tpm1.2")
        files = sorted(folder.glob("*")) if folder.is_dir() else []
        if not files:
            report.notes.append(f"{d.name}: no TPM state at {folder}: its TPM starts empty")
        for src in files:
            if src.is_file():
                copy(src, state_dir / TPM_STATE / src.name, "TPM state")


class SourceError(ReconcilerError):
    """The source cannot be read at all (no such folder, virsh missing or failing)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def from_folder(folder: Path, running: Path = LIBVIRT_RUN) -> list[Source]:
    """The domains of libvirt's config folder: `*.xml`, autostart when `autostart/<file>` exists.

    A domain whose status file is in `running` (libvirt's run folder) is one libvirt runs now.
    """
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a directory (libvirt keeps its QEMU domains in "
                           f"{LIBVIRT_CONFIG}); use --from DIR")
    out = []
    for path in sorted(folder.glob("*.xml")):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{path}: cannot read it: {exc.strerror}") from exc
        auto = (folder / "autostart" / path.name)
        live = (running / path.name).exists() or (running / f"{path.stem}.pid").exists()
        out.append(Source(str(path), data, os.path.lexists(auto), live))
    return out


Runner = Callable[[list[str]], str]
"""Runs a command and returns its standard output; raises OSError or CalledProcessError."""


def run_virsh(argv: list[str]) -> str:
    """Run `virsh` (stdin closed, bounded); its standard output."""
    return subprocess.run(argv, capture_output=True, text=True, check=True,
                          timeout=VIRSH_TIMEOUT_S, stdin=subprocess.DEVNULL).stdout


def from_virsh(uri: str, run: Runner = run_virsh) -> list[Source]:
    """Every domain `virsh -c URI` lists (inactive definitions), autostart as virsh says."""
    base = ["virsh", "-q", "-c", uri]
    try:
        names = [n for n in run([*base, "list", "--all", "--name"]).splitlines() if n.strip()]
        auto = {n.strip() for n in run([*base, "list", "--all", "--autostart", "--name"])
                .splitlines() if n.strip()}
        live = {n.strip() for n in run([*base, "list", "--state-running", "--state-paused",
                                         "--name"]).splitlines() if n.strip()}
        # --security-info: without it libvirt leaves out the VNC/spice passwords, and the
        # display would come back open
        return [Source(f"virsh -c {uri} dumpxml {n}",
                       run([*base, "dumpxml", "--inactive", "--security-info", n]).encode(),
                       n in auto, n in live)
                for n in (x.strip() for x in names)]
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise SourceError(f"virsh -c {uri} did not answer: {str(detail).strip()}") from exc


def _taken(config_dir: Path) -> tuple[dict[str, str], dict[uuidlib.UUID, str]]:
    """Names and uuids the config directory's valid files already use (to refuse clashes)."""
    names: dict[str, str] = {}
    uuids: dict[uuidlib.UUID, str] = {}
    for path in sorted(config_dir.glob("*.xml")):
        try:
            parsed = model.parse_file(path)
        except model.InvalidDomainError:
            continue
        names[parsed.domain.name] = str(path)
        uuids[parsed.domain.uuid] = str(path)
    return names, uuids


def _write_new(target: Path, data: bytes) -> None:
    """Create `target` with `data`, durably, never replacing a file (link(2) fails if it exists)."""
    tmp = target.with_name(f".{target.name}.import-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)
    finally:
        os.unlink(tmp)
    dfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def import_domains(sources: Iterable[Source], config_dir: Path,
                   host: HostFacts | None = None,
                   write: Callable[[Path, bytes], None] = _write_new, *,
                   state: Callable[[str], Path] | None = None,
                   libvirt: Path = LIBVIRT_STATE) -> Report:
    """Write a qemud file for each source into `config_dir`; report what could not be carried.

    Guarantees: no existing file is replaced; no file is written that is invalid or whose name
    or uuid is already used in `config_dir` (or by an earlier source of this import). With
    `state` (a uuid's state folder), libvirt's UEFI variables and TPM state of each domain
    written are copied there (`carry_state`).
    """
    report = Report()
    names, uuids = _taken(config_dir)
    for src in sources:
        wanted: Literal["running", "stopped"] = "running" if src.autostart else "stopped"
        try:
            data = set_state(src.data, wanted, src.origin)
            parsed = model.parse(data, src.origin, host)
        except model.InvalidDomainError as exc:
            report.problems += [i.render(src.origin) for i in exc.issues]
            continue
        d = parsed.domain
        if src.running:  # one guest, two QEMUs: never
            report.problems.append(
                f"{src.origin}: libvirt runs {d.name} now; not imported (qemud would start a "
                f"second QEMU for it): shut it down there (virsh shutdown {d.name}, and virsh "
                f"autostart --disable {d.name} so libvirt leaves it down), then import again")
            continue
        target = config_dir / f"{d.name}.xml"
        clash = names.get(d.name) or uuids.get(d.uuid)
        if "/" in d.name or d.name.startswith("."):
            report.problems.append(f"{src.origin}: the name {d.name!r} cannot be a file name; "
                                   "rename the domain first")
        elif os.path.lexists(target):
            report.problems.append(f"{src.origin}: {target} exists; it is not overwritten "
                                   "(remove or rename it to import this domain)")
        elif clash is not None:
            what = "name" if d.name in names else "uuid"
            report.problems.append(f"{src.origin}: its {what} is already used by {clash}; "
                                   "not imported (two files for one domain would clash)")
        else:
            try:
                write(target, data)
            except OSError as exc:
                report.problems.append(f"{src.origin}: cannot write {target}: {exc.strerror}")
                continue
            names[d.name] = str(target)
            uuids[d.uuid] = str(target)
            report.imported.append(Imported(d.name, target, wanted, src.origin))
            if state is not None:
                carry_state(d, src.origin, libvirt, state(str(d.uuid)), report)
    return report


def cmd_import(args: Any, out: TextIO, err: TextIO, layout: Layout) -> int:
    """`reconcile import [--from DIR] [--uri URI]`: import, print what was written and what not.

    Exit 0 when every domain was carried over, 1 when any was not (each reported on stderr as
    `file:line: message`); a source that cannot be read at all raises `SourceError` (exit 2).
    """
    from reconciler.hostfacts import host_facts

    layout.ensure()
    if args.uri:
        sources = from_virsh(args.uri)
    else:
        sources = from_folder(Path(args.source) if args.source else LIBVIRT_CONFIG)
    report = import_domains(sources, layout.config_dir, host_facts(), state=layout.state_dir)
    for done in report.imported:
        out.write(f"imported {done.name} from {done.origin} into {done.file} "
                  f"(desired {done.state})\n")
    for note in report.notes:
        out.write(f"{note}\n")
    for problem in report.problems:
        err.write(f"{problem}\n")
    total = len(sources)
    out.write(f"{len(report.imported)} of {total} domain(s) imported"
              + ("; see above for what could not be carried over\n" if report.problems
                 else "\n"))
    return 1 if report.problems else 0
