"""`<interface type='network'>` joins the bridge of libvirt's network definition, with real QEMU.

The argv is checked against libvirt's own rendering of the same virt-install file (the same NIC
device, id, MAC and PCI address; libvirt passes a tap fd it opened itself, qemud has QEMU's
bridge helper open it on the network's bridge). Then QEMU is started (-S) with qemud's argv in a
private network and mount namespace (`tests/support/netns_probe.py`), where the networks' bridges
exist and /etc/qemu/bridge.conf allows them: the real qemu-bridge-helper must put one tap on each
bridge. Needs root and unshare; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import model
from reconciler.hostfacts import parse_checked, parse_file_checked
from reconciler.networks import ENV
from tests.integration.test_loop import World, light_xml, world

__all__ = ["world"]

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

DOMAIN = """<domain type='qemu'>
  <name>nets</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <interface type='network'><source network='default'/><model type='virtio'/>
      <mac address='52:54:00:aa:bb:01'/></interface>
    <interface type='network'><source network='lan'/><model type='e1000e'/>
      <mac address='52:54:00:aa:bb:02'/></interface>
    <graphics type='vnc' port='-1' autoport='yes'><listen type='none'/></graphics>
  </devices>
</domain>
"""


@pytest.fixture
def networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """libvirt's stored 'default' (virbr0) and a 'lan' network on bridge qbr-lan."""
    folder = tmp_path / "networks"
    folder.mkdir()
    shutil.copy(DATA / "libvirt-networks" / "default.xml", folder)
    (folder / "lan.xml").write_text("<network>\n  <name>lan</name>\n  <forward mode='route'/>\n"
                                    "  <bridge name='qbr-lan'/>\n</network>\n")
    monkeypatch.setenv(ENV, str(folder))
    return folder


def _device(text: str) -> dict[str, str]:
    """A -device or -netdev value as a dict (libvirt's JSON or QEMU's key=value)."""
    if text.startswith("{"):
        return {k: str(v) for k, v in json.loads(text).items()}
    parts = text.split(",")
    first = parts[0] if "=" not in parts[0] else ""
    out = {"driver": first} if first else {}
    for part in parts[1:]:
        key, eq, val = part.partition("=")
        if eq:
            out[key] = val
    return out


def _values(argv: list[str], option: str) -> list[dict[str, str]]:
    """Every value of `option` in `argv`, as dicts."""
    return [_device(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == option]


@pytest.mark.parametrize("name", ["debian12", "debian12.dumpxml", "win11", "fedora"])
def test_argv_matches_libvirts_nic_with_the_networks_bridge(networks: Path, name: str) -> None:
    file = DATA / "virt-install" / f"{name}.xml"
    ours = model.command_line(parse_file_checked(file).domain)
    theirs = shlex.split((DATA / "virt-install" / f"{name}.args").read_text())
    assert _values(ours, "-netdev") == [{"driver": "bridge", "id": "hostnet0", "br": "virbr0"}]
    assert [n["type"] for n in _values(theirs, "-netdev")] == ["tap"]  # fd libvirt opened
    keys = ("driver", "netdev", "id", "mac", "bus", "addr")
    nic = [d for d in _values(ours, "-device") if d.get("netdev") == "hostnet0"]
    their_nic = [d for d in _values(theirs, "-device") if d.get("netdev") == "hostnet0"]
    assert [{k: d[k] for k in keys} for d in nic] == [{k: d[k] for k in keys} for d in their_nic]


def _namespaces_work() -> str | None:
    """Why the namespace probe cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root for a private network namespace with bridges"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    done = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        return f"unshare --net --mount fails here: {done.stderr.strip()}"
    if not Path("/usr/lib/qemu/qemu-bridge-helper").exists():
        return "qemu-bridge-helper is not installed"
    return None


@pytest.fixture
def short() -> Iterator[Path]:
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qnb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_qemu_joins_each_networks_bridge(networks: Path, short: Path) -> None:
    why = _namespaces_work()
    if why is not None:
        pytest.skip(why)
    domain = parse_checked(DOMAIN.encode(), "nets.xml").domain
    assert [n.bridge for n in domain.devices.interfaces] == ["virbr0", "qbr-lan"]
    runtime = model.Runtime(qmp_socket=short / "qmp.sock", pidfile=short / "pid",
                            console_log=short / "console.log")
    argv = [*model.command_line(domain, runtime), "-S"]
    (short / "upper").mkdir()
    (short / "work").mkdir()
    request = {"bridges": ["virbr0", "qbr-lan"], "argv": argv, "qmp": str(runtime.qmp_socket),
               "upper": str(short / "upper"), "work": str(short / "work")}
    done = subprocess.run(["unshare", "--net", "--mount", "--", sys.executable, "-m",
                           "tests.support.netns_probe"], input=json.dumps(request), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["problem"] is None, f"{report['problem']}\n{report['stderr']}\n{argv}"
    assert report["status"] == "prelaunch"
    assert "br=virbr0" in report["info_network"] and "br=qbr-lan" in report["info_network"]
    # the bridge helper put exactly one tap on each network's bridge
    assert {b: len(p) for b, p in report["ports"].items()} == {"virbr0": 1, "qbr-lan": 1}


def test_the_daemon_notices_a_network_defined_later(world: World, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A domain on a libvirt network not yet defined is invalid; once `virsh net-define` (here:
    the file libvirt writes) adds it, the daemon watching libvirt's folder reads the domain
    again at once, without its file being touched (resync is 300 s here)."""
    folder = tmp_path / "later-networks"
    folder.mkdir()
    monkeypatch.setenv(ENV, str(folder))
    world.write("n", light_xml("n", state="stopped").replace(
        "</domain>", "<devices><interface type='network'><source network='lan'/></interface>"
                     "</devices>\n</domain>"))
    world.start_daemon()
    st = world.wait_status("n", lambda s: s["state"] == "invalid", "n to be invalid")
    assert "no libvirt network 'lan'" in st["reason"], st
    staged = folder / "lan.xml.new"
    staged.write_text("<network>\n  <name>lan</name>\n  <bridge name='qbr-lan'/>\n</network>\n")
    staged.rename(folder / "lan.xml")  # as libvirt saves it: written aside, renamed into place
    st = world.wait_status("n", lambda s: s["state"] == "stopped", "n to become valid",
                           timeout=30)
    assert st["errors"] == [], st
