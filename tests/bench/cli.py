"""How fast the read-only command line answers: `reconcile status` over 1,000 domains.

`bench_status()` writes a status.json of 1,000 domains (with `reconciler.status`'s own models, as
the daemon writes it) into a scratch config directory and times `reconcile status` as a
subprocess, start-up included (best and median of several runs; target 60 ms), with `--json`
too, beside a bare `python -c pass` (the interpreter's own start-up, which in a development venv
includes setuptools' editable-install finder), and prints how `virsh list --all` compares when
virsh is installed (its exit status too: without a libvirt daemon to talk to it fails fast,
which is still what it costs).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

from reconciler.paths import Layout
from reconciler.status import DomainStatus, FileError, StatusFile, iso

REPO = Path(__file__).resolve().parents[2]
STATUS_TARGET_MS = 60.0
RUNS = 15
COUNT = 1000


def write_status(config_dir: Path, count: int, now: float) -> Path:
    """Write a status.json of `count` domains under `config_dir` (a mix of states); its path."""
    layout = Layout.under(config_dir)
    layout.ensure()
    stamp = iso(now) or ""
    domains = []
    for i in range(count):
        name = f"vm{i:04d}"
        uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-bench-cli/{name}"))
        paths = layout.vm(name, uuid)
        running = i % 3 == 0
        errors = ((FileError(file=str(config_dir / f"{name}.xml"), line=7,
                             message="<vcpu>: '0' is too small; the minimum is 1"),)
                  if i % 50 == 7 else ())
        domains.append(DomainStatus(
            name=name, uuid=uuid, file=str(config_dir / f"{name}.xml"),
            desired="running" if running else "stopped",
            state="running" if running else ("invalid" if errors else "stopped"),
            pid=100000 + i if running else None,
            qmp=str(paths.qmp_socket) if running else None,
            console_log=str(paths.console_log), log=str(paths.log_file),
            started_at=stamp if running else None, restarts=i % 4,
            pending_restart=running and i % 9 == 0, errors=errors, updated_at=stamp))
    path = layout.status_dir / "status.json"
    model = StatusFile(updated_at=stamp, domains=tuple(domains))
    path.write_text(model.model_dump_json(indent=2) + "\n")
    return path


def _reconcile() -> list[str]:
    """The `reconcile` command of this checkout: the venv's script, else `python -m reconciler`."""
    script = Path(sys.executable).with_name("reconcile")
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler"]


def _env() -> dict[str, str]:
    """The environment for timed runs: bytecode may be cached, as in any installed program."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(argv: list[str], runs: int = RUNS) -> tuple[float, float, float, int]:
    """Best and median wall seconds and best CPU seconds of `runs` runs of `argv`; its exit.

    One untimed run first (it writes the bytecode cache); output is discarded.
    """
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                   check=False)
    walls, cpus = [], []
    code = 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=_env(), check=False).returncode
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(walls), statistics.median(walls), min(cpus), code


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_status() -> None:
    """Print the wall time of `reconcile status` (and `--json`) over 1,000 domains."""
    with tempfile.TemporaryDirectory(prefix="qemud-bench-cli-") as tmp:
        config = Path(tmp) / "conf"
        path = write_status(config, COUNT, time.time())
        size = path.stat().st_size
        base = [*_reconcile(), "--config-dir", str(config)]
        python = _time([sys.executable, "-c", "pass"])
        print(f"python start-up alone (python -c pass): {_ms(python[0])} wall best of {RUNS}, "
              f"median {_ms(python[1])}; CPU {_ms(python[2])}")
        for extra in ([], ["--json"]):
            best, median, cpu, code = _time([*base, "status", *extra])
            verdict = "met" if best < STATUS_TARGET_MS / 1000 else "NOT met"
            print(f"reconcile status {' '.join(extra)}".rstrip()
                  + f" ({COUNT} domains, {size / 1024:.0f} KiB status.json): {_ms(best)} wall "
                  f"best of {RUNS}, median {_ms(median)}; CPU {_ms(cpu)} ({_ms(cpu - python[2])}"
                  f" more than python alone); exit status {code}; target "
                  f"{STATUS_TARGET_MS:.0f} ms: {verdict}")
        # what an installed (not editable) reconcile costs: no finder in site; -S skips site
        # altogether, which an installed script would still run (a few ms)
        bare = [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from reconciler.cli import main; sys.exit(main(sys.argv[1:]))"]
        best, median, cpu, code = _time([*bare, "--config-dir", str(config), "status"])
        print(f"reconcile status without the editable-install finder (python -S, this checkout "
              f"on sys.path): {_ms(best)} wall best of {RUNS}, median {_ms(median)}; CPU "
              f"{_ms(cpu)}; exit status {code}")
        virsh = shutil.which("virsh")
        if virsh is not None:
            best, median, cpu, code = _time([virsh, "list", "--all"])
            print(f"virsh list --all (for comparison, this machine's libvirt): {_ms(best)} wall "
                  f"best of {RUNS}, median {_ms(median)}; CPU {_ms(cpu)}; exit status {code}"
                  + (" (no libvirt daemon answered)" if code else ""))
