"""SIGKILL of the reconciler in the middle of a pass that starts ten VMs (issue 9, fault suite).

Each round writes ten light domains into a fresh directory, runs a reconciler on it (`reconcile
--once`, or the daemon), waits for a moment of its pass (the first runtime folder made, or N QEMUs
spawned, as /proc shows them) and SIGKILLs it there. Then one more pass (`reconcile --once`) must
leave every domain with exactly one QEMU whose vCPUs run (QMP `query-status`, asked once that
pass has let go of the monitors), and never two QEMUs for one uuid meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from reconciler.status import temp_files
from reconciler.supervisor import is_runtime_folder
from tests.faults.support import ProcWatch, qemus_under
from tests.integration.test_loop import REPO, World, light_uuid, light_xml, qmp_query
from tests.support.procs import pids_mentioning

pytestmark = [pytest.mark.qemu]

VMS = 10
ROUNDS = [("once", "folder"), ("once", 3), ("daemon", 6), ("once", VMS)]
"""(which reconciler is killed, when): the first runtime folder made, or that many QEMUs spawned."""
RANDOM_ROUNDS = int(os.environ.get("QEMUD_FAULT_KILL_ROUNDS", "0"))
"""Extra rounds killed after a seeded random delay (the soak sets it; CI runs the fixed ones)."""


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    """Fresh config directories, one per round; nothing started in them survives the test."""
    made: list[World] = []
    yield made
    for w in made:
        w.close()
    for w in made:
        assert not pids_mentioning(w.root), "a process outlived the cleanup"


def _reconciler(world: World, kind: str) -> subprocess.Popen[bytes]:
    """`reconcile --once` or the daemon on `world`, its stderr in the world's root."""
    args = ["--once"] if kind == "once" else ["--resync", "300"]
    with (world.root / f"{kind}.log").open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--config-dir", str(world.config), *args],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def _moment(world: World, when: str | int) -> Callable[[], bool]:
    """A probe that holds once the pass has reached `when`."""
    run = world.layout.run_dir

    def folder() -> bool:
        with contextlib.suppress(OSError):
            return any(is_runtime_folder(n) for n in os.listdir(run))
        return False

    if when == "folder":
        return folder
    assert isinstance(when, int)
    return lambda: len(qemus_under(run)) >= when


def _kill_at(world: World, kind: str, when: str | int | float) -> str:
    """Run a reconciler, SIGKILL it at `when` (a moment, or a delay in seconds); what it reached."""
    proc = _reconciler(world, kind)
    try:
        if isinstance(when, float):
            time.sleep(when)  # the fault itself is the timing here, not a synchronisation
        else:
            probe = _moment(world, when)
            deadline = time.monotonic() + 60
            while not probe():
                assert proc.poll() is None, f"the reconciler ended before {when}: {proc.returncode}"
                assert time.monotonic() < deadline, f"the pass never reached {when}"
                time.sleep(0.002)
        landed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    if not isinstance(when, float):
        assert landed, f"the reconciler finished before it could be killed at {when}"
    return f"{len(qemus_under(world.layout.run_dir))} QEMUs when killed"


def _check_recovered(world: World, names: list[str]) -> None:
    """One more pass: every domain has exactly one QEMU, running; never two for one uuid."""
    with ProcWatch(world.layout.run_dir) as watch:
        out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert watch.samples > 0 and watch.doubles == [], watch.doubles[:3]
    qemus = qemus_under(world.layout.run_dir)
    by_uuid = {q.uuid: q.pid for q in qemus}
    assert len(qemus) == len(names) and len(by_uuid) == len(names), qemus
    for name in names:
        uuid = light_uuid(name)
        st = world.status(name)
        assert st is not None and (st["state"], st["pid"]) == ("running", by_uuid[uuid]), st
        answer = qmp_query(world.layout.qmp_socket(uuid))
        assert (answer["status"], answer["running"]) == ("running", True), (name, answer)
    folders = sorted(n for n in os.listdir(world.layout.run_dir) if is_runtime_folder(n))
    assert folders == sorted(light_uuid(n) for n in names)
    # a write the kill cut short leaves a temporary file: the next pass removes it
    left = [*temp_files(world.layout.status_dir), *temp_files(world.layout.run_dir, "exits.json")]
    assert left == [], left


def _round(worlds: list[World], kind: str, when: str | int | float) -> None:
    """One round: ten domains, a reconciler killed at `when`, one more pass, the checks."""
    world = World()
    worlds.append(world)
    names = [f"k{i}" for i in range(VMS)]
    for name in names:
        world.write(name, light_xml(name))
    reached = _kill_at(world, kind, when)
    try:
        _check_recovered(world, names)
    except AssertionError as exc:
        raise AssertionError(f"{kind} killed at {when} ({reached}): {exc}") from exc
    world.close()  # the next round has the CPU to itself


def test_sigkill_mid_pass_then_one_pass_converges(worlds: list[World]) -> None:
    """SIGKILL at several moments of a pass starting ten VMs (--once, and the daemon): after one
    more pass every domain has exactly one QEMU and it is running, not left paused."""
    for kind, when in ROUNDS:
        _round(worlds, kind, when)


@pytest.mark.skipif(not RANDOM_ROUNDS, reason="QEMUD_FAULT_KILL_ROUNDS unset (the soak sets it)")
def test_sigkill_at_random_delays() -> None:
    """The same at seeded random delays within the first seconds of the pass."""
    rng = random.Random(int(os.environ.get("QEMUD_SOAK_SEED", "9")))
    made: list[World] = []
    try:
        for i in range(RANDOM_ROUNDS):
            _round(made, "once" if i % 2 else "daemon", rng.uniform(0.3, 2.5))
    finally:
        for w in made:
            w.close()
