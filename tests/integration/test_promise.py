"""Issue 7, "never stop, lose or double a VM by accident": one real-daemon, real-QEMU test per
symptom that was reproduced against the reconciler before the desired set and the per-VM workers.

Every test uses `test_loop`'s `World` (the daemon as a subprocess on a short /tmp directory) and
light, diskless VMs. Negative checks ("nothing else happens") never sleep: they wait for a *marker
pass*, a pass that began after the check's precondition and finished publishing (a fresh stopped
domain file whose status appears), or watch /proc continuously with `Watch` across a transition.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from model.domain import uuid_for_name
from reconciler.loop import ADOPT_RETRY, Reconciler
from reconciler.qemu import Timeouts
from tests.integration.test_loop import DISK_LINE, TIMEOUT, World, light_uuid, light_xml, world
from tests.support.procs import alive, cmdline_of, proc_state

__all__ = ["world"]  # the fixture, imported for the tests below

pytestmark = [pytest.mark.qemu]


# ---------------------------------------------------------------------------------------- domains


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of `text` containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# ---------------------------------------------------------------------------------------- helpers

_markers = iter(range(1_000_000))


def marker_pass(world: World) -> None:
    """Return once a pass that began after this call has published its statuses.

    Writes a fresh stopped domain file and waits for its status: whatever the daemon decided
    for the other domains in that pass (a start, a stop) has been decided and shown by then.
    """
    name = f"zz-mark{next(_markers)}"
    world.write(name, light_xml(name, state="stopped"))
    world.wait_status(name, lambda s: s["state"] == "stopped", "a marker pass")


def alive_daemons(world: World) -> None:
    """The newest daemon the test started is still running."""
    for daemon in world.daemons[-1:]:
        assert daemon.proc.poll() is None, (f"the daemon exited with {daemon.proc.returncode}:\n"
                                            f"{daemon.text()}")


class Watch:
    """Samples /proc as fast as it can in a thread: the live QEMUs of some uuids at each instant.

    One sweep of /proc per sample, so each sample is (nearly) one instant. `overlaps` keeps the
    samples in which more than `limit` QEMUs of the watched uuids were alive together.
    """

    def __init__(self, uuids: list[str], limit: int = 1) -> None:
        self.needles = {u: os.fsencode(u) for u in uuids}
        self.limit = limit
        self.samples = 0
        self.seen: dict[str, set[int]] = {u: set() for u in uuids}
        self.overlaps: list[dict[str, list[int]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, list[int]]:
        """uuid -> live pids whose command line names it, from one sweep of /proc."""
        found: dict[str, list[int]] = {u: [] for u in self.needles}
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            cmd = cmdline_of(int(entry))
            if not cmd:
                continue
            for uuid, needle in self.needles.items():
                if needle in cmd and alive(int(entry)):
                    found[uuid].append(int(entry))
        return found

    def _run(self) -> None:
        while not self._done.is_set():
            found = self.sample()
            self.samples += 1
            for uuid, pids in found.items():
                self.seen[uuid].update(pids)
            if sum(len(p) for p in found.values()) > self.limit:
                self.overlaps.append(found)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: (.*)$")


def log_events(text: str) -> list[tuple[float, str]]:
    """(wall-clock time, text) of each lifecycle line of a VM log."""
    out = []
    for line in text.splitlines():
        found = _STAMP.match(line)
        if found:
            at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            out.append((at.timestamp(), found.group(2)))
    return out


def when(events: list[tuple[float, str]], prefix: str) -> list[float]:
    """The times of the lifecycle lines starting with `prefix`."""
    return [at for at, text in events if text.startswith(prefix)]


# ---------------------------------------------------------------------------------------- 1


TYPO = "  <memory unit='MiB'>32</memroy>"


def _typo(world: World, name: str) -> tuple[Path, int]:
    """Break `name`'s file with a typo in a closing tag; return the file and the typo's line."""
    bad = light_xml(name).replace("  <memory unit='MiB'>32</memory>", TYPO)
    return world.write(name, bad), line_of(bad, TYPO)


def _assert_kept(st: dict[str, Any], pid: int, path: Path, line: int) -> None:
    """`st` shows the VM running on the definition in use, the typo named by file and line."""
    assert (st["state"], st["pid"]) == ("running", pid), st
    assert [(e["file"], e["line"]) for e in st["errors"]] == [(str(path), line)], st
    assert "stays in effect" in (st["reason"] or ""), st


def test_sighup_with_a_typo_keeps_the_vm(world: World) -> None:
    """SIGHUP (the parse cache is dropped) while a running VM's file has a typo: the VM keeps
    running with the same pid, and its status keeps naming the typo and the definition in use."""
    daemon = world.start_daemon()
    world.write("hup", light_xml("hup"))
    pid = world.wait_running("hup")["pid"]
    path, line = _typo(world, "hup")
    st = world.wait_status("hup", lambda s: any(e["line"] for e in s["errors"]),
                           "the typo in the status")
    _assert_kept(st, pid, path, line)
    os.kill(daemon.proc.pid, signal.SIGHUP)
    world.wait(lambda: daemon.lines("SIGHUP: full rescan"), "the rescan log line")
    marker_pass(world)
    alive_daemons(world)
    st = world.wait_status("hup", lambda s: any(e["line"] for e in s["errors"]),
                           "the typo still in the status after SIGHUP")
    _assert_kept(st, pid, path, line)
    marker_pass(world)  # and no later pass takes it away either
    assert world.qemu(light_uuid("hup")) == [pid]
    assert "stopping" not in world.vm_log("hup")
    assert f"{path}:{line}" in st["reason"], st  # the reason names the first error too


def test_restart_with_a_typo_adopts_and_keeps_the_vm(world: World) -> None:
    """The daemon restarted (SIGTERM, start again) while a running VM's file has a typo: the new
    daemon adopts the VM and keeps it running on the definition in use."""
    first = world.start_daemon()
    world.write("rst", light_xml("rst"))
    pid = world.wait_running("rst")["pid"]
    path, line = _typo(world, "rst")
    world.wait_status("rst", lambda s: any(e["line"] for e in s["errors"]), "the typo")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=10) == 0, first.text()
    second = world.start_daemon()
    world.wait(lambda: second.lines(f"rst: adopted running QEMU pid {pid}"), "the adoption")
    marker_pass(world)
    st = world.status("rst")
    assert st is not None
    _assert_kept(st, pid, path, line)
    marker_pass(world)
    assert world.qemu(light_uuid("rst")) == [pid]
    assert "stopping" not in world.vm_log("rst")
    alive_daemons(world)


# ---------------------------------------------------------------------------------------- 2


def test_edited_into_a_name_clash_both_keep_running(world: World) -> None:
    """Two running VMs; one file is edited to take the other's name: both keep running with
    their pids, the loser's status explains the clash; fixing the file clears it."""
    world.start_daemon()
    a = world.write("a", light_xml("alpha"))
    b = world.write("b", light_xml("beta"))
    pids = {n: world.wait_running(n)["pid"] for n in ("alpha", "beta")}
    world.write("b", light_xml("alpha", uuid=light_uuid("beta")))  # b.xml: now named alpha too
    world.wait_status("beta", lambda s: bool(s["errors"]), "the clash in beta's status")
    marker_pass(world)
    st = world.status("beta")
    assert st is not None and (st["state"], st["pid"]) == ("running", pids["beta"]), st
    assert st["file"] == str(b), st
    assert "clash" in (st["reason"] or "") and "stays in effect" in st["reason"], st
    assert any(f"{a}:" in e["message"] and b.name in e["message"] and "'alpha'" in e["message"]
               and e["file"] == str(b) and e["line"] for e in st["errors"]), st
    winner = world.status("alpha")
    assert winner is not None and (winner["state"], winner["pid"]) == ("running", pids["alpha"])
    for name, pid in pids.items():
        assert world.qemu(light_uuid(name)) == [pid], name
        assert "stopping" not in world.vm_log(name), name
    world.write("b", light_xml("beta"))
    st = world.wait_status("beta", lambda s: not s["errors"], "the clash cleared")
    assert (st["state"], st["pid"], st["reason"]) == ("running", pids["beta"], None), st
    marker_pass(world)
    for name, pid in pids.items():
        assert world.qemu(light_uuid(name)) == [pid], name


# ---------------------------------------------------------------------------------------- 3


def test_rename_without_uuid_stops_the_old_identity_before_the_new_starts(world: World) -> None:
    """A domain without `<uuid>` renamed: the old QEMU is stopped gracefully (power button, then
    quit after the shutdown timeout) and only then does the new identity's QEMU start; never two
    QEMUs for the file, and exactly one under the new name at the end."""
    daemon = world.start_daemon()
    old_uuid, new_uuid = str(uuid_for_name("before")), str(uuid_for_name("after"))
    world.write("r", light_xml("before", uuid=None, acpi=True, shutdown_timeout=2))
    st = world.wait_running("before")
    assert st["uuid"] == old_uuid
    old_pid = st["pid"]
    with Watch([old_uuid, new_uuid]) as watch:
        world.write("r", light_xml("after", uuid=None, acpi=True, shutdown_timeout=2))
        st = world.wait_running("after")
        world.wait(lambda: world.status("before") is None, "before.json to go")
        marker_pass(world)
    assert watch.samples > 50, watch.samples
    assert watch.overlaps == [], f"two QEMUs for r.xml at once: {watch.overlaps[:3]}"
    assert st["uuid"] == new_uuid and watch.seen == {old_uuid: {old_pid}, new_uuid: {st["pid"]}}
    assert world.qemu(old_uuid) == [] and world.qemu(new_uuid) == [st["pid"]]
    old_log, new_log = log_events(world.vm_log("before")), log_events(world.vm_log("after"))
    stops = [text for _, text in old_log if text.startswith("stopping reason=")]
    assert stops and "system_powerdown" in stops[0], old_log  # graceful: the power button first
    assert not any("SIGTERM" in t or "SIGKILL" in t for t in stops), stops
    exited, started = when(old_log, "exited"), when(new_log, "starting:")
    assert len(exited) == 1 and len(started) == 1, (old_log, new_log)
    assert exited[0] <= started[0], "the new identity started before the old QEMU exited"
    assert "identity changed" in daemon.text()


def test_shared_writable_disk_never_runs_twice(world: World) -> None:
    """Two domains naming one writable image: the second never starts while the first runs, both
    statuses name the other file and its `<disk>` line; once the first is stopped the second
    starts, never both at once."""
    world.start_daemon()
    image = world.root / "shared.img"
    subprocess.run(["truncate", "-s", "1M", str(image)], check=True)
    p1 = world.write("d1", light_xml("disk1", disk=image))
    st1 = world.wait_running("disk1")
    u1, u2 = light_uuid("disk1"), light_uuid("disk2")
    with Watch([u1, u2]) as watch:
        p2 = world.write("d2", light_xml("disk2", disk=image))
        st2 = world.wait_status("disk2", lambda s: s["state"] == "conflict" and bool(s["errors"]),
                                "disk2 blocked by the disk conflict")
        st1 = world.wait_status("disk1", lambda s: bool(s["errors"]), "disk1 told of the conflict")
        marker_pass(world)
        assert watch.seen[u2] == set() and world.qemu(u2) == []
        assert (st1["state"], world.qemu(u1)) == ("running", [st1["pid"]]), st1
        for st, mine, other in ((st1, p1, p2), (st2, p2, p1)):
            assert [(e["file"], e["line"]) for e in st["errors"]] == [(str(mine), DISK_LINE)], st
            assert f"{other}:{DISK_LINE}" in st["errors"][0]["message"], st
            assert str(image) in st["errors"][0]["message"], st
        assert f"{p1}:{DISK_LINE}" in (st2["reason"] or ""), st2
        out = world.cli("stop", "disk1")
        assert out.returncode == 0, out.stderr
        st2 = world.wait_running("disk2")
        marker_pass(world)
    assert watch.overlaps == [], f"both domains of {image} ran at once: {watch.overlaps[:3]}"
    assert watch.seen[u1] == {st1["pid"]} and watch.seen[u2] == {st2["pid"]}
    assert world.qemu(u1) == [] and world.qemu(u2) == [st2["pid"]]
    assert "Failed to get" not in world.vm_log("disk2")  # QEMU's image lock never had to refuse
    assert when(log_events(world.vm_log("disk1")), "exited")[0] <= when(
        log_events(world.vm_log("disk2")), "starting:")[0]


def test_shared_writable_disk_through_a_symlink_is_a_conflict(world: World) -> None:
    """The same image named through a symlink is the same image: the second domain is blocked,
    not launched to be refused by QEMU's image lock."""
    world.start_daemon()
    image = world.root / "shared.img"
    subprocess.run(["truncate", "-s", "1M", str(image)], check=True)
    link = world.root / "link.img"
    link.symlink_to(image)
    p1 = world.write("d1", light_xml("disk1", disk=image))
    world.wait_running("disk1")
    with Watch([light_uuid("disk2")]) as watch:
        world.write("d2", light_xml("disk2", disk=link))
        marker_pass(world)
    st = world.status("disk2")
    assert watch.seen[light_uuid("disk2")] == set(), "a QEMU was launched on the shared image"
    assert st is not None and st["state"] == "conflict", st
    assert f"{p1}:{DISK_LINE}" in st["errors"][0]["message"], st


# ---------------------------------------------------------------------------------------- 4


def test_stop_then_start_within_the_shutdown_timeout(world: World) -> None:
    """`reconcile stop X` and, while X is still shutting down, `reconcile start X`: X ends
    running on a new QEMU started after the old one exited; never two at once."""
    world.start_daemon()
    uuid = light_uuid("x")
    world.write("x", light_xml("x", acpi=True, shutdown_timeout=5))
    old = world.wait_running("x")["pid"]
    with Watch([uuid]) as watch:
        out = world.cli("stop", "x")
        assert out.returncode == 0, out.stderr
        world.wait_status("x", lambda s: s["state"] == "stopping", "x stopping")
        out = world.cli("start", "x")
        assert out.returncode == 0, out.stderr
        assert alive(old), "the start came too late: the stop was over already"
        st = world.wait_status("x", lambda s: s["state"] == "running" and s["pid"] != old,
                               "x running on a new QEMU")
        marker_pass(world)
    assert watch.overlaps == [], f"two QEMUs of x at once: {watch.overlaps[:3]}"
    assert watch.seen[uuid] == {old, st["pid"]}
    st = world.wait_running("x")
    assert st["desired"] == "running" and not alive(old)
    events = log_events(world.vm_log("x"))
    exited, started = when(events, "exited"), when(events, "starting:")
    assert len(exited) == 1 and len(started) == 2, events
    assert exited[0] <= started[1], events


# ---------------------------------------------------------------------------------------- 6

CJK_NAME = "".join(chr(0x4E00 + i) for i in range(90))  # 90 characters, 270 bytes in UTF-8


def _cjk(world: World) -> Path:
    """A valid-looking domain file whose name is 90 CJK characters; its `<name>` is on line 2."""
    path = world.path("cjk")
    path.write_text(light_xml(CJK_NAME, uuid=light_uuid("cjk")), encoding="utf-8")
    return path


def test_overlong_cjk_name_is_refused_by_validate(world: World) -> None:
    """`reconcile validate` refuses a 270-byte name at its line."""
    path = _cjk(world)
    out = world.cli("validate", str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{path}:2" in out.stdout + out.stderr, out.stdout + out.stderr


def test_overlong_cjk_name_is_invalid_and_the_daemon_serves_on(world: World) -> None:
    """With the daemon running, the same file shows as invalid with file and line; the daemon
    keeps running, the other VM keeps its QEMU, and later changes are still served."""
    world.start_daemon()
    world.write("calm", light_xml("calm"))
    pid = world.wait_running("calm")["pid"]
    path = _cjk(world)
    st = world.wait_status("cjk", lambda s: s["state"] == "invalid", "cjk.json invalid")
    alive_daemons(world)
    assert [(e["file"], e["line"]) for e in st["errors"]] == [(str(path), 2)], st
    assert world.qemu(light_uuid("cjk")) == []
    world.write("later", light_xml("later"))
    world.wait_running("later")
    alive_daemons(world)
    assert world.wait_running("calm")["pid"] == pid


def test_status_directory_deleted_or_blocked_while_serving(world: World) -> None:
    """The status directory deleted while the daemon runs, then a file edited: the directory is
    made again. Replaced by a file (cannot be made): the daemon says so, keeps running and keeps
    reconciling. Once the path is free again, SIGHUP brings every status file back."""
    daemon = world.start_daemon()
    status_dir = world.layout.status_dir
    world.write("s1", light_xml("s1"))
    pid = world.wait_running("s1")["pid"]
    shutil.rmtree(status_dir)
    world.write("s2", light_xml("s2"))
    world.wait_running("s2")
    assert world.wait_running("s1")["pid"] == pid  # every file is written again
    assert (status_dir.stat().st_mode & 0o777) == 0o700
    alive_daemons(world)

    shutil.rmtree(status_dir)
    status_dir.write_text("in the way\n")
    world.write("s3", light_xml("s3"))
    world.wait(lambda: world.qemu(light_uuid("s3")), "s3's QEMU, without a status directory")
    world.wait(lambda: daemon.lines(f"cannot write {status_dir}/"), "the write failure said")
    alive_daemons(world)
    assert world.qemu(light_uuid("s1")) == [pid]

    status_dir.unlink()
    os.kill(daemon.proc.pid, signal.SIGHUP)
    for name in ("s1", "s2", "s3"):
        world.wait_running(name)
    assert world.wait_running("s1")["pid"] == pid
    alive_daemons(world)


# ---------------------------------------------------------------------------------------- 7


def test_qemu_inherits_nothing_from_daemons_started_and_restarted(world: World) -> None:
    """Each daemon holds an inotify instance (watchdog) and its locks and control socket: a QEMU
    it started, and one it adopted after a restart, hold none of them, only what QEMU needs."""
    first = world.start_daemon()
    world.write("fd", light_xml("fd"))
    pid = world.wait_running("fd")["pid"]
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=10) == 0, first.text()
    world.start_daemon()
    marker_pass(world)
    assert world.wait_running("fd")["pid"] == pid
    targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert not [t for t in targets if "inotify" in t], targets
    assert not [t for t in targets if t.endswith((".lock", "control.sock"))], targets


# ---------------------------------------------------------------------------------------- 8


@pytest.fixture
def stopped_pids() -> Iterator[list[int]]:
    """Pids a test SIGSTOPped: continued afterwards, whatever happened (so they can be killed)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if proc_state(pid) is not None:
            os.kill(pid, signal.SIGCONT)


def test_unresponsive_qemu_is_not_doubled_and_adopted_on_retry(
        world: World, stopped_pids: list[int]) -> None:
    """A QEMU whose monitor does not answer when the daemon restarts (SIGSTOPped): no second
    QEMU for its uuid, status `unresponsive` with how to fix it; after SIGCONT the retry adopts
    it (in-process reconciler, with a clock moved past `ADOPT_RETRY`)."""
    first = world.start_daemon()
    uuid = light_uuid("hung")
    world.write("hung", light_xml("hung"))
    pid = world.wait_running("hung")["pid"]
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=10) == 0, first.text()
    os.kill(pid, signal.SIGSTOP)
    stopped_pids.append(pid)
    mark = len(world.vm_log("hung"))
    with Watch([uuid]) as watch:
        second = world.start_daemon()
        world.wait(lambda: second.lines(f"cannot adopt running QEMU pid {pid}"),
                   "the failed adoption", timeout=TIMEOUT + 10)
        marker_pass(world)
        marker_pass(world)
    said = f"daemon log:\n{second.text()}\nVM log:\n{world.vm_log('hung')[mark:]}"
    assert not second.lines("hung: starting"), said
    assert "starting:" not in world.vm_log("hung")[mark:], said
    assert watch.overlaps == [], f"a second QEMU for {uuid}: {watch.overlaps[:3]}"
    assert world.qemu(uuid) == [pid] and proc_state(pid) == "T"
    st = world.status("hung")
    assert st is not None and (st["state"], st["pid"]) == ("unresponsive", pid), st
    assert f"kill -CONT {pid}" in (st["reason"] or ""), st
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=10) == 0, second.text()

    now = [time.time()]
    out = io.StringIO()
    rec = Reconciler(world.layout, clock=lambda: now[0], timeouts=Timeouts(qmp=0.5), out=out)

    def state() -> tuple[str, int | None]:
        found = world.status("hung")
        assert found is not None
        return found["state"], found["pid"]

    async def retry() -> None:
        rec.prepare()
        try:
            await rec.run_pass()
            assert state() == ("unresponsive", pid)
            os.kill(pid, signal.SIGCONT)
            await rec.run_pass()  # the retry is not due yet: still left alone, nothing started
            assert state() == ("unresponsive", pid)
            assert world.qemu(uuid) == [pid]
            now[0] += ADOPT_RETRY + 1
            await rec.run_pass()  # the retry runs in the VM's worker, not inside the pass
            await rec.supervisor.settle()
            await rec.run_pass()
            assert state() == ("running", pid)
        finally:
            await rec.detach_all()

    asyncio.run(asyncio.wait_for(retry(), 60))
    assert world.qemu(uuid) == [pid] and proc_state(pid) != "T"
    assert f"hung: adopted running QEMU pid {pid}" in out.getvalue()
