"""`python -m tests.bench [--count N] [NAME ...]`: print qemud's performance figures.

Every benchmark is a function without arguments that prints plain lines (a figure, a number and
its unit); add one by writing such a function (here or in a sibling module, like
`tests.bench.loop.bench_loop`) and listing it in `BENCHES`. Benchmarks that need domain files call
`workspace()`: `--count` generated files (`tests.support.domains.write_domains`, seeded, valid),
written once per run into a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import model
from tests.bench.cli import bench_status
from tests.bench.corpus import bench_corpus
from tests.bench.lifecycle import bench_once20, bench_start_latency
from tests.bench.loop import bench_loop
from tests.support.domains import write_domains

ROOT = Path(__file__).resolve().parents[2]
PARSE_TARGET_S = 1.0
"""Target: reading, parsing and validating 1,000 domain files takes under a second."""


@dataclass(frozen=True)
class Workspace:
    """What benchmarks share: a directory of generated domain files."""

    directory: Path
    files: list[Path]


_OPTIONS = {"count": 1000}
"""The shared workspace's knobs (`--count`)."""
_SCRATCH = contextlib.ExitStack()
_WORKSPACE: list[Workspace] = []


def workspace() -> Workspace:
    """The run's generated domain files, written (and timed) on first use."""
    if not _WORKSPACE:
        tmp = Path(_SCRATCH.enter_context(tempfile.TemporaryDirectory(prefix="qemud-bench-")))
        start = time.perf_counter()
        files = write_domains(tmp / "domains", _OPTIONS["count"], seed=0)
        took = time.perf_counter() - start
        size = sum(p.stat().st_size for p in files)
        print(f"generate+write {len(files)} domain files: {_ms(took)} "
              f"({size / len(files) / 1024:.1f} KiB average)")
        _WORKSPACE.append(Workspace(tmp / "domains", files))
    return _WORKSPACE[0]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_parse() -> None:
    """Read + parse + validate every file in this process (`model.parse_file`), 5 passes.

    Wall and CPU time are both printed: CPU time is what the parser costs even when other
    processes share the machine; the target is judged on the best pass's wall time.
    """
    ws = workspace()
    n = len(ws.files)
    walls, cpus = [], []
    for _ in range(5):
        start, cpu = time.perf_counter(), time.process_time()
        for path in ws.files:
            model.parse_file(path)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    best, median = min(walls), statistics.median(walls)
    target = PARSE_TARGET_S * n / 1000
    verdict = "met" if best < target else "NOT met"
    print(f"parse+validate {n} files, one process, first pass: {_ms(walls[0])} wall "
          f"({n / walls[0]:.0f} files/s)")
    print(f"parse+validate {n} files, one process, best of {len(walls)}: {_ms(best)} wall "
          f"({n / best:.0f} files/s); median {_ms(median)} ({n / median:.0f} files/s)")
    print(f"parse+validate {n} files, CPU time: best {_ms(min(cpus))}, median "
          f"{_ms(statistics.median(cpus))} ({min(cpus) / n * 1e6:.0f} us per file)")
    print(f"target: 1,000 files in under {PARSE_TARGET_S:.0f} s (scaled to {n}: "
          f"{_ms(target)}): {verdict}")


def _reconcile() -> list[str]:
    """The `reconcile` command of this checkout: the venv's script, else `python -m reconciler`."""
    script = Path(sys.executable).with_name("reconcile")
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler"]


def bench_validate_cli() -> None:
    """Wall time of one `reconcile validate DIR` subprocess over all files (start-up included)."""
    ws = workspace()
    argv = [*_reconcile(), "validate", str(ws.directory)]
    walls, cpus = [], []
    done = None
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    assert done is not None
    print(f"reconcile validate <dir> ({len(ws.files)} files), one subprocess: "
          f"{_ms(min(walls))} wall best of {len(walls)}, median {_ms(statistics.median(walls))}; "
          f"CPU {_ms(min(cpus))}; exit status {done.returncode}")
    if done.returncode != 0:
        print(f"  stderr: {done.stderr.decode(errors='replace')[-500:]}")


BENCHES: list[Callable[[], None]] = [bench_parse, bench_validate_cli, bench_status, bench_loop,
                                     bench_start_latency, bench_once20, bench_corpus]
"""Run in this order; later benchmarks (process start latency, scan passes) go here too."""


def main(argv: list[str] | None = None) -> int:
    """Generate the workspace, run the selected benchmarks, clean up."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="domain files to generate")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all): "
                        + ", ".join(b.__name__.removeprefix("bench_") for b in BENCHES))
    args = parser.parse_args(argv)
    names = {b.__name__.removeprefix("bench_") for b in BENCHES}
    unknown = set(args.names) - names
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(sorted(names))}")
    _OPTIONS["count"] = args.count
    # the generated domains use libvirt's 'default' network: resolve it as the tests do
    os.environ.setdefault("QEMUD_LIBVIRT_NETWORKS",
                          str(Path(__file__).resolve().parents[1] / "data" / "libvirt-networks"))
    chosen = [b for b in BENCHES if not args.names or b.__name__.removeprefix("bench_") in args.names]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f}")
    with _SCRATCH:
        for bench in chosen:
            bench()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
