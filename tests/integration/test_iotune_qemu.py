"""`<iotune>` on real QEMU: the limits libvirt's names give are the ones QEMU applies.

QEMU starts paused with the command line qemud renders; `query-block` reports each drive's
throttling (rates, bursts, burst lengths, operation size and group) as QEMU holds them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import model
from tests.support.qmp import query_paused

pytestmark = pytest.mark.qemu


def test_qemu_applies_the_limits_and_groups(tmp_path: Path) -> None:
    images = []
    for name in ("a", "b", "c"):
        image = tmp_path / f"{name}.img"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "1M"], check=True)
        images.append(image)
    shared = ("<iotune><read_bytes_sec>5000</read_bytes_sec><write_bytes_sec>5500</write_bytes_sec>"
              "<read_bytes_sec_max>6000</read_bytes_sec_max>"
              "<read_bytes_sec_max_length>3</read_bytes_sec_max_length>"
              "<total_iops_sec>6000</total_iops_sec><size_iops_sec>2000</size_iops_sec>"
              "<group_name>shared,group</group_name></iotune>")
    data = f"""<domain type='qemu'>
  <name>iotune</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='{images[0]}'/><target dev='vda' bus='virtio'/>{shared}</disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='{images[1]}'/><target dev='sda' bus='sata'/>{shared}</disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='{images[2]}'/><target dev='hda' bus='ide'/>
      <iotune><total_bytes_sec>1000</total_bytes_sec><total_bytes_sec_max>4000</total_bytes_sec_max>
      </iotune></disk>
  </devices>
</domain>""".encode()
    domain = model.parse(data).domain
    runtime = model.Runtime(tmp_path / "qmp.sock", tmp_path / "qemu.pid", tmp_path / "console.log")
    argv = [*model.command_line(domain, runtime), "-S"]
    status, blocks = query_paused(argv, runtime.qmp_socket, tmp_path / "qemu.log",
                                  ["query-status", "query-block"])
    assert status["status"] == "prelaunch"
    held = {b["device"]: b["inserted"] for b in blocks if b.get("inserted")}
    keys = ("bps", "bps_rd", "bps_wr", "iops", "bps_rd_max", "bps_rd_max_length", "iops_size",
            "group")
    expected = {"bps": 0, "bps_rd": 5000, "bps_wr": 5500, "iops": 6000, "bps_rd_max": 6000,
                "bps_rd_max_length": 3, "iops_size": 2000, "group": "shared,group"}
    for drive in ("drive-virtio-disk0", "drive-sata0-0-0"):
        assert {k: held[drive][k] for k in keys} == expected, held[drive]
    alone = held["drive-ide0-0-0"]
    assert (alone["bps"], alone["bps_max"], alone["bps_rd"], alone["group"]) == (
        1000, 4000, 0, "drive-ide0-0-0")  # QEMU's own group: the drive's id
