"""The pure planner: desired domains + observed processes + now -> actions.

`plan()` touches nothing: no clock, no files, no processes. The executor carries the actions
out; the loop calls `plan()` again after anything changes. `state_of()` is the matching pure
function that names what a user sees in the status.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from model import Domain
from reconciler.policy import ExitKind, RestartState
from reconciler.scan import FileKey

Phase = Literal["starting", "running", "paused", "stopping"]


@dataclass(frozen=True)
class Want:
    """A domain the config directory defines (the clash winner for its uuid and name)."""

    uuid: uuidlib.UUID
    name: str
    file: Path
    key: FileKey
    domain: Domain

    @property
    def running(self) -> bool:
        """Whether the file asks for the VM to run."""
        return self.domain.desired.state == "running"


@dataclass(frozen=True)
class Live:
    """A QEMU process the reconciler owns (started or adopted) and the definition it runs."""

    uuid: uuidlib.UUID
    name: str
    pid: int
    phase: Phase
    domain: Domain | None
    """The definition it was started with; None for an adopted VM whose file is gone."""


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


Action = Adopt | Clean | Start | Stop | Wait


def _same_definition(a: Domain | None, b: Domain) -> bool:
    """Whether two definitions describe the same guest (the desired-state block aside)."""
    if a is None:
        return True
    return a.model_copy(update={"desired": b.desired}) == b


def pending_restart(live: Live | None, want: Want | None) -> bool:
    """True when a running VM's file changed in a way that needs a restart to apply."""
    if live is None or want is None:
        return False
    return not _same_definition(live.domain, want.domain)


def _by_uuid(item: tuple[uuidlib.UUID, object]) -> int:
    """Sort key of (uuid, value) pairs: the uuid's integer (UUID's own ordering, but cheaper)."""
    return item[0].int


def plan(desired: Mapping[uuidlib.UUID, Want], observed: Observed, now: float) -> list[Action]:
    """Decide what to do now. Pure; the result is sorted for determinism.

    Rules, per uuid:
    - a runtime folder nobody owns is adopted first; nothing else happens to it this pass;
    - an owned VM whose file is gone or says `stopped` is stopped (once it is not starting or
      already stopping);
    - a wanted VM that is not running is started, unless its last exit is held (policy says
      stay stopped) or its back-off has not expired, both only while its file is unchanged;
      a back-off yields `Wait` so the loop can wake up on time.
    A running VM is never restarted because its file changed (see `pending_restart`).
    """
    actions: list[Action] = []
    for uuid in sorted(observed.orphans):
        actions.append(Adopt(uuid))
    for uuid, live in sorted(observed.live.items(), key=_by_uuid):
        want = desired.get(uuid)
        if live.phase in ("starting", "stopping"):
            continue  # an action is under way; judged again when it ends
        if want is None:
            actions.append(Stop(uuid, live.name, "domain file removed"))
        elif not want.running:
            actions.append(Stop(uuid, live.name, "desired state is stopped"))
    for uuid, want in sorted(desired.items(), key=_by_uuid):
        if not want.running or uuid in observed.live or uuid in observed.orphans:
            continue
        ended = observed.ended.get(uuid)
        if ended is not None and ended.key == want.key:
            if ended.held:
                continue
            retry = ended.restart.next_retry_at
            if retry is not None and retry > now:
                actions.append(Wait(uuid, want.name, retry))
                continue
            actions.append(Start(uuid, want.name,
                                 f"restart after {ended.kind.value} "
                                 f"(failure {ended.restart.failures})", restart=True))
            continue
        actions.append(Start(uuid, want.name, "desired state is running"))
    return actions


State = Literal["stopped", "starting", "running", "paused", "stopping", "crashed", "crash-loop"]


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
