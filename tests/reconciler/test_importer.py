"""`reconcile import`: libvirt's domains (real `virsh dumpxml` files of tests/data/virt-install)
become qemud files with the desired state from autostart; nothing overwritten, clashes refused,
everything not carried over reported as file:line: message."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import model
from model.parse import HostFacts
from reconciler.cli import main
from reconciler.importer import Source, SourceError, from_folder, from_virsh, import_domains

DATA = Path(__file__).resolve().parents[1] / "data" / "virt-install"
LIBVIRT_HEADER = b"""<!--
WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE
OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:
  virsh edit NAME
or other application using the libvirt API.
-->

"""
"""What libvirt writes at the top of each file in /etc/libvirt/qemu."""
HOSTDEV = b"""<domain type='kvm'>
  <name>passthrough</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/></source>
    </hostdev>
  </devices>
</domain>
"""


@pytest.fixture
def libvirt_dir(tmp_path: Path) -> Path:
    """A libvirt config folder: three real dumpxml files (debian12 autostarted), one refused."""
    folder = tmp_path / "etc-libvirt-qemu"
    (folder / "autostart").mkdir(parents=True)
    for name in ("debian12", "headless", "win11"):
        (folder / f"{name}.xml").write_bytes(LIBVIRT_HEADER.replace(b"NAME", name.encode())
                                             + (DATA / f"{name}.dumpxml.xml").read_bytes())
    (folder / "passthrough.xml").write_bytes(HOSTDEV)
    os.symlink("../debian12.xml", folder / "autostart" / "debian12.xml")
    return folder


@pytest.fixture
def short(tmp_path: Path) -> Iterator[Path]:
    """A config directory with a short path (its run/<uuid>/qmp.sock must fit a socket address)."""
    path = Path(tempfile.mkdtemp(prefix="qi-", dir="/tmp"))
    yield path / "q"
    shutil.rmtree(path)


def run(*argv: str) -> tuple[int, str, str]:
    """Run `reconcile` in-process."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_import_from_the_config_folder(libvirt_dir: Path, short: Path) -> None:
    config = short
    code, out, err = run("--config-dir", str(config), "import", "--from", str(libvirt_dir))
    assert code == 1, err
    states = {p.stem: model.parse_file(p).domain.desired.state for p in config.glob("*.xml")}
    assert states == {"debian12": "running", "headless": "stopped", "win11": "stopped"}
    assert "3 of 4 domain(s) imported" in out
    assert err.splitlines() == [
        f"{libvirt_dir / 'passthrough.xml'}:6: <hostdev> devices are not supported by qemud: "
        "passing a host device through needs VFIO setup and privileges qemud does not manage; "
        "remove it"]
    # every other byte of libvirt's file is kept: only the desired state was added
    original = (libvirt_dir / "headless.xml").read_bytes()
    written = (config / "headless.xml").read_bytes()
    assert len(written) > len(original) and b"qemud:desired" in written
    assert (config / "headless.xml").stat().st_mode & 0o077 == 0


def test_import_never_overwrites_and_refuses_clashes(libvirt_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "qemud"
    config.mkdir(mode=0o700)
    mine = b"<!-- mine -->\n" + (DATA / "headless.dumpxml.xml").read_bytes()
    (config / "headless.xml").write_bytes(mine)
    clash = (DATA / "win11.dumpxml.xml").read_bytes().replace(b"<name>win11</name>",
                                                              b"<name>my-windows</name>")
    (config / "my-windows.xml").write_bytes(clash)
    sources = from_folder(libvirt_dir)
    report = import_domains(sources, config)
    assert [i.name for i in report.imported] == ["debian12"]
    assert (config / "headless.xml").read_bytes() == mine
    assert sorted(p.split(";")[0] for p in report.problems) == sorted([
        f"{libvirt_dir / 'headless.xml'}: {config / 'headless.xml'} exists",
        f"{libvirt_dir / 'win11.xml'}: its uuid is already used by {config / 'my-windows.xml'}",
        f"{libvirt_dir / 'passthrough.xml'}:6: <hostdev> devices are not supported by qemud: "
        "passing a host device through needs VFIO setup and privileges qemud does not manage",
    ])
    again = import_domains(from_folder(libvirt_dir), config)
    assert again.imported == []  # a second import writes nothing


def test_machine_check_applies(libvirt_dir: Path, tmp_path: Path) -> None:
    """The emulator's machine list is consulted: a type it lacks is reported at its line."""
    report = import_domains(from_folder(libvirt_dir), tmp_path, HostFacts(
        check_machine=lambda emulator, machine: f"{machine!r} is not known to {emulator}"))
    assert report.imported == []
    assert f"{libvirt_dir / 'debian12.xml'}:" in report.problems[0]
    assert "<type machine>: 'pc-q35-7.2' is not known to /usr/bin/qemu-system-x86_64" \
        in report.problems[0]


def test_a_missing_folder_is_a_setup_error(tmp_path: Path, short: Path) -> None:
    code, _, err = run("--config-dir", str(short), "import", "--from",
                       str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in err


def test_from_virsh_uses_dumpxml_and_autostart() -> None:
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> str:
        calls.append(argv)
        if argv[4:] == ["list", "--all", "--name"]:
            return "debian12\nheadless\n\n"
        if argv[4:] == ["list", "--all", "--autostart", "--name"]:
            return "headless\n"
        if argv[4:] == ["list", "--state-running", "--state-paused", "--name"]:
            return ""
        return (DATA / f"{argv[-1]}.dumpxml.xml").read_text()

    sources = from_virsh("qemu:///system", fake)
    assert [(s.origin, s.autostart) for s in sources] == [
        ("virsh -c qemu:///system dumpxml debian12", False),
        ("virsh -c qemu:///system dumpxml headless", True)]
    assert calls[-1] == ["virsh", "-q", "-c", "qemu:///system", "dumpxml", "--inactive",
                         "--security-info", "headless"]  # the display passwords too


def test_virsh_that_does_not_answer() -> None:
    def fail(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(1, argv, "", "error: failed to connect")
    with pytest.raises(SourceError, match="did not answer: error: failed to connect"):
        from_virsh("qemu:///system", fail)


NETS = HostFacts(network_bridge=lambda name: "virbr0")
"""libvirt's default network, as if defined on this host."""


def test_uefi_variables_and_tpm_state_are_copied_from_libvirt(tmp_path: Path) -> None:
    """A Windows 11 guest keeps its boot entries and its TPM (BitLocker) when it moves over."""
    win11 = (DATA / "win11.dumpxml.xml").read_bytes().replace(
        b"</devices>", b"<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
                       b"</devices>")
    uuid = model.parse(win11).domain.uuid
    libvirt = tmp_path / "var-lib-libvirt"
    (libvirt / "qemu" / "nvram").mkdir(parents=True)
    (libvirt / "qemu" / "nvram" / "win11_VARS.fd").write_bytes(b"vars of win11")
    tpm = libvirt / "swtpm" / str(uuid) / "tpm2"
    tpm.mkdir(parents=True)
    (tpm / "tpm2-00.permall").write_bytes(b"the TPM")
    config = tmp_path / "config"
    config.mkdir()
    state = tmp_path / "state"
    sources = [Source("/etc/libvirt/qemu/win11.xml", win11, False)]
    report = import_domains(sources, config, NETS, state=lambda u: state / u, libvirt=libvirt)
    assert report.problems == []
    mine = state / str(uuid)
    assert (mine / "VARS.fd").read_bytes() == b"vars of win11"
    assert (mine / "tpm" / "tpm2-00.permall").read_bytes() == b"the TPM"
    assert (mine.stat().st_mode & 0o777, (mine / "VARS.fd").stat().st_mode & 0o777) == (0o700,
                                                                                     0o600)
    assert any("UEFI variables copied from" in n for n in report.notes)
    assert any("TPM state copied from" in n for n in report.notes)
    # qemud's own copy is never replaced by a second import (of a renamed file, say)
    (mine / "VARS.fd").write_bytes(b"changed by the guest since")
    (config / "win11.xml").unlink()
    again = import_domains(sources, config, NETS, state=lambda u: state / u, libvirt=libvirt)
    assert (mine / "VARS.fd").read_bytes() == b"changed by the guest since"
    assert any("exists already; kept" in n for n in again.notes)


def test_a_uefi_domain_libvirt_never_started_is_said_to_start_fresh(tmp_path: Path) -> None:
    report = import_domains([Source("x.xml", (DATA / "debian12-uefi.dumpxml.xml").read_bytes(),
                                    False)], tmp_path, NETS,
                            state=lambda u: tmp_path / "state" / u, libvirt=tmp_path / "none")
    assert report.problems == []
    assert any("no UEFI variables at" in n and "fresh ones" in n for n in report.notes)


def test_a_domain_libvirt_runs_is_not_imported(tmp_path: Path) -> None:
    """Re-review: an autostart domain libvirt was running was written desired running, and
    qemud's daemon started a second QEMU for it."""
    folder = tmp_path / "etc-libvirt-qemu"
    folder.mkdir()
    (folder / "headless.xml").write_bytes((DATA / "headless.dumpxml.xml").read_bytes())
    run = tmp_path / "run-libvirt-qemu"
    run.mkdir()
    (run / "headless.xml").write_text("<domstatus/>")  # libvirt's status file: it runs
    sources = from_folder(folder, running=run)
    assert [s.running for s in sources] == [True]
    config = tmp_path / "config"
    config.mkdir()
    report = import_domains(sources, config, NETS)
    assert report.imported == [] and list(config.glob("*.xml")) == []
    assert "libvirt runs headless now; not imported" in report.problems[0]
    assert "virsh autostart --disable headless" in report.problems[0]
