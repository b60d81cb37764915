"""Status files: what users read about each domain, written atomically as JSON.

`status/<name>.json` per domain and `status.json` for all. Every write goes to a temporary file
in the same directory, then is renamed over the old one, so a reader never sees half a file (no
fsync: status is runtime state, rewritten on every change). A write that fails is reported in
`StatusWriter.errors` and retried by the next publish; it never raises. The JSON Schema
(`reconcile status --schema`) is generated from these models.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.paths import ensure_private_dir

State = Literal["stopped", "starting", "running", "paused", "stopping", "unresponsive", "crashed",
                "crash-loop", "invalid", "conflict"]


class FileError(BaseModel):
    """One problem with a domain file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    line: int | None = None
    message: str


class DomainStatus(BaseModel):
    """Everything a user needs to know about one domain, as of `updated_at`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    uuid: str | None = None
    file: str | None = None
    desired: Literal["running", "stopped"] = "stopped"
    state: State = "stopped"
    reason: str | None = None
    pid: int | None = None
    qmp: str | None = Field(default=None, description="path of the QMP unix socket")
    vnc: str | None = Field(default=None, description="host:port of the VNC server")
    console_log: str | None = None
    log: str | None = None
    started_at: str | None = None
    restarts: int = 0
    next_retry_at: str | None = None
    pending_restart: bool = False
    errors: tuple[FileError, ...] = ()
    updated_at: str


class StatusFile(BaseModel):
    """`status.json`: every domain the reconciler knows about, sorted by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    updated_at: str
    domains: tuple[DomainStatus, ...] = ()


SUMMARY = "status.json"
"""The file listing every domain; a domain named `status` is found only there."""


def iso(ts: float | None) -> str | None:
    """Render a Unix time as an ISO 8601 UTC timestamp with milliseconds (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def schema() -> dict[str, Any]:
    """The JSON Schema of `status.json` (per-domain files follow `$defs/DomainStatus`)."""
    return StatusFile.model_json_schema()


def temp_files(directory: Path, name: str = "*") -> list[Path]:
    """The temporary files `write_atomic` makes for `name` (any file by default) in `directory`.

    Normally gone a moment later; one is left behind only by a writer killed (SIGKILL, power
    cut) between making it and renaming it into place.
    """
    try:
        return sorted(directory.glob(f".{name}.*.tmp"))
    except OSError:
        return []


def remove_left_over_temp_files(directory: Path, name: str = "*") -> None:
    """Remove what `temp_files` finds (call it only while no other writer uses `directory`).

    Best effort: an error (read-only or vanished directory) is ignored; the next call retries.
    """
    for path in temp_files(directory, name):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            return


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically: temp file in the same dir, fsync, rename, fsync dir.

    Readers see the old file or the new one, never a part. `durable=False` skips both fsyncs
    (the new content may then be lost in a power cut, but is never torn): for runtime state
    that does not outlive the processes it describes, written on the event loop's hot path.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _dump(model: BaseModel) -> bytes:
    """Serialise a status model as indented JSON with a trailing newline."""
    return (json.dumps(model.model_dump(mode="json"), indent=2) + "\n").encode()


class StatusWriter:
    """Writes status files into one directory; an unchanged domain keeps its file and `updated_at`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[str, bytes] = {}
        self._prev: dict[tuple[str, str | None, str], DomainStatus] = {}
        self._final: list[DomainStatus] | None = None
        self._objects: dict[str, DomainStatus] = {}
        self.errors: list[str] = []
        """Why files could not be written in the last publish (retried by the next one)."""

    def _write(self, name: str, data: bytes) -> bool:
        """Write one file atomically unless it already holds exactly `data`; False if it failed."""
        if self._written.get(name) == data:
            return True
        try:
            try:
                write_atomic(self.directory / name, data, durable=False)
            except FileNotFoundError:
                if self.directory.exists():
                    raise
                ensure_private_dir(self.directory)  # deleted by hand: made again, private
                write_atomic(self.directory / name, data, durable=False)
        except OSError as exc:
            self.errors.append(f"cannot write {self.directory / name}: {exc.strerror or exc}")
            self._written.pop(name, None)
            return False
        self._written[name] = data
        return True

    def publish(self, domains: list[DomainStatus], now: float) -> list[DomainStatus]:
        """Write every domain's file and `status.json`; remove files of domains that are gone.

        A domain whose status equals the previous one but for `updated_at` keeps the previous
        object (and timestamp), so unchanged files are not rewritten on every pass. Returns the
        statuses as published.
        """
        final: list[DomainStatus] = []
        prev: dict[tuple[str, str | None, str], DomainStatus] = {}
        # a clash loser or an invalid file (named after its file stem) never takes the file of a
        # domain really named so: they sort after it and are only listed in status.json then
        placeholder = ("conflict", "invalid")
        for fresh in sorted(domains, key=lambda d: (d.name, d.state in placeholder, d.file or "")):
            key = (fresh.name, fresh.file, fresh.state)
            old = self._prev.get(key)
            same = old is fresh or (old is not None and _stable(old) == _stable(fresh))
            dom = old if same and old is not None else fresh
            prev[key] = dom
            final.append(dom)
        self._prev = prev
        last = self._final
        if not self.directory.is_dir():  # deleted by hand: everything is written again
            self._written.clear()
            self._objects.clear()
            last = None
        if last is not None and len(final) == len(last) and all(
                a is b for a, b in zip(final, last, strict=True)):
            return final  # nothing changed since the last publish: no file to touch
        if last is None:  # the first publish (or a retry): a killed writer's temp files go
            remove_left_over_temp_files(self.directory, "*.json")
        self.errors = []
        ok = True
        keep: set[str] = {SUMMARY}
        for dom in final:
            fname = f"{dom.name}.json"
            if dom.state in placeholder and fname in keep:
                continue  # a name-clash loser: listed in status.json, never over the winner
            if fname == SUMMARY:
                continue  # a domain named "status": only in status.json, which it would overwrite
            keep.add(fname)
            if self._objects.get(fname) is not dom:
                if self._write(fname, _dump(dom)):
                    self._objects[fname] = dom
                else:
                    ok = False
                    self._objects.pop(fname, None)
        # something changed (else we returned above), so the summary is as of now: the newest
        # domain stamp alone would go back in time when only a removal changed it
        stamp = max([d.updated_at for d in final] + [iso(now) or ""])
        ok = self._write(SUMMARY, _dump(StatusFile(updated_at=stamp, domains=tuple(final)))) and ok
        try:
            stale = [p for p in self.directory.glob("*.json") if p.name not in keep]
            for path in stale:
                path.unlink(missing_ok=True)
                self._written.pop(path.name, None)
                self._objects.pop(path.name, None)
        except OSError as exc:
            ok = False
            self.errors.append(f"cannot clean {self.directory}: {exc.strerror or exc}")
        self._final = final if ok else None  # a failed write is retried by the next publish
        return final


def _stable(model: DomainStatus) -> bytes:
    """A domain status without its `updated_at` stamp, for change detection."""
    return _dump(model.model_copy(update={"updated_at": ""}))


def read_status(directory: Path) -> StatusFile | None:
    """Read `status.json` from a status directory; None when there is none yet."""
    try:
        return StatusFile.model_validate_json((directory / SUMMARY).read_bytes())
    except FileNotFoundError:
        return None
