"""The reconciler loop end to end (issue 4): the daemon as a subprocess, real inotify, real QEMU (TCG).

Most VMs here are *light*: diskless domains without a kernel that just sit in the BIOS, which is all
a check about processes, files and status needs. The real test guest boots where the guest's own
behaviour is the point (a graceful, guest-side power-off).

Every test runs in its own short directory under /tmp (QMP socket paths must fit in 107 bytes); a
fixture kills whatever process still has that directory on its command line afterwards, so no
daemon or QEMU outlives a test, even a failed one. The daemon runs with `--resync 300`, so every
reaction seen here comes from inotify, not from the periodic safety-net pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from reconciler.loop import QUIET_PERIOD
from reconciler.paths import Layout
from reconciler.status import DomainStatus, StatusFile
from tests.support import vms
from tests.support.guest import READY_LINE, Guest
from tests.support.procs import cmdline_of, kill_mentioning, pids_mentioning

try:
    import jsonschema
except ImportError:  # not a dependency: fall back to the models the schema is generated from
    jsonschema = None

pytestmark = [pytest.mark.qemu]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 15.0
"""Upper bound for anything the daemon should do promptly (a pass, a light VM start or stop)."""
SETTLE = QUIET_PERIOD + 0.35
"""Long enough for a vanished file's quiet period to run out and its stop to begin."""


# ---------------------------------------------------------------------------------------- domains


def light_uuid(name: str) -> str:
    """The uuid `light_xml` gives a domain by default."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-loop-test/{name}"))


def light_xml(name: str, *, uuid: str | None = "", state: str = "running", description: str = "v1",
              shutdown_timeout: int = 1, acpi: bool = False, disk: Path | None = None) -> str:
    """A domain without a kernel: QEMU starts in ~0.1 s and idles in the BIOS.

    Without `acpi` a stop quits QEMU at once (no power button to press); with it, the BIOS
    ignores the button, so a graceful stop waits `shutdown_timeout` s, then QMP `quit` ends it.
    `uuid=""` (the default) gives `light_uuid(name)`; `uuid=None` leaves `<uuid>` out, so the
    uuid is derived from the name. `disk` adds a writable raw virtio disk on that image; its
    `<disk>` element is always on line `DISK_LINE`.
    """
    uuid_line = "" if uuid is None else f"\n  <uuid>{uuid or light_uuid(name)}</uuid>"
    features = "<features><acpi/></features>" if acpi else ""
    devices = ""
    if disk is not None:
        devices = (f"\n  <devices>\n    <disk type='file' device='disk'>\n"
                   f"      <driver name='qemu' type='raw'/>\n      <source file='{disk}'/>\n"
                   f"      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>")
    return f"""<domain type='qemu'>
  <name>{name}</name>{uuid_line}
  <description>{description}</description>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>{features}{devices}
  <metadata>
    <qemud:desired xmlns:qemud='urn:qemud:1' state='{state}' shutdown-timeout='{shutdown_timeout}'/>
  </metadata>
</domain>
"""


DISK_LINE = 8
"""The line of `<disk>` in a `light_xml(..., disk=...)` file with a `<uuid>`."""


# ---------------------------------------------------------------------------------------- processes


def qmp_query(socket: Path, command: str = "query-status") -> Any:
    """Run one QMP command on `socket` as a fresh client and return the answer."""

    async def go() -> Any:
        client = QMPClient("test-loop")
        await client.connect(str(socket))
        try:
            return await client.execute(command)
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()

    return asyncio.run(asyncio.wait_for(go(), 10))


# ---------------------------------------------------------------------------------------- status


def _schema() -> dict[str, Any]:
    """The schema as `reconcile status --schema` prints it."""
    out = subprocess.run([sys.executable, "-m", "reconciler", "status", "--schema"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    schema: dict[str, Any] = json.loads(out)
    return schema


_SCHEMAS: dict[str, dict[str, Any]] = {}


def validate(name: str, data: bytes) -> Any:
    """Parse a status file's bytes as JSON and validate them against the published schema.

    `status.json` follows the whole schema, `<name>.json` its `$defs/DomainStatus`. With the
    `jsonschema` package absent, the Pydantic models the schema is generated from validate instead.
    """
    parsed = json.loads(data)
    domain = name != "status.json"
    if jsonschema is not None:
        if not _SCHEMAS:
            full = _schema()
            _SCHEMAS["status.json"] = full
            _SCHEMAS["domain"] = {"$ref": "#/$defs/DomainStatus", "$defs": full["$defs"]}
        jsonschema.validate(parsed, _SCHEMAS["domain" if domain else "status.json"])
    elif domain:
        DomainStatus.model_validate_json(data)
    else:
        StatusFile.model_validate_json(data)
    return parsed


# ---------------------------------------------------------------------------------------- harness


@dataclass
class Daemon:
    """A `reconcile` daemon subprocess and its stderr log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace")

    def lines(self, needle: str) -> list[str]:
        """Its lines containing `needle`."""
        return [line for line in self.text().splitlines() if needle in line]


class World:
    """A config directory under a short tmp root, the daemons run on it, and readers of its status."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qdl-", dir="/tmp"))
        self.config = self.root / "c"
        self.config.mkdir(mode=0o700)
        self.layout = Layout.under(self.config)
        self.daemons: list[Daemon] = []

    # -- files

    def path(self, name: str) -> Path:
        """The domain file `<name>.xml`."""
        return self.config / f"{name}.xml"

    def write(self, name: str, text: str) -> Path:
        """Write `<name>.xml` atomically."""
        return vms.write(self.config, name, text)

    # -- processes

    def start_daemon(self) -> Daemon:
        """Run the daemon on the config dir; return once it watches (inotify is set up)."""
        log = self.root / f"daemon{len(self.daemons)}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "--config-dir", str(self.config),
                 "--resync", "300"],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        daemon = Daemon(proc, log)
        self.daemons.append(daemon)
        self.wait(lambda: "reconcile: watching" in daemon.text() or proc.poll() is not None,
                  "the daemon to start watching")
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}:\n{daemon.text()}"
        return daemon

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `reconcile --config-dir DIR ARGS...` to completion."""
        return subprocess.run(
            [sys.executable, "-m", "reconciler", "--config-dir", str(self.config), *args],
            cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def qemu(self, uuid: str) -> list[int]:
        """Live processes of this world whose command line has `uuid` (QEMUs of that domain).

        Only this world's: another test (or another checkout's test run on the same machine)
        may run a VM of the same uuid at the same time.
        """
        root = os.fsencode(str(self.root))
        return [pid for pid in pids_mentioning(uuid) if root in cmdline_of(pid)]

    # -- status

    def status(self, name: str) -> dict[str, Any] | None:
        """`status/<name>.json`, parsed and validated; None if there is none."""
        try:
            data = (self.layout.status_dir / f"{name}.json").read_bytes()
        except FileNotFoundError:
            return None
        result: dict[str, Any] = validate(f"{name}.json", data)
        return result

    def status_all(self) -> dict[str, Any]:
        """`status.json`, parsed and validated (an empty listing before the first pass)."""
        try:
            data = (self.layout.status_dir / "status.json").read_bytes()
        except FileNotFoundError:
            return {"updated_at": None, "domains": []}
        result: dict[str, Any] = validate("status.json", data)
        return result

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> Any:
        """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(d.text() for d in self.daemons)
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n"
                            f"status.json: {json.dumps(self.status_all(), indent=1)}\n"
                            f"daemon log:\n{logs}")
            time.sleep(0.02)

    def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait until `status/<name>.json` exists and satisfies `check`; return it."""

        def probe() -> dict[str, Any] | None:
            st = self.status(name)
            return st if st is not None and check(st) else None

        result: dict[str, Any] = self.wait(probe, f"{name}: {what}", timeout)
        return result

    def wait_running(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait until `name` is running with a live QEMU of its uuid; return its status."""
        st = self.wait_status(name, lambda s: s["state"] == "running", "state running", timeout)
        assert self.qemu(st["uuid"]) == [st["pid"]], (st, self.qemu(st["uuid"]))
        return st

    def vm_log(self, name: str) -> str:
        """The VM log of `name` (lifecycle lines and QEMU's output)."""
        try:
            return self.layout.log_file(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the daemons, kill every process mentioning the root, remove the root."""
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=5)
        kill_mentioning(self.root, timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def world() -> Iterator[World]:
    """A fresh config directory; nothing started in it survives the test."""
    w = World()
    try:
        yield w
    finally:
        w.close()
    assert not pids_mentioning(w.root), "a process outlived the cleanup"


def snapshot(top: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int, int, str]]:
    """Every entry below `top` (but the top-level names in `skip`): mode, size, mtime, content hash."""
    out: dict[str, tuple[int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = Path(dirpath).relative_to(top)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[str(rel_dir / name)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


# ---------------------------------------------------------------------------------------- tests


def test_new_file_starts_vm_while_daemon_runs(world: World) -> None:
    """A file written while the daemon runs -> a running QEMU; status says so; its QMP answers."""
    daemon = world.start_daemon()
    time.sleep(0.2)  # the daemon's first pass saw an empty directory
    assert world.status_all()["domains"] == []
    world.write("fresh", light_xml("fresh"))
    st = world.wait_running("fresh")
    uuid = light_uuid("fresh")
    assert st["uuid"] == uuid and st["desired"] == "running" and st["errors"] == []
    assert st["file"] == str(world.path("fresh"))
    assert st["qmp"] == str(world.layout.qmp_socket(uuid))
    assert stat.S_ISSOCK(os.stat(st["qmp"]).st_mode)
    # status.json is written right after the per-domain files
    world.wait(lambda: [(d["name"], d["state"], d["pid"]) for d in world.status_all()["domains"]]
               == [("fresh", "running", st["pid"])], "status.json to list fresh as running")
    assert f"fresh: running, pid {st['pid']}" in daemon.text()
    # The daemon holds QEMU's only QMP connection; once it exits, the socket must answer a new
    # client and QEMU must really be running (started with -S, so this proves the 'cont' too).
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=5)
    answer = qmp_query(world.layout.qmp_socket(uuid))
    assert (answer["status"], answer["running"]) == ("running", True), answer
    assert world.qemu(uuid) == [st["pid"]]


# -- editor save patterns ------------------------------------------------------------------------

GAP = 0.15
"""Pause between an editor's steps in the slow variants: longer than the daemon's debounce
(0.05 s), so a pass sees the intermediate state, and shorter than the quiet period (0.25 s)."""

VIM = ["vim", "-u", "NONE", "-i", "NONE", "-N", "-n", "-e"]


def _description(text: str) -> str:
    """The <description> of a light domain's text."""
    found = re.search(r"<description>([^<]*)</description>", text)
    assert found is not None
    return found.group(1)


def _vim(path: Path, text: str, settings: str) -> None:
    """Save `text` (which differs from the file at most in its <description>) with real vim."""
    new = _description(text)
    subprocess.run([*VIM, "-c", settings,
                    "-c", rf"%s/<description>[^<]*<\/description>/<description>{new}<\/description>/e",
                    "-c", "wq", str(path)], cwd=path.parent, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=30)
    assert path.read_text() == text


def save_vim_backup(path: Path, text: str) -> None:
    """vim with backups (backupcopy=auto): `4913` probe, rename to `x.xml~`, write a new `x.xml`."""
    _vim(path, text, "set backup writebackup backupcopy=auto backupskip= backupdir=.")
    assert path.with_name(path.name + "~").exists()


def save_vim_nobackup(path: Path, text: str) -> None:
    """vim without backups: truncate `x.xml` and write it in place (same inode)."""
    inode = path.stat().st_ino
    _vim(path, text, "set nobackup nowritebackup")
    assert path.stat().st_ino == inode


def save_vim_backup_slow(path: Path, text: str) -> None:
    """vim's rename dance, slowed down so that a pass runs while `x.xml` does not exist."""
    probe = path.parent / "4913"
    probe.write_bytes(b"")
    probe.unlink()
    path.rename(path.with_name(path.name + "~"))
    time.sleep(GAP)
    with path.open("w") as fh:
        fh.write(text)
    path.with_name(path.name + "~").unlink()


def save_vim_inplace_slow(path: Path, text: str) -> None:
    """vim with backupcopy=yes, slowed down: probe, copy to `x.xml~`, truncate (a pass sees an
    empty, invalid file), write in place, drop the backup."""
    probe = path.parent / "4913"
    probe.write_bytes(b"")
    probe.unlink()
    backup = path.with_name(path.name + "~")
    shutil.copyfile(path, backup)
    with path.open("r+") as fh:
        fh.truncate(0)
        fh.flush()
        time.sleep(GAP)
        fh.write(text)
    backup.unlink()


def save_emacs(path: Path, text: str) -> None:
    """emacs: lock symlink `.#x.xml`, auto-save `#x.xml#`, then a temp file renamed over `x.xml`."""
    lock = path.with_name(f".#{path.name}")
    autosave = path.with_name(f"#{path.name}#")
    lock.symlink_to(f"root@host.{os.getpid()}:1")
    autosave.write_text(text)
    time.sleep(GAP)
    temp = path.with_name("tmpq3v7xk")
    temp.write_text(text)
    temp.rename(path)
    autosave.unlink()
    lock.unlink()


def save_sed(path: Path, text: str) -> None:
    """`sed -i`: a temp file in the directory renamed over `x.xml`."""
    new = _description(text)
    subprocess.run(["sed", "-i", "-e", f"s|<description>[^<]*</description>|<description>{new}"
                    "</description>|", str(path)], check=True, timeout=30)
    assert path.read_text() == text


def save_cp(path: Path, text: str) -> None:
    """`cp other x.xml` over the file (truncates and writes the same inode)."""
    other = path.parent.parent / "other.xml"
    other.write_text(text)
    subprocess.run(["cp", str(other), str(path)], check=True, timeout=30)


def save_mv(path: Path, text: str) -> None:
    """`mv tmp x.xml` with the temp file in the config directory."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(text)
    subprocess.run(["mv", str(temp), str(path)], check=True, timeout=30)


SAVES: dict[str, Callable[[Path, str], None]] = {
    "vim-backup": save_vim_backup,
    "vim-nobackup": save_vim_nobackup,
    "vim-backup-slow": save_vim_backup_slow,
    "vim-inplace-slow": save_vim_inplace_slow,
    "emacs": save_emacs,
    "sed-i": save_sed,
    "cp": save_cp,
    "mv": save_mv,
}


@dataclass
class Editors:
    """One daemon and one running light VM `ed`, shared by the editor tests."""

    world: World
    daemon: Daemon
    original: str


@pytest.fixture(scope="module")
def editors() -> Iterator[Editors]:
    """A daemon running the VM `ed` from `ed.xml`."""
    w = World()
    try:
        daemon = w.start_daemon()
        original = light_xml("ed", shutdown_timeout=1)
        w.write("ed", original)
        w.wait_running("ed")
        yield Editors(w, daemon, original)
    finally:
        w.close()


@pytest.mark.parametrize("editor", list(SAVES))
def test_editor_save_keeps_vm_running(editors: Editors, editor: str) -> None:
    """Saving the running VM's file with `editor`: unchanged, then a new <description>, then back.

    The VM is never stopped or restarted (same pid throughout); the definition change shows as
    pending_restart, and the revert clears it.
    """
    w, path, save = editors.world, editors.world.path("ed"), SAVES[editor]
    if path.read_text() != editors.original:  # an earlier case failed half-way
        w.write("ed", editors.original)

    def steady() -> dict[str, Any] | None:  # and not being stopped or restarted by an earlier case
        st = w.status("ed")
        if st is None or st["state"] != "running" or st["pending_restart"]:
            return None
        time.sleep(SETTLE)
        return st if w.status("ed") == st and w.qemu(st["uuid"]) == [st["pid"]] else None

    st = w.wait(steady, "ed running steadily, nothing pending")
    pid, uuid = st["pid"], st["uuid"]
    log_before = w.vm_log("ed")

    def still_same(pending: bool) -> None:
        time.sleep(SETTLE)
        assert w.qemu(uuid) == [pid], f"{editor}: the VM was restarted or stopped"
        now = w.status("ed")
        assert now is not None
        assert (now["state"], now["pid"], now["pending_restart"]) == ("running", pid, pending)
        assert now["errors"] == [] and now["reason"] is None, now

    save(path, editors.original)  # changes nothing
    still_same(pending=False)
    changed = editors.original.replace("<description>v1<", f"<description>saved by {editor}<")
    save(path, changed)
    w.wait_status("ed", lambda s: s["pending_restart"], "pending_restart after the edit")
    still_same(pending=True)
    save(path, editors.original)
    w.wait_status("ed", lambda s: not s["pending_restart"], "no pending_restart after the revert")
    still_same(pending=False)
    assert "stopping" not in w.vm_log("ed")[len(log_before):]
    assert sorted(d["name"] for d in w.status_all()["domains"]) == ["ed"]


# -- invalid edits and clashes -------------------------------------------------------------------


def test_invalid_edit_keeps_vm_and_reports_file_and_line(world: World) -> None:
    """An invalid save leaves the VM running on its last valid definition, with file:line in the
    status; fixing the file clears the error. Nothing is restarted at any point."""
    world.start_daemon()
    good = light_xml("inv")
    path = world.write("inv", good)
    st = world.wait_running("inv")
    pid = st["pid"]
    bad = good.replace("<memory unit='MiB'>32</memory>", "<memory unit='MiB'>lots</memory>")
    line = bad.splitlines().index("  <memory unit='MiB'>lots</memory>") + 1
    path.write_text(bad)  # in place: a pass may see the empty file first (an error too)
    st = world.wait_status("inv", lambda s: any(e["line"] for e in s["errors"]),
                           "an error with a line in the status")
    assert st["state"] == "running" and st["pid"] == pid
    assert [(e["file"], e["line"]) for e in st["errors"]] == [(str(path), line)]
    assert "lots" in st["errors"][0]["message"]
    assert st["reason"].startswith("the file is invalid; the last valid definition stays in effect")
    assert f"{path}:{line}" in st["reason"]  # the first error, with its file and line
    world.wait(lambda: [d["errors"] for d in world.status_all()["domains"]] == [st["errors"]],
               "status.json to list the error too")
    time.sleep(SETTLE)
    assert world.qemu(st["uuid"]) == [pid]
    path.write_text(good)
    st = world.wait_status("inv", lambda s: not s["errors"], "the error cleared")
    assert (st["state"], st["pid"], st["reason"], st["pending_restart"]) == ("running", pid, None,
                                                                             False)
    time.sleep(SETTLE)
    assert world.qemu(st["uuid"]) == [pid]
    assert "stopping" not in world.vm_log("inv")


def _conflicts(world: World) -> list[dict[str, Any]]:
    return [d for d in world.status_all()["domains"] if d["state"] == "conflict"]


def test_name_clash_reports_loser_and_restarts_nothing(world: World) -> None:
    """A second file with a running VM's name loses, even though `<name>.xml` would otherwise win;
    status.json lists it as a conflict naming both files; the VM keeps its pid; the loser's uuid
    never gets a QEMU."""
    world.start_daemon()
    winner = world.write("web", light_xml("n1"))  # not named after the domain ...
    st = world.wait_running("n1")
    pid = st["pid"]
    other_uuid = light_uuid("n1-copy")
    loser = world.write("n1", light_xml("n1", uuid=other_uuid))  # ... this one is
    conflict = world.wait(lambda: _conflicts(world), "a conflict in status.json")[0]
    assert conflict["name"] == "n1" and conflict["file"] == str(loser)
    assert conflict["uuid"] == other_uuid
    assert loser.name in conflict["reason"] and f"{winner}:2" in conflict["reason"]  # <name>
    assert [(e["file"], e["line"]) for e in conflict["errors"]] == [(str(loser), 2)]
    time.sleep(SETTLE)
    st = world.status("n1")
    assert st is not None and (st["state"], st["pid"], st["file"]) == ("running", pid, str(winner))
    assert any(str(loser) in e["message"] for e in st["errors"])  # the winner is told too
    assert world.qemu(light_uuid("n1")) == [pid]
    assert world.qemu(other_uuid) == []
    assert "stopping" not in world.vm_log("n1")


def test_uuid_clash_reports_loser_and_restarts_nothing(world: World) -> None:
    """A file with a running VM's uuid (and another name that sorts first) loses; the running VM
    keeps its pid and name; status.json lists the loser as a conflict naming both files."""
    world.start_daemon()
    uuid = light_uuid("u1")
    winner = world.write("u1", light_xml("u1"))
    pid = world.wait_running("u1")["pid"]
    loser = world.write("u0", light_xml("u0", uuid=uuid))
    conflict = world.wait(lambda: _conflicts(world), "a conflict in status.json")[0]
    assert (conflict["name"], conflict["uuid"], conflict["file"]) == ("u0", uuid, str(loser))
    assert loser.name in conflict["reason"] and f"{winner}:" in conflict["reason"]
    assert all(e["line"] is not None for e in conflict["errors"]), conflict
    time.sleep(SETTLE)
    st = world.status("u1")
    assert st is not None and (st["state"], st["pid"]) == ("running", pid)
    assert world.qemu(uuid) == [pid]
    loser_status = world.status("u0")
    assert loser_status is not None and loser_status["state"] == "conflict"
    assert "stopping" not in world.vm_log("u1") and world.vm_log("u0") == ""


# -- stopping: deleted files, reconcile stop/start -----------------------------------------------


def _ready_lines(world: World, name: str) -> int:
    try:
        text = world.layout.console_log(name).read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if line.strip() == READY_LINE)


@pytest.mark.guest
def test_stop_start_and_delete_stop_the_guest_gracefully(world: World, guest: Guest) -> None:
    """With the daemon running: `reconcile stop` powers the guest off through ACPI, `reconcile
    start` boots it again, deleting its file powers it off again; each stop is the guest's own
    (SHUTDOWN guest=true, QEMU exits 0 without quit or signals)."""
    daemon = world.start_daemon()
    path = world.write("g", vms.guest_xml("g", guest, shutdown_timeout=30))
    uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "qemud-test/g"))
    first = world.wait_running("g", timeout=30)
    world.wait(lambda: _ready_lines(world, "g") >= 1, "the guest to boot", timeout=60)

    def graceful_stop_in(log: str) -> None:
        assert "event SHUTDOWN guest=true reason=guest-shutdown" in log, log
        assert "exited status=0 kind=stopped" in log, log
        assert ": quit" not in log and "SIGTERM" not in log and "SIGKILL" not in log, log

    out = world.cli("stop", "g")
    assert out.returncode == 0, out.stderr
    assert "the running daemon applies it" in out.stdout
    assert "state='stopped'" in path.read_text()
    st = world.wait_status("g", lambda s: s["state"] == "stopped", "stopped", timeout=30)
    assert st["desired"] == "stopped" and st["pid"] is None
    assert world.qemu(uuid) == [] and not world.layout.vm_dir(uuid).exists()
    log = world.vm_log("g")
    graceful_stop_in(log)

    out = world.cli("start", "g")
    assert out.returncode == 0, out.stderr
    second = world.wait_running("g", timeout=30)
    assert second["pid"] != first["pid"] and second["desired"] == "running"
    world.wait(lambda: _ready_lines(world, "g") >= 2, "the guest to boot again", timeout=60)

    mark = len(world.vm_log("g"))
    path.unlink()
    world.wait(lambda: not world.qemu(uuid), "the VM to stop after its file was deleted", 30)
    world.wait(lambda: world.status("g") is None, "g.json to go away")
    assert "g" not in [d["name"] for d in world.status_all()["domains"]]
    graceful_stop_in(world.vm_log("g")[mark:])
    assert "stopping reason=domain-file-removed" in world.vm_log("g")[mark:]
    assert "g: stopping (domain file removed)" in daemon.text()


def test_start_stop_without_daemon(world: World) -> None:
    """Without a daemon, `reconcile start/stop NAME` edit the file and apply it themselves."""
    path = world.write("s", light_xml("s", state="stopped"))
    uuid = light_uuid("s")
    out = world.cli("start", "s")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^s\s+running\s+running\s+\d+", out.stdout, re.M), out.stdout
    assert "state='running'" in path.read_text()
    st = world.status("s")
    assert st is not None and st["state"] == "running" and world.qemu(uuid) == [st["pid"]]
    out = world.cli("stop", "s")
    assert out.returncode == 0, out.stderr + out.stdout
    assert re.search(r"^s\s+stopped\s+stopped", out.stdout, re.M), out.stdout
    assert world.qemu(uuid) == []
    st = world.status("s")
    assert st is not None and st["state"] == "stopped"
    out = world.cli("stop", "nosuch")
    assert out.returncode == 1 and "nosuch" in out.stderr


# -- reconcile --once ----------------------------------------------------------------------------


def test_once_converged_exits_0(world: World) -> None:
    """`--once` starts what is wanted, waits for it, exits 0; a second run adopts and changes
    nothing (still exactly one QEMU)."""
    world.write("o1", light_xml("o1"))
    world.write("o2", light_xml("o2", state="stopped"))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^o1\s+running\s+running", out.stdout, re.M), out.stdout
    assert re.search(r"^o2\s+stopped\s+stopped", out.stdout, re.M), out.stdout
    pid = world.status("o1")["pid"]  # type: ignore[index]
    assert world.qemu(light_uuid("o1")) == [pid] and world.qemu(light_uuid("o2")) == []
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert world.qemu(light_uuid("o1")) == [pid]
    assert "adopted running QEMU" in out.stderr


def test_once_invalid_file_exits_1(world: World) -> None:
    """An invalid file makes `--once` exit 1 (the valid domains are still reconciled)."""
    world.write("ok", light_xml("ok", state="stopped"))
    bad = world.path("bad")
    bad.write_text("<domain type='qemu'>\n  <name>bad</name>\n  <memory>x</memory>\n</domain>\n")
    out = world.cli("--once")
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(r"^bad\s+invalid", out.stdout, re.M), out.stdout
    st = world.status("bad")
    assert st is not None and st["state"] == "invalid" and st["errors"][0]["file"] == str(bad)
    bad.unlink()
    assert world.cli("--once").returncode == 0


def test_once_vm_that_cannot_start_exits_1(world: World) -> None:
    """A valid domain QEMU refuses to start makes `--once` exit 1, with QEMU's words in the status."""
    world.write("nostart", vms.broken_xml("nostart", restart="never"))
    out = world.cli("--once")
    assert out.returncode == 1, out.stdout + out.stderr
    st = world.status("nostart")
    assert st is not None and st["state"] != "running" and st["desired"] == "running"
    assert "/nonexistent/qemud-test/nostart.img" in (st["reason"] or ""), st


def test_usage_errors_exit_2(world: World) -> None:
    """An unknown option, --dry-run without --once, and an unsafe config dir all exit 2."""
    world.write("x", light_xml("x"))
    out = world.cli("--once", "--bogus")
    assert out.returncode == 2 and "--bogus" in out.stderr
    out = world.cli("--dry-run")
    assert out.returncode == 2 and "--once" in out.stderr
    os.chmod(world.config, 0o777)
    try:
        out = world.cli("--once")
    finally:
        os.chmod(world.config, 0o700)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "world-writable" in out.stderr and "chmod 0700" in out.stderr
    assert world.qemu(light_uuid("x")) == []
    assert not world.layout.status_dir.exists() or not os.listdir(world.layout.status_dir)


def test_dry_run_prints_plan_and_changes_nothing(world: World) -> None:
    """`--once --dry-run` prints the plan, starts no QEMU and writes nothing but the private
    directories (and, once they exist, nothing at all)."""
    world.write("d1", light_xml("d1"))
    world.write("d2", light_xml("d2", state="stopped"))
    world.path("broken").write_text("<domain>\n")
    private = ("run", "log", "status")
    before = snapshot(world.config)
    out = world.cli("--once", "--dry-run")
    assert out.returncode == 1, out.stdout + out.stderr  # a file is invalid
    plan, error = out.stdout.splitlines()
    assert plan == "start d1 (desired state is running)"
    assert error.startswith(f"{world.path('broken')}:2: not well-formed XML")
    assert snapshot(world.config, skip=private) == before
    assert world.qemu(light_uuid("d1")) == []
    assert os.listdir(world.layout.status_dir) == [] and os.listdir(world.layout.log_dir) == []
    assert not [n for n in os.listdir(world.layout.run_dir) if not n.endswith(".lock")]
    # With a VM running (started by a real pass) and its file now saying 'stopped'.
    world.path("broken").unlink()
    assert world.cli("--once").returncode == 0
    pid = world.qemu(light_uuid("d1"))
    assert len(pid) == 1
    world.write("d1", light_xml("d1", state="stopped"))
    before = snapshot(world.config)
    out = world.cli("--once", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    # judged read-only: the live QEMU would be adopted, then stopped as its file now says
    assert out.stdout == (f"adopt the running QEMU of {light_uuid('d1')}\n"
                          "stop d1 (desired state is stopped)\n")
    assert snapshot(world.config) == before
    assert world.qemu(light_uuid("d1")) == pid
    # a runtime folder whose pidfile names a process that is not this VM's QEMU: shown as stale
    stale = light_uuid("gone")
    folder = world.layout.run_dir / stale
    folder.mkdir(mode=0o700)
    (folder / "qemu.pid").write_text(f"{os.getpid()}\n")
    before = snapshot(world.config)
    out = world.cli("--once", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"clean stale runtime folder {stale} (pid {os.getpid()} runs " in out.stdout
    assert snapshot(world.config) == before and folder.exists()


def test_once_concurrent_with_daemon_one_qemu_per_domain(world: World) -> None:
    """`--once` runs racing a starting daemon, and more while it serves: exactly one QEMU per
    domain, and the status files keep telling the daemon's truth."""
    names = [f"c{i}" for i in range(3)]
    for name in names:
        world.write(name, light_xml(name))
    racing = [subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--config-dir", str(world.config), "--once"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)]
    world.start_daemon()
    results = [(p.wait(timeout=60), *p.communicate()) for p in racing]
    # each one either ran its own pass before the daemon took over, or waited for its turn:
    # asked the daemon for a pass and reported the daemon's result; both converge (exit 0)
    assert all(rc == 0 for rc, _, _ in results), results
    for name in names:
        world.wait_running(name)
    pids = {n: world.qemu(light_uuid(n)) for n in names}
    assert all(len(p) == 1 for p in pids.values()), pids
    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in world.layout.status_dir.glob("*.json")}

    def stable() -> dict[str, bytes] | None:
        first = files()
        time.sleep(0.3)
        return first if files() == first else None

    statuses = world.wait(stable, "the daemon to finish publishing")
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "asking it for a full pass" in out.stderr
    for name in names:  # the table is the daemon's truth: running, with the daemon's pids
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith(name + " "))
        assert " running " in line and str(pids[name][0]) in line, out.stdout
    time.sleep(SETTLE)
    assert {n: world.qemu(light_uuid(n)) for n in names} == pids
    assert files() == statuses
    # --once while the daemon serves still reports failures with exit 1, from the daemon's pass
    broken = light_xml("c8").replace("</domain>", "<devices><disk type='file' device='disk'>"
                                     "<source file='/nonexistent/c8.img'/>"
                                     "<target dev='vda' bus='virtio'/></disk></devices></domain>")
    world.write("c8", broken)
    out = world.cli("--once")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "c8" in out.stdout and "/nonexistent/c8.img" in out.stdout, out.stdout
    (world.config / "c8.xml").unlink()
    # A second daemon is refused; the first still acts: a new file starts a VM.
    second = subprocess.run(
        [sys.executable, "-m", "reconciler", "--config-dir", str(world.config)],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert second.returncode == 2 and "already serves" in second.stderr, second
    world.write("c9", light_xml("c9"))
    world.wait_running("c9")


# -- status files --------------------------------------------------------------------------------


def test_status_files_always_valid_while_passes_run(world: World) -> None:
    """A reader in a tight loop over status.json and every <name>.json during a burst of writes
    (new files, in-place rewrites, invalid files, deletions, VM starts) never sees a partial or
    invalid file."""
    world.start_daemon()
    world.write("seed", light_xml("seed", state="stopped"))
    world.wait_status("seed", lambda s: s["state"] == "stopped", "first status")
    problems: list[str] = []
    reads = [0]
    done = threading.Event()

    def reader() -> None:
        status_dir = world.layout.status_dir
        while not done.is_set():
            for path in [status_dir / "status.json", *status_dir.glob("*.json")]:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    if path.name == "status.json":
                        problems.append("status.json missing")
                    continue  # a domain file removed: gone is not partial
                try:
                    validate(path.name, data)
                except Exception as exc:
                    problems.append(f"{path.name}: {exc!r}: {data[:200]!r}")
                reads[0] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for i in range(24):
            world.write(f"b{i:02d}", light_xml(f"b{i:02d}", state="running" if i < 2 else "stopped"))
            if i % 3 == 0:
                world.path(f"x{i:02d}").write_text("<domain type='qemu'>\n  <name>\n")
            time.sleep(0.01)
        for i in range(24):
            world.path(f"b{i:02d}").write_text(light_xml(f"b{i:02d}", description=f"r{i}",
                                                         state="stopped"))
            time.sleep(0.01)
        for i in range(0, 24, 4):
            world.path(f"b{i:02d}").unlink()
        expected = {f"b{i:02d}" for i in range(24) if i % 4} | {"seed"}
        expected |= {f"x{i:02d}" for i in range(0, 24, 3)}

        def settled() -> bool:
            domains = world.status_all()["domains"]
            return {d["name"] for d in domains} == expected and not any(
                d["state"] in ("starting", "stopping", "running") for d in domains)

        world.wait(settled, "the burst to settle", timeout=30)
    finally:
        done.set()
        thread.join(timeout=10)
    assert problems == []
    assert reads[0] >= 200, reads
    assert world.qemu(light_uuid("b00")) == [] and world.qemu(light_uuid("b01")) == []


def test_shipped_schema_matches_command(world: World) -> None:
    """reconciler/status.schema.json is exactly what `reconcile status --schema` prints."""
    shipped = REPO / "reconciler" / "status.schema.json"
    out = world.cli("status", "--schema")
    assert out.returncode == 0, out.stderr
    assert json.loads(shipped.read_text()) == json.loads(out.stdout)
    assert shipped.read_text() == out.stdout
    assert json.loads(out.stdout) == StatusFile.model_json_schema()


# -- signals -------------------------------------------------------------------------------------


def test_sigterm_exits_promptly_and_vms_keep_running(world: World) -> None:
    """SIGTERM ends the daemon in < 2 s even while a slow stop is under way; the VMs keep running
    (and unpaused); the next daemon adopts them with the same pids and finishes the stop."""
    daemon = world.start_daemon()
    world.write("t1", light_xml("t1"))
    world.write("t2", light_xml("t2"))
    world.write("slow", light_xml("slow", shutdown_timeout=4, acpi=True))
    pids = {n: world.wait_running(n)["pid"] for n in ("t1", "t2", "slow")}
    world.write("slow", light_xml("slow", state="stopped", shutdown_timeout=4, acpi=True))
    # shown as soon as the stop begins, not once it is over (the guest-less VM ignores the
    # power button: qemud waits the whole shutdown timeout, then quits it)
    world.wait_status("slow", lambda s: s["state"] == "stopping", "stopping", timeout=2)
    assert world.qemu(light_uuid("slow")) == [pids["slow"]]
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    rc = daemon.proc.wait(timeout=5)
    took = time.monotonic() - sent
    assert took < 2.0, f"the daemon took {took:.2f}s to exit"
    assert rc == 0, daemon.text()
    assert "exiting; VMs keep running" in daemon.text()
    for name, pid in pids.items():
        uuid = light_uuid(name)
        assert world.qemu(uuid) == [pid], name
        assert world.layout.pidfile(uuid).exists()
    assert qmp_query(world.layout.qmp_socket(light_uuid("t1")))["status"] == "running"
    second = world.start_daemon()
    for name in ("t1", "t2"):
        st = world.wait_running(name)
        assert st["pid"] == pids[name]
    world.wait(lambda: not world.qemu(light_uuid("slow")), "the next daemon to finish the stop")
    world.wait_status("slow", lambda s: s["state"] == "stopped", "stopped by the next daemon")
    assert len(second.lines("adopted running QEMU")) == 3


def test_sighup_rescans_everything(world: World) -> None:
    """SIGHUP logs a full rescan and drops the parse cache: an edit that keeps the file's size,
    inode and mtime (invisible to the cache) is picked up."""
    daemon = world.start_daemon()
    uuid = light_uuid("h")
    path = world.write("h", light_xml("h", state="stopped"))
    world.write("k", light_xml("k", state="stopped"))
    world.wait_status("h", lambda s: s["state"] == "stopped", "stopped")
    world.wait_status("k", lambda s: s["state"] == "stopped", "stopped")
    (world.layout.status_dir / "k.json").unlink()  # deleted by hand: unchanged, so not rewritten
    time.sleep(SETTLE)
    assert not (world.layout.status_dir / "k.json").exists()
    st = path.stat()
    new = light_xml("h", state="running").encode()
    assert len(new) == st.st_size
    with path.open("r+b") as fh:
        fh.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size,
                                                                 st.st_mtime_ns)
    os.kill(daemon.proc.pid, signal.SIGHUP)
    world.wait(lambda: daemon.lines("SIGHUP: full rescan"), "the rescan log line")
    world.wait_running("h")
    assert world.qemu(uuid)
    # ... and rewrites every status file, so the one deleted by hand is back
    world.wait_status("k", lambda s: s["state"] == "stopped", "k.json rewritten after SIGHUP")
    assert daemon.proc.poll() is None


def test_current_memory_is_set_as_the_balloon_target_before_the_guest_runs(world: World) -> None:
    """`<currentMemory>` below `<memory>` is not dropped: QEMU's balloon gets it (QMP `balloon`)
    while still paused, as libvirt does; the VM then runs."""
    text = light_xml("bal").replace(
        "<memory unit='MiB'>32</memory>",
        "<memory unit='MiB'>64</memory><currentMemory unit='MiB'>48</currentMemory>").replace(
        "</os>", "</os><devices><memballoon model='virtio'/></devices>")
    world.write("bal", text)
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"balloon target {48 * 1024**2} bytes (<currentMemory>)" in world.vm_log("bal")
    uuid = light_uuid("bal")
    assert world.status("bal")["state"] == "running"  # type: ignore[index]
    info = qmp_query(world.layout.vm_dir(uuid) / "qmp.sock", "query-balloon")
    assert info["actual"] == 64 * 1024**2  # no guest driver yet: nothing given back so far


def test_vcpu_cpuset_confines_qemu_and_an_unknown_cpu_is_a_clear_failure(world: World) -> None:
    """`<vcpu cpuset>` is applied to QEMU (libvirt pins the emulator the same way); a cpuset
    naming CPUs this host does not give qemud fails the start with the reason in the status."""
    mine = sorted(os.sched_getaffinity(0))
    last = mine[-1]
    world.write("pin", light_xml("pin").replace(
        "<memory unit='MiB'>32</memory>",
        f"<memory unit='MiB'>32</memory><vcpu cpuset='{last}'>1</vcpu>"))
    world.write("nopin", light_xml("nopin").replace(
        "<memory unit='MiB'>32</memory>", "<memory unit='MiB'>32</memory><vcpu cpuset='999'>1</vcpu>"))
    out = world.cli("--once")
    assert out.returncode == 1, out.stdout + out.stderr
    st = world.status("pin")
    assert st is not None and st["state"] == "running", st
    assert os.sched_getaffinity(st["pid"]) == {last}
    bad = world.status("nopin")
    assert bad is not None and bad["pid"] is None, bad
    assert "<vcpu cpuset> names host CPUs 999" in (bad["reason"] or ""), bad
    assert world.qemu(light_uuid("nopin")) == []
