"""libvirt network definitions give the bridge of `<interface type='network'>` (model side).

`model.network.network_bridge` reads a `<network>` document; `model.parse` resolves each
network interface through the injected `HostFacts.network_bridge`, and the command line takes
the resolved bridge. Reading the files is the reconciler's (tests/reconciler/test_networks.py).
"""

from __future__ import annotations

import pytest

import model
from model.domain import Interface
from model.errors import NetworkError
from model.network import network_bridge
from model.parse import HostFacts
from tests.support.snippets import domain_xml

DEFAULT = b"""<!--
WARNING: THIS IS AN AUTO-GENERATED FILE.
-->

<network>
  <name>default</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'/>
</network>
"""


@pytest.mark.parametrize(("body", "bridge"), [
    ("<forward mode='nat'/><bridge name='virbr0' stp='on' delay='0'/>", "virbr0"),
    ("<forward mode='route'/><bridge name='virbr1'/>", "virbr1"),
    ("<forward mode='open'/><bridge name='virbr2'/>", "virbr2"),
    ("<bridge name='virbr3'/>", "virbr3"),  # isolated: no <forward>
    ("<forward mode='bridge'/><bridge name='br0'/>", "br0"),  # a host bridge libvirt uses
])
def test_networks_with_a_bridge(body: str, bridge: str) -> None:
    data = f"<network>\n  <name>n</name>\n  {body}\n</network>\n".encode()
    assert network_bridge("n", data, "/nets/n.xml") == bridge


def test_host_side_settings_need_nothing_from_qemud() -> None:
    data = (b"<network><name>n</name><forward mode='nat'/><bridge name='virbr0'/>"
            b"<port isolated='no'/><bandwidth><inbound average='1000'/></bandwidth>"
            b"<portgroup name='other'><bandwidth><inbound average='1'/></bandwidth></portgroup>"
            b"<dns enable='yes'/><ip address='10.0.0.1' prefix='24'/></network>")
    assert network_bridge("n", data, "/nets/n.xml") == "virbr0"


def test_libvirts_stored_default_network() -> None:
    assert network_bridge("default", DEFAULT, "/etc/libvirt/qemu/networks/default.xml") == "virbr0"


@pytest.mark.parametrize(("body", "where", "words"), [
    # macvtap: guests get a macvtap on a host interface, no bridge
    ("<forward mode='bridge'><interface dev='eth0'/></forward>", ":3:", "<forward mode='bridge'>"),
    ("<forward mode='passthrough'><interface dev='eth0'/></forward>", ":3:",
     "<forward mode='passthrough'>"),
    ("<forward mode='hostdev' managed='yes'><pf dev='eth0'/></forward>", ":3:",
     "<forward mode='hostdev'>"),
    ("<bridge stp='on'/>", ":1:", "it has no <bridge name=>"),
    ("<bridge name='a-name-longer-than-15'/>", ":3:", "is not an interface name"),
    # what libvirt sets on each guest's port: refused, never dropped (reviewed: a dropped
    # <port isolated> let guests on one bridge reach each other)
    ("<forward mode='bridge'/><bridge name='br1'/>\n<port isolated='yes'/>", ":4:",
     "port isolation (guests on the bridge kept from each other) (<port>)"),
    ("<forward mode='nat'/><bridge name='virbr9'/>\n<mtu size='9000'/>", ":4:",
     "an MTU for each guest's link (<mtu>)"),
    ("<forward mode='bridge'/><bridge name='ovsbr0'/>\n<virtualport type='openvswitch'/>",
     ":4:", "an Open vSwitch or 802.1Qbh port (<virtualport>)"),
    ("<forward mode='nat'/><bridge name='virbr8'/>\n<portgroup name='lan' default='yes'>"
     "<bandwidth><inbound average='1000'/></bandwidth></portgroup>", ":4:",
     "default <portgroup> sets bandwidth"),
])
def test_networks_without_a_usable_bridge(body: str, where: str, words: str) -> None:
    data = f"<network>\n  <name>n</name>\n  {body}\n</network>\n".encode()
    with pytest.raises(NetworkError) as caught:
        network_bridge("n", data, "/nets/n.xml")
    assert caught.value.network == "n"
    assert caught.value.message.startswith("/nets/n.xml" + where)
    assert words in caught.value.message


@pytest.mark.parametrize(("data", "words"), [
    (b"<network><name>other</name><bridge name='virbr9'/></network>", "defines network 'other'"),
    (b"<domain><name>n</name></domain>", "is not a libvirt <network> definition"),
    (b"<network><name>n</name>", "not well-formed XML"),
    (b"", "file is empty"),
])
def test_files_that_are_not_this_network(data: bytes, words: str) -> None:
    with pytest.raises(NetworkError, match=words) as caught:
        network_bridge("n", data, "/nets/n.xml")
    assert caught.value.message.startswith("/nets/n.xml")


NIC = """<devices>
<interface type='network'>
  <source network='{net}'{extra}/>
  <model type='virtio'/>
</interface>
</devices>"""
"""`<source>` is on line 8 of `domain_xml`."""


def _lookup(bridges: dict[str, str]) -> HostFacts:
    """Host facts whose networks are `bridges` (name -> bridge); others are undefined."""
    def bridge(name: str) -> str:
        if name not in bridges:
            raise NetworkError(name, f"no libvirt network {name!r}: /nets/{name}.xml does not "
                               "exist; define it")
        return bridges[name]
    return HostFacts(network_bridge=bridge)


@pytest.mark.parametrize(("net", "extra", "bridges", "bridge"), [
    ("default", "", {"default": "virbr0"}, "virbr0"),
    ("lan", "", {"lan": "br-lan"}, "br-lan"),  # not guessed from the name
    ("default", "", {"default": "virbr7"}, "virbr7"),  # not assumed to be virbr0
    # a live XML's bridge= is runtime state: the definition wins
    ("default", " bridge='virbr0'", {"default": "virbr5"}, "virbr5"),
])
def test_parse_resolves_the_networks_bridge(net: str, extra: str, bridges: dict[str, str],
                                            bridge: str) -> None:
    parsed = model.parse(domain_xml(NIC.format(net=net, extra=extra)), "d.xml", _lookup(bridges))
    nic = parsed.domain.devices.interfaces[0]
    assert nic.bridge == bridge
    assert parsed.warnings == ()
    argv = model.command_line(parsed.domain)
    assert argv[argv.index("-netdev") + 1] == f"bridge,id=hostnet0,br={bridge}"


def test_an_undefined_network_is_an_error_at_its_line() -> None:
    with pytest.raises(model.InvalidDomainError) as caught:
        model.parse(domain_xml(NIC.format(net="lan", extra="")), "d.xml", _lookup({}))
    assert [i.render("d.xml") for i in caught.value.issues] == [
        "d.xml:8: <source network='lan'>: no libvirt network 'lan': /nets/lan.xml does not "
        "exist; define it"]


def test_the_resolved_bridge_survives_the_definition_in_use() -> None:
    # the daemon keeps the running definition as model.to_xml and reads it back without host
    # facts: the bridge the VM was started with must come back, not a guess
    parsed = model.parse(domain_xml(NIC.format(net="lan", extra="")), "d.xml",
                         _lookup({"lan": "br-lan"}))
    again = model.parse(model.to_xml(parsed.domain))
    assert again.domain == parsed.domain
    assert again.warnings == ()
    assert b"<source network=\"lan\" bridge=\"br-lan\"/>" in model.to_xml(parsed.domain)


def test_without_host_facts_the_bridge_is_guessed_with_a_warning() -> None:
    parsed = model.parse(domain_xml(NIC.format(net="default", extra="")), "d.xml")
    assert parsed.domain.devices.interfaces[0].bridge is None
    assert [w.line for w in parsed.warnings] == [8]
    argv = model.command_line(parsed.domain)
    assert argv[argv.index("-netdev") + 1] == "bridge,id=hostnet0,br=virbr0"


def test_only_network_interfaces_have_a_resolved_bridge() -> None:
    with pytest.raises(ValueError, match="only type='network'"):
        Interface(type="bridge", source="br0", bridge="br1")
