"""Start QEMU with a bridge netdev in a private network and mount namespace, and report.

Run as `unshare --net --mount -- python -m tests.support.netns_probe` (root) with a JSON request
on stdin: `{"bridges": [...], "argv": [...], "qmp": PATH, "upper": DIR, "work": DIR}`. In the new
namespaces it overlays /etc (upper and work directories given), writes /etc/qemu/bridge.conf
allowing the bridges (what a host with libvirt has), creates and brings up each bridge, starts
QEMU (`argv` must hold -S and a QMP monitor at `qmp`), asks `info network`, lists each bridge's
ports (`ip link show master BR`) while QEMU runs, quits it, and prints a JSON report. The host's
own /etc and network are never touched: both namespaces end with this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.qmp import Qmp


def _ports(bridge: str) -> list[str]:
    """The interfaces enslaved to `bridge` (`ip link show master`; this namespace's, not /sys's)."""
    done = subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True,
                          text=True, check=True)
    return sorted(str(link["ifname"]) for link in json.loads(done.stdout or "[]"))


def main() -> int:
    """Do the above; the report has `problem` (None when QEMU came up and quit) and findings."""
    req = json.load(sys.stdin)
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/etc,upperdir={req['upper']},workdir={req['work']}", "/etc"],
                   check=True)
    os.makedirs("/etc/qemu", exist_ok=True)
    Path("/etc/qemu/bridge.conf").write_text("".join(f"allow {b}\n" for b in req["bridges"]))
    for bridge in req["bridges"]:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    report: dict[str, object] = {"problem": None}
    proc = subprocess.Popen(req["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        qmp = Qmp(Path(req["qmp"]), proc)
        try:
            report["status"] = qmp.execute("query-status")["status"]
            report["info_network"] = qmp.execute("human-monitor-command",
                                                 **{"command-line": "info network"})
            report["ports"] = {b: _ports(b) for b in req["bridges"]}
            qmp.execute("quit")
        finally:
            qmp.close()
        proc.wait(15)
    except Exception as exc:  # reported with QEMU's stderr
        report["problem"] = f"{type(exc).__name__}: {exc}"
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=15)
        report["stderr"] = err.decode(errors="replace")
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
