"""Table tests for the pure exit/restart policy."""

from __future__ import annotations

import signal

import pytest

from reconciler.policy import (
    BACKOFF_MAX,
    HEALTHY_UPTIME,
    ExitKind,
    RestartPolicy,
    RestartState,
    after_exit,
    backoff_delay,
    classify_exit,
    next_failures,
    should_restart,
)

P, H, C, K, S = (
    ExitKind.POWEROFF,
    ExitKind.HOST_SHUTDOWN,
    ExitKind.CRASH,
    ExitKind.PANIC,
    ExitKind.STOPPED,
)
KILL, TERM = int(signal.SIGKILL), int(signal.SIGTERM)

# requested_stop, shutdown_seen, shutdown_guest, panicked, returncode, signal -> kind
CLASSIFY = [
    # guest powered itself off
    (False, True, True, False, 0, None, P),
    # adopted process: status unknown, the events decide
    (False, True, True, False, None, None, P),
    (False, True, False, False, None, None, H),
    (False, False, False, False, None, None, C),
    # someone else's quit or SIGTERM
    (False, True, False, False, 0, None, H),
    # killed or failed
    (False, False, False, False, None, KILL, C),
    (False, True, True, False, None, KILL, C),
    (False, False, False, False, 1, None, C),
    (False, True, True, False, 1, None, C),
    # monitor closed without SHUTDOWN, even with status 0
    (False, False, False, False, 0, None, C),
    # guest panic wins over how QEMU then went away
    (False, False, False, True, None, KILL, K),
    (False, True, True, True, 0, None, K),
    (False, False, False, True, None, None, K),
    # we asked: always STOPPED, however it ended
    (True, True, False, False, 0, None, S),
    (True, False, False, False, None, KILL, S),
    (True, False, False, False, None, TERM, S),
    (True, True, True, False, 0, None, S),
    (True, False, False, True, 1, None, S),
    (True, False, False, False, None, None, S),
]


@pytest.mark.parametrize(
    ("requested_stop", "shutdown_seen", "shutdown_guest", "panicked", "returncode", "sig", "kind"),
    CLASSIFY,
)
def test_classify_exit(
    requested_stop: bool,
    shutdown_seen: bool,
    shutdown_guest: bool,
    panicked: bool,
    returncode: int | None,
    sig: int | None,
    kind: ExitKind,
) -> None:
    assert (
        classify_exit(
            requested_stop=requested_stop,
            shutdown_seen=shutdown_seen,
            shutdown_guest=shutdown_guest,
            panicked=panicked,
            returncode=returncode,
            signal=sig,
        )
        is kind
    )


# restart, on_poweroff, on_crash, kind -> restart?
RESTART: list[tuple[RestartPolicy, str, str, ExitKind, bool]] = [
    # always: everything but our own stop
    ("always", "destroy", "destroy", P, True),
    ("always", "destroy", "destroy", H, True),
    ("always", "destroy", "destroy", C, True),
    ("always", "destroy", "destroy", K, True),
    ("always", "restart", "restart", S, False),
    # on-failure: crash and panic; poweroff only if the domain says so
    ("on-failure", "destroy", "destroy", C, True),
    ("on-failure", "destroy", "destroy", K, True),
    ("on-failure", "destroy", "destroy", P, False),
    ("on-failure", "restart", "destroy", P, True),
    ("on-failure", "rename-restart", "destroy", P, True),
    ("on-failure", "preserve", "destroy", P, False),
    ("on-failure", "restart", "restart", H, False),
    ("on-failure", "restart", "restart", S, False),
    # never: only the libvirt lifecycle actions can restart
    ("never", "destroy", "destroy", C, False),
    ("never", "destroy", "destroy", K, False),
    ("never", "destroy", "destroy", P, False),
    ("never", "restart", "destroy", P, True),
    ("never", "destroy", "restart", K, True),
    ("never", "destroy", "coredump-restart", K, True),
    ("never", "destroy", "coredump-destroy", K, False),
    ("never", "destroy", "restart", C, False),  # on_crash is about the guest, not QEMU
    ("never", "restart", "restart", H, False),
    ("never", "restart", "restart", S, False),
]


@pytest.mark.parametrize(("restart", "on_poweroff", "on_crash", "kind", "expected"), RESTART)
def test_should_restart(
    restart: RestartPolicy, on_poweroff: str, on_crash: str, kind: ExitKind, expected: bool
) -> None:
    assert should_restart(restart, on_poweroff, on_crash, kind) is expected


def test_stopped_is_never_restarted_whatever_the_settings() -> None:
    restarts: tuple[RestartPolicy, ...] = ("always", "on-failure", "never")
    for restart in restarts:
        for action in ("restart", "destroy", "preserve"):
            assert not should_restart(restart, action, action, S)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(-1, 0.0), (0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (8, 128.0), (9, 256.0),
     (10, 300.0), (11, 300.0), (10_000, 300.0)],
)
def test_backoff_delay(failures: int, delay: float) -> None:
    assert backoff_delay(failures) == delay


def test_backoff_never_exceeds_cap_and_never_decreases() -> None:
    delays = [backoff_delay(n) for n in range(200)]
    assert max(delays) == BACKOFF_MAX
    assert delays == sorted(delays)


@pytest.mark.parametrize(
    ("previous", "uptime", "failures"),
    [
        (0, 0.5, 1),
        (1, 0.5, 2),
        (5, 59.9, 6),
        (5, HEALTHY_UPTIME, 1),  # a healthy run ends the streak
        (5, 3600.0, 1),
        (0, 3600.0, 1),
    ],
)
def test_next_failures(previous: int, uptime: float, failures: int) -> None:
    assert next_failures(previous, uptime) == failures


# previous state, exited_at, uptime -> failures, next_retry_at, crash_loop
AFTER_EXIT = [
    (RestartState(), 100.0, 5.0, 1, 101.0, False),
    (RestartState(1, 101.0), 110.0, 5.0, 2, 112.0, False),
    (RestartState(2, 112.0), 120.0, 5.0, 3, 124.0, True),
    (RestartState(3, 124.0), 130.0, 5.0, 4, 138.0, True),
    (RestartState(20, 0.0), 1000.0, 5.0, 21, 1300.0, True),
    (RestartState(20, 0.0), 1000.0, 61.0, 1, 1001.0, False),  # ran fine for a while
]


@pytest.mark.parametrize(
    ("previous", "exited_at", "uptime", "failures", "retry_at", "crash_loop"), AFTER_EXIT
)
def test_after_exit(
    previous: RestartState,
    exited_at: float,
    uptime: float,
    failures: int,
    retry_at: float,
    crash_loop: bool,
) -> None:
    state = after_exit(previous, exited_at=exited_at, uptime=uptime)
    assert state == RestartState(failures=failures, next_retry_at=retry_at)
    assert state.crash_loop is crash_loop


def test_fresh_state() -> None:
    assert RestartState() == RestartState(failures=0, next_retry_at=None)
    assert not RestartState().crash_loop
