"""`<cputune>` pins applied to real QEMU threads before the guest runs (vCPU, emulator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_loop import World, light_xml, world

__all__ = ["world"]

pytestmark = [pytest.mark.qemu]


def _allowed(task: Path) -> str:
    """A thread's Cpus_allowed_list from /proc."""
    for line in (task / "status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list in {task}/status")


def test_vcpu_and_emulator_pins_are_applied(world: World) -> None:
    """vCPU 0 on host CPU 1, vCPU 1 on CPU 0, every other thread of QEMU on CPU 0 (this
    machine has CPUs 0 and 1, like any CI runner)."""
    world.write("p", light_xml("p").replace(
        "<memory unit='MiB'>32</memory>",
        "<memory unit='MiB'>32</memory><vcpu>2</vcpu>\n  <cputune><vcpupin vcpu='0' cpuset='1'/>"
        "<vcpupin vcpu='1' cpuset='0'/><emulatorpin cpuset='0'/></cputune>"))
    out = world.cli("--once")
    assert out.returncode == 0, out.stdout + out.stderr
    st = world.status("p")
    assert st is not None and st["state"] == "running", st
    tasks = {Path(f"/proc/{st['pid']}/task/{t}"): "" for t in
             sorted(p.name for p in Path(f"/proc/{st['pid']}/task").iterdir())}
    names = {task: (task / "comm").read_text().strip() for task in tasks}
    vcpus = {name: _allowed(task) for task, name in names.items() if name.startswith("CPU ")}
    assert vcpus == {"CPU 0/TCG": "1", "CPU 1/TCG": "0"}, names
    others = {name: _allowed(task) for task, name in names.items()
              if not name.startswith("CPU ")}
    assert others and set(others.values()) == {"0"}, others
    assert "pinned vCPU 0 to 1; vCPU 1 to 0; emulator threads" in world.vm_log("p")


def test_a_pin_on_a_cpu_qemud_may_not_use_is_a_clear_start_failure(world: World) -> None:
    """The start fails before QEMU is launched; `--once` reports it (it used to show the VM
    'starting' when its only start failed within the pass)."""
    world.write("q", light_xml("q").replace(
        "<memory unit='MiB'>32</memory>",
        "<memory unit='MiB'>32</memory><cputune><vcpupin vcpu='0' cpuset='4000'/></cputune>"))
    out = world.cli("--once")
    assert out.returncode == 1
    st = world.status("q")
    assert st is not None and st["state"] == "crashed", st
    assert "<vcpupin vcpu='0'> names host CPUs 4000, which qemud may not use here" in \
        (st["reason"] or ""), json.dumps(st)
