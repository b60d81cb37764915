"""The pure planner: desired domains + observed processes + now -> actions.

`plan()` touches nothing: no clock, no files, no processes. The executor carries the actions
out; the loop calls `plan()` again after anything changes. `state_of()` is the matching pure
function that names what a user sees in the status.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from model import Domain
from model.argv import bridge_of
from reconciler.desired import Identify, Want, writable_disks
from reconciler.policy import ExitKind, RestartState
from reconciler.scan import FileKey

Phase = Literal["starting", "running", "paused", "stopping", "unresponsive"]
"""`unresponsive`: a QEMU of this VM whose monitor did not answer at adoption; left alone."""


@dataclass(frozen=True)
class Live:
    """A QEMU process the reconciler owns (started or adopted) and the definition it runs."""

    uuid: uuidlib.UUID
    name: str
    pid: int
    phase: Phase
    domain: Domain | None
    """The definition it was started with; None for an adopted VM whose file is gone."""
    file: Path | None = None
    """The domain file it was started from, when known."""


@dataclass(frozen=True)
class Ended:
    """What is remembered of a VM's last exit (or failed start)."""

    kind: ExitKind
    at: float
    restart: RestartState
    held: bool
    """True when policy says not to restart: the VM stays stopped until its file changes."""
    key: FileKey | None
    """The version of the file when it ended; a new version releases a hold and the back-off."""
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """Everything the planner needs to know about the world besides the files."""

    live: Mapping[uuidlib.UUID, Live] = field(default_factory=dict)
    ended: Mapping[uuidlib.UUID, Ended] = field(default_factory=dict)
    orphans: frozenset[uuidlib.UUID] = frozenset()
    """Runtime folders on disk that no owned process accounts for (adopt, or clean if stale)."""


@dataclass(frozen=True)
class Adopt:
    """Take over the QEMU of a runtime folder left by an earlier reconciler (or clean it up)."""

    uuid: uuidlib.UUID


@dataclass(frozen=True)
class Start:
    """Start a VM from its current definition."""

    uuid: uuidlib.UUID
    name: str
    reason: str
    restart: bool = False
    """True when this start is an automatic restart after an exit (counted in the status)."""


@dataclass(frozen=True)
class Stop:
    """Stop a VM gracefully (powerdown, then quit, SIGTERM, SIGKILL)."""

    uuid: uuidlib.UUID
    name: str
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do for a VM until `until` (restart back-off); the loop wakes itself then."""

    uuid: uuidlib.UUID
    name: str
    until: float


@dataclass(frozen=True)
class Clean:
    """A runtime folder whose process is not this VM's QEMU: removed without signalling anything.

    Only `--dry-run` shows it as such; a real pass finds it out while adopting.
    """

    uuid: uuidlib.UUID
    reason: str


@dataclass(frozen=True)
class Blocked:
    """A wanted VM that may not start now, and why (its disk, file or name is in use)."""

    uuid: uuidlib.UUID
    name: str
    reason: str


Action = Adopt | Blocked | Clean | Start | Stop | Wait

Claim = tuple[str, str]
"""Something only one live QEMU may hold: ("uuid", u), ("name", n), ("file", path), ("disk", path)."""


def claims(uuid: uuidlib.UUID, name: str, file: Path | None, domain: Domain | None,
           identify: Identify = os.path.normpath) -> list[Claim]:
    """What a VM holds while its QEMU lives: identity, log and status names, file, writable disks.

    Two live QEMUs never share a claim: a new identity waits for the old one's QEMU to go (same
    file), and one writable image is never opened by two guests.
    """
    out: list[Claim] = [("uuid", str(uuid)), ("name", name)]
    if file is not None:
        out.append(("file", str(file)))
    if domain is not None:
        out.extend(("disk", path) for _, path in writable_disks(domain, identify))
    return out


def _describe_claim(claim: Claim) -> str:
    """A claim in words, for a `Blocked` reason."""
    kind, value = claim
    return {"uuid": f"uuid {value}", "name": f"the name '{value}'", "file": f"the file {value}",
            "disk": f"the disk image {value}"}[kind]


def _joined(d: Domain) -> Domain:
    """`d` with each network interface's bridge as QEMU joined it.

    A definition kept by a qemud that did not resolve networks has no bridge: it joined the
    guessed one (`model.argv.bridge_of`), which is what it is compared by.
    """
    nics = d.devices.interfaces
    if all(n.type != "network" or n.bridge is not None for n in nics):
        return d
    joined = tuple(n.model_copy(update={"bridge": bridge_of(n)}) if n.type == "network" else n
                   for n in nics)
    return d.model_copy(update={"devices": d.devices.model_copy(update={"interfaces": joined})})


def _same_definition(a: Domain | None, b: Domain) -> bool:
    """Whether two definitions describe the same guest (the desired-state block aside)."""
    if a is None or a is b:
        return True
    return _joined(a.model_copy(update={"desired": b.desired})) == _joined(b)


def pending_restart(live: Live | None, want: Want | None) -> bool:
    """True when a running VM's file changed in a way that needs a restart to apply."""
    if live is None or want is None:
        return False
    return not _same_definition(live.domain, want.domain)


def _by_uuid(item: tuple[uuidlib.UUID, object]) -> int:
    """Sort key of (uuid, value) pairs: the uuid's integer (UUID's own ordering, but cheaper)."""
    return item[0].int


def plan(desired: Mapping[uuidlib.UUID, Want], observed: Observed, now: float, *,
         gone: Mapping[uuidlib.UUID, str] | None = None,
         identify: Identify = os.path.normpath) -> list[Action]:
    """Decide what to do now. Pure; the result is sorted for determinism.

    Rules, per uuid:
    - a runtime folder nobody owns is adopted first; nothing else happens to it this pass;
    - an owned VM that is not wanted (its reason in `gone`, else "domain file removed"), whose
      definition says `stopped`, or whose name changed is stopped; a VM still starting gets its
      Stop too (the supervisor runs it once the start ends);
    - a wanted VM that is not running is started, unless its last exit is held (policy says
      stay stopped) or its back-off has not expired, both only while its file is unchanged (a
      back-off yields `Wait`); a VM being stopped gets its Start queued behind the stop;
    - at most one action per uuid (the supervisor keeps one pending action per VM);
    - a start whose claims (uuid, name, file, writable disks) another live QEMU holds, or that
      the desired set blocked (disk conflict), yields `Blocked` instead.
    A running VM is never restarted because its definition changed (see `pending_restart`),
    except for its name, which is its identity (logs, status): a renamed VM is stopped, then
    started under its new name. Nothing here ever stops a VM for a clash or an invalid file:
    the desired set keeps them.
    """
    gone = gone or {}
    actions: list[Action] = []
    for uuid in sorted(observed.orphans):
        actions.append(Adopt(uuid))
    held: dict[Claim, uuidlib.UUID] = {}
    for uuid, owned in sorted(observed.live.items(), key=_by_uuid):
        live = owned
        for claim in claims(uuid, live.name, live.file, live.domain, identify):
            held.setdefault(claim, uuid)
        want = desired.get(uuid)
        if live.phase in ("stopping", "unresponsive"):
            continue  # a Start for it, if wanted, is queued behind the stop below
        if want is None:
            actions.append(Stop(uuid, live.name, gone.get(uuid, "domain file removed")))
        elif not want.running:
            actions.append(Stop(uuid, live.name, "desired state is stopped"))
        elif live.name != want.name:
            actions.append(Stop(uuid, live.name, f"renamed to '{want.name}'"))
    for uuid, want in sorted(desired.items(), key=_by_uuid):
        if not want.running or uuid in observed.orphans:
            continue
        current = observed.live.get(uuid)
        if current is not None and current.phase != "stopping":
            continue  # at most one action per uuid: a renamed VM's Start follows its stop
        start = _start_for(want, observed.ended.get(uuid), now, after_stop=current is not None)
        if not isinstance(start, Start):
            if start is not None:
                actions.append(start)
            continue
        if want.blocked is not None:
            actions.append(Blocked(uuid, want.name, want.blocked))
            continue
        mine = claims(uuid, want.name, want.file, want.domain, identify)
        taken = [(c, held[c]) for c in mine if held.get(c, uuid) != uuid]
        if taken:
            claim, other = taken[0]
            who = observed.live[other].name if other in observed.live else str(other)
            actions.append(Blocked(uuid, want.name, f"waiting for the QEMU of '{who}' to go: "
                                   f"it holds {_describe_claim(claim)}"))
            continue
        for claim in mine:
            held.setdefault(claim, uuid)
        actions.append(start)
    return actions


def _start_for(want: Want, ended: Ended | None, now: float, *, after_stop: bool
               ) -> Start | Wait | None:
    """The Start (or back-off Wait, or nothing if held) for a wanted VM that does not run.

    An exit qemud itself caused (kind STOPPED) holds nothing: the desired state decides. So
    does a start queued behind a stop (`after_stop`): that stop is ours.
    """
    if after_stop or ended is None or ended.kind is ExitKind.STOPPED or ended.key != want.key:
        return Start(want.uuid, want.name, "desired state is running")
    if ended.held:
        return None
    retry = ended.restart.next_retry_at
    if retry is not None and retry > now:
        return Wait(want.uuid, want.name, retry)
    return Start(want.uuid, want.name, f"restart after {ended.kind.value} "
                 f"(failure {ended.restart.failures})", restart=True)


State = Literal["stopped", "starting", "running", "paused", "stopping", "unresponsive", "crashed",
                "crash-loop"]


def state_of(live: Live | None, ended: Ended | None, want: Want | None, now: float
             ) -> tuple[State, str | None]:
    """The state and reason a user sees for a valid, non-conflicting domain."""
    if live is not None:
        return live.phase, None
    if ended is None or (want is not None and ended.key != want.key):
        return "stopped", None
    reason = ended.message or f"last exit: {ended.kind.value}"
    if ended.kind in (ExitKind.STOPPED, ExitKind.POWEROFF, ExitKind.HOST_SHUTDOWN) and ended.held:
        return "stopped", reason
    retry = ended.restart.next_retry_at
    if not ended.held and retry is not None and retry > now and ended.restart.crash_loop:
        return "crash-loop", reason
    if ended.kind in (ExitKind.CRASH, ExitKind.PANIC):
        return "crashed", reason
    return "stopped", reason
