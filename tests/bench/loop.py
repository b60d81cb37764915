"""The reconciler loop's costs: scanning, reacting to a write, and the daemon's memory.

`bench_loop()` prints:

* a scan (`Scanner.scan()`) over 1,000 and 10,000 unchanged files, after a first warm pass
  (median of several; targets 20 ms and 200 ms), and a full in-process pass (scan + plan +
  status publish) over 1,000 unchanged stopped domains;
* a cold scan over 1,000 new files (every file parsed);
* with the daemon running (`python -m reconciler`, a subprocess with real inotify): the latency
  from renaming a new diskless `state='running'` file into place (an editor's completed save,
  which wakes a pass at once: no debounce) to QEMU's exec, median of 10 writes (target 20 ms).
  The exec time is the VM log's ``started pid N`` line, which the daemon writes as soon as the
  spawn has returned (that is, after the child's exec); the pid is checked in
  /proc to be a QEMU with the domain's uuid;
* the daemon's resident memory (VmRSS, and VmHWM, its peak) with 1,000 domains defined, all
  `state='stopped'`, once it has published all of them (target 100 MB).

Domains come from `tests.support.domains.write_domains` (realistic random ones) when that module is
there, else from a simple built-in template. Everything runs in a scratch directory under /tmp,
and every process mentioning it is killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import model
from reconciler.loop import Reconciler
from reconciler.paths import Layout
from reconciler.scan import Scanner
from tests.support.procs import kill_mentioning

REPO = Path(__file__).resolve().parents[2]
REPEATS = 7
WRITES = 10
TARGETS_MS = {1_000: 20.0, 10_000: 200.0}
LATENCY_TARGET_MS = 20.0
RSS_TARGET_MB = 100.0


def _simple_xml(name: str, state: str) -> str:
    """A small valid diskless domain (no kernel: QEMU idles in the BIOS)."""
    uuid = uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-bench-loop/{name}")
    return (f"<domain type='qemu'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n"
            f"  <memory unit='MiB'>32</memory>\n"
            f"  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
            f"  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='{state}' "
            f"shutdown-timeout='1'/></metadata>\n</domain>\n")


def _write_many(directory: Path, count: int, *, stopped: bool = False) -> str:
    """Write `count` domain files; return where they came from (for the printout)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        from tests.support import domains
    except ImportError:
        domains = None  # type: ignore[assignment]
    if domains is not None and hasattr(domains, "random_domain") and stopped:
        rng = random.Random(1)
        for i in range(count):
            dom = domains.random_domain(rng, i)
            dom = dom.model_copy(update={"desired": dom.desired.model_copy(
                update={"state": "stopped"})})
            (directory / f"{dom.name}.xml").write_bytes(model.to_xml(dom))
        return "tests.support.domains.random_domain, all set to stopped"
    if domains is not None and hasattr(domains, "write_domains") and not stopped:
        domains.write_domains(directory, count, seed=1)
        return "tests.support.domains.write_domains"
    for i in range(count):
        name = f"vm-{i:05d}"
        (directory / f"{name}.xml").write_text(_simple_xml(name, "stopped"))
    return "built-in template"


def _median_ms(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, list[float]]:
    """Run `fn` `repeats` times; return the median and all timings in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), times


def _verdict(value: float, target: float) -> str:
    return "ok" if value < target else f"OVER the {target:g} target"




# ------------------------------------------------------------------------------------------ scans


def _bench_scans(base: Path) -> None:
    for count, target in TARGETS_MS.items():
        directory = base / f"scan{count}"
        source = _write_many(directory, count)
        scanner = Scanner(directory)
        cold = scanner.scan()
        assert len(cold.domains) + len(cold.conflicts) + len(cold.invalid) == count
        med, times = _median_ms(scanner.scan)
        assert scanner.scan().parsed == 0
        print(f"  {f'scan {count:,} unchanged files':<32}median {med:7.2f} ms   (target < {target:g} ms:"
              f" {_verdict(med, target)})   [{', '.join(f'{t:.1f}' for t in times)}]   "
              f"({source})")
        if count == 1_000:
            colds = []
            for _ in range(3):
                fresh = Scanner(directory)
                start = time.perf_counter()
                result = fresh.scan()
                colds.append((time.perf_counter() - start) * 1000)
                assert result.parsed == count
            print(f"  {f'cold scan {count:,} new files':<32}median {statistics.median(colds):7.1f} ms   "
                  f"({statistics.median(colds) / count * 1000:.0f} us a file; "
                  f"[{', '.join(f'{t:.0f}' for t in colds)}])")
        shutil.rmtree(directory)


def _bench_full_pass(base: Path) -> None:
    """An in-process `run_pass()` (scan + plan + publish) over 1,000 unchanged stopped domains."""
    config = base / "pass"
    _write_many(config, 1_000, stopped=True)
    rec = Reconciler(Layout.under(config), out=io.StringIO())
    rec.prepare()

    async def measure() -> tuple[float, list[float]]:
        await rec.run_pass()
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            await rec.run_pass()
            times.append((time.perf_counter() - start) * 1000)
        assert not rec.vms
        return statistics.median(times), times

    med, times = asyncio.run(measure())
    print(f"  {'full pass 1,000 unchanged':<32}median {med:7.2f} ms   (scan + plan + status publish,"
          f" stopped domains)   [{', '.join(f'{t:.1f}' for t in times)}]")
    shutil.rmtree(config)


# ------------------------------------------------------------------------------------------ daemon


def _start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--config-dir", str(config), "--resync", "300"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 30
    while "reconcile: watching" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.01)
    return proc


def _log_stamp(line: str) -> float:
    """The wall-clock time of a VM log line (`2026-11-25 15:30:00.123+0000: ...`)."""
    return datetime.strptime(line[:28], "%Y-%m-%d %H:%M:%S.%f%z").timestamp()


def _bench_latency(base: Path) -> None:
    config = base / "lat"
    config.mkdir(mode=0o700)
    layout = Layout.under(config)
    proc = _start_daemon(config, base / "lat-daemon.log")
    latencies: list[float] = []
    try:
        time.sleep(0.3)
        for i in range(WRITES):
            name = f"lat{i}"
            uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-bench-loop/{name}"))
            tmp = config / f".{name}.xml.tmp"
            tmp.write_text(_simple_xml(name, "running"))
            written = time.time()
            tmp.rename(config / f"{name}.xml")
            log = layout.log_file(name)
            deadline = time.monotonic() + 20
            line = None
            while line is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} was not started within 20 s")
                time.sleep(0.005)
                with contextlib.suppress(FileNotFoundError):
                    line = next((x for x in log.read_text().splitlines() if ": started pid " in x),
                                None)
            pid = int(line.rsplit(" ", 1)[1])
            # posix_spawn returns once the child's old memory is released, a moment before
            # the kernel has set up the new program's arguments: its cmdline may read empty
            cmdline = b""
            for _ in range(200):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if cmdline:
                    break
                time.sleep(0.005)
            assert uuid.encode() in cmdline and b"qemu-system" in cmdline, cmdline
            latencies.append((_log_stamp(line) - written) * 1000)
            time.sleep(0.4)  # let the start finish: each write meets an idle daemon
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        kill_mentioning(str(config))
    med = statistics.median(latencies)
    print(f"  {'write -> QEMU exec (daemon)':<32}median {med:7.1f} ms   (target < "
          f"{LATENCY_TARGET_MS:g} ms: {_verdict(med, LATENCY_TARGET_MS)}; a completed save "
          f"is not debounced)   [{', '.join(f'{x:.0f}' for x in latencies)}]")


def _proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _bench_rss(base: Path) -> None:
    config = base / "rss"
    source = _write_many(config, 1_000, stopped=True)
    status = Layout.under(config).status_dir / "status.json"
    started = time.monotonic()
    proc = _start_daemon(config, base / "rss-daemon.log")
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(FileNotFoundError):
                if status.read_bytes().count(b'"state": "stopped"') >= 1_000:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the daemon did not publish 1,000 domains")
            time.sleep(0.02)
        settled = time.monotonic() - started
        time.sleep(1.0)
        rss = _proc_status_kb(proc.pid, "VmRSS") / 1024
        peak = _proc_status_kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        kill_mentioning(str(config))
    print(f"  {'daemon RSS, 1,000 stopped':<32}VmRSS {rss:6.1f} MB   (target < {RSS_TARGET_MB:g} MB: "
          f"{_verdict(rss, RSS_TARGET_MB)}; peak VmHWM {peak:.1f} MB; start to all published "
          f"{settled:.1f} s incl. interpreter start)   ({source})")


def bench_loop() -> None:
    """Print the reconciler loop's scan times, write-to-exec latency and daemon memory."""
    base = Path(tempfile.mkdtemp(prefix="qdbl", dir="/tmp"))
    os.chmod(base, 0o700)
    print("reconciler loop:")
    try:
        _bench_scans(base)
        _bench_full_pass(base)
        if shutil.which("qemu-system-x86_64") is None:
            print("  write -> QEMU exec: skipped (qemu-system-x86_64 not installed)")
        else:
            _bench_latency(base)
        _bench_rss(base)
    finally:
        leftovers = kill_mentioning(str(base))
        shutil.rmtree(base, ignore_errors=True)
    if leftovers:
        print(f"  warning: killed leftover processes {leftovers}")


if __name__ == "__main__":
    bench_loop()
