"""The desired set: the one place that says which VMs are wanted, with which definition.

Pure (no I/O, no clock of its own). `DesiredSet.update()` folds a directory scan and what the
supervisor owns into a `Desired`:

- a valid clash winner is wanted with its file's definition;
- a VM that runs keeps the definition it runs whenever its file cannot say anything better:
  the file is invalid (even right after a restart or SIGHUP, when the parse cache is empty: the
  definition in use, persisted in its runtime folder, is the last good one), the file lost a
  name clash, or the file vanished less than the quiet period ago (editors save by rename);
- a VM whose file now defines another uuid (an identity change, e.g. a rename of a domain
  without `<uuid>`) or is gone for longer than the quiet period is *gone*, with the reason;
- two wanted domains that name the same writable disk image are a disk conflict: the one that
  runs (else the first by file path) may run, the other is `blocked`, and both report it with
  file and line.

Clashes and invalid files never take a running VM away: only the file's own desired state, its
identity, or its removal do.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from model import Domain
from reconciler.scan import Candidate, Conflict, FileIssue, FileKey, Invalid, Scan


@dataclass(frozen=True)
class Owned:
    """A VM the supervisor owns, or one coming back as it was.

    Owned: starting, running, paused, stopping or unresponsive. Coming back (`live` False):
    crashed and due a restart, or being restarted by a user.
    """

    uuid: uuidlib.UUID
    name: str
    file: Path | None
    """The domain file it was started from (persisted in its runtime folder); None if unknown."""
    domain: Domain | None
    """The definition it runs; None for an adopted VM whose definition copy is missing."""
    live: bool = True
    """False for a VM that does not run right now but is coming back (see above)."""


@dataclass(frozen=True)
class Want:
    """A domain that should exist, with the definition that applies to it now."""

    uuid: uuidlib.UUID
    name: str
    file: Path
    key: FileKey | None
    """The version of `file` this want comes from (None: the file is gone for the moment)."""
    domain: Domain
    errors: tuple[FileIssue, ...] = ()
    """Why the file does not fully apply (invalid now, clash, disk conflict), with file and line."""
    kept: str | None = None
    """Set when the running definition stays in effect instead of the file's: the reason."""
    blocked: str | None = None
    """Set when this domain must not start now (it lost a disk conflict): the reason."""
    disk_lines: tuple[int | None, ...] = ()

    @property
    def running(self) -> bool:
        """Whether the definition in effect asks for the VM to run."""
        return self.domain.desired.state == "running"


@dataclass(frozen=True)
class DiskConflict:
    """Two wanted domains name the same writable disk image; `loser` may not run while `winner` may."""

    path: str
    winner: Want
    winner_line: int | None
    loser: Want
    loser_line: int | None

    def message(self, about: Want) -> str:
        """A sentence for `about`'s status naming the other file and line, and what to do."""
        other, line = ((self.loser, self.loser_line) if about.uuid == self.winner.uuid
                       else (self.winner, self.winner_line))
        where = f"{other.file}:{line}" if line is not None else str(other.file)
        lead = (f"disk image {self.path} is also used by '{other.name}' ({where})")
        if about.uuid == self.winner.uuid:
            return f"{lead}, which may not run while this domain does"
        return (f"{lead}; this domain stays stopped while that one may run: give each its own "
                "image, or mark it <readonly/> or <shareable/>")


@dataclass(frozen=True)
class Desired:
    """What should be true, as of one scan: the wanted domains and the owned VMs that must go."""

    wants: Mapping[uuidlib.UUID, Want]
    gone: Mapping[uuidlib.UUID, str] = field(default_factory=dict)
    """Owned VMs that no file wants any more, each with the reason (stopped gracefully)."""
    conflicts: tuple[Conflict, ...] = ()
    disk_conflicts: tuple[DiskConflict, ...] = ()
    invalid: tuple[Invalid, ...] = ()
    wake_at: float | None = None
    """When a quiet period runs out (the caller runs a pass then), if any."""


Identify = Callable[[str], str]
"""What a disk path names, so two spellings of one image compare equal (the daemon passes
`DiskIdentity`, which resolves symlinks; pure code and tests use `os.path.normpath`)."""


def writable_disks(domain: Domain, identify: Identify = os.path.normpath
                   ) -> Iterable[tuple[int, str]]:
    """(index, identity) of each image the guest may write and nobody may share.

    The disks (index: their place in `devices.disks`), then an explicit `<nvram>` (index: one
    past the disks, as in `Parsed.disk_lines`): QEMU writes the UEFI variable store as a
    pflash drive and does not lock it against a second QEMU. A store qemud keeps in the
    domain's state folder is its own.
    """
    for i, disk in enumerate(domain.devices.disks):
        if disk.source is None or disk.device == "cdrom" or disk.readonly or disk.shareable:
            continue  # a floppy is written like a disk
        yield i, identify(disk.source)
    if domain.os.nvram is not None:
        yield len(domain.devices.disks), identify(domain.os.nvram)


class DiskIdentity:
    """Resolves disk paths to the image they name, remembering answers.

    Symlinks are resolved; an existing image is known by its device and inode, so hard links
    and bind mounts of one image name it by one path (the first seen). The cache keeps passes
    cheap; `forget()` (SIGHUP) drops it, for a symlink retargeted.
    """

    def __init__(self) -> None:
        self._known: dict[str, str] = {}
        self._by_inode: dict[tuple[int, int], str] = {}

    def __call__(self, path: str) -> str:
        """The image `path` names: its resolved path, or that of another name of one inode."""
        found = self._known.get(path)
        if found is None:
            found = os.path.realpath(path)
            try:
                st = os.stat(found)
            except OSError:
                pass  # not there (yet): known by its path
            else:
                found = self._by_inode.setdefault((st.st_dev, st.st_ino), found)
            self._known[path] = found
        return found

    def forget(self) -> None:
        """Resolve every path afresh from now on."""
        self._known.clear()
        self._by_inode.clear()


INVALID_KEPT = "the file is invalid; the last valid definition stays in effect"


def _want(cand: Candidate, clashes: tuple[FileIssue, ...]) -> Want:
    """A clash winner as a want (its last valid definition when the file is invalid now)."""
    return Want(cand.uuid, cand.name, cand.path, cand.key, cand.parsed.domain,
                cand.errors + clashes, INVALID_KEPT if cand.errors else None,
                disk_lines=cand.parsed.disk_lines)


def _kept(own: Owned, errors: tuple[FileIssue, ...], why: str) -> Want:
    """A want that keeps an owned VM's running definition (and file) in effect."""
    assert own.domain is not None
    return Want(own.uuid, own.name, own.file or Path(f"<unknown file of {own.uuid}>"), None,
                own.domain, errors, kept=why)


@dataclass
class DesiredSet:
    """Turns scans into `Desired`; remembers only when each owned VM's file went missing."""

    quiet_period: float
    identify: Identify = os.path.normpath
    _missing: dict[uuidlib.UUID, float] = field(default_factory=dict)
    _made: dict[uuidlib.UUID, tuple[Candidate, tuple[FileIssue, ...], Want]] = field(
        default_factory=dict)
    """The want made from each candidate: an unchanged file keeps the very same object."""
    _last: tuple[Scan, dict[uuidlib.UUID, Owned], Desired] | None = None

    def update(self, scan: Scan, owned: Mapping[uuidlib.UUID, Owned], now: float) -> Desired:
        """Fold a scan and the owned VMs into what should be true now (see the module doc).

        The same scan and owned VMs (and no quiet period running) give the same `Desired`
        object, so a pass over an unchanged directory costs nothing downstream.
        """
        if (self._last is not None and self._last[0] is scan and not self._missing
                and self._last[1] == owned):
            return self._last[2]
        clashes: dict[str, tuple[FileIssue, ...]] = {}
        for conflict in scan.conflicts:
            issue = conflict.issue(conflict.winner)
            clashes[str(conflict.winner)] = (*clashes.get(str(conflict.winner), ()), issue)
        wants: dict[uuidlib.UUID, Want] = {}
        made: dict[uuidlib.UUID, tuple[Candidate, tuple[FileIssue, ...], Want]] = {}
        for uuid, cand in scan.domains.items():
            notes = clashes.get(str(cand.path), ())
            old = self._made.get(uuid)
            want = old[2] if old is not None and old[0] is cand and old[1] == notes else \
                _want(cand, notes)
            wants[uuid] = want
            made[uuid] = (cand, notes, want)
        self._made = made
        gone: dict[uuidlib.UUID, str] = {}
        wake_at: float | None = None
        if owned:
            by_path = {str(c.path): c for c in scan.domains.values()}
            invalid = {str(i.path): i for i in scan.invalid}
            losers = {str(c.loser): c for c in scan.conflicts}
            for uuid, own in owned.items():
                if uuid in wants:
                    self._missing.pop(uuid, None)
                    continue
                verdict = self._judge(own, by_path, invalid, losers)
                if isinstance(verdict, Want):
                    self._missing.pop(uuid, None)
                    wants[uuid] = verdict
                    continue
                if verdict is not None:
                    self._missing.pop(uuid, None)
                    gone[uuid] = verdict
                    continue
                # the scanner lets a vanished file linger for the quiet period; only what it
                # could not cover (the first pass after a restart or SIGHUP) waits here
                since = self._missing.setdefault(
                    uuid, now - self.quiet_period if str(own.file) in scan.expired else now)
                if (now - since < self.quiet_period and own.domain is not None and own.file
                        and own.live):  # a VM that does not run is never started from a gap
                    wants[uuid] = _kept(own, (), "the domain file is missing for a moment")
                    until = since + self.quiet_period
                    wake_at = until if wake_at is None else min(wake_at, until)
                else:
                    gone[uuid] = "domain file removed"
        for uuid in [u for u in self._missing if u not in owned]:
            del self._missing[uuid]
        disk_conflicts = _disk_conflicts(wants, owned, self.identify)
        if disk_conflicts:
            wants = _mark_disk_conflicts(wants, disk_conflicts)
        if scan.wake_at is not None:
            wake_at = scan.wake_at if wake_at is None else min(wake_at, scan.wake_at)
        desired = Desired(wants, gone, scan.conflicts, disk_conflicts, scan.invalid, wake_at)
        self._last = (scan, dict(owned), desired)
        return desired

    @staticmethod
    def _judge(own: Owned, by_path: Mapping[str, Candidate], invalid: Mapping[str, Invalid],
               losers: Mapping[str, Conflict]) -> Want | str | None:
        """What an owned VM's file (which does not define it as a winner) says about it.

        A `Want` keeps it (invalid file, clash loser); a string is why it must go (identity
        changed); None means its file is missing (the caller applies the quiet period).
        """
        if own.file is None:
            # adopted from an older qemud's folder, which did not record its file: while some
            # file is invalid or lost a clash, it may be this VM's: keep it rather than guess
            if own.domain is not None and (invalid or losers):
                return _kept(own, (), "its domain file is not known (started by an older qemud) "
                             "and some files are invalid or clash; fix them to decide")
            return None
        path = str(own.file)
        if path in invalid and own.domain is not None:
            return _kept(own, invalid[path].errors, INVALID_KEPT)
        conflict = losers.get(path)
        if conflict is not None:
            if conflict.uuid == own.uuid and own.domain is not None:
                issue = conflict.issue(conflict.loser)
                return _kept(own, (issue,),
                             "the file lost a clash; the definition in use stays in effect")
            return (f"{own.file} now defines '{conflict.name}' ({conflict.uuid}): "
                    "identity changed")
        cand = by_path.get(path)
        if cand is not None:
            return f"{own.file} now defines '{cand.name}' ({cand.uuid}): identity changed"
        return None


def _disk_conflicts(wants: Mapping[uuidlib.UUID, Want], owned: Mapping[uuidlib.UUID, Owned],
                    identify: Identify) -> tuple[DiskConflict, ...]:
    """Every pair (first holder, other) of wanted domains naming one writable image.

    The first holder is a domain whose VM runs on that image now; else one that could start on
    it now (an owned VM whose running definition names another image would need a restart to
    use it); then one that wants to run; then by file path and uuid: deterministic, and never
    the one that would have to stop.
    """
    users: dict[str, list[tuple[Want, int]]] = {}
    for want in wants.values():
        for index, path in writable_disks(want.domain, identify):
            users.setdefault(path, []).append((want, index))
    found: list[DiskConflict] = []
    for path, holders in users.items():
        if len(holders) < 2:
            continue
        def rank(holder: tuple[Want, int], path: str = path) -> tuple[int, bool, str, int]:
            """Sort key of the domains naming `path` (see above)."""
            want = holder[0]
            own = owned.get(want.uuid)
            if own is None:
                tier = 1
            elif own.domain is not None and any(
                    p == path for _, p in writable_disks(own.domain, identify)):
                tier = 0
            else:
                tier = 2
            return (tier, not want.running, str(want.file), want.uuid.int)

        holders.sort(key=rank)
        first, first_index = holders[0]
        for other, index in holders[1:]:
            if other.uuid == first.uuid:
                continue  # one domain naming its image twice is the model's business
            found.append(DiskConflict(path, first, _line(first, first_index), other,
                                      _line(other, index)))
    return tuple(found)


def _line(want: Want, index: int) -> int | None:
    """The line of disk number `index` of a want's file, when known."""
    return want.disk_lines[index] if index < len(want.disk_lines) else None


def _mark_disk_conflicts(wants: dict[uuidlib.UUID, Want], conflicts: tuple[DiskConflict, ...]
                         ) -> dict[uuidlib.UUID, Want]:
    """Add each conflict to both domains' errors and block the losers."""
    out = dict(wants)
    for conflict in conflicts:
        for side, line in ((conflict.winner, conflict.winner_line),
                           (conflict.loser, conflict.loser_line)):
            current = out[side.uuid]
            issue = FileIssue(str(side.file), line, conflict.message(side))
            blocked = current.blocked
            if side is conflict.loser and blocked is None and current.running:
                blocked = issue.message  # a domain that wants to run may not; both report it
            out[side.uuid] = Want(current.uuid, current.name, current.file, current.key,
                                  current.domain, (*current.errors, issue), current.kept,
                                  blocked, current.disk_lines)
    return out
