"""VM lifecycle end to end (issue 3): real QEMU under TCG, the real test guest, the real CLI.

Every test drives `reconcile` the way a user does, as a subprocess
(``python -m reconciler --config-dir D ...``), and judges by what a user can see: the status
files, the VM log (``<config>/log/<name>.log``), the serial console log, the runtime folder
``<config>/run/<uuid>/`` and the processes themselves.

The `env` fixture gives each test a private config directory in a short /tmp path (a QMP socket
path must fit in 107 bytes) and guarantees that nothing outlives the test: daemons get SIGTERM (a
daemon that ignores it is a failure), then every QEMU named by a status file or a runtime pidfile,
and every process whose command line mentions the test's directory, is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.paths import Layout
from tests.support.guest import READY_LINE, Guest
from tests.support.procs import alive, cmdline_of, pids_mentioning, proc_state
from tests.support.vms import broken_xml, guest_xml, write

REPO = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-system-x86_64")
T = TypeVar("T")

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed"),
]

#: Boot to the ready line: ~3 s alone under TCG here; three guests share two cores.
READY_TIMEOUT = 45.0
#: One lifecycle line of the VM log: ``2026-11-25 15:30:00.123+0000: text``.
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: (.*)$")
#: Steps of the stop sequence that a graceful stop must never reach.
_FORCE_STEPS = re.compile(r": (quit|SIGTERM|SIGKILL)\b|SIGKILL|SIGTERM")


# --------------------------------------------------------------------------------------------
# Helpers


def cpu_and_switches(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and context switches summed over all threads of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    return cpu, switches


def lifecycle(text: str) -> list[tuple[float, str]]:
    """The lifecycle lines of a VM log as (epoch seconds, text); QEMU's own output is skipped."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            stamp = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            out.append((stamp.timestamp(), m[2]))
    return out


def first_index(lines: list[tuple[float, str]], pattern: str, start: int = 0) -> int:
    """Index of the first lifecycle line at or after ``start`` matching ``pattern`` (or -1)."""
    rx = re.compile(pattern)
    for i in range(start, len(lines)):
        if rx.search(lines[i][1]):
            return i
    return -1


def epoch(iso_stamp: str) -> float:
    """A status file timestamp (ISO 8601, ``Z``) as epoch seconds."""
    return datetime.fromisoformat(iso_stamp).timestamp()


def vm_uuid(name: str) -> str:
    """The uuid `tests.support.vms` gives the domain called ``name``."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-test/{name}"))


@dataclass
class Env:
    """A private config directory for one test, plus the processes the test started."""

    base: Path
    config: Path
    layout: Layout
    daemons: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    # ---- driving the CLI

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``reconcile --config-dir <config> ARGS`` to completion."""
        return subprocess.run(
            [sys.executable, "-m", "reconciler", "--config-dir", str(self.config), *args],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def start_daemon(self) -> subprocess.Popen[bytes]:
        """Start the daemon ``reconcile --config-dir <config>``; its stderr goes to a file."""
        log = self.base / f"daemon-{len(self.daemons)}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "--config-dir", str(self.config)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        self.daemons.append((proc, log))
        return proc

    def write(self, name: str, text: str) -> Path:
        """Write the domain file ``<config>/<name>.xml`` atomically."""
        return write(self.config, name, text)

    # ---- what a user sees

    def status(self, name: str) -> dict[str, Any] | None:
        """``status/<name>.json``, or None if there is none (yet)."""
        try:
            data = json.loads((self.layout.status_dir / f"{name}.json").read_bytes())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        assert isinstance(data, dict)
        return data

    def vm_log(self, name: str) -> str:
        """The VM log (lifecycle lines and QEMU's output), empty if missing."""
        try:
            return (self.layout.log_dir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def console(self, name: str) -> str:
        """The serial console log, empty if missing."""
        try:
            return (self.layout.log_dir / f"{name}.console.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ready_count(self, name: str) -> int:
        """How many times the guest printed its ready line on the console."""
        return sum(1 for line in self.console(name).splitlines() if line.strip() == READY_LINE)

    def runtime_dir(self, name: str) -> Path:
        """``<config>/run/<uuid>`` of a domain written with `tests.support.vms`."""
        return self.layout.run_dir / vm_uuid(name)

    def diagnostics(self, *names: str) -> str:
        """Everything useful to read when a wait fails."""
        parts = []
        for proc, log in self.daemons:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {log.name} (rc={proc.poll()}):\n{text[-3000:]}")
        for name in names:
            parts.append(f"--- status {name}: {self.status(name)}")
            parts.append(f"--- {name}.log:\n{self.vm_log(name)[-3000:]}")
            parts.append(f"--- {name}.console.log (tail):\n{self.console(name)[-1500:]}")
        return "\n".join(parts)

    # ---- waiting

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float, *names: str,
             interval: float = 0.05) -> T:
        """Poll ``probe`` until it returns something truthy; fail with diagnostics on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g}s waiting for {what}\n"
                            f"{self.diagnostics(*names)}")
            time.sleep(interval)

    def wait_status(self, name: str, cond: Callable[[dict[str, Any]], object], timeout: float,
                    what: str, interval: float = 0.05) -> dict[str, Any]:
        """Wait until ``status/<name>.json`` satisfies ``cond``; return that status."""

        def probe() -> dict[str, Any] | None:
            st = self.status(name)
            return st if st is not None and cond(st) else None

        return self.wait(f"{name}: {what}", probe, timeout, name, interval=interval)

    def wait_ready(self, name: str, count: int = 1, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the guest has printed its ready line ``count`` times."""
        self.wait(f"{name}: ready line x{count} on the console",
                  lambda: self.ready_count(name) >= count, timeout, name)

    # ---- cleanup

    def teardown(self) -> None:
        """SIGTERM the daemons, then SIGKILL every leftover process; fail if any misbehaved."""
        problems = []
        for proc, log in self.daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    problems.append(f"daemon pid {proc.pid} ignored SIGTERM for 15 s:\n"
                                    f"{log.read_text(errors='replace')[-2000:]}")
        candidates: set[int] = set()
        needle = os.fsencode(f"{self.base}/")
        for path in self.layout.status_dir.glob("*.json") if self.layout.status_dir.exists() else []:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                pid = json.loads(path.read_bytes()).get("pid")
                if isinstance(pid, int):
                    candidates.add(pid)
        for path in self.layout.run_dir.glob("*/qemu.pid") if self.layout.run_dir.exists() else []:
            with contextlib.suppress(OSError, ValueError):
                candidates.add(int(path.read_text().strip()))
        # Only kill what is really ours: a recorded pid may have been reused meanwhile.
        victims = {p for p in candidates if alive(p) and needle in cmdline_of(p)}
        victims |= set(pids_mentioning(f"{self.base}/"))
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.02)
        survivors = [p for p in victims if alive(p)]
        if survivors:
            problems.append(f"processes survived SIGKILL: {survivors}")
        with contextlib.suppress(OSError):
            os.chown(self.config, os.geteuid(), os.getegid())
        shutil.rmtree(self.base, ignore_errors=True)
        assert not problems, "\n".join(problems)


@pytest.fixture
def env() -> Iterator[Env]:
    """A private config dir ``/tmp/qdl*/c``; kills every daemon and QEMU a test leaves behind."""
    # pytest's tmp_path is too deep for a 107-byte QMP socket path.
    base = Path(tempfile.mkdtemp(prefix="qdl", dir="/tmp"))
    config = base / "c"
    config.mkdir(mode=0o700)
    environment = Env(base, config, Layout.under(config))
    try:
        yield environment
    finally:
        environment.teardown()


def assert_graceful(env: Env, name: str, since: int = 0) -> list[tuple[float, str]]:
    """The VM log from lifecycle line ``since`` shows a stop the guest finished by itself."""
    lines = lifecycle(env.vm_log(name))[since:]
    text = "\n".join(t for _, t in lines)
    stopping = first_index(lines, r"^stopping reason=desired-state-is-stopped: system_powerdown")
    assert stopping >= 0, f"no graceful stop in the log:\n{text}"
    shutdown = first_index(lines, r"^event SHUTDOWN guest=true reason=guest-shutdown", stopping)
    exited = first_index(lines, r"^exited .*kind=stopped", stopping)
    assert 0 <= shutdown < exited, f"the guest did not power itself off:\n{text}"
    forced = [t for _, t in lines[stopping:] if _FORCE_STEPS.search(t)]
    assert not forced, f"the stop went past system_powerdown: {forced}\n{text}"
    return lines


# --------------------------------------------------------------------------------------------
# 1. start -> ready -> graceful stop


@pytest.mark.guest
def test_start_ready_then_graceful_stop(env: Env, guest: Guest) -> None:
    """`reconcile start`, the guest boots, `reconcile stop` powers it off gracefully and cleans up."""
    env.write("g1", guest_xml("g1", guest, state="stopped", shutdown_timeout=30))

    started = env.cli("start", "g1")
    assert started.returncode == 0, started.stdout + started.stderr
    st = env.status("g1")
    assert st is not None and st["state"] == "running" and st["desired"] == "running", st
    pid = st["pid"]
    assert isinstance(pid, int) and alive(pid), st
    assert env.runtime_dir("g1").is_dir()
    assert (env.runtime_dir("g1") / "qemu.pid").read_text().strip() == str(pid)

    # The CLI has exited; QEMU runs on, detached, and the guest boots to its ready line.
    env.wait_ready("g1")
    assert alive(pid)

    t_stop = time.monotonic()
    stopped = env.cli("stop", "g1")
    took = time.monotonic() - t_stop
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert took < 15, f"a graceful stop of a guest that obeys the power button took {took:.1f}s"

    assert not alive(pid), f"QEMU pid {pid} still running after 'reconcile stop'"
    assert not env.runtime_dir("g1").exists(), os.listdir(env.runtime_dir("g1"))
    st = env.status("g1")
    assert st is not None and st["state"] == "stopped" and st["pid"] is None, st

    assert_graceful(env, "g1")
    full = lifecycle(env.vm_log("g1"))
    text = "\n".join(t for _, t in full)
    order = [
        first_index(full, r"^starting: qemu-system-x86_64 "),
        first_index(full, rf"^started pid {pid}$"),
        first_index(full, r"^stopping reason=desired-state-is-stopped"),
        first_index(full, r"^exited (status|signal)=\S+ kind=stopped$"),
    ]
    assert -1 not in order and order == sorted(order), f"lifecycle lines missing or out of order:\n{text}"


# --------------------------------------------------------------------------------------------
# 2. a guest that ignores the power button


@pytest.mark.guest
def test_stop_of_guest_ignoring_power_button_times_out_then_quits(env: Env, guest: Guest) -> None:
    """shutdown-timeout=2: system_powerdown, 2 s of nothing, then QMP quit; no signal needed."""
    env.write("deaf", guest_xml("deaf", guest, shutdown_timeout=2,
                                cmdline=guest.cmdline(powerbutton="ignore")))
    started = env.cli("--once")
    assert started.returncode == 0, started.stdout + started.stderr
    st = env.status("deaf")
    assert st is not None and st["state"] == "running", st
    pid = st["pid"]
    env.wait_ready("deaf")
    assert "power button: ignored" in env.console("deaf")

    t_stop = time.monotonic()
    stopped = env.cli("stop", "deaf")
    took = time.monotonic() - t_stop
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert 2.0 <= took < 2.0 + 5.0 + 3.0, f"stop took {took:.1f}s"
    assert not alive(pid)
    assert not env.runtime_dir("deaf").exists()

    lines = lifecycle(env.vm_log("deaf"))
    text = "\n".join(t for _, t in lines)
    powerdown = first_index(lines, r"^stopping reason=desired-state-is-stopped: system_powerdown, "
                                   r"waiting up to 2s")
    timeout = first_index(lines, r"guest did not power off within 2s$", powerdown)
    quit_ = first_index(lines, r"^stopping reason=desired-state-is-stopped: quit$", timeout)
    exited = first_index(lines, r"^exited .*kind=stopped$", quit_)
    assert 0 <= powerdown < timeout < quit_ < exited, text
    waited = lines[timeout][0] - lines[powerdown][0]
    assert 1.95 <= waited <= 3.0, f"waited {waited:.3f}s for the guest instead of 2s:\n{text}"
    assert "SIGTERM" not in text and "SIGKILL" not in text, text
    assert "SHUTDOWN guest=true" not in text, f"the guest acted on the power button:\n{text}"


# --------------------------------------------------------------------------------------------
# 3. the daemon: crash -> restart with back-off; guest poweroff stays off; crash-loop


@pytest.mark.guest
def test_daemon_restarts_crashes_not_poweroffs_and_backs_off(env: Env, guest: Guest) -> None:
    """Under restart='on-failure', with the daemon running, three VMs at once.

    * crashy: SIGKILL of QEMU -> status `crashed` within 1 s -> restarted 1 s later (new pid,
      restarts=1) and the guest boots again;
    * quitter: the guest powers itself off -> `stopped`, and stays so (no restart in 5 s);
    * broken: QEMU can never start -> attempts 1 s, 2 s, 4 s apart, `crash-loop` with
      `next_retry_at`; the daemon sleeps while it waits (no busy loop).
    """
    env.write("crashy", guest_xml("crashy", guest))
    env.write("quitter", guest_xml("quitter", guest, cmdline=guest.cmdline(poweroff_after=1)))
    env.write("broken", broken_xml("broken"))
    daemon = env.start_daemon()
    t0 = time.monotonic()

    # -- crashy: SIGKILL -> crashed within 1 s -> restart after the 1 s back-off
    first = env.wait_status("crashy", lambda s: s["state"] == "running" and s["pid"], 30,
                            "running")
    old_pid = first["pid"]
    env.wait_ready("crashy")
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    crashed = env.wait_status("crashy", lambda s: s["state"] == "crashed", 5, "crashed",
                              interval=0.01)
    latency = time.monotonic() - killed
    assert latency < 1.0, f"status said crashed {latency:.2f}s after the SIGKILL"
    assert crashed["pid"] is None and crashed["next_retry_at"], crashed
    assert "killed" in (crashed["reason"] or ""), crashed
    restarted = env.wait_status(
        "crashy", lambda s: s["state"] == "running" and s["pid"] not in (None, old_pid), 15,
        "running again with a new pid")
    assert restarted["restarts"] == 1, restarted
    assert alive(restarted["pid"]) and not alive(old_pid)
    lines = lifecycle(env.vm_log("crashy"))
    text = "\n".join(t for _, t in lines)
    died = first_index(lines, r"^exited signal=SIGKILL kind=crash$")
    again = first_index(lines, r"^starting: ", died)
    assert 0 <= died < again, text
    backoff = lines[again][0] - lines[died][0]
    assert 0.99 <= backoff <= 1.75, f"restart {backoff:.3f}s after the crash, not 1 s:\n{text}"
    assert sum(1 for _, t in lines if t.startswith("starting: ")) == 2, text

    # -- quitter: powered itself off, stays stopped (on-failure does not restart a poweroff)
    off = env.wait_status("quitter", lambda s: s["state"] == "stopped" and s["reason"], 30,
                          "stopped after the guest's poweroff")
    assert "powered itself off" in off["reason"], off
    lines = lifecycle(env.vm_log("quitter"))
    text = "\n".join(t for _, t in lines)
    assert first_index(lines, r"^event SHUTDOWN guest=true reason=guest-shutdown$") >= 0, text
    exited = first_index(lines, r"^exited status=0 kind=poweroff$")
    assert exited >= 0, text
    quitter_exit = lines[exited][0]
    assert "poweroff_after: powering off" in env.console("quitter")

    # -- broken: attempts 1 s, 2 s, 4 s apart; crash-loop with next_retry_at
    def broken_exits() -> list[float]:
        return [t for t, line in lifecycle(env.vm_log("broken")) if line.startswith("exited ")]

    def crash_loop() -> tuple[dict[str, Any], list[float]] | None:
        """A crash-loop status together with the failures it accounts for (read consistently)."""
        before = broken_exits()
        st = env.status("broken")
        after = broken_exits()
        if st is None or st["state"] != "crash-loop" or before != after:
            return None
        return st, after

    def more_failures_than(n: int) -> Callable[[], bool]:
        return lambda: len(broken_exits()) > n

    loop, exits = env.wait("broken: crash-loop", crash_loop, 20, "broken")
    assert len(exits) >= 3, env.vm_log("broken")
    assert loop["next_retry_at"] and loop["pid"] is None, loop
    assert "failed to start" in (loop["reason"] or ""), loop
    assert "nonexistent" in (loop["reason"] or ""), loop  # QEMU's own words
    expected = exits[-1] + 2.0 ** (len(exits) - 1)
    assert abs(epoch(loop["next_retry_at"]) - expected) < 0.5, (loop, exits)

    def four_failures() -> list[tuple[float, str]] | None:
        lines = lifecycle(env.vm_log("broken"))
        return lines if sum(1 for _, t in lines if t.startswith("exited ")) >= 4 else None

    lines = env.wait("broken: a 4th failed start", four_failures, 20, "broken")
    text = "\n".join(t for _, t in lines)
    starts = [t for t, line in lines if line.startswith("starting: ")]
    exits = [t for t, line in lines if line.startswith("exited ")]
    for k, delay in enumerate((1.0, 2.0, 4.0)):
        after_exit = starts[k + 1] - exits[k]
        assert delay - 0.01 <= after_exit <= delay + 0.75, (
            f"attempt {k + 2} came {after_exit:.3f}s after failure {k + 1}, not {delay:g}s:\n{text}")
        apart = starts[k + 1] - starts[k]
        assert delay <= apart <= delay + 1.5, (
            f"attempts {k + 1} and {k + 2} are {apart:.3f}s apart, expected ~{delay:g}s:\n{text}")

    # -- no busy loop: while the next retry is seconds away and nothing else happens, the daemon
    #    sleeps (few context switches: a pass every 50 ms would make hundreds)
    while True:
        loop, exits = env.wait("broken: crash-loop", crash_loop, 20, "broken")
        if epoch(loop["next_retry_at"]) - time.time() >= 3.0:
            break
        env.wait("broken: the next attempt", more_failures_than(len(exits)), 20, "broken")
    time.sleep(0.5)  # let the passes that follow a failure (debounced file events) finish
    cpu0, sw0 = cpu_and_switches(daemon.pid)
    time.sleep(2.0)
    cpu1, sw1 = cpu_and_switches(daemon.pid)
    assert cpu1 - cpu0 <= 0.1 and sw1 - sw0 <= 20, (
        f"the daemon used {cpu1 - cpu0:.2f}s CPU and {sw1 - sw0} context switches in 2 s idle\n"
        f"{env.diagnostics()}")
    assert broken_exits() == exits, "a retry came early"

    # -- quitter, 5 s after its exit: still stopped, never restarted
    time.sleep(max(0.0, quitter_exit + 5.0 - time.time()))
    still = env.status("quitter")
    assert still is not None and still["state"] == "stopped" and still["pid"] is None, still
    assert still["restarts"] == 0 and still["next_retry_at"] is None, still
    runs = [t for _, t in lifecycle(env.vm_log("quitter")) if t.startswith("starting: ")]
    assert len(runs) == 1, env.vm_log("quitter")
    assert not env.runtime_dir("quitter").exists()

    # -- the restarted crashy guest really boots again
    env.wait_ready("crashy", 2)
    assert daemon.poll() is None, env.diagnostics()
    print(f"\ncrashed after {latency * 1000:.0f} ms; restart back-off {backoff:.2f}s; "
          f"scenario {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------------------------------------
# 4. SIGKILL of the daemon: the next reconciler adopts every VM


@pytest.mark.guest
def test_new_daemon_adopts_vms_of_a_killed_one(env: Env, guest: Guest) -> None:
    """Three VMs keep running through a SIGKILL of the daemon; the next reconciler adopts them.

    First `reconcile --once`, then a new daemon: same pids, no restart, `adopted pid` in each VM
    log, and QMP works: `reconcile stop` makes each guest power itself off.
    """
    names = ("a1", "a2", "a3")
    for name in names:
        env.write(name, guest_xml(name, guest, shutdown_timeout=20))
    first = env.start_daemon()
    pids: dict[str, int] = {}
    for name in names:
        st = env.wait_status(name, lambda s: s["state"] == "running" and s["pid"], 30, "running")
        pids[name] = st["pid"]
    for name in names:
        env.wait_ready(name)

    first.kill()
    first.wait(timeout=10)
    assert all(alive(p) for p in pids.values()), "a VM died with its daemon"
    marks = {name: len(lifecycle(env.vm_log(name))) for name in names}

    def adoptions(name: str) -> int:
        return env.vm_log(name).count(f": adopted pid {pids[name]} (run state running)\n")

    # A one-shot pass adopts them (and lets go again when it exits, leaving them running).
    once = env.cli("--once")
    assert once.returncode == 0, once.stdout + once.stderr
    for name in names:
        assert re.search(rf"^{name}\s+running\s+running\s+{pids[name]}\s+0\b", once.stdout,
                         re.MULTILINE), once.stdout
        assert adoptions(name) == 1, env.vm_log(name)
        assert alive(pids[name])

    # So does a new daemon.
    second = env.start_daemon()
    for name in names:
        pid = pids[name]

        def adopted(name: str = name) -> bool:
            return adoptions(name) == 2

        def same(s: dict[str, Any], pid: int = pid) -> bool:
            return bool(s["state"] == "running" and s["pid"] == pid)

        env.wait(f"{name}: adopted by the new daemon", adopted, 15, name)
        st = env.wait_status(name, same, 5, "running with the same pid")
        assert st["restarts"] == 0, st
    daemon_log = env.daemons[-1][1]
    for name in names:
        # the VM log's line is written during the adoption, the daemon's just after it
        env.wait(f"{name}: the daemon says it adopted it",
                 lambda name=name: f"{name}: adopted running QEMU pid {pids[name]}"
                 in daemon_log.read_text(), 10, name)
        lines = lifecycle(env.vm_log(name))
        assert sum(1 for _, t in lines if t.startswith("starting: ")) == 1, env.vm_log(name)
        assert alive(pids[name])

    # QMP works through the adopted connections: each guest powers itself off when asked.
    stops = [subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--config-dir", str(env.config), "stop", name],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in names]
    for proc in stops:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "the running daemon applies it" in out, out
    for name in names:
        env.wait_status(name, lambda s: s["state"] == "stopped" and s["pid"] is None, 20,
                        "stopped")
        assert_graceful(env, name, since=marks[name])
        assert not alive(pids[name])
        assert not env.runtime_dir(name).exists()
    assert second.poll() is None, env.diagnostics()


# --------------------------------------------------------------------------------------------
# 5. a stale runtime folder naming a live process that is not QEMU


def test_stale_runtime_folder_cleaned_without_signalling_its_pid(env: Env) -> None:
    """The pidfile names a live `sleep`: a pass removes the folder and leaves `sleep` alone."""
    stale_uuid = str(uuidlib.uuid4())
    env.write("ghost", f"""<domain type='qemu'>
  <name>ghost</name>
  <uuid>{stale_uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='stopped'/></metadata>
</domain>
""")
    env.layout.ensure()
    folder = env.layout.vm_dir(stale_uuid)
    folder.mkdir(mode=0o700)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        (folder / "qemu.pid").write_text(f"{sleeper.pid}\n")
        (folder / "qmp.sock").write_text("")  # a leftover, not a socket
        result = env.cli("--once")
        assert result.returncode == 0, result.stdout + result.stderr
        assert not folder.exists(), os.listdir(folder)
        assert "removed stale runtime folder" in result.stderr, result.stderr
        assert "not qemu-system-*" in env.vm_log("ghost"), env.vm_log("ghost")
        time.sleep(0.2)  # a signal, had one been sent, would have acted by now
        assert sleeper.poll() is None, f"sleep was signalled: returncode {sleeper.returncode}"
        assert proc_state(sleeper.pid) in ("S", "R"), proc_state(sleeper.pid)
        st = env.status("ghost")
        assert st is not None and st["state"] == "stopped", st
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------------------
# 6. permission checks


@pytest.mark.parametrize("problem", ["group-writable", "other-owner"])
@pytest.mark.parametrize("command", [("--once",), (), ("start", "x")],
                         ids=["once", "daemon", "start"])
def test_unsafe_config_dir_is_refused(env: Env, problem: str, command: tuple[str, ...]) -> None:
    """A config dir others could tamper with is refused: exit 2, the path and the fix named."""
    if problem == "group-writable":
        os.chmod(env.config, 0o770)
        fix = f"chmod 0700 {env.config}"
    else:
        if os.geteuid() != 0:
            pytest.skip("chown to another uid needs root")
        os.chown(env.config, 12345, 12345)
        fix = f"chown {os.geteuid()} {env.config}"
    result = env.cli(*command, timeout=20)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(env.config) in result.stderr and fix in result.stderr, result.stderr
    assert not (env.config / "run").exists(), "created state inside a refused directory"
