"""Start latency: qemud's path from a pass to QMP `running`, against bare QEMU's floor.

`bench_start_latency()` measures, for 1 VM and for 10 VMs started in one pass (in parallel):

* qemud: `Reconciler.run_pass()` + `settle()` on a config dir of diskless, kernel-less domains
  (`type='qemu'`, TCG), from just before the pass until every VM's start has finished (QEMU
  spawned paused, QMP attached, `cont` answered: the guest runs); each VM's `query-status` is
  then checked to say `running` (not timed);
* the floor: the same number of bare ``qemu-system-x86_64 -S -nodefaults -display none
  -machine pc -accel tcg -m 64 -qmp unix:...`` processes launched by a minimal asyncio script,
  until each one's QMP greeting has been received (qemu.qmp connect).

Rounds alternate qemud and floor so background load hits both alike; medians are printed with
their ratio (target: qemud within 1.5x of the floor). Everything started is stopped, and any
leftover process mentioning the scratch directory is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

from qemu.qmp import QMPClient

from reconciler.loop import Reconciler
from reconciler.paths import Layout
from tests.support.procs import kill_mentioning

QEMU_BIN = "qemu-system-x86_64"
ROUNDS = 5
COUNTS = (1, 10)
TARGET_RATIO = 1.5


def _domain_xml(name: str) -> str:
    """A diskless domain with no kernel and no devices: QEMU starts and idles in firmware."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <metadata>
    <qemud:desired xmlns:qemud='urn:qemud:1' state='running' restart='never'/>
  </metadata>
</domain>
"""


async def _qemud_round(base: Path, count: int) -> float:
    """Seconds from the start of a pass until `count` VMs run; stops them again."""
    return await _timed_pass(_config(base, count), count)


async def _timed_pass(config: Path, count: int) -> float:
    """Seconds of one pass + settle over `config` until its `count` VMs run; stops them again."""
    rec = Reconciler(Layout.under(config), out=io.StringIO())
    rec.prepare()
    try:
        t0 = time.perf_counter()
        await rec.run_pass()
        await rec.settle()
        elapsed = time.perf_counter() - t0
        states = {vm.name: vm.handle.run_state if vm.handle else None for vm in rec.vms.values()}
        if len(states) != count or set(states.values()) != {"running"}:
            raise RuntimeError(f"not all VMs running: {states}; failures {rec.failures}")
        return elapsed
    finally:
        for vm in list(rec.vms.values()):
            with contextlib.suppress(Exception):
                if vm.handle is not None:
                    await vm.handle.stop(reason="bench", shutdown_timeout=0, graceful=False)
        await rec.detach_all()


async def _greet(sock: Path, proc: asyncio.subprocess.Process, timeout: float = 30.0
                 ) -> QMPClient:
    """Connect to a bare QEMU's QMP socket as soon as it accepts (polling every 5 ms).

    Like any careful client, it waits for the socket file before trying to connect.
    """
    deadline = time.monotonic() + timeout
    while True:
        if sock.exists():
            client = QMPClient("floor")
            try:
                await client.connect(str(sock))
                return client
            except Exception:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise
        elif proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"QEMU exited ({proc.returncode}) or never made {sock}")
        await asyncio.sleep(0.005)


async def _floor_round(base: Path, count: int, *, cont: bool = False) -> float:
    """Seconds from spawning `count` bare QEMUs until each one's QMP has greeted (and, with
    `cont`, each has answered `cont`: its guest runs); quits them."""
    socks = [base / f"f{count}-{i}.sock" for i in range(count)]
    procs: list[asyncio.subprocess.Process] = []
    clients: list[QMPClient] = []
    try:
        t0 = time.perf_counter()
        procs = list(await asyncio.gather(*(
            asyncio.create_subprocess_exec(
                QEMU_BIN, "-S", "-nodefaults", "-display", "none", "-machine", "pc",
                "-accel", "tcg", "-m", "64", "-qmp", f"unix:{sock},server=on,wait=off",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            for sock in socks)))
        clients = list(await asyncio.gather(*(_greet(s, p) for s, p in zip(socks, procs,
                                                                            strict=True))))
        if cont:
            await asyncio.gather(*(c.execute("cont") for c in clients))
        return time.perf_counter() - t0
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.execute("quit")
            with contextlib.suppress(Exception):
                await client.disconnect()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for sock in socks:
            sock.unlink(missing_ok=True)


def bench_start_latency() -> None:
    """Print qemud's start -> QMP running latency for 1 and 10 VMs beside bare QEMU's floor."""
    if shutil.which(QEMU_BIN) is None:
        print(f"start latency: skipped ({QEMU_BIN} not installed)")
        return
    # A short path: QMP socket paths must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="qdb", dir="/tmp"))
    os.chmod(base, 0o700)
    results: dict[int, tuple[list[float], list[float]]] = {}
    try:
        for count in COUNTS:
            ours: list[float] = []
            floor: list[float] = []
            for _ in range(ROUNDS):
                floor.append(asyncio.run(_floor_round(base, count)))
                ours.append(asyncio.run(_qemud_round(base, count)))
            results[count] = (ours, floor)
    finally:
        leftovers = kill_mentioning(f"{base}/")
        shutil.rmtree(base, ignore_errors=True)
    print(f"start latency: start -> QMP running (median of {ROUNDS}, rounds alternate); "
          "floor: bare QEMU until its QMP greets")
    for count, (ours, floor) in results.items():
        med, fmed = statistics.median(ours), statistics.median(floor)
        ratio = med / fmed
        verdict = "ok" if ratio <= TARGET_RATIO else f"OVER the {TARGET_RATIO}x target"
        label = f"{count} VM" + ("s in one pass" if count > 1 else "")
        print(f"  {label:<18} qemud {med * 1000:7.1f} ms   floor {fmed * 1000:7.1f} ms   "
              f"ratio {ratio:4.2f}x ({verdict})   "
              f"[qemud {', '.join(f'{x * 1000:.0f}' for x in ours)} ms; "
              f"floor {', '.join(f'{x * 1000:.0f}' for x in floor)} ms]")
    if leftovers:
        print(f"  warning: killed leftover processes {leftovers}")


if __name__ == "__main__":
    bench_start_latency()


# ------------------------------------------------------------------ 20 VMs in one --once


ONCE_COUNT = 20
ONCE_ROUNDS = 3
TARGET_WHOLE = 2.0
"""Target: `reconcile --once` of 20 VMs (a whole process) within 2x of 20 bare QEMUs + `cont`."""
TARGET_INPROC = 1.3
"""Target: the same pass in process within 1.3x of that floor."""
SLOW_CALLBACK = 0.005
"""Nothing may block the event loop for longer than this during a pass (asyncio debug)."""


def _config(base: Path, count: int) -> Path:
    """A fresh config dir with `count` light domains that want to run."""
    config = base / f"o{count}-{time.monotonic_ns()}"
    config.mkdir(mode=0o700)
    for i in range(count):
        (config / f"b{i:02d}.xml").write_text(_domain_xml(f"b{i:02d}"))
    return config


def _whole_process(base: Path, count: int) -> float:
    """Wall seconds of `reconcile --config-dir D --once` bringing `count` VMs to running."""
    config = _config(base, count)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "reconciler", "--config-dir", str(config),
                          "--once"], capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"reconcile --once failed ({out.returncode}): {out.stderr[-2000:]}")
    kill_mentioning(f"{config}/")
    return took


class _SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's "Executing ... took N seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.took: list[float] = []
        self.what: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the duration (and the callback's description) of each slow callback."""
        message = record.getMessage()
        found = re.search(r"took ([0-9.]+) seconds", message)
        if found:
            self.took.append(float(found.group(1)))
            self.what.append((float(found.group(1)), message))


@contextlib.contextmanager
def _callback_cpu(found: list[tuple[float, float, str]]) -> Iterator[None]:
    """Record (CPU s, wall s, callback) of every event-loop callback that used over 1 ms of CPU.

    asyncio debug mode times callbacks in wall-clock time, which also counts the time the loop
    thread was descheduled (20 QEMUs starting on 2 cores); the loop thread's own CPU time says
    what our code blocked it for.
    """
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        """Run one callback, measuring it."""
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            original(handle)
        finally:
            used = time.thread_time() - cpu
            if used > 0.001:
                found.append((used, time.perf_counter() - wall, repr(handle)[:150]))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


def _in_process(base: Path, count: int, *, debug: bool,
                slowest: list[tuple[float, str]] | None = None) -> tuple[float, list[float]]:
    """Seconds of one pass + settle for `count` VMs in process, and the slow callbacks seen."""
    config = _config(base, count)
    slow = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(slow)
    try:
        async def go() -> float:
            """Run the pass (with the loop in debug mode when asked)."""
            loop = asyncio.get_running_loop()
            if debug:
                loop.set_debug(True)
                loop.slow_callback_duration = SLOW_CALLBACK
            return await _timed_pass(config, count)
        took = asyncio.run(go())
    finally:
        logger.removeHandler(slow)
        kill_mentioning(f"{config}/")
    if slowest is not None:
        slowest.extend(sorted(slow.what, reverse=True)[:3])
    return took, slow.took


def bench_once20() -> None:
    """Print 20 VMs brought up by one `reconcile --once` (whole process and in process) beside
    20 bare QEMUs launched at once and resumed, and the event loop's slowest callback."""
    if shutil.which(QEMU_BIN) is None:
        print(f"20 VMs: skipped ({QEMU_BIN} not installed)")
        return
    base = Path(tempfile.mkdtemp(prefix="qdo", dir="/tmp"))
    os.chmod(base, 0o700)
    floor: list[float] = []
    whole: list[float] = []
    inproc: list[float] = []
    try:
        for _ in range(ONCE_ROUNDS):
            floor.append(asyncio.run(_floor_round(base, ONCE_COUNT, cont=True)))
            whole.append(_whole_process(base, ONCE_COUNT))
            inproc.append(_in_process(base, ONCE_COUNT, debug=False)[0])
        slowest: list[tuple[float, str]] = []
        _, slow = _in_process(base, ONCE_COUNT, debug=True, slowest=slowest)
        cpu: list[tuple[float, float, str]] = []
        with _callback_cpu(cpu):
            _in_process(base, ONCE_COUNT, debug=False)
    finally:
        kill_mentioning(f"{base}/")
        shutil.rmtree(base, ignore_errors=True)
    fmed = statistics.median(floor)
    print(f"{ONCE_COUNT} VMs in one pass (median of {ONCE_ROUNDS}); floor: {ONCE_COUNT} bare QEMUs "
          f"launched at once, QMP greeted, cont: {fmed * 1000:.0f} ms")
    for label, values, target in (("reconcile --once (process)", whole, TARGET_WHOLE),
                                  ("run_pass+settle (in process)", inproc, TARGET_INPROC)):
        med = statistics.median(values)
        ratio = med / fmed
        verdict = "ok" if ratio <= target else f"OVER the {target}x target"
        print(f"  {label:<29} {med * 1000:7.0f} ms   ratio {ratio:4.2f}x ({verdict})   "
              f"[{', '.join(f'{x * 1000:.0f}' for x in values)} ms]")
    worst = max(slow, default=0.0)
    verdict = "ok" if worst <= SLOW_CALLBACK else f"OVER the {SLOW_CALLBACK * 1000:.0f} ms target"
    print(f"  event loop: {len(slow)} callbacks over {SLOW_CALLBACK * 1000:.0f} ms during a "
          f"{ONCE_COUNT}-VM pass (asyncio debug), slowest {worst * 1000:.1f} ms ({verdict})")
    for took, what in slowest:
        print(f"    {took * 1000:5.1f} ms  {what[:150]}")
    cpu.sort(reverse=True)
    worst_cpu = cpu[0][0] if cpu else 0.0
    verdict = "ok" if worst_cpu <= SLOW_CALLBACK else f"OVER the {SLOW_CALLBACK * 1000:.0f} ms target"
    print(f"  event loop, CPU time of the loop thread per callback (what our code blocks it for): "
          f"{sum(1 for c in cpu if c[0] > SLOW_CALLBACK)} over {SLOW_CALLBACK * 1000:.0f} ms, "
          f"slowest {worst_cpu * 1000:.1f} ms ({verdict})")
    for used, wall, what in cpu[:3]:
        print(f"    {used * 1000:5.1f} ms CPU ({wall * 1000:5.1f} ms wall)  {what}")
