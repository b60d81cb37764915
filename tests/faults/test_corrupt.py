"""Corrupt status files, `exits.json` and pidfiles: recovered, and nothing signalled wrongly.

The daemon is stopped (its VMs keep running), its files are damaged in every way that matters
(garbage, truncated JSON, JSON of the wrong shape, a pidfile naming another VM's QEMU or a
process that merely mentions the VM's uuid), and a new daemon starts: it adopts every QEMU by
what /proc says, rewrites every file, removes stale ones, and never signals a process that is not
the VM's own QEMU (a decoy notes every signal it gets).
"""

from __future__ import annotations

import json
import os
import signal
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from reconciler.history import MEMORY_FILE
from tests.faults.support import decoy, qemus_under, signals_seen, untouched
from tests.integration.test_loop import World, light_uuid, light_xml, world
from tests.support.procs import pids_mentioning

__all__ = ["world"]  # the fixture, imported for the tests below

pytestmark = [pytest.mark.qemu]

GHOST = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "qemud-fault/ghost"))


def _running(world: World, names: tuple[str, ...]) -> dict[str, int]:
    """Each name's QEMU pid, once it runs."""
    return {n: world.wait_running(n)["pid"] for n in names}


def _valid(world: World, name: str) -> dict[str, Any] | None:
    """`status/<name>.json` if it is there and valid by the schema (else None: not yet)."""
    try:
        return world.status(name)
    except Exception:  # still the damaged file: JSON or schema errors
        return None


def _assert_recovered(world: World, pids: dict[str, int], stopped: tuple[str, ...]) -> None:
    """Every status file valid and right, the same QEMUs, nothing stale left."""
    for name, pid in pids.items():
        st = world.wait(lambda n=name, p=pid: (s := _valid(world, n)) and s["state"] == "running"
                        and s["pid"] == p and s, f"{name} running with its old pid")
        qemus = [q.pid for q in qemus_under(world.layout.run_dir) if q.uuid == st["uuid"]]
        assert qemus == [pid] and untouched(pid), name
    for name in stopped:
        world.wait(lambda n=name: (s := _valid(world, n)) and s["state"] == "stopped",
                   f"{name} stopped")
    world.wait(lambda: _valid(world, "status"), "a valid status.json")
    listing = {d["name"]: (d["state"], d["pid"]) for d in world.status_all()["domains"]}
    want = {**{n: ("running", p) for n, p in pids.items()}, **{n: ("stopped", None) for n in stopped}}
    assert listing == want, listing
    world.wait(lambda: not (world.layout.status_dir / "ghost.json").exists(), "ghost.json removed")
    names = sorted(p.name for p in world.layout.status_dir.iterdir())
    assert names == sorted([*(f"{n}.json" for n in want), "status.json"]), names


def test_corrupt_status_files_while_serving_are_rewritten_on_sighup(world: World) -> None:
    """Status files damaged while the daemon serves: SIGHUP rewrites every one of them."""
    daemon = world.start_daemon()
    world.write("a", light_xml("a"))
    world.write("s", light_xml("s", state="stopped"))
    pids = _running(world, ("a",))
    world.wait_status("s", lambda s: s["state"] == "stopped", "stopped")
    status = world.layout.status_dir
    (status / "a.json").write_bytes(b"\x00\xff{garbage")
    (status / "s.json").write_text(json.dumps({"name": "s", "state": "exploded"}))
    (status / "status.json").write_text('{"updated_at": "2026-01-01T00:00:00Z", "domains": [{"na')
    (status / "ghost.json").write_text("{}")
    os.kill(daemon.proc.pid, signal.SIGHUP)
    _assert_recovered(world, pids, ("s",))
    assert daemon.proc.poll() is None, daemon.text()


def test_corrupt_pidfiles_exits_and_status_across_a_restart(world: World, tmp_path: Path) -> None:
    """Damaged pidfiles, exits.json and status files while no daemon runs: the next daemon
    adopts each QEMU (found through /proc, checked by executable and -uuid), rewrites everything,
    removes the stale runtime folders, and the decoy naming a VM's uuid gets no signal."""
    first = world.start_daemon()
    for name in ("a", "b", "c"):
        world.write(name, light_xml(name))
    world.write("s", light_xml("s", state="stopped"))
    pids = _running(world, ("a", "b", "c"))
    world.wait_status("s", lambda s: s["state"] == "stopped", "stopped")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=10) == 0, first.text()

    journal = tmp_path / "decoy.signals"
    with decoy(journal, "-uuid", light_uuid("c"), f"{world.layout.run_dir}/") as fake:
        layout = world.layout
        layout.pidfile(light_uuid("a")).write_bytes(b"\x00\xffnot a pid\n")
        layout.pidfile(light_uuid("b")).write_text(f"{pids['c']}\n")  # another VM's QEMU
        layout.pidfile(light_uuid("c")).write_text(f"{fake}\n")  # a process naming c's uuid
        for stale in (light_uuid("s"), GHOST):  # folders whose pidfile names the decoy
            layout.vm_dir(stale).mkdir(mode=0o700)
            layout.pidfile(stale).write_text(f"{fake}\n")
        (layout.run_dir / MEMORY_FILE).write_text(json.dumps({
            "not-a-uuid": 1, light_uuid("a"): {"kind": "exploded", "at": "yesterday"},
            light_uuid("b"): [1, 2], light_uuid("c"): {"kind": "crash", "failures": "x"}}))
        status = layout.status_dir
        (status / "a.json").write_bytes(b"\x00\xff")
        (status / "b.json").write_text("[]")
        (status / "status.json").write_text("{")
        (status / "ghost.json").write_text('{"name": "ghost", "state": "running", "pid": 1}')

        second = world.start_daemon()
        _assert_recovered(world, pids, ("s",))
        for name, pid in pids.items():
            assert second.lines(f"{name}: adopted running QEMU pid {pid}"), second.text()
        assert not second.lines("starting"), second.text()
        assert not layout.vm_dir(light_uuid("s")).exists() and not layout.vm_dir(GHOST).exists()
        history = json.loads((layout.run_dir / MEMORY_FILE).read_bytes())
        assert isinstance(history, dict) and "not-a-uuid" not in history, history
        assert untouched(fake) and signals_seen(journal) == [], signals_seen(journal)
        assert second.proc.poll() is None, second.text()
        for name in pids:
            assert "stopping" not in world.vm_log(name), name
    assert pids_mentioning(light_uuid("c")) == [pids["c"]]
