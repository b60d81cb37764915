"""Sidecar specs: which virtiofsd runs, with libvirt's line, and how a sidecar is known in /proc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import model
from model.domain import Filesystem
from reconciler import sidecars
from reconciler.process import read_cmdline, spawn_detached

UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
DOMAIN = f"""<domain type='qemu'><name>v</name><uuid>{UUID}</uuid>
<memory unit='MiB'>64</memory><os><type arch='x86_64' machine='q35'>hvm</type></os>
<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
<devices>
  <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
  <filesystem><driver type='virtiofs'/><source dir='/srv/a'/><target dir='a'/></filesystem>
  <filesystem><driver type='virtiofs'/><binary path='/opt/virtiofsd'/><source dir='/srv/b'/>
    <target dir='b'/></filesystem>
</devices></domain>"""
RUNTIME = model.Runtime(Path("/r/u/qmp.sock"), Path("/r/u/pid"), Path("/l/x.log"),
                        state_dir=Path("/s/u"))


def descriptor(folder: Path, name: str, kind: str, binary: str) -> None:
    """Write one vhost-user descriptor."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"description": "x", "type": kind, "binary": binary}))


def test_virtiofsd_comes_from_the_first_fs_descriptor(tmp_path: Path) -> None:
    etc, usr = tmp_path / "etc", tmp_path / "usr"
    descriptor(usr, "10-gpu.json", "gpu", "/usr/lib/qemu/vhost-user-gpu")
    descriptor(usr, "50-qemu-virtiofsd.json", "fs", "/usr/lib/qemu/virtiofsd")
    descriptor(usr, "60-other.json", "fs", "/usr/lib/other-virtiofsd")
    (usr / "20-broken.json").write_text("{not json")
    assert sidecars.virtiofsd_binary((etc, usr)) == "/usr/lib/qemu/virtiofsd"
    descriptor(etc, "50-qemu-virtiofsd.json", "fs", "/usr/local/bin/virtiofsd")  # overrides
    assert sidecars.virtiofsd_binary((etc, usr)) == "/usr/local/bin/virtiofsd"
    descriptor(etc, "40-mine.json", "fs", "/opt/virtiofsd")  # an earlier name comes first
    assert sidecars.virtiofsd_binary((etc, usr)) == "/opt/virtiofsd"


def test_without_descriptors_debians_virtiofsd_is_used(tmp_path: Path) -> None:
    assert sidecars.virtiofsd_binary((tmp_path / "none",)) == "/usr/lib/qemu/virtiofsd"


@pytest.mark.skipif(not Path("/usr/share/qemu/vhost-user/50-qemu-virtiofsd.json").exists(),
                    reason="needs Debian's qemu-system-common")
def test_debians_descriptor_names_its_virtiofsd() -> None:
    assert sidecars.virtiofsd_binary() == "/usr/lib/qemu/virtiofsd"


@pytest.mark.parametrize(("fs", "line"), [
    (Filesystem(source_dir="/srv/a", target_dir="a"),
     ["/bin/vfsd", "--fd={fd}", "-o", "source=/srv/a"]),
    (Filesystem(source_dir="/a,b", target_dir="a", cache="always", sandbox="chroot", xattr=True,
                flock=False, posix_lock=True, thread_pool=16, binary_path="/opt/virtiofsd"),
     ["/opt/virtiofsd", "--fd={fd}", "-o",
      "source=/a\\,b,cache=always,sandbox=chroot,xattr,no_flock,posix_lock",
      "--thread-pool-size=16"]),
    (Filesystem(source_dir="/a", target_dir="a", cache="none", xattr=False, flock=True,
                posix_lock=False),
     ["/bin/vfsd", "--fd={fd}", "-o", "source=/a,cache=none,no_xattr,flock,no_posix_lock"]),
    (Filesystem(source_dir="/a\\b", target_dir="a"), ["/bin/vfsd", "--fd={fd}", "-o", "source=/a\\\\b"]),
])
def test_virtiofsd_line_is_libvirts(fs: Filesystem, line: list[str]) -> None:
    """libvirt 9.0's qemuVirtioFSBuildCommandLine, with the socket passed as a descriptor."""
    assert list(sidecars.virtiofsd_argv(fs, "/bin/vfsd")) == line


def test_specs_of_a_domain_with_a_tpm_and_two_shares() -> None:
    domain = model.parse(DOMAIN.encode()).domain
    fs0, fs1, tpm = sidecars.specs(domain, RUNTIME, lambda: "/usr/lib/qemu/virtiofsd")
    assert (fs0.name, fs0.socket, fs0.pidfile) == ("fs0", Path("/r/u/fs0-fs.sock"),
                                                   Path("/r/u/fs0.sidecar.pid"))
    assert fs0.argv[0] == "/usr/lib/qemu/virtiofsd" and fs1.argv[0] == "/opt/virtiofsd"
    assert fs1.socket == Path("/r/u/fs1-fs.sock")
    assert fs0.mark is None and fs0.state is None and fs0.package == "qemu-system-common"
    assert tpm.mark == "/s/u/tpm" and tpm.state == Path("/s/u/tpm")


def test_the_descriptors_are_not_read_without_a_share() -> None:
    domain = model.parse(DOMAIN.replace("<filesystem>", "<!--").replace("</filesystem>", "-->")
                         .encode()).domain

    def never() -> str:
        """Fail: no virtiofsd is needed."""
        raise AssertionError("descriptors read")
    assert [s.name for s in sidecars.specs(domain, RUNTIME, never)] == ["tpm0"]


def test_an_environment_marked_sidecar_is_known_by_its_own_pidfile(tmp_path: Path) -> None:
    """A real process started with QEMUD_SIDECAR=<pidfile>: identified for that pidfile only."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    spec = sidecars.Spec(name="fs0", argv=(sleep, "30"), socket=tmp_path / "s",
                         pidfile=tmp_path / "fs0.sidecar.pid", state=None, mark=None)
    other = sidecars.Spec(name="fs0", argv=(sleep, "30"), socket=tmp_path / "s",
                          pidfile=tmp_path / "other" / "fs0.sidecar.pid", state=None, mark=None)
    log = os.open(os.devnull, os.O_WRONLY)
    try:
        pid = spawn_detached([sleep, "30"], log, env={sidecars.MARK: str(spec.pidfile)})
    finally:
        os.close(log)
    try:
        for _ in range(500):  # bounded: /proc shows no argv while the child is still in execve
            if read_cmdline(pid):
                break
            time.sleep(0.01)
        assert sidecars.identify(spec, pid)
        assert not sidecars.identify(other, pid)
        assert f"{sidecars.MARK}={spec.pidfile}" in sidecars.read_environ(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
