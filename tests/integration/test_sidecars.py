"""Sidecars for real: swtpm beside a real QEMU, adopted by the next reconciler, gone with the VM."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import model
from reconciler import sidecars
from reconciler.loop import Reconciler
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

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(shutil.which("swtpm") is None, reason="needs swtpm")]

UUID = "5e1dca25-1111-4222-8333-444455556666"


def tpm_xml(state: str) -> str:
    """A tiny q35 domain with a TPM 2.0 CRB device; no disk: the guest needn't boot."""
    return f"""<domain type='qemu'>
  <name>tpmvm</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm></devices>
  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='{state}' shutdown-timeout='1'/></metadata>
</domain>
"""


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A short private config dir; every process mentioning it dies afterwards."""
    with private_layout("qds") as made:
        yield made


def swtpms(state: Path) -> list[int]:
    """Pids of swtpm processes whose command line names `state`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = read_cmdline(int(entry))
            if argv and Path(argv[0]).name == "swtpm" and any(str(state) in a for a in argv):
                out.append(int(entry))
    return out


def test_swtpm_is_started_adopted_and_stopped_with_its_vm(layout: Layout) -> None:
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "tpmvm.xml").write_text(tpm_xml("running"))
    assert once(layout) == "running"
    tpm_state = layout.state_dir(UUID) / "tpm"
    assert (tpm_state / "tpm2-00.permall").exists()
    assert (tpm_state.stat().st_mode & 0o777) == 0o700
    first = swtpms(tpm_state)
    assert len(first) == 1
    assert (layout.vm_dir(UUID) / "tpm0-swtpm.sock").exists()
    reply = monitor(layout, "tpmvm", "query-tpm")
    assert reply == {"return": [{"model": "tpm-crb", "id": "tpm-tpm0",
                                 "options": {"type": "emulator",
                                             "data": {"chardev": "chrtpm"}}}]}
    permall = (tpm_state / "tpm2-00.permall").stat().st_ino

    assert once(layout) == "running"  # a new reconciler adopts QEMU and its swtpm
    assert swtpms(tpm_state) == first  # the same swtpm, no second one

    (config / "tpmvm.xml").write_text(tpm_xml("stopped"))
    assert once(layout).startswith("stopped")
    wait_gone(first[0])
    assert swtpms(tpm_state) == []
    assert (tpm_state / "tpm2-00.permall").stat().st_ino == permall  # state kept
    assert not list(layout.vm_dir(UUID).glob("tpm0*"))  # no pidfile or socket left behind
    assert "exited while QEMU runs" not in layout.log_file("tpmvm").read_text()

    (config / "tpmvm.xml").write_text(tpm_xml("running"))
    assert once(layout) == "running"  # started again on the same state, never overwritten
    assert (tpm_state / "tpm2-00.permall").stat().st_ino == permall
    (config / "tpmvm.xml").write_text(tpm_xml("stopped"))
    assert once(layout).startswith("stopped")


def test_a_missing_swtpm_fails_the_start_cleanly(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "tpmvm.xml").write_text(tpm_xml("running"))
    monkeypatch.setenv("PATH", "/nonexistent")
    result = asyncio.run(Reconciler(layout, out=io.StringIO()).once())
    status = result.statuses[0]
    assert status.state != "running"
    assert "swtpm is not installed" in (status.reason or ""), status
    assert not layout.pidfile(UUID).exists()


def test_a_dead_swtpm_is_logged_and_the_guest_keeps_running(layout: Layout) -> None:
    """swtpm killed under a running QEMU: the VM log says so; QEMU is not stopped for it."""
    layout.ensure()
    domain = model.parse(tpm_xml("running").encode()).domain
    assert domain is not None
    helper_death_spares_qemu(layout, UUID, domain, "tpmvm",
                             lambda: swtpms(layout.state_dir(UUID) / "tpm"))


def test_a_qemu_that_fails_to_start_takes_its_swtpm_with_it(layout: Layout) -> None:
    """QEMU refuses its disk after swtpm is up: the start fails and no swtpm is left behind."""
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    broken = tpm_xml("running").replace(
        "<devices>", "<devices><disk type='file' device='disk'>"
                     f"<source file='{config}/missing.img'/><target dev='vda' bus='virtio'/>"
                     "</disk>")
    (config / "tpmvm.xml").write_text(broken)
    assert once(layout) != "running"
    assert "missing.img" in layout.log_file("tpmvm").read_text()  # QEMU did run and refuse it
    tpm_state = layout.state_dir(UUID) / "tpm"
    assert (tpm_state / "tpm2-00.permall").exists()  # swtpm was set up and started
    for pid in swtpms(tpm_state):
        wait_gone(pid)
    assert swtpms(tpm_state) == []



@pytest.mark.parametrize("pidfile", [True, False])
def test_a_swtpm_left_by_an_interrupted_start_is_stopped_before_the_next(
        layout: Layout, pidfile: bool) -> None:
    stray = interrupted_start(layout, UUID, tpm_xml("running"), pidfile=pidfile)
    assert sidecars.strays(layout.vm_dir(UUID)) == [stray]
    (layout.config_dir / "tpmvm.xml").write_text(tpm_xml("running"))
    assert once(layout) == "running"
    wait_gone(stray)
    tpm_state = layout.state_dir(UUID) / "tpm"
    (now,) = swtpms(tpm_state)  # exactly one swtpm: the new VM's
    assert now != stray
    assert "stopped stray sidecar pid" in layout.log_file("tpmvm").read_text()
    assert once(layout) == "running"  # adopted: the running VM's own swtpm is no stray
    assert swtpms(tpm_state) == [now]
    (layout.config_dir / "tpmvm.xml").write_text(tpm_xml("stopped"))
    assert once(layout).startswith("stopped")


def test_a_swtpm_left_by_an_interrupted_start_goes_with_its_stale_folder(layout: Layout) -> None:
    stray = interrupted_start(layout, UUID, tpm_xml("running"), pidfile=True)
    (layout.config_dir / "tpmvm.xml").write_text(tpm_xml("stopped"))
    assert once(layout).startswith("stopped")  # the folder is stale (no QEMU): removed
    wait_gone(stray)
    assert swtpms(layout.state_dir(UUID) / "tpm") == []


@pytest.mark.parametrize("damage", ["garbage\n", None])
def test_a_running_vms_swtpm_with_a_damaged_pidfile_is_adopted_not_stopped(
        layout: Layout, damage: str | None) -> None:
    """Re-review: a corrupt (or missing) pidfile made the next reconciler stop the swtpm of
    a running VM as a stray. Its mark names it: it is adopted and its pidfile written again."""
    config = layout.config_dir
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "tpmvm.xml").write_text(tpm_xml("running"))
    assert once(layout) == "running"
    tpm_state = layout.state_dir(UUID) / "tpm"
    (first,) = swtpms(tpm_state)
    pidfile = layout.vm_dir(UUID) / "tpm0.sidecar.pid"
    if damage is None:
        pidfile.unlink()
    else:
        pidfile.write_text(damage)
    assert once(layout) == "running"
    assert swtpms(tpm_state) == [first]
    assert pidfile.read_text().strip() == str(first)
    log = layout.log_file("tpmvm").read_text()
    assert "stray" not in log and "is not running" not in log, log
    reply = monitor(layout, "tpmvm", "query-tpm")
    assert reply["return"][0]["model"] == "tpm-crb"  # type: ignore[index]
    (config / "tpmvm.xml").write_text(tpm_xml("stopped"))
    assert once(layout).startswith("stopped")
    wait_gone(first)  # stopped with its VM, as an adopted sidecar is
