"""Pure decisions about VM exits: what kind of exit it was, whether to restart, when.

Nothing here touches the OS or the clock; callers pass times in.  Every
function is table-tested in ``tests/reconciler/test_policy.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

RestartPolicy = Literal["always", "on-failure", "never"]

#: Delay before the first automatic restart, doubled after each further failure.
BACKOFF_BASE = 1.0
#: Upper bound of the restart delay.
BACKOFF_MAX = 300.0
#: A run that lasted at least this long counts as healthy and resets the failure count.
HEALTHY_UPTIME = 60.0
#: This many consecutive short-lived runs put a VM in ``crash-loop``.
CRASH_LOOP_FAILURES = 3

#: libvirt ``on_poweroff`` / ``on_crash`` values that ask for a restart.
_LIBVIRT_RESTART_ACTIONS = frozenset({"restart", "rename-restart", "coredump-restart"})


class ExitKind(enum.Enum):
    """Why a QEMU process went away, as far as qemud can tell."""

    #: The guest powered itself off: SHUTDOWN with guest=true, then exit status 0.
    POWEROFF = "poweroff"
    #: Someone other than qemud asked QEMU to quit (another QMP client's ``quit``,
    #: SIGTERM/SIGINT/SIGHUP from outside): SHUTDOWN with guest=false, exit status 0.
    HOST_SHUTDOWN = "host-shutdown"
    #: QEMU died on a signal, exited non-zero, or exited with no SHUTDOWN event.
    CRASH = "crash"
    #: The guest kernel panicked (a GUEST_PANICKED event was seen).
    PANIC = "panic"
    #: qemud itself stopped the VM.
    STOPPED = "stopped"


def classify_exit(
    *,
    requested_stop: bool,
    shutdown_seen: bool,
    shutdown_guest: bool,
    panicked: bool,
    returncode: int | None,
    signal: int | None,
) -> ExitKind:
    """Classify one QEMU exit; the first matching row wins.

    ==================================================  ===============
    condition                                           kind
    ==================================================  ===============
    ``requested_stop`` (qemud asked it to stop)         STOPPED
    ``panicked`` (GUEST_PANICKED seen)                  PANIC
    killed by a ``signal``                              CRASH
    ``returncode`` non-zero                             CRASH
    SHUTDOWN seen, ``shutdown_guest``                   POWEROFF
    SHUTDOWN seen, not ``shutdown_guest``               HOST_SHUTDOWN
    no SHUTDOWN seen (monitor just closed)              CRASH
    ==================================================  ===============

    ``returncode`` and ``signal`` are None when the status cannot be read (an
    adopted process is not our child); the events alone decide then.
    """
    if requested_stop:
        return ExitKind.STOPPED
    if panicked:
        return ExitKind.PANIC
    if signal is not None:
        return ExitKind.CRASH
    if returncode is not None and returncode != 0:
        return ExitKind.CRASH
    if shutdown_seen:
        return ExitKind.POWEROFF if shutdown_guest else ExitKind.HOST_SHUTDOWN
    return ExitKind.CRASH


def should_restart(
    restart: RestartPolicy, on_poweroff: str, on_crash: str, kind: ExitKind
) -> bool:
    """Decide whether qemud restarts a VM after an exit of ``kind``.

    ``restart`` is qemud's own policy (like systemd's ``Restart=``);
    ``on_poweroff`` and ``on_crash`` are the libvirt domain's lifecycle
    actions, where ``restart``, ``rename-restart`` and ``coredump-restart``
    count as restart.  As in libvirt, ``on_crash`` means a *guest* crash
    (PANIC); a crash of QEMU itself is covered by ``restart`` only.

    ==============  =======  ==========================  ==========================
    kind            always   on-failure                  never
    ==============  =======  ==========================  ==========================
    STOPPED         no       no                          no
    CRASH           yes      yes                         no
    PANIC           yes      yes                         if on_crash restarts
    POWEROFF        yes      if on_poweroff restarts     if on_poweroff restarts
    HOST_SHUTDOWN   yes      no                          no
    ==============  =======  ==========================  ==========================
    """
    if kind is ExitKind.STOPPED:
        return False
    if restart == "always":
        return True
    poweroff_restarts = on_poweroff in _LIBVIRT_RESTART_ACTIONS
    if kind is ExitKind.POWEROFF:
        return poweroff_restarts
    if kind is ExitKind.HOST_SHUTDOWN:
        return False
    if restart == "on-failure":
        return kind in (ExitKind.CRASH, ExitKind.PANIC)
    return kind is ExitKind.PANIC and on_crash in _LIBVIRT_RESTART_ACTIONS


def backoff_delay(failures: int) -> float:
    """Seconds to wait before restart number ``failures`` of a failure streak.

    1, 2, 4, 8, ... seconds for failures 1, 2, 3, 4, ..., capped at
    `BACKOFF_MAX`; 0 when there is no failure (``failures <= 0``).
    """
    if failures <= 0:
        return 0.0
    # Cap the exponent first so huge counters cannot overflow a float.
    exponent = min(failures - 1, 64)
    return min(BACKOFF_BASE * 2.0**exponent, BACKOFF_MAX)


def next_failures(previous: int, uptime: float) -> int:
    """Length of the failure streak after a run that lasted ``uptime`` seconds.

    A run of at least `HEALTHY_UPTIME` seconds ends the old streak, so its exit
    starts a new one at 1; a shorter run extends the streak by one.
    """
    if uptime >= HEALTHY_UPTIME:
        return 1
    return max(previous, 0) + 1


@dataclass(frozen=True)
class RestartState:
    """A VM's automatic-restart bookkeeping.

    ``failures`` counts consecutive exits whose runs were shorter than
    `HEALTHY_UPTIME` (the exit after a healthy run counts as 1);
    ``next_retry_at`` is when the next restart may happen, on whatever clock
    the caller passes in (None: no restart pending).
    """

    failures: int = 0
    next_retry_at: float | None = None

    @property
    def crash_loop(self) -> bool:
        """True once `CRASH_LOOP_FAILURES` runs in a row died young (status ``crash-loop``)."""
        return self.failures >= CRASH_LOOP_FAILURES


def after_exit(previous: RestartState, *, exited_at: float, uptime: float) -> RestartState:
    """Restart bookkeeping after an exit at ``exited_at`` of a run lasting ``uptime`` s.

    The next retry is ``exited_at + backoff_delay(failures)``; the result is in
    crash-loop when the streak reached `CRASH_LOOP_FAILURES`.
    """
    failures = next_failures(previous.failures, uptime)
    return RestartState(failures=failures, next_retry_at=exited_at + backoff_delay(failures))
