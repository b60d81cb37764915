"""virtiofs for real: a virtiofsd beside a real QEMU, adopted by the next reconciler, gone with the VM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import model
from reconciler import sidecars
from reconciler.paths import Layout
from reconciler.process import read_cmdline
from tests.support.onevm import (
    helper_death_spares_qemu,
    interrupted_start,
    monitor,
    once,
    private_layout,
    wait_gone,
)

VIRTIOFSD = sidecars.virtiofsd_binary()
pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(not os.access(VIRTIOFSD, os.X_OK), reason="needs virtiofsd"),
              pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd's sandbox needs root")]

UUID = "5e1dca25-2222-4222-8333-444455556666"


def fs_xml(state: str, shared: Path) -> str:
    """A tiny q35 domain sharing `shared` as tag 'share'; no disk: the guest needn't boot."""
    return f"""<domain type='qemu'>
  <name>fsvm</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>64</memory>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <source dir='{shared}'/>
      <target dir='share'/>
    </filesystem>
  </devices>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='{state}' shutdown-timeout='1'/></metadata>
</domain>
"""


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A short private config dir; every virtiofsd and QEMU of it ends afterwards."""
    with private_layout("qdv") as made:
        yield made
        for pid in virtiofsds(made.config_dir):  # private_layout kills QEMU
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _procs(match: str, name: str, env: bool) -> list[int]:
    """Pids of processes called `name` that mention `match` in their argv (or environment)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = read_cmdline(int(entry))
        if not argv or Path(argv[0]).name != name:
            continue
        texts = sidecars.read_environ(int(entry)) if env else argv
        if any(match in t for t in texts):
            out.append(int(entry))
    return out


def virtiofsds(base: Path) -> list[int]:
    """Pids of the virtiofsds started for VMs under `base`, without their sandbox children.

    virtiofsd forks once into its namespaces; the child's parent is a virtiofsd too.
    """
    found = _procs(f"{sidecars.MARK}={base}/", Path(VIRTIOFSD).name, env=True)
    return [p for p in found if _parent(p) not in found]


def _parent(pid: int) -> int:
    """The parent pid of `pid` (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def qemus(base: Path) -> list[int]:
    """Pids of QEMUs whose command line names a path under `base`."""
    return _procs(f"{base}/", "qemu-system-x86_64", env=False)


def test_virtiofsd_is_started_adopted_and_stopped_with_its_vm(layout: Layout) -> None:
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    base = layout.config_dir
    shared = Path(tempfile.mkdtemp(prefix="qdv-sh,are", dir="/tmp"))  # a comma, escaped
    try:
        (config / "fsvm.xml").write_text(fs_xml("running", shared))
        assert once(layout) == "running"
        first = virtiofsds(base)
        assert len(first) == 1
        argv = read_cmdline(first[0])
        assert argv is not None and argv[0] == VIRTIOFSD
        escaped = str(shared).replace(",", "\\,")
        assert f"source={escaped}" in argv and any(a.startswith("--fd=") for a in argv)
        assert "failed to stat source" not in layout.log_file("fsvm").read_text()
        assert (layout.vm_dir(UUID) / "fs0-fs.sock").exists()
        assert (layout.vm_dir(UUID) / "fs0.sidecar.pid").read_text().strip() == str(first[0])
        peripherals = monitor(layout, "fsvm", {"execute": "qom-list",
                                       "arguments": {"path": "/machine/peripheral"}})
        assert {"name": "fs0", "type": "child<vhost-user-fs-pci>"} in \
            peripherals["return"]  # type: ignore[index]
        tag = monitor(layout, "fsvm", {"execute": "qom-get", "arguments": {
            "path": "/machine/peripheral/fs0/virtio-backend", "property": "tag"}})
        assert tag == {"return": "share"}
        [qemu] = qemus(base)

        assert once(layout) == "running"  # a new reconciler adopts QEMU and its virtiofsd
        assert virtiofsds(base) == first  # the same virtiofsd, no second one
        assert qemus(base) == [qemu]

        (config / "fsvm.xml").write_text(fs_xml("stopped", shared))
        assert once(layout).startswith("stopped")
        wait_gone(first[0])
        wait_gone(qemu)
        assert virtiofsds(base) == []
        assert not list(layout.vm_dir(UUID).glob("fs0*"))  # no pidfile or socket left behind
        assert "exited while QEMU runs" not in layout.log_file("fsvm").read_text()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_missing_virtiofsd_fails_the_start_cleanly(layout: Layout) -> None:
    """A `<binary path>` that does not exist: the start fails, saying so; no QEMU is left."""
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    xml = fs_xml("running", Path("/tmp")).replace(
        "<driver type='virtiofs'/>", "<driver type='virtiofs'/><binary path='/nonexistent/virtiofsd'/>")
    (config / "fsvm.xml").write_text(xml)
    state = once(layout)
    assert "/nonexistent/virtiofsd is not installed (Debian package qemu-system-common" in state, \
        state
    assert qemus(config) == [], state
    assert not layout.pidfile(UUID).exists(), state


def test_a_qemu_that_fails_to_start_takes_its_virtiofsd_with_it(layout: Layout) -> None:
    """QEMU refuses its disk after virtiofsd is up: the start fails, no virtiofsd is left."""
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    broken = fs_xml("running", Path("/tmp")).replace(
        "<devices>", "<devices><disk type='file' device='disk'>"
                     f"<source file='{config}/missing.img'/><target dev='vda' bus='virtio'/>"
                     "</disk>")
    (config / "fsvm.xml").write_text(broken)
    assert once(layout) != "running"
    log = layout.log_file("fsvm").read_text()
    assert "missing.img" in log  # QEMU did run and refuse it
    assert "Waiting for vhost-user socket connection" in log  # virtiofsd was up before it
    for pid in virtiofsds(config):
        wait_gone(pid)
    assert virtiofsds(config) == []


def test_a_dead_virtiofsd_is_logged_and_the_guest_keeps_running(layout: Layout) -> None:
    """virtiofsd killed under a running QEMU: the VM log says so; QEMU is not stopped for it."""
    layout.ensure()
    domain = model.parse(fs_xml("running", Path("/tmp")).encode()).domain
    assert domain is not None
    helper_death_spares_qemu(layout, UUID, domain, "fsvm", lambda: virtiofsds(layout.config_dir))


def test_a_missing_shared_folder_fails_the_start_and_says_so(layout: Layout) -> None:
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "fsvm.xml").write_text(fs_xml("running", config / "nowhere"))
    state = once(layout)
    assert f"the shared folder {config}/nowhere (<source dir>) is not a folder" in state, state
    assert qemus(config) == [] and virtiofsds(config) == []
    assert not layout.pidfile(UUID).exists()


@pytest.mark.parametrize("pidfile", [True, False])
def test_a_virtiofsd_left_by_an_interrupted_start_is_stopped_before_the_next(
        layout: Layout, pidfile: bool) -> None:
    """The reconciler killed after virtiofsd ran, before QEMU: never a second virtiofsd."""
    shared = Path(tempfile.mkdtemp(prefix="qdv-stray", dir="/tmp"))
    try:
        stray = interrupted_start(layout, UUID, fs_xml("running", shared), pidfile=pidfile)
        assert virtiofsds(layout.config_dir) == [stray]
        (layout.config_dir / "fsvm.xml").write_text(fs_xml("running", shared))
        assert once(layout) == "running"
        wait_gone(stray)
        (now,) = virtiofsds(layout.config_dir)
        assert now != stray
        assert once(layout) == "running"  # adopted with its own virtiofsd (and its child)
        assert virtiofsds(layout.config_dir) == [now]
        (layout.config_dir / "fsvm.xml").write_text(fs_xml("stopped", shared))
        assert once(layout).startswith("stopped")
        wait_gone(now)
        stray = interrupted_start(layout, UUID, fs_xml("running", shared), pidfile=pidfile)
        assert once(layout).startswith("stopped")  # its folder is stale: it goes with it
        wait_gone(stray)
        assert virtiofsds(layout.config_dir) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)
