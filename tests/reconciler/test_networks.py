"""libvirt's network definitions are read from /etc (or $QEMUD_LIBVIRT_NETWORKS) for the model.

`reconciler.networks.Networks.bridge` is the `HostFacts.network_bridge` every reconciler entry
point (scan, validate, argv, import) gives `model.parse`, through `reconciler.hostfacts`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

import model
from model.errors import NetworkError
from reconciler.cli import main
from reconciler.hostfacts import host_facts, parse_checked, parse_file_checked
from reconciler.networks import ENV, LIBVIRT_NETWORKS, Networks, networks_dir
from tests.support.snippets import domain_xml

DATA = Path(__file__).resolve().parents[1] / "data"


def _net(folder: Path, name: str, bridge: str) -> None:
    """Write a NAT network `name` on `bridge` into `folder`, as libvirt stores it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.xml").write_text(
        f"<network>\n  <name>{name}</name>\n  <forward mode='nat'/>\n"
        f"  <bridge name='{bridge}' stp='on' delay='0'/>\n</network>\n")


def test_the_default_folder_is_libvirts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    assert networks_dir() == LIBVIRT_NETWORKS == Path("/etc/libvirt/qemu/networks")
    assert Networks().folder == LIBVIRT_NETWORKS


def test_the_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    _net(tmp_path, "lan", "br-lan")
    monkeypatch.setenv(ENV, str(tmp_path))
    assert Networks().bridge("lan") == "br-lan"
    lookup = host_facts().network_bridge
    assert lookup is not None
    assert lookup("lan") == "br-lan"


@pytest.mark.parametrize(("files", "name", "bridge"), [
    ({"default": "virbr0"}, "default", "virbr0"),
    ({"default": "virbr0", "lan": "br-lan"}, "lan", "br-lan"),
    ({"default": "virbr3"}, "default", "virbr3"),
])
def test_bridge_of_a_defined_network(tmp_path: Path, files: dict[str, str], name: str,
                                     bridge: str) -> None:
    for net, br in files.items():
        _net(tmp_path, net, br)
    assert Networks(tmp_path).bridge(name) == bridge


def test_libvirts_stored_default_network_in_the_test_data() -> None:
    assert Networks(DATA / "libvirt-networks").bridge("default") == "virbr0"


@pytest.mark.parametrize(("name", "words"), [
    ("lan", ["no libvirt network 'lan'", "/lan.xml does not exist", "virsh net-define",
             f"${ENV}", "<interface type='bridge'>"]),
    ("../x", ["cannot be a libvirt network name"]),
])
def test_an_undefined_network_says_what_to_do(tmp_path: Path, name: str,
                                              words: list[str]) -> None:
    with pytest.raises(NetworkError) as caught:
        Networks(tmp_path).bridge(name)
    for word in words:
        assert word in caught.value.message


def test_an_unreadable_definition(tmp_path: Path) -> None:
    def denied(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))
    with pytest.raises(NetworkError, match=r"cannot read .*/lan.xml: Permission denied"):
        Networks(tmp_path, read=denied).bridge("lan")


def test_a_network_without_a_bridge_names_the_network_file(tmp_path: Path) -> None:
    (tmp_path / "macvtap.xml").write_text(
        "<network>\n  <name>macvtap</name>\n  <forward mode='bridge'>\n"
        "    <interface dev='eth0'/>\n  </forward>\n</network>\n")
    with pytest.raises(NetworkError, match=rf"^{tmp_path}/macvtap.xml:3: network 'macvtap' "
                       r"gives its guests no bridge \(<forward mode='bridge'>\)"):
        Networks(tmp_path).bridge("macvtap")


NIC = ("<devices><interface type='network'><source network='{}'/><model type='virtio'/>"
       "</interface></devices>")


def test_entry_points_resolve_networks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nets = tmp_path / "nets"
    _net(nets, "lan", "br-lan")
    monkeypatch.setenv(ENV, str(nets))
    file = tmp_path / "d.xml"
    file.write_bytes(domain_xml(NIC.format("lan")))
    assert parse_file_checked(file).domain.devices.interfaces[0].bridge == "br-lan"
    assert parse_checked(file.read_bytes(), file).domain.devices.interfaces[0].bridge == "br-lan"
    with pytest.raises(model.InvalidDomainError) as caught:
        parse_checked(domain_xml(NIC.format("wan")), file)
    assert caught.value.issues[0].line == 6
    assert "no libvirt network 'wan'" in caught.value.issues[0].message


def _run(*argv: str) -> tuple[int, str, str]:
    """Run `reconcile` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_argv_and_validate_use_the_networks_bridge(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    nets = tmp_path / "nets"
    _net(nets, "default", "br-nat")
    monkeypatch.setenv(ENV, str(nets))
    file = DATA / "virt-install" / "debian12.xml"
    code, out, err = _run("argv", str(file))
    assert code == 0, err
    assert "-netdev bridge,id=hostnet0,br=br-nat" in out
    assert "network" not in err  # resolved: nothing guessed, nothing to warn about
    (nets / "default.xml").unlink()
    code, out, err = _run("validate", str(file))
    assert code == 1
    assert (f"{file}:55: error: <source network='default'>: no libvirt network 'default': "
            f"{nets}/default.xml does not exist") in out + err


def test_the_scanner_reads_again_what_a_network_change_affects(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """A domain on a network defined later becomes valid without touching its file; one on a
    network whose bridge changes gets the new bridge; other files are not read again."""
    from reconciler.hostfacts import host_key
    from reconciler.scan import Scanner

    nets, conf = tmp_path / "nets", tmp_path / "conf"
    conf.mkdir()
    monkeypatch.setenv(ENV, str(nets))
    (conf / "a.xml").write_bytes(domain_xml(NIC.format("lan"), name="<name>a</name>", uuid=None))
    (conf / "b.xml").write_bytes(domain_xml("", name="<name>b</name>", uuid=None))
    old = 1_000_000_000_000_000_000  # files written long ago: never re-read as racy
    for f in conf.iterdir():
        os.utime(f, ns=(old, old))
    scanner = Scanner(conf, host_key=host_key)
    first = scanner.scan()
    assert [i.path.name for i in first.invalid] == ["a.xml"] and first.parsed == 2
    assert scanner.scan().parsed == 0  # nothing changed: nothing read
    _net(nets, "lan", "br-lan")
    second = scanner.scan()
    assert second.parsed == 1 and not second.invalid  # a.xml only
    [a] = [c for c in second.domains.values() if c.name == "a"]
    assert a.parsed.domain.devices.interfaces[0].bridge == "br-lan"
    assert scanner.scan().parsed == 0
    _net(nets, "lan", "br-other")
    os.utime(nets / "lan.xml", ns=(old + 10**9, old + 10**9))  # a new version of the network
    third = scanner.scan()
    [a] = [c for c in third.domains.values() if c.name == "a"]
    assert third.parsed == 1 and a.parsed.domain.devices.interfaces[0].bridge == "br-other"
