"""Real QEMU runs the character devices, consoles and network backends the model renders.

Each case is a domain file with real host ends: a TCP or unix listener for `mode='connect'`
sources and client NICs, a free port for bound ones, a pty for `type='dev'`, a fifo pair for
`type='pipe'`, a tap QEMU creates (as root) whose `<script>` must run, a real NSS database
(certutil) for an emulated smartcard.
QEMU is started paused (`-S`) under TCG with the model's command line; the test requires
`query-status` to say 'prelaunch', and `query-chardev` to list every chardev the model named
(so QEMU realized each backend, and each front-end device found it), then quits QEMU.
Not run here, for want of host hardware: `<parallel type='dev'>` (a ppdev parallel port),
`<vsock>` (/dev/vhost-vsock), `<smartcard mode='host'>` (the host's /etc/pki/nssdb),
`<input type='evdev'|'passthrough'>` (a /dev/input/event* device); the model tests cover their
command lines.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import model
from tests.support.qmp import query_paused

pytestmark = pytest.mark.qemu


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the OS says is free now (bound and released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _tcp_listener() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 for QEMU to connect to; yields its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def _unix_listener(path: Path) -> Iterator[Path]:
    """A unix socket listener at `path` for QEMU to connect to."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        s.listen(4)
        yield path


Case = Callable[[Path, contextlib.ExitStack], str]
"""Builds the <devices> body of one case in a work folder, keeping its host ends open."""


def _serial_sockets(work: Path, stack: contextlib.ExitStack) -> str:
    tcp = stack.enter_context(_tcp_listener())
    unix = stack.enter_context(_unix_listener(work / "peer.sock"))
    return f"""
      <serial type='tcp'><source mode='connect' host='127.0.0.1' service='{tcp}'>
        <reconnect enabled='yes' timeout='5'/></source><protocol type='raw'/>
        <target port='0'/></serial>
      <serial type='tcp'><source mode='bind' host='127.0.0.1' service='{_free_port()}'/>
        <protocol type='telnet'/><target port='1'/></serial>
      <serial type='udp'><source mode='bind' host='127.0.0.1'
        service='{_free_port(socket.SOCK_DGRAM)}'/>
        <source mode='connect' host='127.0.0.1' service='{_free_port(socket.SOCK_DGRAM)}'/>
        <target port='2'/></serial>
      <serial type='unix'><source mode='connect' path='{unix}'/><target port='3'/></serial>"""


def _serial_dev_pipe_debugcon(work: Path, stack: contextlib.ExitStack) -> str:
    primary, secondary = os.openpty()
    stack.callback(os.close, primary)
    stack.callback(os.close, secondary)
    for end in ("in", "out"):
        os.mkfifo(work / f"guest.pipe.{end}")
        # QEMU opens both ends of the fifos; keep a reader and writer open so it does not block
        fd = os.open(work / f"guest.pipe.{end}", os.O_RDWR | os.O_NONBLOCK)
        stack.callback(os.close, fd)
    return f"""
      <serial type='dev'><source path='{os.ttyname(secondary)}'/><target port='0'/>
        <address type='isa' iobase='0x3f8' irq='0x4'/></serial>
      <serial type='pipe'><source path='{work / "guest.pipe"}'/><target port='1'/></serial>
      <serial type='file'><source path='{work / "s.log"}' append='on'/><target port='2'/></serial>
      <serial type='pty'><target type='isa-debug' port='3'/><address type='isa' iobase='0x402'/></serial>"""


def _consoles_parallels(work: Path, stack: contextlib.ExitStack) -> str:
    unix = stack.enter_context(_unix_listener(work / "console-peer.sock"))
    tcp = stack.enter_context(_tcp_listener())
    return f"""
      <serial type='pty'><target port='0'/></serial>
      <console type='pty'><target type='serial' port='0'/></console>
      <console type='pty'><target type='virtio' port='1'/></console>
      <console type='unix'><source mode='bind' path='{work / "console.sock"}'/>
        <target type='virtio' port='2'/></console>
      <console type='unix'><source mode='connect' path='{unix}'/>
        <target type='virtio' port='3'/></console>
      <parallel type='tcp'><source mode='connect' host='127.0.0.1' service='{tcp}'/>
        <target port='0'/></parallel>
      <parallel type='unix'><source mode='bind' path='{work / "lp1.sock"}'/>
        <target port='1'/></parallel>
      <parallel type='file'><source path='{work / "lp2.out"}'/><target port='2'/></parallel>"""


def _socket_nics(work: Path, stack: contextlib.ExitStack) -> str:
    tcp = stack.enter_context(_tcp_listener())
    return f"""
      <interface type='server'><source address='127.0.0.1' port='{_free_port()}'/>
        <model type='virtio'/></interface>
      <interface type='client'><source address='127.0.0.1' port='{tcp}'/>
        <model type='e1000'/></interface>
      <interface type='mcast'><source address='230.0.0.1' port='{_free_port(socket.SOCK_DGRAM)}'/>
        </interface>
      <interface type='udp'>
        <source address='127.0.0.1' port='{_free_port(socket.SOCK_DGRAM)}'>
          <local address='127.0.0.1' port='{_free_port(socket.SOCK_DGRAM)}'/></source>
        <model type='virtio'/></interface>"""


def _virtio_net_settings(work: Path, stack: contextlib.ExitStack) -> str:
    return """
      <interface type='user'>
        <ip address='172.17.2.0' family='ipv4' prefix='24'/>
        <ip address='2001:db8:ac10:fd01::' family='ipv6' prefix='64'/>
        <model type='virtio'/>
        <driver txmode='iothread' rx_queue_size='512' tx_queue_size='1024' event_idx='off'
                ioeventfd='on' rss='on' rss_hash_report='on'>
          <host csum='off' gso='off' tso4='off' tso6='off' ecn='off' ufo='off' mrg_rxbuf='off'/>
          <guest csum='off' tso4='off' tso6='off' ecn='off' ufo='off'/>
        </driver>
        <rom bar='off' file='/usr/lib/ipxe/qemu/efi-virtio.rom'/>
      </interface>
      <interface type='user'><model type='e1000'/><rom enabled='no'/></interface>"""


def _tap(work: Path, stack: contextlib.ExitStack) -> str:
    if os.geteuid() != 0 or not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        pytest.skip("creating a tap needs root and /dev/net/tun")
    name = f"qdch{os.getpid() % 100000}"
    script = work / "ifup"
    script.write_text(f"#!/bin/sh\necho \"$1\" > {work / 'ifup.ran'}\n")
    script.chmod(0o755)
    return f"""
      <interface type='ethernet'><target dev='{name}'/><script path='{script}'/>
        <model type='virtio'/><driver queues='2'/></interface>"""


def _usb_relays(work: Path, stack: contextlib.ExitStack) -> str:
    tcp = stack.enter_context(_tcp_listener())
    unix = stack.enter_context(_unix_listener(work / "usbredir.sock"))
    return f"""
      <controller type='usb' index='0' model='qemu-xhci'/>
      <redirdev bus='usb' type='tcp'><source mode='connect' host='127.0.0.1' service='{tcp}'/>
        <protocol type='raw'/><boot order='1'/></redirdev>
      <redirdev bus='usb' type='unix'><source mode='connect' path='{unix}'/></redirdev>
      <redirdev bus='usb' type='unix'><source mode='bind' path='{work / "redir-listen.sock"}'/>
        </redirdev>
      <smartcard mode='passthrough' type='tcp'>
        <source mode='bind' host='127.0.0.1' service='{_free_port()}'/></smartcard>
      <redirfilter>
        <usbdev class='0x08' vendor='0x15E1' product='0x2007' version='1.10' allow='yes'/>
        <usbdev allow='no'/>
      </redirfilter>"""


def _nss_db(work: Path) -> Path:
    """A real NSS database with three self-signed certificates cert1-cert3 (certutil)."""
    if shutil.which("certutil") is None:
        pytest.skip("certutil (Debian's libnss3-tools) is needed to make an NSS database")
    db = work / "nssdb"
    db.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                   capture_output=True)
    for n in (1, 2, 3):
        noise = work / "noise"
        noise.write_bytes(os.urandom(64))
        subprocess.run(["certutil", "-S", "-s", f"CN=card{n}", "-n", f"cert{n}", "-x", "-t",
                        "CT,C,C", "-d", f"sql:{db}", "-z", str(noise), "-k", "rsa", "-g",
                        "2048", "-v", "12"], check=True, capture_output=True)
    return db


def _smartcard_certificates(work: Path, stack: contextlib.ExitStack) -> str:
    db = _nss_db(work)
    return f"""
      <controller type='ccid' index='0'/>
      <smartcard mode='host-certificates'>
        <certificate>cert1</certificate><certificate>cert2</certificate>
        <certificate>cert3</certificate><database>{db}</database>
        <address type='ccid' controller='0' slot='0'/>
      </smartcard>"""


def _channels_egd(work: Path, stack: contextlib.ExitStack) -> str:
    channel = stack.enter_context(_tcp_listener())
    egd = stack.enter_context(_tcp_listener())
    unix = stack.enter_context(_unix_listener(work / "channel-peer.sock"))
    return f"""
      <channel type='tcp'><source mode='connect' host='127.0.0.1' service='{channel}'>
        <reconnect enabled='yes' timeout='10'/></source>
        <target type='virtio' name='asdf'/></channel>
      <channel type='unix'><source mode='connect' path='{unix}'><reconnect enabled='no'/>
        </source><target type='virtio' name='fdsa'/></channel>
      <channel type='pty'><target type='virtio'/></channel>
      <channel type='udp'><source mode='connect' host='127.0.0.1'
        service='{_free_port(socket.SOCK_DGRAM)}'/><target type='virtio' name='u'/></channel>
      <channel type='qemu-vdagent'><source><clipboard copypaste='yes'/><mouse mode='client'/>
        </source><target type='virtio' name='com.redhat.spice.0'/></channel>
      <graphics type='vnc' port='{_free_port()}' listen='127.0.0.1'/>
      <rng model='virtio'><backend model='egd' type='tcp'>
        <source mode='connect' host='127.0.0.1' service='{egd}'>
        <reconnect enabled='yes' timeout='5'/></source></backend></rng>"""


def _spiceports(work: Path, stack: contextlib.ExitStack) -> str:
    return f"""
      <serial type='spiceport'><source channel='org.qemu.console.serial.0'/><target port='0'/>
        </serial>
      <channel type='spiceport'><source channel='org.example.port'/>
        <target type='virtio' name='org.example.port'/></channel>
      <graphics type='spice' port='{_free_port()}' autoport='no' listen='127.0.0.1'/>"""


def _virtio_serial_overflow(work: Path, stack: contextlib.ExitStack) -> str:
    channels = "".join(f"<channel type='pty'><target type='virtio' name='port.{n}'/></channel>"
                       for n in range(6))
    return f"""
      <controller type='virtio-serial' index='0' ports='4'/>
      <console type='pty'><target type='virtio'/></console>
      <console type='pty'><target type='virtio'/></console>
      {channels}"""


CASES: dict[str, Case] = {
    "virtio-serial-overflow": _virtio_serial_overflow,
    "spiceports": _spiceports,
    "channels-egd": _channels_egd,
    "usb-relays": _usb_relays,
    "smartcard-certificates": _smartcard_certificates,
    "nic-sockets": _socket_nics,
    "nic-virtio-settings": _virtio_net_settings,
    "nic-tap": _tap,
    "serial-sockets": _serial_sockets,
    "serial-dev-pipe-debugcon": _serial_dev_pipe_debugcon,
    "consoles-parallels": _consoles_parallels,
}


@pytest.mark.parametrize("label", sorted(CASES))
def test_qemu_runs_character_devices(label: str, tmp_path: Path) -> None:
    work = tmp_path
    with contextlib.ExitStack() as stack:
        body = CASES[label](work, stack)
        data = f"""<domain type='qemu'>
  <name>{label}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>{body}</devices>
</domain>""".encode()
        domain = model.parse(data).domain
        runtime = model.Runtime(work / "qmp.sock", work / "qemu.pid", work / "console.log")
        argv = [*model.command_line(domain, runtime), "-S"]
        names = {v.split(",")[1].removeprefix("id=") for o, v in itertools.pairwise(argv)
                 if o == "-chardev"}
        status, chardevs = query_paused(argv, runtime.qmp_socket, work / "stderr",
                                        ["query-status", "query-chardev"])
    labels = {str(c["label"]) for c in chardevs}
    assert status["status"] == "prelaunch", shlex.join(argv)
    assert names <= labels, (names - labels, shlex.join(argv))
    complaints = (work / "stderr").read_text()
    assert "Could not" not in complaints and "warning" not in complaints, complaints
    if label == "nic-tap":  # QEMU created the tap and ran the <script> with its name
        assert (work / "ifup.ran").read_text().strip().startswith("qdch")
