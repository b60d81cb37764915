"""Table tests of the pure planner: `plan`, `state_of` and `pending_restart`."""

from __future__ import annotations

import random
import uuid as uuidlib
from pathlib import Path

import pytest

import model
from reconciler.plan import (
    Action,
    Adopt,
    Ended,
    Live,
    Observed,
    Phase,
    Start,
    Stop,
    Wait,
    Want,
    pending_restart,
    plan,
    state_of,
)
from reconciler.policy import ExitKind, RestartState
from reconciler.scan import FileKey

U1 = uuidlib.UUID("11111111-1111-4111-8111-111111111111")
U2 = uuidlib.UUID("22222222-2222-4222-8222-222222222222")
U3 = uuidlib.UUID("33333333-3333-4333-8333-333333333333")
NAMES = {U1: "a", U2: "b", U3: "c"}
K1 = FileKey(1_000, 100, 7)
K2 = FileKey(2_000, 100, 7)  # the same file, edited
NOW = 1000.0


def xml(name: str, uuid: uuidlib.UUID, *, state: str = "running", memory: int = 64, devices: str = "",
        desired_extra: str = "") -> bytes:
    return (f"<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>"
            f"<memory unit='MiB'>{memory}</memory><os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{devices}</devices>"
            f"<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='{state}'{desired_extra}/></metadata>"
            f"</domain>").encode()


def domain(uuid: uuidlib.UUID, **kw: object) -> model.Domain:
    return model.parse(xml(NAMES[uuid], uuid, **kw)).domain  # type: ignore[arg-type]


def want(uuid: uuidlib.UUID, *, running: bool = True, key: FileKey = K1) -> Want:
    name = NAMES[uuid]
    return Want(uuid, name, Path(f"/cfg/{name}.xml"), key,
                domain(uuid, state="running" if running else "stopped"))


def live(uuid: uuidlib.UUID, phase: Phase = "running") -> Live:
    return Live(uuid, NAMES[uuid], 4000 + int(uuid.hex[0]), phase, domain(uuid))


def ended(kind: ExitKind = ExitKind.CRASH, *, held: bool = False, key: FileKey | None = K1,
          failures: int = 1, retry: float | None = None, message: str = "") -> Ended:
    return Ended(kind, NOW - 5, RestartState(failures, retry), held, key, message)


def wants(*ws: Want) -> dict[uuidlib.UUID, Want]:
    return {w.uuid: w for w in ws}


def obs(*lives: Live, ended_: dict[uuidlib.UUID, Ended] | None = None,
        orphans: tuple[uuidlib.UUID, ...] = ()) -> Observed:
    return Observed({v.uuid: v for v in lives}, ended_ or {}, frozenset(orphans))


START = "desired state is running"

PLAN = [
    # ---- start
    pytest.param(wants(want(U1)), obs(), NOW,
                 [Start(U1, "a", START)], id="start-wanted"),
    pytest.param(wants(want(U1, running=False)), obs(), NOW,
                 [], id="stopped-and-not-running"),
    pytest.param(wants(want(U1)), obs(live(U1)), NOW,
                 [], id="running-as-wanted"),
    pytest.param(wants(want(U1)), obs(live(U1, "paused")), NOW,
                 [], id="paused-is-not-restarted"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(ExitKind.STOPPED, held=True, key=None)}), NOW,
                 [Start(U1, "a", START)], id="ended-without-key-starts"),
    # ---- stop
    pytest.param({}, obs(live(U1)), NOW,
                 [Stop(U1, "a", "domain file removed")], id="file-gone"),
    pytest.param({}, obs(live(U1, "paused")), NOW,
                 [Stop(U1, "a", "domain file removed")], id="file-gone-paused"),
    pytest.param(wants(want(U1, running=False)), obs(live(U1)), NOW,
                 [Stop(U1, "a", "desired state is stopped")], id="desired-stopped"),
    pytest.param(wants(want(U1, running=False)), obs(live(U1, "paused")), NOW,
                 [Stop(U1, "a", "desired state is stopped")], id="desired-stopped-paused"),
    # ---- an action under way: the next one is queued behind it (the supervisor runs it after)
    pytest.param({}, obs(live(U1, "starting")), NOW, [Stop(U1, "a", "domain file removed")],
                 id="starting-file-gone"),
    pytest.param({}, obs(live(U1, "stopping")), NOW, [], id="stopping-file-gone"),
    pytest.param(wants(want(U1, running=False)), obs(live(U1, "starting")), NOW,
                 [Stop(U1, "a", "desired state is stopped")], id="starting-desired-stopped"),
    pytest.param(wants(want(U1, running=False)), obs(live(U1, "stopping")), NOW,
                 [], id="stopping-desired-stopped"),
    # a stop is never "held": stop then start within the shutdown timeout starts it again after
    pytest.param(wants(want(U1)), obs(live(U1, "stopping")), NOW,
                 [Start(U1, "a", "desired state is running")], id="stopping-desired-running-queues-start"),
    pytest.param(wants(want(U1)), obs(live(U1, "starting")), NOW,
                 [], id="starting-desired-running-no-second-start"),
    # ---- orphans: adopt first, nothing else for them
    pytest.param({}, obs(orphans=(U1,)), NOW, [Adopt(U1)], id="orphan-without-file"),
    pytest.param(wants(want(U1)), obs(orphans=(U1,)), NOW, [Adopt(U1)], id="orphan-wanted-running"),
    pytest.param(wants(want(U1, running=False)), obs(orphans=(U1,)), NOW,
                 [Adopt(U1)], id="orphan-wanted-stopped"),
    pytest.param(wants(want(U1)), obs(orphans=(U1,), ended_={U1: ended(retry=NOW + 50)}), NOW,
                 [Adopt(U1)], id="orphan-in-back-off-no-wait"),
    pytest.param(wants(want(U1), want(U3, running=False)), obs(live(U3), orphans=(U2,)), NOW,
                 [Adopt(U2), Stop(U3, "c", "desired state is stopped"), Start(U1, "a", START)],
                 id="adopt-then-stop-then-start"),
    # ---- held exits: no restart until the file changes
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(ExitKind.POWEROFF, held=True)}), NOW,
                 [], id="held-poweroff"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(ExitKind.CRASH, held=True)}), NOW + 10_000,
                 [], id="held-crash-forever"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(ExitKind.STOPPED, held=True)}), NOW,
                 [Start(U1, "a", "desired state is running")], id="stopped-by-qemud-holds-nothing"),
    pytest.param(wants(want(U1, key=K2)), obs(ended_={U1: ended(ExitKind.POWEROFF, held=True)}), NOW,
                 [Start(U1, "a", START)], id="file-change-releases-hold"),
    # ---- back-off
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(retry=NOW + 4, failures=3)}), NOW,
                 [Wait(U1, "a", NOW + 4)], id="back-off-wait"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(retry=NOW + 4, failures=3)}), NOW + 3.999,
                 [Wait(U1, "a", NOW + 4)], id="back-off-wait-just-before"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(retry=NOW + 4, failures=3)}), NOW + 4,
                 [Start(U1, "a", "restart after crash (failure 3)", restart=True)],
                 id="back-off-expired-exactly"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(ExitKind.PANIC, retry=NOW + 4)}), NOW + 60,
                 [Start(U1, "a", "restart after panic (failure 1)", restart=True)],
                 id="back-off-long-expired"),
    pytest.param(wants(want(U1)), obs(ended_={U1: ended(retry=None)}), NOW,
                 [Start(U1, "a", "restart after crash (failure 1)", restart=True)],
                 id="no-retry-time-restarts"),
    pytest.param(wants(want(U1, key=K2)), obs(ended_={U1: ended(retry=NOW + 100, failures=5)}), NOW,
                 [Start(U1, "a", START)], id="file-change-skips-back-off"),
    pytest.param(wants(want(U1, running=False)), obs(ended_={U1: ended(retry=NOW + 4)}), NOW,
                 [], id="back-off-but-desired-stopped"),
    pytest.param(wants(want(U1)), obs(live(U1), ended_={U1: ended(retry=NOW + 4)}), NOW,
                 [], id="back-off-but-already-running"),
    # ---- several domains, sorted by uuid within each kind
    pytest.param(wants(want(U3), want(U1), want(U2)), obs(), NOW,
                 [Start(U1, "a", START), Start(U2, "b", START), Start(U3, "c", START)],
                 id="starts-sorted"),
    pytest.param({}, obs(live(U3), live(U1), live(U2, "stopping"), orphans=(U3, U2)), NOW,
                 [Adopt(U2), Adopt(U3), Stop(U1, "a", "domain file removed"),
                  Stop(U3, "c", "domain file removed")],
                 id="adopts-and-stops-sorted"),
    pytest.param(wants(want(U2), want(U1)),
                 obs(ended_={U2: ended(retry=NOW + 9), U1: ended(retry=NOW + 3)}), NOW,
                 [Wait(U1, "a", NOW + 3), Wait(U2, "b", NOW + 9)], id="waits-sorted"),
]


@pytest.mark.parametrize(("desired", "observed", "now", "expected"), PLAN)
def test_plan(desired: dict[uuidlib.UUID, Want], observed: Observed, now: float,
              expected: list[Action]) -> None:
    assert plan(desired, observed, now) == expected


def test_back_off_waits_until_next_retry_then_starts() -> None:
    desired = wants(want(U1))
    observed = obs(ended_={U1: ended(retry=NOW + 2.5, failures=2)})
    timeline = [(t, plan(desired, observed, t)) for t in (NOW, NOW + 1, NOW + 2.4, NOW + 2.5, NOW + 3)]
    kinds = [(t, type(actions[0]).__name__) for t, actions in timeline]
    assert kinds == [(NOW, "Wait"), (NOW + 1, "Wait"), (NOW + 2.4, "Wait"),
                     (NOW + 2.5, "Start"), (NOW + 3, "Start")]
    assert all(a == [Wait(U1, "a", NOW + 2.5)] for t, a in timeline if t < NOW + 2.5)


def test_plan_is_deterministic_and_pure() -> None:
    ws = [want(U1), want(U2, running=False), want(U3)]
    lv = [live(U2), live(U3, "starting")]
    en = {U1: ended(retry=NOW + 1), U3: ended(held=True)}
    expected = plan(wants(*ws), obs(*lv, ended_=en, orphans=()), NOW)
    assert expected == [Stop(U2, "b", "desired state is stopped"), Wait(U1, "a", NOW + 1)]
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(ws)
        rng.shuffle(lv)
        items = list(en.items())
        rng.shuffle(items)
        desired = wants(*ws)
        observed = obs(*lv, ended_=dict(items))
        snapshot = (dict(desired), dict(observed.live), dict(observed.ended))
        assert plan(desired, observed, NOW) == expected
        assert (dict(desired), dict(observed.live), dict(observed.ended)) == snapshot


# ------------------------------------------------------------------ state_of

CRASH_LOOP = 3  # policy.CRASH_LOOP_FAILURES

STATE = [
    # live phases win over everything
    pytest.param(live(U1), None, want(U1), ("running", None), id="running"),
    pytest.param(live(U1, "paused"), None, want(U1), ("paused", None), id="paused"),
    pytest.param(live(U1, "starting"), ended(retry=NOW + 1), want(U1), ("starting", None), id="starting"),
    pytest.param(live(U1, "stopping"), None, None, ("stopping", None), id="stopping-file-gone"),
    # never ran, or the file changed since the exit
    pytest.param(None, None, want(U1), ("stopped", None), id="never-ran"),
    pytest.param(None, None, None, ("stopped", None), id="nothing-known"),
    pytest.param(None, ended(retry=NOW + 5, failures=CRASH_LOOP), want(U1, key=K2), ("stopped", None),
                 id="file-changed-since-exit"),
    # stopped with a reason
    pytest.param(None, ended(ExitKind.STOPPED, held=True, key=K1), want(U1, running=False),
                 ("stopped", "last exit: stopped"), id="stopped-by-qemud"),
    pytest.param(None, ended(ExitKind.POWEROFF, held=True, message="QEMU exited: poweroff (status 0)"),
                 want(U1), ("stopped", "QEMU exited: poweroff (status 0)"), id="poweroff-held"),
    pytest.param(None, ended(ExitKind.HOST_SHUTDOWN, held=True), want(U1),
                 ("stopped", "last exit: host-shutdown"), id="host-shutdown-held"),
    pytest.param(None, ended(ExitKind.POWEROFF, retry=NOW + 1), want(U1),
                 ("stopped", "last exit: poweroff"), id="poweroff-restart-pending"),
    # crashed
    pytest.param(None, ended(ExitKind.CRASH, held=True), want(U1), ("crashed", "last exit: crash"),
                 id="crash-held"),
    pytest.param(None, ended(ExitKind.CRASH, retry=NOW + 1), want(U1), ("crashed", "last exit: crash"),
                 id="crash-back-off-short-streak"),
    pytest.param(None, ended(ExitKind.PANIC, held=True, message="guest panicked"), want(U1),
                 ("crashed", "guest panicked"), id="panic"),
    pytest.param(None, ended(ExitKind.CRASH, held=True), None, ("crashed", "last exit: crash"),
                 id="crash-file-gone"),
    pytest.param(None, ended(ExitKind.CRASH, retry=NOW - 1, failures=CRASH_LOOP), want(U1),
                 ("crashed", "last exit: crash"), id="crash-loop-retry-due"),
    # crash-loop: a long streak with a retry pending
    pytest.param(None, ended(ExitKind.CRASH, retry=NOW + 8, failures=CRASH_LOOP,
                             message="QEMU exited: crash"), want(U1),
                 ("crash-loop", "QEMU exited: crash"), id="crash-loop"),
    pytest.param(None, ended(ExitKind.PANIC, retry=NOW + 8, failures=CRASH_LOOP + 4), want(U1),
                 ("crash-loop", "last exit: panic"), id="crash-loop-panic"),
    pytest.param(None, ended(ExitKind.CRASH, retry=NOW + 8, failures=CRASH_LOOP - 1), want(U1),
                 ("crashed", "last exit: crash"), id="streak-too-short-for-crash-loop"),
]


@pytest.mark.parametrize(("live_", "ended_", "want_", "expected"), STATE)
def test_state_of(live_: Live | None, ended_: Ended | None, want_: Want | None,
                  expected: tuple[str, str | None]) -> None:
    assert state_of(live_, ended_, want_, NOW) == expected


# ------------------------------------------------------------------ pending_restart

DISK = ("<disk type='file' device='disk'><source file='/var/lib/x.qcow2'/>"
        "<driver name='qemu' type='qcow2'/><target dev='vda' bus='virtio'/></disk>")


NET = "<interface type='network'><source network='default'/></interface>"
NET_AT = "<interface type='network'><source network='default' bridge='{}'/></interface>"


def _live_with(**kw: object) -> Live:
    return Live(U1, "a", 4242, "running", domain(U1, **kw))


def _want_with(**kw: object) -> Want:
    return Want(U1, "a", Path("/cfg/a.xml"), K2, domain(U1, **kw))


PENDING = [
    pytest.param({}, {}, False, id="identical"),
    pytest.param({"state": "running"}, {"state": "stopped"}, False, id="only-state"),
    pytest.param({}, {"desired_extra": " restart='never' shutdown-timeout='5'"}, False,
                 id="only-desired-block"),
    pytest.param({}, {"memory": 128}, True, id="memory"),
    pytest.param({}, {"devices": DISK}, True, id="device-added"),
    pytest.param({"devices": DISK}, {}, True, id="device-removed"),
    pytest.param({"devices": DISK}, {"devices": DISK.replace("x.qcow2", "y.qcow2")}, True,
                 id="device-changed"),
    pytest.param({"devices": DISK}, {"devices": DISK, "state": "stopped"}, False,
                 id="device-same-state-changed"),
    pytest.param({}, {"memory": 128, "state": "stopped"}, True, id="memory-and-state"),
    # a definition kept by a qemud that guessed network bridges: the same bridge is the same
    pytest.param({"devices": NET}, {"devices": NET_AT.format("virbr0")}, False,
                 id="network-bridge-resolved-as-guessed"),
    pytest.param({"devices": NET}, {"devices": NET_AT.format("virbr1")}, True,
                 id="network-bridge-resolved-elsewhere"),
    pytest.param({"devices": NET_AT.format("virbr0")}, {"devices": NET_AT.format("virbr1")}, True,
                 id="network-bridge-changed"),
]


@pytest.mark.parametrize(("running_kw", "file_kw", "expected"), PENDING)
def test_pending_restart(running_kw: dict[str, object], file_kw: dict[str, object], expected: bool) -> None:
    assert pending_restart(_live_with(**running_kw), _want_with(**file_kw)) is expected


def test_pending_restart_needs_both_sides() -> None:
    changed = _want_with(memory=128)
    assert pending_restart(None, changed) is False
    assert pending_restart(_live_with(), None) is False
    adopted = Live(U1, "a", 4242, "running", None)  # definition unknown: nothing to compare
    assert pending_restart(adopted, changed) is False
