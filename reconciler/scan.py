"""The config directory -> the desired set: an mtime cache, last-known-good definitions, clashes.

`Scanner.scan()` costs one `stat` per unchanged file: a file is reparsed only when its
(mtime_ns, size, inode) changed. `resolve()` is the pure part that picks clash winners.
"""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import model
from reconciler.hostfacts import parse_checked

EDITOR_DEBRIS = ("~", ".swp", ".swx", ".swo", ".tmp", ".bak", ".orig", ".part")


def is_domain_file(name: str) -> bool:
    """Whether a directory entry name is a domain file: `*.xml`, not hidden, not editor debris."""
    return (
        name.endswith(".xml")
        and not name.startswith((".", "#"))
        and not name.endswith(EDITOR_DEBRIS)
    )


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of a file without reading it."""

    mtime_ns: int
    size: int
    inode: int


@dataclass(frozen=True)
class FileIssue:
    """An error about one file, as status files and logs show it."""

    file: str
    line: int | None
    message: str


@dataclass(frozen=True)
class Candidate:
    """One domain file's usable definition: current, or last known good when it is invalid now."""

    path: Path
    key: FileKey
    parsed: model.Parsed
    errors: tuple[FileIssue, ...] = ()

    @property
    def uuid(self) -> uuidlib.UUID:
        """The domain's identity."""
        return self.parsed.domain.uuid

    @property
    def name(self) -> str:
        """The domain's name."""
        return self.parsed.domain.name


@dataclass(frozen=True)
class Conflict:
    """A file that lost a clash: same name or same uuid as the winner's file.

    The lines are those of `<name>` (name clash) or `<uuid>` (uuid clash; `<name>` when the uuid
    is derived from it) in each file, when known.
    """

    loser: Path
    winner: Path
    kind: Literal["name", "uuid"]
    name: str
    uuid: uuidlib.UUID
    loser_line: int | None = None
    winner_line: int | None = None
    desired: Literal["running", "stopped"] = "stopped"
    """What the losing file asks for (it stays stopped while it loses)."""

    def message(self, about: Path | None = None) -> str:
        """A sentence for `about`'s status (the loser's by default): the other file and line."""
        what = f"name '{self.name}'" if self.kind == "name" else f"uuid {self.uuid}"
        element = "<name>" if self.kind == "name" else "<uuid>"
        if about is not None and about == self.winner:
            return (f"{what} is also used by {_where(self.loser, self.loser_line)}, which stays "
                    f"stopped while this file wins; give each domain its own {element}")
        return (f"{what} is also used by {_where(self.winner, self.winner_line)}, which wins; "
                f"give {self.loser.name} its own {element} or remove it")

    def issue(self, about: Path) -> FileIssue:
        """The clash as an error of `about` (the loser or the winner), at its line."""
        line = self.winner_line if about == self.winner else self.loser_line
        return FileIssue(str(about), line, self.message(about))


def _where(path: Path, line: int | None) -> str:
    """`path:line`, or the path alone when the line is unknown."""
    return f"{path}:{line}" if line is not None else str(path)


@dataclass(frozen=True)
class Invalid:
    """A file that is invalid and has no earlier valid version to fall back on."""

    path: Path
    errors: tuple[FileIssue, ...]


@dataclass(frozen=True)
class Scan:
    """The result of one pass over the config directory."""

    domains: Mapping[uuidlib.UUID, Candidate]
    conflicts: tuple[Conflict, ...]
    invalid: tuple[Invalid, ...]
    parsed: int = 0
    """How many files were (re)parsed in this pass (0 when nothing changed)."""
    wake_at: float | None = None
    """When a lingering vanished file stops counting (the caller runs a pass then)."""
    expired: frozenset[str] = frozenset()
    """Vanished files whose linger ran out in this pass: really gone now."""


def _rank(c: Candidate, running: Mapping[uuidlib.UUID, Path]) -> tuple[int, int, str]:
    """Sort key of clash candidates: the files of running VMs first, then by name and path.

    A running VM's own file ranks first, then another file that defines a running VM (its own
    file now defines another domain), then `<name>.xml`, then path order.
    """
    started_from = running.get(c.uuid)
    tier = 0 if started_from == c.path else 1 if started_from is not None else 2
    return (tier, 0 if c.path.name == f"{c.name}.xml" else 1, str(c.path))


def resolve(candidates: Iterable[Candidate], running: Mapping[uuidlib.UUID, Path]
            ) -> tuple[dict[uuidlib.UUID, Candidate], list[Conflict]]:
    """Pick one winner per uuid and per name, deterministically; report every loser.

    `running` maps the uuid of each running VM to the file it was started from: a running
    definition always wins, so a clash never stops or restarts a VM.
    """
    ordered = sorted(candidates, key=lambda c: _rank(c, running))
    by_uuid: dict[uuidlib.UUID, Candidate] = {}
    by_name: dict[str, Candidate] = {}
    conflicts: list[Conflict] = []
    for cand in ordered:
        first = by_uuid.get(cand.uuid)
        if first is not None:
            conflicts.append(Conflict(cand.path, first.path, "uuid", cand.name, cand.uuid,
                                      cand.parsed.uuid_line, first.parsed.uuid_line,
                                      cand.parsed.domain.desired.state))
            continue
        other = by_name.get(cand.name)
        if other is not None:
            conflicts.append(Conflict(cand.path, other.path, "name", cand.name, cand.uuid,
                                      cand.parsed.name_line, other.parsed.name_line,
                                      cand.parsed.domain.desired.state))
            continue
        by_uuid[cand.uuid] = cand
        by_name[cand.name] = cand
    return by_uuid, conflicts


def _uses_host_facts(parsed: model.Parsed) -> bool:
    """Whether a valid parse depends on host facts that may change: a libvirt network's bridge."""
    return any(nic.type == "network" for nic in parsed.domain.devices.interfaces)


def _issues(path: Path, exc: model.InvalidDomainError) -> tuple[FileIssue, ...]:
    """The issues of an invalid file as `FileIssue`s naming the file."""
    return tuple(FileIssue(str(path), i.line, i.message) for i in exc.issues)


@dataclass
class _Entry:
    """Cache entry for one path: the version seen last, and its last valid parse."""

    key: FileKey
    parsed: model.Parsed | None
    errors: tuple[FileIssue, ...]
    last_good: model.Parsed | None
    good_key: FileKey | None
    racy: bool = False
    """Modified so recently that a same-size rewrite could keep (mtime, size, inode): reread."""
    candidate: Candidate | Invalid | None = None
    """What this version of the file contributes to a scan, computed once."""
    owner: tuple[int, int] = (0, 0)
    """(st_mode, st_uid) when read: with `distrust`, a chmod or chown is a new version too."""

    def contribution(self, path: str) -> Candidate | Invalid:
        """The file version as a clash candidate, or as an invalid file with no fallback."""
        if self.candidate is None:
            usable = self.parsed or self.last_good
            if usable is None:
                self.candidate = Invalid(Path(path), self.errors)
            else:
                key = self.key if self.parsed is not None else (self.good_key or self.key)
                self.candidate = Candidate(Path(path), key, usable, self.errors)
        return self.candidate


RACY_NS = 100_000_000
"""A file modified less than this long before it was read may change again without changing its
key (mtime has the kernel's coarse-clock granularity), so it is read again on the next pass, as
git does for its "racily clean" index entries."""


@dataclass
class Scanner:
    """Reads the config directory, parsing only files whose (mtime, size, inode) changed.

    Keeps the last valid definition of each path, so an invalid edit never takes a domain away.
    """

    config_dir: Path
    parse: Callable[[bytes, str], model.Parsed] = parse_checked
    """The parser; by default `<type machine>` is checked against the emulator's own list."""
    clock_ns: Callable[[], int] = time.time_ns
    distrust: Callable[[Path], str | None] | None = None
    """With `--system`: why a file may not be acted on (see `paths.untrusted_file`), if so."""
    linger: float = 0.0
    """Seconds a vanished file still counts as it was (editors and git save by unlink+write):
    clashes and the desired set never see the gap, so nothing flips for a moment."""
    now: Callable[[], float] = time.time
    host_key: Callable[[], object] | None = None
    """What the host facts a parse depends on look like now (libvirt's network definitions);
    when it changes, invalid files and files that use a libvirt network are read again."""
    _host_seen: object = None
    _by_inode: dict[int, tuple[str, _Entry]] | None = None
    """The cache by inode, made when a new name shows up (see `_renamed`); per scan."""
    _vanished: dict[str, float] = field(default_factory=dict)
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _last: tuple[dict[str, _Entry], dict[uuidlib.UUID, Path], Scan] | None = None

    def _read(self, path: str, key: FileKey, old: _Entry | None) -> _Entry:
        """Parse one changed file and fold the result into its cache entry."""
        last_good = old.last_good if old else None
        good_key = old.good_key if old else None
        if self.distrust is not None and (why := self.distrust(Path(path))) is not None:
            return _Entry(key, None, (FileIssue(path, None, f"refused: {why}"),), None, None)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            parsed = self.parse(data, path)
        except OSError as exc:
            errors = (FileIssue(path, None, f"cannot read the file: {exc.strerror}"),)
            return _Entry(key, None, errors, last_good, good_key)
        except model.InvalidDomainError as exc:
            return _Entry(key, None, _issues(Path(path), exc), last_good, good_key)
        return _Entry(key, parsed, (), parsed, key)

    def _renamed(self, key: FileKey, path: str) -> _Entry | None:
        """The entry of a file renamed to `path` (the same inode under another, vanished name).

        Its last valid version comes along (an invalid file renamed keeps meaning what it did),
        its contribution is made anew under the new name.
        """
        if self._by_inode is None:
            self._by_inode = {e.key.inode: (p, e) for p, e in self._cache.items()}
        found = self._by_inode.get(key.inode)
        if found is None or found[0] == path or os.path.lexists(found[0]):
            return None
        return replace(found[1], candidate=None)

    def reloaded(self) -> Scanner:
        """A scanner that reads every file again but keeps each path's last valid definition.

        For SIGHUP: a reload rereads the directory; it must not change what an invalid file
        means (its last valid definition stays in effect, e.g. for a VM that crashed and
        waits for its restart back-off while its file has a typo).
        """
        cache = {path: _Entry(FileKey(-1, -1, e.key.inode), None, e.errors, e.last_good,
                              e.good_key)
                 for path, e in self._cache.items() if e.last_good is not None}
        return replace(self, _vanished={}, _cache=cache, _last=None)

    def scan(self, running: Mapping[uuidlib.UUID, Path] | None = None,
             known: Mapping[str | int, model.Parsed] | None = None) -> Scan:
        """One pass: stat every domain file, reparse the changed ones, resolve clashes.

        Files whose parse depends on host facts that changed since the last pass (see
        `host_key`) count as changed. `known` maps a file (its path, or its inode: a rename
        keeps it) to a definition a VM runs (or ran) from it, persisted in its runtime folder:
        an invalid file with no last valid version of its own (a new scanner, after a daemon
        restart) takes that one as its last valid, so a reconciler that starts anew decides as
        the one before it did. A file renamed under this scanner keeps its last valid version.
        """
        seen: dict[str, _Entry] = {}
        parsed = 0
        self._by_inode = None
        if self.host_key is not None:
            facts = self.host_key()
            if self._host_seen is not None and facts != self._host_seen:
                for old_entry in self._cache.values():
                    if old_entry.parsed is None or _uses_host_facts(old_entry.parsed):
                        old_entry.racy = True  # read again below, last good kept
            self._host_seen = facts
        try:
            entries = list(os.scandir(self.config_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not is_domain_file(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=True):
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue  # vanished between listing and stat: judged on the next pass
            key = FileKey(st.st_mtime_ns, st.st_size, st.st_ino)
            old = self._cache.get(entry.path)
            if old is None:
                old = self._renamed(key, entry.path)
            owner = (st.st_mode, st.st_uid) if self.distrust is not None else (0, 0)
            if old is None or old.key != key or old.racy or old.owner != owner:
                new = self._read(entry.path, key, old)
                new.owner = owner
                parsed += 1
                if (old is not None and old.key == key and old.owner == owner
                        and new.parsed is not None
                        and old.parsed is not None and new.parsed.domain == old.parsed.domain):
                    new = old  # a racy entry read again, unchanged: keep the same objects
                new.racy = self.clock_ns() - key.mtime_ns < RACY_NS
                old = new
            if old.parsed is None and old.last_good is None and known:
                persisted = known.get(entry.path) or known.get(key.inode)
                if persisted is not None:  # its last valid version, from a runtime folder
                    old.last_good, old.candidate = persisted, None
                    parsed += 1  # what the file means has changed: resolve again
            seen[entry.path] = old
        wake_at: float | None = None
        expired: frozenset[str] = frozenset()
        if self.linger > 0:
            now = self.now()
            present = set(seen)
            inodes = {e.key.inode for e in seen.values()}
            for path, old_entry in self._cache.items():
                if path in present or old_entry.key.inode in inodes:
                    continue  # still here, or renamed (its inode is here under another name)
                since = self._vanished.setdefault(path, now)
                if now - since < self.linger:
                    seen[path] = old_entry  # gone for a moment: counts as it was
                    until = since + self.linger
                    wake_at = until if wake_at is None else min(wake_at, until)
            expired = frozenset(p for p in self._vanished if p not in seen)
            self._vanished = {p: t for p, t in self._vanished.items()
                              if p in seen and p not in present}
        self._cache = seen
        running = dict(running or {})
        same = (self._last is not None and parsed == 0 and running == self._last[1]
                and len(seen) == len(self._last[0])
                and all(self._last[0].get(p) is e for p, e in seen.items()))
        if same and self._last is not None and wake_at is None and not expired:
            return self._last[2]  # nothing changed (parsed == 0): the resolution cannot either
        candidates: list[Candidate] = []
        invalid: list[Invalid] = []
        for path, ent in seen.items():
            found = ent.contribution(path)
            if isinstance(found, Invalid):
                invalid.append(found)
            else:
                candidates.append(found)
        winners, conflicts = resolve(candidates, running)
        invalid.sort(key=lambda i: str(i.path))
        result = Scan(winners, tuple(conflicts), tuple(invalid), parsed, wake_at, expired)
        self._last = (dict(seen), running, replace(result, parsed=0))
        return result
