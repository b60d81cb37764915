"""Character devices, consoles, parallel ports: parse, command line, round trip, errors.

Each expected `-chardev`/`-device` value is libvirt 9.0's for the same XML (its
tests/qemuxml2argvdata `.args`, JSON -device values written as QEMU's key=value), except
where a comment says why not.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest

import model
from model.domain import Console, Domain, Parallel, Serial
from model.serialize import to_xml
from tests.support.snippets import domain_xml


def devices(snippet: str) -> Domain:
    """The minimal pc domain with `snippet` in <devices> (line 7 onwards)."""
    return model.parse(domain_xml(
        "<devices>\n" + textwrap.dedent(snippet).strip("\n") + "\n</devices>",
        os="<os><type machine='pc'>hvm</type></os>")).domain


def values(d: Domain, option: str) -> list[str]:
    """Every value of `option`, in order (no runtime: as `reconcile argv` shows it)."""
    return [o[1] for o in model.options(d) if o[0] == option]


# (XML, libvirt's -chardev values, libvirt's -device values for the character devices)
CASES = [
    pytest.param("""
        <serial type='tcp'>
          <source mode='connect' host='127.0.0.1' service='9999'/>
          <protocol type='raw'/>
          <target port='0'/>
        </serial>
        <console type='tcp'>
          <source mode='connect' host='127.0.0.1' service='9999'/>
          <protocol type='raw'/>
          <target port='0'/>
        </console>""",
                 ["socket,id=charserial0,host=127.0.0.1,port=9999"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0"], id="serial-tcp-chardev"),
    pytest.param("""
        <serial type='tcp'>
          <source mode='bind' host='127.0.0.1' service='9999'/>
          <protocol type='telnet'/>
          <target port='0'/>
        </serial>""",
                 ["socket,id=charserial0,host=127.0.0.1,port=9999,telnet=on,server=on,wait=off"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0"],
                 id="serial-tcp-telnet-chardev"),
    pytest.param("""
        <serial type='udp'>
          <source mode='bind' host='127.0.0.1' service='9999'/>
          <source mode='connect' host='127.0.0.1' service='9998'/>
          <target port='0'/>
        </serial>
        <serial type='udp'>
          <source mode='connect' service='9999'/>
          <target port='1'/>
        </serial>""",
                 ["udp,id=charserial0,host=127.0.0.1,port=9998,localaddr=127.0.0.1,localport=9999",
                  "udp,id=charserial1,host=,port=9999,localaddr=,localport=0"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0",
                  "isa-serial,chardev=charserial1,id=serial1,index=1"], id="serial-udp-chardev"),
    pytest.param("""
        <serial type='dev'>
          <source path='/dev/ttyS2'/>
          <target port='0'/>
          <address type='isa' iobase='0x3f8' irq='0x4'/>
        </serial>""",
                 ["serial,id=charserial0,path=/dev/ttyS2"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0,iobase=1016,irq=4"],
                 id="serial-dev-chardev-iobase"),
    # libvirt passes the file as an fd (-add-fd, path=/dev/fdset/0); qemud names the file
    pytest.param("""
        <serial type='file'>
          <source path='/tmp/serial.log' append='on'/>
          <target port='0'/>
        </serial>""",
                 ["file,id=charserial0,path=/tmp/serial.log,append=on"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0"], id="serial-file-chardev"),
    pytest.param("""
        <serial type='pty'>
          <target type='isa-debug'/>
          <address type='isa' iobase='0x402'/>
        </serial>""",
                 ["pty,id=charserial0"],
                 ["isa-debugcon,chardev=charserial0,id=serial0,iobase=1026"], id="serial-debugcon"),
    pytest.param("""
        <serial type='pipe'>
          <source path='/tmp/serial.pipe'/>
          <target port='0'/>
        </serial>""",
                 ["pipe,id=charserial0,path=/tmp/serial.pipe"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0"], id="serial-pipe"),
    pytest.param("""
        <serial type='tcp'>
          <source mode='connect' host='127.0.0.1' service='9999'>
            <reconnect enabled='yes' timeout='10'/>
          </source>
        </serial>""",
                 ["socket,id=charserial0,host=127.0.0.1,port=9999,reconnect=10"],
                 ["isa-serial,chardev=charserial0,id=serial0,index=0"], id="chardev-reconnect"),
    # libvirt opens a bound unix socket itself and passes its fd; qemud has QEMU bind it
    pytest.param("""
        <parallel type='unix'>
          <source mode='bind' path='/tmp/parport0.socket'/>
          <protocol type='raw'/>
          <target port='0'/>
        </parallel>
        <parallel type='unix'>
          <source mode='connect' path='/tmp/parport1.socket'/>
          <protocol type='raw'/>
          <target port='1'/>
        </parallel>""",
                 ["socket,id=charparallel0,path=/tmp/parport0.socket,server=on,wait=off",
                  "socket,id=charparallel1,path=/tmp/parport1.socket,server=off"],
                 ["isa-parallel,chardev=charparallel0,id=parallel0",
                  "isa-parallel,chardev=charparallel1,id=parallel1"], id="parallel-unix-chardev"),
    pytest.param("""
        <parallel type='dev'>
          <source path='/dev/parport0'/>
          <target port='0'/>
        </parallel>""",
                 ["parallel,id=charparallel0,path=/dev/parport0"],
                 ["isa-parallel,chardev=charparallel0,id=parallel0"],
                 id="parallel-parport-chardev"),
    pytest.param("""
        <parallel type='tcp'>
          <source mode='bind' host='127.0.0.1' service='9999'/>
          <protocol type='raw'/>
          <target port='0'/>
        </parallel>""",
                 ["socket,id=charparallel0,host=127.0.0.1,port=9999,server=on,wait=off"],
                 ["isa-parallel,chardev=charparallel0,id=parallel0"], id="parallel-tcp-chardev"),
    # libvirt leaves a virtconsole's bus and nr to QEMU; qemud names them (see _consoles)
    pytest.param("""
        <console type='pty'>
          <target type='virtio'/>
        </console>""",
                 ["pty,id=charconsole0"],
                 ["virtio-serial-pci,bus=pci.0,addr=0x2,id=virtio-serial0",
                  "virtconsole,chardev=charconsole0,id=console0,bus=virtio-serial0.0,nr=0"],
                 id="console-virtio"),
    pytest.param("""
        <serial type='pty'>
          <target port='0'/>
        </serial>
        <console type='pty'>
          <target type='serial' port='0'/>
        </console>
        <console type='pty'>
          <target type='virtio' port='1'/>
        </console>
        <console type='pty'>
          <target type='virtio' port='2'/>
        </console>
        <console type='pty'>
          <target type='virtio' port='3'/>
        </console>""",
                 ["pty,id=charserial0", "pty,id=charconsole1", "pty,id=charconsole2",
                  "pty,id=charconsole3"],
                 ["virtio-serial-pci,bus=pci.0,addr=0x2,id=virtio-serial0",
                  "isa-serial,chardev=charserial0,id=serial0,index=0",
                  "virtconsole,chardev=charconsole1,id=console1,bus=virtio-serial0.0,nr=0",
                  "virtconsole,chardev=charconsole2,id=console2,bus=virtio-serial0.0,nr=1",
                  "virtconsole,chardev=charconsole3,id=console3,bus=virtio-serial0.0,nr=2"],
                 id="console-virtio-many"),
    pytest.param("""
        <console type='unix'>
          <source mode='bind' path='/tmp/listen.socket'/>
          <target type='virtio'/>
        </console>
        <console type='unix'>
          <source mode='connect' path='/tmp/connect.socket'/>
          <target type='virtio'/>
        </console>""",
                 ["socket,id=charconsole0,path=/tmp/listen.socket,server=on,wait=off",
                  "socket,id=charconsole1,path=/tmp/connect.socket,server=off"],
                 ["virtio-serial-pci,bus=pci.0,addr=0x2,id=virtio-serial0",
                  "virtconsole,chardev=charconsole0,id=console0,bus=virtio-serial0.0,nr=0",
                  "virtconsole,chardev=charconsole1,id=console1,bus=virtio-serial0.0,nr=1"],
                 id="console-virtio-unix"),
]


@pytest.mark.parametrize(("snippet", "chardevs", "devs"), CASES)
def test_command_line_as_libvirt(snippet: str, chardevs: list[str], devs: list[str]) -> None:
    d = devices(snippet)
    assert values(d, "-chardev") == chardevs
    assert values(d, "-device") == devs


@pytest.mark.parametrize(("snippet", "chardevs", "devs"), CASES)
def test_round_trip(snippet: str, chardevs: list[str], devs: list[str]) -> None:
    d = devices(snippet)
    again = model.parse(to_xml(d)).domain
    assert again == d
    assert values(again, "-chardev") == chardevs


def test_models() -> None:
    d = devices("""
        <serial type='udp'>
          <source mode='bind' host='127.0.0.1' service='9999'/>
          <source mode='connect' host='127.0.0.1' service='9998'/>
          <target port='1'/>
        </serial>
        <console type='unix'>
          <source mode='connect' path='/tmp/c.sock'>
            <reconnect enabled='no'/>
          </source>
          <target type='virtio'/>
        </console>
        <parallel type='file'>
          <source path='/tmp/lp' append='off'/>
        </parallel>""")
    assert d.devices.serials == (Serial(type="udp", port=1, host="127.0.0.1", service=9998,
                                        bind_host="127.0.0.1", bind_service=9999),)
    assert d.devices.consoles == (Console(type="unix", path="/tmp/c.sock", mode="connect",
                                          reconnect=0),)
    assert d.devices.parallels == (Parallel(type="file", path="/tmp/lp", append=False),)
    assert "file,id=charparallel0,path=/tmp/lp,append=off" in values(d, "-chardev")
    assert "socket,id=charconsole1,path=/tmp/c.sock,server=off,reconnect=0" in values(d, "-chardev")


def test_tcp_defaults_to_connect_as_libvirt() -> None:
    d = devices("<serial type='tcp'><source host='h' service='7'/></serial>")
    assert d.devices.serials[0].mode == "connect"
    assert values(d, "-chardev") == ["socket,id=charserial0,host=h,port=7"]


def test_serial_tcp_logged_with_runtime() -> None:
    """With a runtime every serial port but a file or null one is copied to its console log."""
    from pathlib import Path
    runtime = model.Runtime(Path("/run/q/qmp.sock"), Path("/run/q/pid"), Path("/log/c.log"))
    d = devices("<serial type='tcp'><source mode='bind' service='7'/></serial>")
    got = [v for o, v in (o[:2] for o in model.options(d, runtime) if len(o) > 1)
           if o == "-chardev" and v.startswith("socket,id=charserial0")]
    assert got == ["socket,id=charserial0,port=7,server=on,wait=off,logfile=/log/c.log,"
                   "logappend=on"]


def issues(snippet: str) -> list[tuple[int | None, str]]:
    """(line, message) of every issue of a domain with `snippet` in <devices>."""
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(domain_xml("<devices>\n" + textwrap.dedent(snippet).strip("\n")
                               + "\n</devices>"))
    return [(i.line, i.message) for i in info.value.issues]


def test_errors_at_their_lines() -> None:
    assert issues("<serial type='tcp'>\n<source service='x'/>\n</serial>") == [
        (8, "<source service>: 'x' is not a whole number")]
    assert issues("<serial type='tcp'>\n<source service='1'/>\n<source service='2'/>\n"
                  "</serial>") == [
        (9, "<serial type='tcp'> takes one <source>; remove the others")]
    assert issues("<serial type='tcp'>\n<source service='1'/>\n<protocol type='tls'/>\n"
                  "</serial>") == [
        (9, "<protocol type>: 'tls' is not supported; use 'raw' or 'telnet' (TLS needs "
            "certificates qemud does not configure)")]
    assert issues("<console type='stdio'>\n<target type='virtio'/>\n</console>") == [
        (7, "<console type>: 'stdio' is not supported; QEMU's standard input and output are "
            "qemud's, not a terminal; use 'pty'")]
    assert issues("<serial type='tcp'>\n<source mode='connect' service='1'>\n"
                  "<reconnect enabled='yes'/>\n</source>\n</serial>") == [
        (9, "<reconnect enabled='yes'> needs timeout= (seconds, at least 1)")]


# --- interfaces: socket netdevs, taps, virtio-net driver settings, rom ------------------------

# (XML, libvirt's -netdev values, libvirt's -device values)
NICS = [
    pytest.param("""
        <interface type='client'>
          <mac address='52:54:00:8c:b9:05'/>
          <source address='192.168.0.1' port='5558'/>
          <model type='rtl8139'/>
        </interface>""",
                 ["socket,connect=192.168.0.1:5558,id=hostnet0"],
                 ["rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:8c:b9:05"],
                 id="net-client"),
    pytest.param("""
        <interface type='server'>
          <mac address='52:54:00:8c:b9:05'/>
          <source address='192.168.0.1' port='5558'/>
        </interface>""",
                 ["socket,listen=192.168.0.1:5558,id=hostnet0"],
                 ["rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:8c:b9:05"],
                 id="net-server"),
    pytest.param("""
        <interface type='mcast'>
          <mac address='52:54:00:8c:b9:05'/>
          <source address='192.0.0.1' port='5558'/>
        </interface>""",
                 ["socket,mcast=192.0.0.1:5558,id=hostnet0"],
                 ["rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:8c:b9:05"],
                 id="net-mcast"),
    pytest.param("""
        <interface type='udp'>
          <mac address='52:54:00:8c:b9:05'/>
          <source address='192.168.10.1' port='5555'>
            <local address='192.168.10.1' port='5556'/>
          </source>
          <model type='rtl8139'/>
        </interface>""",
                 ["socket,udp=192.168.10.1:5555,localaddr=192.168.10.1:5556,id=hostnet0"],
                 ["rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=52:54:00:8c:b9:05"],
                 id="net-udp"),
    pytest.param("""
        <interface type='user'>
          <mac address='00:11:22:33:44:55'/>
          <ip address='172.17.2.0' family='ipv4' prefix='24'/>
          <ip address='2001:db8:ac10:fd01::' family='ipv6' prefix='64'/>
          <model type='rtl8139'/>
          <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
        </interface>""",
                 ["user,net=172.17.2.0/24,ipv6-prefix=2001:db8:ac10:fd01::,ipv6-prefixlen=64,"
                  "id=hostnet0"],
                 ["rtl8139,bus=pci.0,addr=0x3,netdev=hostnet0,id=net0,mac=00:11:22:33:44:55"],
                 id="net-user-addr"),
    pytest.param("""
        <interface type='user'>
          <mac address='00:11:22:33:44:55'/>
          <model type='virtio'/>
          <driver txmode='iothread'/>
        </interface>""",
                 ["user,id=hostnet0"],
                 ["virtio-net-pci,tx=bh,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                  "mac=00:11:22:33:44:55"], id="net-virtio-device"),
    pytest.param("""
        <interface type='user'>
          <mac address='00:11:22:33:44:55'/>
          <model type='virtio'/>
          <driver rx_queue_size='512' tx_queue_size='1024'/>
        </interface>""",
                 ["user,id=hostnet0"],
                 ["virtio-net-pci,rx_queue_size=512,tx_queue_size=1024,bus=pci.0,addr=0x2,"
                  "netdev=hostnet0,id=net0,mac=00:11:22:33:44:55"], id="net-virtio-rxtxqueuesize"),
    pytest.param("""
        <interface type='user'>
          <mac address='00:22:44:66:88:aa'/>
          <model type='virtio'/>
          <driver>
            <host csum='off' gso='off' tso4='off' tso6='off' ecn='off' ufo='off'
                  mrg_rxbuf='off'/>
            <guest csum='off' tso4='off' tso6='off' ecn='off' ufo='off'/>
          </driver>
        </interface>""",
                 ["user,id=hostnet0"],
                 ["virtio-net-pci,csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,"
                  "host_ufo=off,mrg_rxbuf=off,guest_csum=off,guest_tso4=off,guest_tso6=off,"
                  "guest_ecn=off,guest_ufo=off,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                  "mac=00:22:44:66:88:aa"], id="net-virtio-disable-offloads"),
    pytest.param("""
        <interface type='user'>
          <mac address='00:11:22:33:44:77'/>
          <model type='virtio'/>
          <driver rss='off' rss_hash_report='on'/>
        </interface>""",
                 ["user,id=hostnet0"],
                 ["virtio-net-pci,rss=off,hash=on,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                  "mac=00:11:22:33:44:77"], id="net-virtio-rss"),
    pytest.param("""
        <interface type='user'>
          <mac address='52:54:00:e5:48:58'/>
          <model type='virtio'/>
          <driver name='vhost' event_idx='off'/>
        </interface>""",
                 ["user,id=hostnet0"],
                 ["virtio-net-pci,event_idx=off,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                  "mac=52:54:00:e5:48:58"], id="event_idx"),
    # libvirt creates the tap, runs the script and passes fd=3; qemud has QEMU do the same
    pytest.param("""
        <interface type='ethernet'>
          <mac address='00:11:22:33:44:55'/>
          <script path='/etc/qemu-ifup'/>
          <model type='rtl8139'/>
        </interface>""",
                 ["tap,id=hostnet0,script=/etc/qemu-ifup,downscript=no"],
                 ["rtl8139,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,mac=00:11:22:33:44:55"],
                 id="net-eth"),
    pytest.param("""
        <interface type='ethernet'>
          <mac address='fe:11:22:33:44:55'/>
          <target dev='mytap0' managed='no'/>
          <model type='virtio'/>
          <driver queues='4'/>
        </interface>""",
                 ["tap,id=hostnet0,ifname=mytap0,script=no,downscript=no,queues=4"],
                 ["virtio-net-pci,mq=on,vectors=10,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                  "mac=fe:11:22:33:44:55"], id="net-eth-unmanaged-tap"),
    pytest.param("""
        <interface type='user'>
          <mac address='52:54:00:24:a5:9f'/>
          <model type='virtio'/>
          <rom bar='off' file='/usr/share/qemu/efi-virtio.rom'/>
        </interface>
        <interface type='user'>
          <mac address='52:54:00:24:a5:a0'/>
          <model type='e1000'/>
          <rom enabled='no'/>
        </interface>""",
                 ["user,id=hostnet0", "user,id=hostnet1"],
                 ["virtio-net-pci,bus=pci.0,addr=0x2,netdev=hostnet0,id=net0,"
                  "mac=52:54:00:24:a5:9f,romfile=/usr/share/qemu/efi-virtio.rom,rombar=0",
                  "e1000,bus=pci.0,addr=0x3,netdev=hostnet1,id=net1,mac=52:54:00:24:a5:a0,"
                  "romfile="], id="net-rom"),
]


@pytest.mark.parametrize(("snippet", "netdevs", "devs"), NICS)
def test_interfaces_as_libvirt(snippet: str, netdevs: list[str], devs: list[str]) -> None:
    d = devices(snippet)
    assert values(d, "-netdev") == netdevs
    assert values(d, "-device") == devs
    assert model.parse(to_xml(d)).domain == d


def test_interface_refusals_at_their_lines() -> None:
    assert issues("<interface type='user'>\n<vlan><tag id='42'/></vlan>\n</interface>") == [
        (8, "<vlan> inside <interface> is not supported: VLAN tags are set by libvirt on an Open "
            "vSwitch or SR-IOV port, which qemud does not manage; tag the traffic on the host "
            "bridge instead")]
    assert issues("<interface type='ethernet'>\n<source>\n<ip address='1.2.3.4'/>\n</source>\n"
                  "</interface>") == [
        (9, "<ip> inside <source> is not supported: qemud does not configure addresses for the "
            "guest or the host's tap; configure them in the guest (or the <script> of a "
            "type='ethernet' tap)")]
    assert issues("<interface type='bridge'>\n<source bridge='br0'/>\n<model type='virtio'/>\n"
                  "<driver queues='2'/>\n</interface>") == [
        (7, "<interface>: <driver queues>: a type='bridge' netdev has one queue pair; "
            "multiqueue needs type='ethernet' (a multiqueue tap)")]
    assert issues("<interface type='client'>\n<source port='5'/>\n</interface>") == [
        (7, "<interface>: type='client' needs <source address='...'/>")]
    assert issues("<interface type='user'>\n<model type='virtio'/>\n"
                  "<driver rx_queue_size='100'/>\n</interface>") == [
        (9, "<driver rx_queue_size>: 100 is not allowed; use one of 256, 512 or 1024")]
    assert issues("<interface type='vhostuser'>\n<source type='unix' path='/x' mode='client'/>"
                  "\n</interface>") == [
        (7, "<interface type='vhostuser'> is not supported: qemud does not start or manage "
            "vhost-user backends (DPDK, Open vSwitch)")]


# --- redirected USB devices, smartcards, vsock ----------------------------------------------

# (XML, libvirt's -chardev values, libvirt's -device values after the USB controller)
USB_RELAYS = [
    pytest.param("""
        <controller type='usb' index='0' model='ich9-ehci1'/>
        <redirdev bus='usb' type='tcp'>
          <source mode='connect' host='localhost' service='4000'/>
          <protocol type='raw'/>
          <boot order='1'/>
        </redirdev>""",
                 ["socket,id=charredir0,host=localhost,port=4000"],
                 ["usb-redir,chardev=charredir0,id=redir0,bootindex=1,bus=usb.0,port=1"],
                 id="usb-redir-boot"),
    # libvirt binds the listening socket itself and passes its fd
    pytest.param("""
        <controller type='usb' index='0' model='ich9-ehci1'/>
        <redirdev bus='usb' type='unix'>
          <source mode='connect' path='/tmp/connect.socket'/>
          <protocol type='raw'/>
        </redirdev>
        <redirdev bus='usb' type='unix'>
          <source mode='bind' path='/tmp/listen.socket'/>
          <protocol type='raw'/>
        </redirdev>""",
                 ["socket,id=charredir0,path=/tmp/connect.socket,server=off",
                  "socket,id=charredir1,path=/tmp/listen.socket,server=on,wait=off"],
                 ["usb-redir,chardev=charredir0,id=redir0,bus=usb.0,port=1",
                  "usb-redir,chardev=charredir1,id=redir1,bus=usb.0,port=2"],
                 id="usb-redir-unix"),
    pytest.param("""
        <smartcard mode='host'/>""",
                 [], ["usb-ccid,id=ccid0,bus=usb.0,port=1",
                      "ccid-card-emulated,backend=nss-emulated,id=smartcard0,bus=ccid0.0"],
                 id="smartcard-host"),
    pytest.param("""
        <controller type='ccid' index='0'/>
        <smartcard mode='host'>
          <address type='ccid' controller='0' slot='0'/>
        </smartcard>""",
                 [], ["usb-ccid,id=ccid0,bus=usb.0,port=1",
                      "ccid-card-emulated,backend=nss-emulated,id=smartcard0,bus=ccid0.0"],
                 id="smartcard-controller"),
    pytest.param("""
        <smartcard mode='host-certificates'>
          <certificate>cert1</certificate>
          <certificate>cert2</certificate>
          <certificate>cert3</certificate>
          <database>/tmp/foo</database>
        </smartcard>""",
                 [], ["usb-ccid,id=ccid0,bus=usb.0,port=1",
                      "ccid-card-emulated,backend=certificates,cert1=cert1,cert2=cert2,"
                      "cert3=cert3,db=/tmp/foo,id=smartcard0,bus=ccid0.0"],
                 id="smartcard-host-certificates-database"),
    pytest.param("""
        <smartcard mode='host-certificates'>
          <certificate>cert1</certificate>
          <certificate>cert2</certificate>
          <certificate>cert3</certificate>
        </smartcard>""",
                 [], ["usb-ccid,id=ccid0,bus=usb.0,port=1",
                      "ccid-card-emulated,backend=certificates,cert1=cert1,cert2=cert2,"
                      "cert3=cert3,db=/etc/pki/nssdb,id=smartcard0,bus=ccid0.0"],
                 id="smartcard-host-certificates"),
    pytest.param("""
        <smartcard mode='passthrough' type='tcp'>
          <source mode='bind' host='127.0.0.1' service='2001'/>
          <protocol type='raw'/>
        </smartcard>""",
                 ["socket,id=charsmartcard0,host=127.0.0.1,port=2001,server=on,wait=off"],
                 ["usb-ccid,id=ccid0,bus=usb.0,port=1",
                  "ccid-card-passthru,chardev=charsmartcard0,id=smartcard0,bus=ccid0.0"],
                 id="smartcard-passthrough-tcp"),
    pytest.param("""
        <graphics type='spice' port='5903'/>
        <smartcard mode='passthrough' type='spicevmc'/>""",
                 ["spicevmc,id=charsmartcard0,name=smartcard"],
                 ["usb-ccid,id=ccid0,bus=usb.0,port=1",
                  "ccid-card-passthru,chardev=charsmartcard0,id=smartcard0,bus=ccid0.0"],
                 id="smartcard-passthrough-spicevmc"),
]


@pytest.mark.parametrize(("snippet", "chardevs", "devs"), USB_RELAYS)
def test_usb_relays_as_libvirt(snippet: str, chardevs: list[str], devs: list[str]) -> None:
    d = devices(snippet)
    assert values(d, "-chardev") == chardevs
    got = values(d, "-device")
    assert got[0].split(",")[0] in ("piix3-usb-uhci", "ich9-usb-ehci1")
    assert [v for v in got[1:] if not v.startswith("VGA")] == devs
    assert model.parse(to_xml(d)).domain == d


def test_vsock_given_and_auto() -> None:
    d = devices("<vsock model='virtio'><cid auto='no' address='4'/>"
                "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>"
                "</vsock>")
    assert values(d, "-device") == ["vhost-vsock-pci,id=vsock0,guest-cid=4,bus=pci.0,addr=0x7"]
    assert model.parse(to_xml(d)).domain == d
    auto = devices("<vsock><cid auto='yes'/></vsock>")
    cid = model.argv.vsock_cid(auto)
    assert cid is not None and 3 <= cid <= 2**32 - 2
    assert values(auto, "-device") == [f"vhost-vsock-pci,id=vsock0,guest-cid={cid},bus=pci.0,"
                                       "addr=0x2"]
    other = auto.model_copy(update={"uuid": uuid.UUID("6f1c1a4e-2d0b-4e6b-9a53-1b7c0d6e2f10")})
    assert model.argv.vsock_cid(other) not in (None, cid)  # another domain, another id
    assert model.argv.vsock_cid(auto) == cid  # stable: the same domain, the same id
    assert model.parse(to_xml(auto)).domain == auto


def test_relay_errors_at_their_lines() -> None:
    assert issues("<smartcard mode='host-certificates'>\n<certificate>a</certificate>\n"
                  "</smartcard>") == [
        (7, "<smartcard>: mode='host-certificates' needs exactly three <certificate>s")]
    assert issues("<smartcard mode='passthrough'/>") == [
        (7, "<smartcard mode='passthrough'> needs type= ('spicevmc', 'tcp', 'unix'...)")]
    assert issues("<smartcard mode='passthrough' type='spicevmc'/>") == [
        (7, "this <smartcard> goes through spice, but the domain has no <graphics "
            "type='spice'>; add one or remove it")]
    assert issues("<redirdev bus='usb' type='spicevmc'>\n<source path='/x'/>\n</redirdev>"
                  "\n<graphics type='spice' port='5901'/>") == [
        (8, "<redirdev type='spicevmc'> takes no <source>; remove it")]
    assert issues("<vsock model='virtio'>\n<cid auto='no' address='2'/>\n</vsock>") == [
        (8, "<cid address>: '2' is too small; the minimum is 3")]
    assert issues("<vsock><cid auto='yes'/></vsock>\n<vsock><cid auto='yes'/></vsock>") == [
        (8, "more than one <vsock> is not supported; keep one")]


# --- channels on any character device, qemu-vdagent, rng egd ---------------------------------


def test_chardev_reconnect_as_libvirt() -> None:
    """libvirt's chardev-reconnect.xml: every relay kind with <reconnect>, and rng egd."""
    d = devices("""
        <controller type='usb' index='0' model='piix3-uhci'/>
        <redirdev bus='usb' type='tcp'>
          <source mode='connect' host='localhost' service='3456'>
            <reconnect enabled='yes' timeout='15'/>
          </source>
        </redirdev>
        <smartcard mode='passthrough' type='unix'>
          <source mode='connect' path='/tmp/channel/asdf'>
            <reconnect enabled='yes' timeout='20'/>
          </source>
        </smartcard>
        <channel type='tcp'>
          <source mode='connect' host='localhost' service='1234'>
            <reconnect enabled='yes' timeout='10'/>
          </source>
          <target type='virtio' name='asdf'/>
        </channel>
        <channel type='unix'>
          <source mode='connect' path='/tmp/channel/fdsa'>
            <reconnect enabled='no'/>
          </source>
          <target type='virtio' name='fdsa'/>
        </channel>
        <rng model='virtio'>
          <backend model='egd' type='tcp'>
            <source mode='connect' host='localhost' service='2345'>
              <reconnect enabled='yes' timeout='5'/>
            </source>
          </backend>
        </rng>""")
    # libvirt writes no server=off for a connecting unix socket (QEMU's default); qemud does
    assert values(d, "-chardev") == [
        "socket,id=charchannel0,host=localhost,port=1234,reconnect=10",
        "socket,id=charchannel1,path=/tmp/channel/fdsa,server=off,reconnect=0",
        "socket,id=charredir0,host=localhost,port=3456,reconnect=15",
        "socket,id=charsmartcard0,path=/tmp/channel/asdf,server=off,reconnect=20",
        "socket,id=charrng0,host=localhost,port=2345,reconnect=5"]
    assert "rng-egd,id=objrng0,chardev=charrng0" in values(d, "-object")
    devs = values(d, "-device")
    for dev in ("usb-ccid,id=ccid0,bus=usb.0,port=1",
                "ccid-card-passthru,chardev=charsmartcard0,id=smartcard0,bus=ccid0.0",
                "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,"
                "name=asdf",
                "virtserialport,bus=virtio-serial0.0,nr=2,chardev=charchannel1,id=channel1,"
                "name=fdsa",
                "usb-redir,chardev=charredir0,id=redir0,bus=usb.0,port=2"):
        assert dev in devs
    assert model.parse(to_xml(d)).domain == d


@pytest.mark.parametrize(("snippet", "chardev", "port"), [
    ("""<channel type='qemu-vdagent'>
          <target type='virtio' name='com.redhat.spice.0'/>
          <address type='virtio-serial' controller='1' bus='0' port='3'/>
          <source><clipboard copypaste='no'/><mouse mode='server'/></source>
        </channel>""",
     "qemu-vdagent,id=charchannel0,name=vdagent,clipboard=off,mouse=off",
     "virtserialport,bus=virtio-serial1.0,nr=3,chardev=charchannel0,id=channel0,"
     "name=com.redhat.spice.0"),
    ("""<channel type='qemu-vdagent'>
          <target type='virtio' name='com.redhat.spice.0'/>
          <source><mouse mode='client'/><clipboard copypaste='yes'/></source>
        </channel>""",
     "qemu-vdagent,id=charchannel0,name=vdagent,clipboard=on,mouse=on",
     "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,"
     "name=com.redhat.spice.0"),
    # a nameless channel: libvirt gives the port no name
    ("<channel type='pty'><target type='virtio'/></channel>", "pty,id=charchannel0",
     "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0"),
    ("<channel type='udp'><source mode='connect' host='10.0.0.1' service='9'/>"
     "<target type='virtio' name='u'/></channel>",
     "udp,id=charchannel0,host=10.0.0.1,port=9,localaddr=,localport=0",
     "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,name=u"),
])
def test_channels_as_libvirt(snippet: str, chardev: str, port: str) -> None:
    d = devices(snippet)
    assert values(d, "-chardev") == [chardev]
    assert port in values(d, "-device")
    assert model.parse(to_xml(d)).domain == d


def test_channel_and_egd_errors_at_their_lines() -> None:
    assert issues("<channel type='tcp'>\n<source mode='connect' service='x'/>\n"
                  "<target type='virtio' name='a'/>\n</channel>") == [
        (8, "<source service>: 'x' is not a whole number")]
    assert issues("<rng model='virtio'>\n<backend model='egd' type='vc'/>\n</rng>") == [
        (8, "<backend type>: 'vc' is not supported; a virtual console needs a graphical QEMU "
            "window, which qemud does not open; use 'pty'")]
    assert issues("<channel type='qemu-vdagent'>\n<source><mouse mode='x'/></source>\n"
                  "<target type='virtio'/>\n</channel>") == [
        (8, "<mouse mode>: 'x' is not allowed; use one of 'server' or 'client'")]


def test_redirfilter_as_libvirt() -> None:
    """libvirt's usb-redir-filter-version.xml: rules in order, versions as BCD, -1 for any."""
    d = devices("""
        <graphics type='spice' port='5904'/>
        <controller type='usb' index='0' model='piix3-uhci'/>
        <redirdev bus='usb' type='spicevmc'>
          <address type='usb' bus='0' port='1'/>
        </redirdev>
        <redirdev bus='usb' type='spicevmc'>
          <address type='usb' bus='0' port='2'/>
        </redirdev>
        <redirfilter>
          <usbdev class='0x08' vendor='0x15E1' product='0x2007' version='1.09' allow='yes'/>
          <usbdev class='0x08' vendor='0x15E1' product='0x2007' version='9.4' allow='yes'/>
          <usbdev allow='no'/>
        </redirfilter>""")
    rules = "0x08:0x15E1:0x2007:0x0109:1|0x08:0x15E1:0x2007:0x0940:1|-1:-1:-1:-1:0"
    assert [v for v in values(d, "-device") if v.startswith("usb-redir")] == [
        f"usb-redir,chardev=charredir0,id=redir0,filter={rules},bus=usb.0,port=1",
        f"usb-redir,chardev=charredir1,id=redir1,filter={rules},bus=usb.0,port=2"]
    assert model.parse(to_xml(d)).domain == d
    assert issues("<redirfilter>\n<usbdev version='1.2.3' allow='yes'/>\n</redirfilter>") == [
        (8, "<usbdev version>: '1.2.3' is not a USB release such as '1.10'")]
    assert issues("<redirfilter>\n<usbdev class='0x08'/>\n</redirfilter>") == [
        (8, "<usbdev allow> is required")]


def test_host_input_devices_as_libvirt() -> None:
    """libvirt's input-linux.xml and virtio-input-passthrough.xml."""
    d = devices("""
        <input type='evdev'>
          <source dev='/dev/input/event1234' grab='all' grabToggle='alt-alt' repeat='on'/>
        </input>
        <input type='passthrough' bus='virtio'>
          <source evdev='/dev/input/event1234'/>
        </input>""")
    assert values(d, "-object") == ["input-linux,id=input0,evdev=/dev/input/event1234,"
                                    "repeat=on,grab_all=on,grab-toggle=alt-alt"]
    assert values(d, "-device") == ["virtio-input-host-pci,id=input1,evdev=/dev/input/event1234,"
                                    "bus=pci.0,addr=0x2"]
    assert model.parse(to_xml(d)).domain == d
    assert issues("<input type='passthrough' bus='usb'>\n<source evdev='/dev/input/e'/>\n"
                  "</input>") == [
        (7, "<input>: type='passthrough' is on bus='virtio' (virtio-input-host-pci)")]
    assert issues("<input type='evdev'/>") == [
        (7, "<input>: type='evdev' needs <source> naming the host's /dev/input/event* device")]
    assert issues("<input type='evdev'>\n<source dev='/dev/input/e' grabToggle='f12'/>\n"
                  "</input>") == [
        (8, "<source grabToggle>: 'f12' is not allowed; use one of 'ctrl-ctrl', 'alt-alt', "
            "'shift-shift', 'meta-meta', 'scrolllock' or 'ctrl-scrolllock'")]


def test_nameless_unix_channels_get_their_own_sockets() -> None:
    """libvirt's channel-virtio-unix.xml: sockets in the runtime folder, by name or by index."""
    from pathlib import Path
    runtime = model.Runtime(Path("/run/q/qmp.sock"), Path("/run/q/pid"), Path("/log/c.log"))
    d = devices("""
        <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
        <channel type='unix'><target type='virtio'/></channel>
        <channel type='unix'><target type='virtio'/></channel>""")
    got = [o[1] for o in model.options(d, runtime) if o[0] == "-chardev"][2:]
    assert got == ["socket,id=charchannel0,path=/run/q/org.qemu.guest_agent.0,server=on,wait=off",
                   "socket,id=charchannel1,path=/run/q/channel1.sock,server=on,wait=off",
                   "socket,id=charchannel2,path=/run/q/channel2.sock,server=on,wait=off"]
    assert [v for v in values(d, "-device") if v.startswith("virtserialport")][1] == (
        "virtserialport,bus=virtio-serial0.0,nr=2,chardev=charchannel1,id=channel1")
    assert model.parse(to_xml(d)).domain == d


def test_spiceport_as_libvirt() -> None:
    """libvirt's serial-spiceport.xml (without its spice TLS port, which qemud refuses)."""
    d = devices("""
        <serial type='spiceport'>
          <source channel='org.qemu.console.serial.0'/>
          <target port='0'/>
        </serial>
        <console type='spiceport'>
          <source channel='org.qemu.console.serial.0'/>
          <target type='serial' port='0'/>
        </console>
        <channel type='spiceport'>
          <source channel='org.example.port'/>
          <target type='virtio' name='org.example.port'/>
        </channel>
        <graphics type='spice' port='5903' autoport='no' listen='127.0.0.1'/>""")
    assert values(d, "-chardev") == ["spiceport,id=charserial0,name=org.qemu.console.serial.0",
                                     "spiceport,id=charchannel0,name=org.example.port"]
    assert model.parse(to_xml(d)).domain == d
    assert issues("<serial type='spiceport'>\n<source channel='x'/>\n</serial>") == [
        (7, "this <serial> goes through spice, but the domain has no <graphics type='spice'>; add "
            "one or remove it")]
    assert issues("<serial type='spiceport'>\n<source channel='x' path='x'/>\n</serial>\n"
                  "<graphics type='spice' port='5903'/>") == [
        (7, "<serial>: type='spiceport' takes no <source path>")]


def test_serial_ports_assigned_as_libvirt() -> None:
    """libvirt's rule for a <serial> without <target port>: one more than the highest known."""
    d = devices("<serial type='pty'/>\n<serial type='null'/>\n<console type='pty'/>")
    assert [(s.type, s.port) for s in d.devices.serials] == [("pty", 0), ("null", 1)]
    assert values(d, "-device") == ["isa-serial,chardev=charserial0,id=serial0,index=0",
                                    "isa-serial,chardev=charserial1,id=serial1,index=1"]
    d = devices("<serial type='pty'/>\n<serial type='null'><target port='1'/></serial>")
    assert [(s.type, s.port) for s in d.devices.serials] == [("pty", 2), ("null", 1)]
    assert issues("<serial type='pty'><target port='3'/></serial>\n<serial type='null'/>") == [
        (8, "no serial port is left for this <serial> (QEMU has COM1-COM4, <target port='0'> to "
            "'3'); remove one")]


def test_channels_overflow_to_a_new_controller_as_libvirt() -> None:
    """libvirt's channel-virtio-autoadd.xml: ports='4' holds three channels (nr 1-3)."""
    d = devices("<controller type='virtio-serial' index='0' ports='4' vectors='4'/>\n" + "\n".join(
        f"<channel type='pty'><target type='virtio' name='org.linux-kvm.port.{n}'/></channel>"
        for n in ("0", "foo", "bar", "wizz", "ooh", "lla")))
    got = values(d, "-device")
    assert got[:2] == ["virtio-serial-pci,bus=pci.0,addr=0x2,id=virtio-serial0,max_ports=4,"
                       "vectors=4",  # libvirt's channel-virtio-auto.args
                       "virtio-serial-pci,bus=pci.0,addr=0x3,id=virtio-serial1"]
    assert [v.split(",chardev")[0] for v in got[2:]] == [
        "virtserialport,bus=virtio-serial0.0,nr=1", "virtserialport,bus=virtio-serial0.0,nr=2",
        "virtserialport,bus=virtio-serial0.0,nr=3", "virtserialport,bus=virtio-serial1.0,nr=1",
        "virtserialport,bus=virtio-serial1.0,nr=2", "virtserialport,bus=virtio-serial1.0,nr=3"]


def test_channels_leave_the_virtio_consoles_their_ports() -> None:
    """QEMU numbers virtconsoles first (0, then 1...): channels take the ports after them."""
    d = devices("""
        <console type='pty'><target type='virtio'/></console>
        <console type='pty'><target type='virtio'/></console>
        <channel type='pty'><target type='virtio' name='a'/></channel>""")
    assert [v for v in values(d, "-device") if v.startswith("virtserialport")] == [
        "virtserialport,bus=virtio-serial0.0,nr=2,chardev=charchannel0,id=channel0,name=a"]
