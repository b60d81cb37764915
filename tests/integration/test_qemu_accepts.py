"""Real QEMU accepts the command line the model renders: every sample, generated domains, and limits.

Each domain's `model.command_line(domain, runtime)` plus `-S` is started (paused, never runs guest
code) under TCG; the test connects to the QMP monitor of the `model.Runtime` and requires
`query-status` to say 'prelaunch' or 'paused', i.e. QEMU parsed every option and realized every
device. The generated domains are the 15 most varied of 400 `random_domain`s; `edge_domains()` adds
domains at each limit the model enforces (255 vCPUs, 30 PCI devices, last disk units...).
Then `quit`, and the process must exit. All launches run concurrently (a few at a time) from one
module fixture; each domain is then its own test, so failures name the domain and carry QEMU's
stderr, the substitutions made and the argv. QEMU processes still alive are killed in `finally`.

The domains are adapted to this machine on a COPY (`model_copy`); sample files are never written.
`adapt()` makes exactly these substitutions, each recorded in the failure message:

* `type='kvm'` -> `type='qemu'`: nested KVM is unavailable here, tests always run TCG. (The model
  then renders host-passthrough/host-model CPUs as `-cpu max`, as it documents.)
* `<emulator>` that does not exist here -> the same binary name found on PATH.
* disk sources (they name files that do not exist here) -> new files in a temporary directory,
  keeping the file's base name (commas, spaces, unicode: it checks the `,,` escaping), created
  with `qemu-img create -f qcow2|raw` as the driver type says (raw when absent; 1440 KiB for
  floppies so QEMU can guess a geometry). `type='block'` disks get a regular file too: the
  command line is the same (`-drive file=`).
* `<kernel>`/`<initrd>` -> the test guest's real kernel and initramfs (`tests.support.guest`,
  `build_guest()`, cached): QEMU loads and checks `-kernel` at startup, so a dummy file would be
  rejected, and this machine has no /boot/vmlinuz-*. `<cmdline>` is kept.
* `type='bridge'`/`type='network'` NICs -> `type='user'` (no bridge or qemu-bridge-helper
  here); model, MAC and boot order are kept.
* a fixed VNC port -> kept when it is free, unique in the batch and outside 5900-5999 (the
  automatic displays `:0,to=99` of the concurrently started VMs race for those), else a free
  port chosen by the OS: it stays a fixed port, so `-vnc host:N` is still exercised.
* serial `file`/`unix` paths and `<log file>` paths -> the temporary directory (same base names).
  For a unix serial with mode='connect' the test listens on that socket first, as the peer a
  real user would have started: QEMU connects at startup and fails without one.
* an rng backend that does not exist here -> a regular file with the same base name.
* UEFI: QEMU's firmware descriptors are read from /usr/share/qemu/firmware (Debian's `ovmf`)
  and passed to the model; the runtime's `state_dir` is the work directory, where the test
  copies the chosen firmware's variable template to the VARS file, as the daemon must.

Besides the samples, this launches the real-world files in tests/data/virt-install (virt-install
--print-xml and virsh dumpxml of Debian 12's virt-install 4.1 and libvirt 9.0) and `COMBOS`,
hand-written domains with the settings added for libvirt compatibility that those files lack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from qemu.qmp import QMPClient
from qemu.qmp.protocol import ConnectError
from qemu.qmp.qmp_client import ExecInterruptedError

import model
from model.domain import Disk, Domain, Graphics, Interface, Rng, Serial
from model.firmware import choose
from reconciler.uefi import descriptors
from tests.support.domains import edge_domains, random_domain
from tests.support.guest import Guest
from tests.support.procs import kill_mentioning, pids_mentioning

pytestmark = pytest.mark.qemu

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.xml"))
VIRT_INSTALL = sorted((Path(__file__).resolve().parents[2] / "tests" / "data" / "virt-install")
                      .glob("*.xml"))


def _combo(body: str, machine: str = "q35", kind: str = "kvm", features: str = "",
           clock: str = "", os_extra: str = "", os_attrs: str = "",
           vcpu: str = "<vcpu placement='static'>2</vcpu>", top: str = "") -> Domain:
    """A hand-written domain: `body` inside <devices>, `top` after <vcpu>, the rest minimal."""
    return model.parse(f"""<domain type='{kind}'>
  <name>combo</name>
  <memory unit='MiB'>128</memory>
  <currentMemory unit='MiB'>96</currentMemory>
  {vcpu}{top}
  <os{os_attrs}><type arch='x86_64' machine='{machine}'>hvm</type>{os_extra}</os>
  <features><acpi/><apic/>{features}</features>
  <clock offset='utc'>{clock}</clock>
  <devices>{body}{"" if "<memballoon" in body else "<memballoon model='virtio'/>"}</devices>
</domain>""".encode()).domain


COMBOS: dict[str, Domain] = {
    # an ich9-ehci1 and its companions without addresses: packed in one slot, as libvirt does
    "combo-pc-usb2-companions": _combo("""
      <controller type='usb' index='0' model='ich9-ehci1'/>
      <controller type='usb' index='0' model='ich9-uhci1'/>
      <controller type='usb' index='0' model='ich9-uhci2'/>
      <controller type='usb' index='0' model='ich9-uhci3'/>
      <input type='tablet' bus='usb'/>""", machine="pc"),
    # two functions of one slot, function 0 not marked multifunction in the file (libvirt sets
    # the bit; QEMU refuses function 1 otherwise)
    "combo-pc-multifunction": _combo("""
      <interface type='user'><model type='virtio'/>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></interface>
      <interface type='user'><model type='e1000'/>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x1'/></interface>
      """, machine="pc"),
    # drive addresses on several SCSI controllers (virtio-scsi with its <driver> options, lsi),
    # IDE and AHCI, USB companions beside an ich9-ehci1, a ccid reader, balloon stats, eoi,
    # dumpCore, a pci-root without hotplug (libvirt's controller-virtio-scsi, usb-ich9-companion)
    "combo-pc-drives-controllers": _combo("""
      <controller type='pci' index='0' model='pci-root'><target hotplug='off'/></controller>
      <controller type='scsi' index='0' model='virtio-scsi'>
        <driver queues='2' cmd_per_lun='50' max_sectors='512' ioeventfd='on' iothread='1'/>
      </controller>
      <controller type='scsi' index='2' model='lsilogic'/>
      <controller type='sata' index='0'/>
      <controller type='ccid' index='0'/>
      <controller type='virtio-serial' index='0' ports='4' vectors='4'/>
      <controller type='usb' index='0' model='ich9-ehci1'>
        <address type='pci' domain='0' bus='0' slot='9' function='7'/></controller>
      <controller type='usb' index='0' model='ich9-uhci1'><master startport='0'/>
        <address type='pci' domain='0' bus='0' slot='9' function='0' multifunction='on'/>
      </controller>
      <controller type='usb' index='0' model='ich9-uhci2'><master startport='2'/>
        <address type='pci' domain='0' bus='0' slot='9' function='1'/></controller>
      <disk type='file' device='disk'><source file='/images/a.img'/><target dev='sda' bus='scsi'/>
        <address type='drive' controller='0' bus='0' target='3' unit='5'/></disk>
      <disk type='file' device='disk'><source file='/images/b.img'/><target dev='sdb' bus='scsi'/>
        <address type='drive' controller='2' bus='0' target='0' unit='6'/></disk>
      <disk type='file' device='cdrom'><target dev='sdc' bus='scsi'/><readonly/></disk>
      <disk type='file' device='disk'><source file='/images/c.img'/><target dev='hdb' bus='ide'/>
        <address type='drive' controller='0' bus='1' target='0' unit='0'/></disk>
      <disk type='file' device='disk'><source file='/images/d.img'/><target dev='sdq' bus='sata'/>
        <address type='drive' controller='0' bus='0' target='0' unit='3'/></disk>
      <memballoon model='virtio'><stats period='5'/></memballoon>""", machine="pc",
        features="", top="<iothreads>1</iothreads>").model_copy(update={"dump_core": True}),
    # spice and VNC together, passwords, every sound model, audio none, watchdog, pty channel
    "combo-spice-vnc-sound": _combo("""
      <graphics type='spice' port='5930' passwd='secret'><image compression='auto_glz'/>
        <jpeg compression='never'/><zlib compression='always'/><playback compression='off'/>
        <streaming mode='filter'/><mouse mode='client'/><clipboard copypaste='no'/>
        <filetransfer enable='no'/></graphics>
      <graphics type='vnc' port='5931' passwd='secret' sharePolicy='force-shared'/>
      <audio id='1' type='spice'/><audio id='2' type='none'/>
      <sound model='ich9'><codec type='micro'/><audio id='2'/></sound>
      <sound model='ich6'><codec type='output'/><codec type='duplex'/></sound>
      <sound model='ac97'/><sound model='usb'/>
      <controller type='usb' model='qemu-xhci' ports='4'/>
      <input type='tablet' bus='usb'><address type='usb' bus='0' port='4'/></input>
      <redirdev bus='usb' type='spicevmc'/>
      <channel type='pty'><target type='virtio' name='org.example.pty'/></channel>
      <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
      <watchdog model='i6300esb' action='poweroff'/><watchdog model='ib700' action='poweroff'/>
      <video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1'>
        <resolution x='1280' y='720'/></model></video>
      <video><model type='virtio' heads='2'><resolution x='800' y='600'/></model></video>
      <memballoon model='virtio'/>"""),
    # pc: a pci-bridge with devices addressed behind it, disk driver options, Hyper-V and KVM
    # features, all timers, smm (vpindex and what rests on it need KVM: not launchable here)
    "combo-pc-bridge-disks-features": _combo("""
      <controller type='pci' index='0' model='pci-root'/>
      <controller type='pci' index='1' model='pci-bridge'>
        <model name='pci-bridge'/><target chassisNr='1'/>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
      </controller>
      <controller type='virtio-serial' index='0' ports='8'/>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'
                detect_zeroes='unmap'/>
        <source file='/images/a.qcow2'/><target dev='vda' bus='virtio'/>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x03' function='0x0'/>
      </disk>
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw' io='threads' detect_zeroes='on'/>
        <source file='/images/b.raw'/><target dev='sda' bus='scsi' rotation_rate='1'/>
        <shareable/><wwn>0x5000c50015ea71ad</wwn><serial>B1</serial>
      </disk>
      <interface type='user'><model type='e1000'/>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x04' function='0x0'/>
      </interface>
      <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>
        <address type='virtio-serial' controller='0' bus='0' port='3'/></channel>
      <video><model type='bochs'/></video><video><model type='ramfb'/></video>
      <memballoon model='virtio'><address type='pci' domain='0x0000' bus='0x01'
        slot='0x07' function='0x0'/></memballoon>""", machine="pc",
        features="""<hyperv mode='custom'><relaxed state='on'/><vapic state='on'/>
          <spinlocks state='on' retries='8191'/><vpindex state='off'/><runtime state='on'/>
          <reset state='on'/><vendor_id state='on' value='KVM Hv'/><frequencies state='on'/>
          </hyperv>
          <kvm><hidden state='on'/><poll-control state='on'/><pv-ipi state='off'/></kvm>
          <pvspinlock state='on'/><smm state='on'/>""",
        clock="""<timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='discard'/>
          <timer name='hpet' present='no'/><timer name='kvmclock' present='yes'/>
          <timer name='hypervclock' present='yes'/><timer name='tsc' mode='auto'/>"""),
    # UEFI without Secure Boot (the plain OVMF descriptor) on pc
    "combo-uefi-no-secure-boot": _combo(
        "<video><model type='virtio'/></video><graphics type='vnc'/>", machine="pc",
        os_attrs=" firmware='efi'",
        os_extra="<firmware><feature enabled='no' name='secure-boot'/></firmware>"),
    # VNC on a unix socket in the runtime folder, spice without any listener; USB disks
    "combo-listen-socket-none": _combo("""<graphics type='vnc'><listen type='socket'/></graphics>
          <disk type='file' device='disk'><source file='/images/usb.raw'/>
            <target dev='sda' bus='usb' removable='on'/></disk>
          <disk type='file' device='cdrom'><source file='/images/usb.iso'/>
            <target dev='sdb' bus='usb'/><readonly/></disk>
          <graphics type='spice'><listen type='none'/></graphics>
          <video><model type='qxl'/></video>""", machine="pc"),
    # the host's cache info passed through (libvirt's cpu-cache-passthrough), vmcoreinfo,
    # TCG's translation cache size, QEMU's builtin rng
    "combo-cpu-cache": _combo("""<video><model type='vga'/></video>
          <rng model='virtio'><backend model='builtin'/></rng>""", machine="pc", kind="qemu",
                              features="<vmcoreinfo/><tcg><tb-cache unit='MiB'>64</tb-cache></tcg>",
                              top="<cpu mode='host-passthrough'><cache mode='passthrough'/></cpu>"),
    # ALSA sound with libvirt's tuning (QEMU opens no device until the guest plays)
    "combo-audio-alsa": _combo(
        """<audio id='1' type='alsa' timerPeriod='50'><output voices='2' mixingEngine='yes'>
          <settings frequency='22050' channels='2' format='s16'/></output></audio>
          <sound model='ich9'/>"""),
    # D-Bus audio (Debian's qemu-system-x86 has its module; pulseaudio, jack and sdl need
    # qemu-system-gui, which the host check makes validate ask for) on an HD Audio card
    # the older sound cards and the PC speaker, VNC carrying one backend's sound
    "combo-sound-legacy": _combo(
        """<graphics type='vnc' autoport='yes'><audio id='2'/></graphics>
          <audio id='1' type='none'/><audio id='2' type='none'/>
          <sound model='pcspk'/><sound model='es1370'/><sound model='sb16'/>""", machine="pc"),
    "combo-audio-dbus": _combo(
        """<audio id='1' type='dbus'><output voices='2'/></audio>
          <sound model='ich6'/>"""),
    # a 9p share QEMU serves itself (mapped, read-only)
    # an IOMMU with interrupt remapping (the I/O APIC emulated by QEMU), a device behind it
    "combo-intel-iommu": _combo(
        """<iommu model='intel'><driver intremap='on' caching_mode='on' iotlb='on'
             aw_bits='48'/></iommu>
           <interface type='user'><model type='virtio'/><driver iommu='on' ats='on'/></interface>""",
        features="<ioapic driver='qemu'/>"),
    "combo-virtio-iommu": _combo("<video><model type='vga'/></video><iommu model='virtio'/>"),
    # libvirt's older q35 layout: a dmi-to-pci-bridge with a pci-bridge and a NIC behind it
    "combo-genid": _combo("<video><model type='vga'/></video>",
                          top="<genid>e9392370-2917-565e-692b-d057f46512d6</genid>"),
    "combo-dmi-bridge": _combo(
        """<controller type='pci' model='pcie-root'/>
           <controller type='pci' model='dmi-to-pci-bridge'/>
           <controller type='pci' model='pci-bridge'/>
           <interface type='user'><model type='e1000'/></interface>"""),
    "combo-9p": _combo("""<filesystem type='mount' accessmode='mapped'><source dir='/tmp'/>
          <target dir='tmpshare'/><readonly/></filesystem>"""),
    # USB hubs, chained, with mice on their ports
    "combo-usb-hubs": _combo("""<controller type='usb' index='0' model='qemu-xhci'/>
          <hub type='usb'><address type='usb' bus='0' port='1'/></hub>
          <hub type='usb'><address type='usb' bus='0' port='1.2'/></hub>
          <input type='mouse' bus='usb'><address type='usb' bus='0' port='1.2.1'/></input>
          <input type='tablet' bus='usb'/>"""),
    # shared memory with the host (Looking Glass style), plain, in /dev/shm
    "combo-shmem": _combo("""<shmem name='qemud-accepts-test'><model type='ivshmem-plain'/>
          <size unit='M'>1</size></shmem>"""),
    # SMBIOS tables from <sysinfo> and a fw_cfg blob (what virt-install --sysinfo and
    # CoreOS's ignition config use)
    "combo-sysinfo": _combo(
        "", os_extra="<smbios mode='sysinfo'/>",
        top="""<sysinfo type='smbios'><bios><entry name='vendor'>Q, Inc.</entry></bios>
          <system><entry name='product'>qemud</entry><entry name='family'>test</entry></system>
          <baseBoard><entry name='serial'>1</entry></baseBoard>
          <chassis><entry name='asset'>2</entry></chassis>
          <oemStrings><entry>a=b</entry></oemStrings></sysinfo>
          <sysinfo type='fwcfg'><entry name='opt/org.qemud/test'>hello</entry></sysinfo>"""),
    # the PMU, Hyper-V crash MSRs beside pvpanic, the BIOS's reboot timeout and serial screen
    "combo-pmu-panics-bios": _combo(
        """<panic model='hyperv'/><panic model='isa'/>""",
        features="<pmu state='on'/>",
        os_extra="<bios useserial='yes' rebootTimeout='500'/>"),
    # a D-Bus display, peer to peer, exporting that audio beside a VNC server (egl-headless
    # needs a host render node, which this machine lacks: QEMU says so at start)
    "combo-display-dbus": _combo(
        """<graphics type='vnc' autoport='yes'/>
          <graphics type='dbus' p2p='yes'><audio id='1'/></graphics>
          <audio id='1' type='dbus'/><sound model='ich9'/><video><model type='virtio'/></video>"""),
    # NUMA cells with <numatune> policies (host node 0 exists everywhere), cpuset, current,
    # I/O threads, virtio options (ats, packed, iommu_platform)
    "combo-numa-cpuset": _combo(
        """<video><model type='vga'/></video>
          <disk type='file' device='disk'><driver name='qemu' type='raw' iothread='2' ats='on'/>
          <source file='/images/io.raw'/><target dev='vda' bus='virtio'/></disk>
          <interface type='user'><model type='virtio'/><driver packed='on'/></interface>
          <input type='mouse' bus='virtio'><driver iommu='on'/></input>
          <rng model='virtio'><backend model='random'>/dev/urandom</backend>
            <driver ats='on' packed='on'/></rng>""",
        machine="q35", vcpu="<vcpu placement='static' cpuset='0' current='2'>4</vcpu>",
        top="""<iothreads>2</iothreads><numatune><memory mode='strict' nodeset='0'/>
          <memnode cellid='1' mode='preferred' nodeset='0'/></numatune>
          <cpu><topology sockets='2' dies='1' cores='2' threads='1'/><numa>
          <cell id='0' cpus='0-1' memory='65536' unit='KiB'/>
          <cell id='1' cpus='2-3' memory='64' unit='MiB'/></numa></cpu>"""),
}
GENERATED = 15
CANDIDATES = 400
CONCURRENCY = 4
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0


# --------------------------------------------------------------------------------------------
# Which generated domains: the most varied 15 out of 400 (greedy cover of their features).


def features(d: Domain) -> set[str]:
    """Tokens naming what a domain exercises on the command line."""
    dev = d.devices
    out = {f"machine:{'q35' if d.os.machine and 'q35' in d.os.machine else 'pc'}",
           f"arch:{d.os.arch}", f"vcpus:{min(d.vcpu.count, 3)}", f"balloon:{dev.memballoon}",
           f"panic:{dev.panic}", f"acpi:{d.features.acpi}", f"vmport:{d.features.vmport}",
           f"offset:{d.clock.offset}", f"reboot:{d.on_reboot}", f"crash:{d.on_crash}"}
    if d.vcpu.count == 255:
        out.add("vcpus:255")
    if d.vcpu.current is not None:
        out.add("vcpus:current")
    if d.cpu is not None:
        out.add(f"cpu:{d.cpu.mode}")
        out |= {"cpu:topology"} if d.cpu.topology else set()
        out |= {f"cpu:dies>1:{d.cpu.topology.dies > 1}"} if d.cpu.topology else set()
        out |= {f"cpu:feature:{f.policy}" for f in d.cpu.features}
    out |= {f"boot:os:{b}" for b in d.os.boot}
    out |= {"boot:menu"} if d.os.bootmenu else set()
    out |= {"kernel"} if d.os.kernel else set()
    out |= {"initrd"} if d.os.initrd else set()
    out |= {f"pm:{d.pm.suspend_to_mem}:{d.pm.suspend_to_disk}"}
    out |= {f"timer:{t.name}:{t.tickpolicy}:{t.present}:{t.track}" for t in d.clock.timers
            if t.name in ("rtc", "hpet")}
    for disk in dev.disks:
        out |= {f"disk:{disk.device}:{disk.target_bus}", f"cache:{disk.cache}",
                f"format:{disk.driver_type}", f"discard:{disk.discard}"}
        out |= {"disk:empty"} if disk.source is None else set()
        out |= {"disk:readonly"} if disk.readonly else set()
        out |= {"disk:serial"} if disk.serial else set()
        out |= {"disk:boot-order"} if disk.boot_order else set()
    out |= {f"controller:{c.type}:{c.model}" for c in dev.controllers}
    out |= {f"nic:{n.model}" for n in dev.interfaces}
    out |= {"nic:boot-order"} if any(n.boot_order for n in dev.interfaces) else set()
    out |= {f"vnc:{g.listen}:{'fixed' if g.port else 'auto'}" for g in dev.graphics}
    out |= {f"serial:{s.type}:{s.mode}:{s.log is not None}" for s in dev.serials}
    out |= {f"serial:port{s.port}" for s in dev.serials}
    out |= {f"video:{i}:{v.model}" for i, v in enumerate(dev.videos)}
    out |= {f"input:{i.type}:{i.bus}" for i in dev.inputs}
    out |= {"rng:rate"} if any(r.rate_bytes for r in dev.rngs) else set()
    out |= {f"rngs:{len(dev.rngs)}"}
    return out


def generated_domains() -> list[Domain]:
    """`GENERATED` domains from `random_domain`, chosen greedily to cover the most features."""
    rng = random.Random(2024)
    pool = [random_domain(rng, i) for i in range(CANDIDATES)]
    covered: set[str] = set()
    chosen: list[Domain] = []
    for _ in range(GENERATED):
        best = max(pool, key=lambda d: len(features(d) - covered))
        chosen.append(best)
        covered |= features(best)
        pool.remove(best)
    return chosen


# --------------------------------------------------------------------------------------------
# Adapting a domain to this machine.


@dataclass
class Setup:
    """Everything one launch needs: the adapted domain and the host-side resources it uses."""

    label: str
    domain: Domain
    notes: list[str]
    runtime: model.Runtime
    listeners: list[socket.socket] = field(default_factory=list)


def _free_port(taken: set[int]) -> int:
    """A TCP port nobody listens on (chosen by the OS), not in `taken` nor in 5900-5999."""
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        if port not in taken and not 5900 <= port <= 5999:
            return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _image(path: Path, disk: Disk) -> None:
    """Create the disk image QEMU will open, as `qemu-img create` with the domain's format."""
    fmt = disk.driver_type or "raw"
    size = "1440K" if disk.device == "floppy" else "16M"
    result = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"qemu-img create {path}: {result.stderr}"


def adapt(label: str, domain: Domain, work: Path, sockets: Path, guest: Guest,
          taken_ports: set[int]) -> Setup:
    """Return a launchable copy of `domain` (see the module docstring for each substitution)."""
    notes: list[str] = []
    listeners: list[socket.socket] = []
    for sub in ("disks", "serial", "logs", "rng"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    update: dict[str, object] = {}
    dev_update: dict[str, object] = {}
    if domain.type == "kvm":
        update["type"] = "qemu"
        notes.append("type kvm -> qemu (no KVM here)")
    emulator = domain.devices.emulator
    if emulator is not None and not os.access(emulator, os.X_OK):
        found = shutil.which(Path(emulator).name)
        assert found, f"{Path(emulator).name} is not installed"
        dev_update["emulator"] = found
        notes.append(f"emulator {emulator!r} -> {found!r}")

    disks = []
    for i, disk in enumerate(domain.devices.disks):
        if disk.source is not None:
            path = work / "disks" / f"{i}-{Path(disk.source).name}"
            _image(path, disk)
            disk = disk.model_copy(update={"source": str(path)})
            notes.append(f"disk {disk.target_dev}: source -> {path}")
        disks.append(disk)
    dev_update["disks"] = tuple(disks)

    if domain.os.kernel is not None:
        os_update: dict[str, object] = {"kernel": str(guest.kernel)}
        if domain.os.initrd is not None:
            os_update["initrd"] = str(guest.initrd)
        update["os"] = domain.os.model_copy(update=os_update)
        notes.append("kernel/initrd -> the test guest's")

    nics: list[Interface] = []
    for nic in domain.devices.interfaces:
        if nic.type != "user":
            notes.append(f"nic {nic.type} {nic.source!r} -> user")
            nic = nic.model_copy(update={"type": "user", "source": None})
        nics.append(nic)
    dev_update["interfaces"] = tuple(nics)

    graphics: list[Graphics] = []
    for g in domain.devices.graphics:
        if g.port is not None:
            port = g.port
            if port in taken_ports or 5900 <= port <= 5999 or not _port_is_free(port):
                port = _free_port(taken_ports)
                notes.append(f"vnc port {g.port} -> {port}")
                g = g.model_copy(update={"port": port})
            taken_ports.add(port)
        graphics.append(g)
    dev_update["graphics"] = tuple(graphics)

    serials: list[Serial] = []
    for s in domain.devices.serials:
        changes: dict[str, object] = {}
        if s.type in ("file", "unix") and s.path is not None:
            where = sockets if s.type == "unix" else work / "serial"
            path = where / f"{s.port}-{Path(s.path).name}"
            changes["path"] = str(path)
            if s.type == "unix" and s.mode == "connect":
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(str(path))
                listener.listen(1)
                listeners.append(listener)
                notes.append(f"serial {s.port}: listening on {path} for QEMU to connect")
        if s.log is not None:
            changes["log"] = str(work / "logs" / f"{s.port}-{Path(s.log).name}")
        if changes:
            notes.append(f"serial {s.port}: {changes}")
            s = s.model_copy(update=changes)
        serials.append(s)
    dev_update["serials"] = tuple(serials)

    rngs: list[Rng] = []
    for i, r in enumerate(domain.devices.rngs):
        if not Path(r.backend).exists():
            path = work / "rng" / f"{i}-{Path(r.backend).name}"
            path.write_bytes(os.urandom(64))
            notes.append(f"rng backend {r.backend!r} -> {path}")
            r = r.model_copy(update={"backend": str(path)})
        rngs.append(r)
    dev_update["rngs"] = tuple(rngs)

    update["devices"] = domain.devices.model_copy(update=dev_update)
    adapted = domain.model_copy(update=update)
    # The copy must still be a valid domain: it goes through the same parser as a user's file.
    adapted = model.parse(model.to_xml(adapted)).domain
    runtime = model.Runtime(qmp_socket=sockets / "qmp.sock", pidfile=work / "qemu.pid",
                            console_log=work / "logs" / "console.log", state_dir=work)
    fw = choose(adapted, descriptors(), work)
    if fw is not None and fw.template is not None and not fw.vars.exists():
        shutil.copyfile(fw.template, fw.vars)  # what the daemon does on first start
        notes.append(f"UEFI: {fw.descriptor}; vars {fw.template} -> {fw.vars}")
    return Setup(label, adapted, notes, runtime, listeners)


# --------------------------------------------------------------------------------------------
# Launching.


@dataclass
class Outcome:
    """What happened to one launch; `problem` is None when QEMU came up and quit cleanly."""

    setup: Setup
    argv: list[str]
    problem: str | None = None
    status: str | None = None
    stderr: str = ""
    seconds: float = 0.0

    def report(self) -> str:
        """A failure message: the problem, QEMU's stderr, the substitutions and the argv."""
        return (f"{self.setup.label}: {self.problem}\n"
                f"--- QEMU stderr ---\n{self.stderr.strip() or '(empty)'}\n"
                f"--- substitutions ---\n" + "\n".join(self.setup.notes or ["(none)"]) + "\n"
                f"--- argv ---\n{shlex.join(self.argv)}")


async def _connect(qmp: QMPClient, proc: subprocess.Popen[bytes], path: Path) -> str | None:
    """Connect to QEMU's QMP socket; return a problem when QEMU exits or never listens."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            return f"QEMU exited with status {proc.returncode} before QMP answered"
        if path.exists():
            try:
                await qmp.connect(str(path))
                return None
            except ConnectError as exc:
                if time.monotonic() > deadline:
                    return f"cannot connect to QMP at {path}: {exc}"
        if time.monotonic() > deadline:
            return f"no QMP socket at {path} after {START_TIMEOUT:.0f} s"
        await asyncio.sleep(0.05)


async def _launch(setup: Setup, work: Path, gate: asyncio.Semaphore) -> Outcome:
    """Start QEMU paused, check its status over QMP, quit it, and wait for it to exit."""
    argv = [*model.command_line(setup.domain, setup.runtime, descriptors()), "-S"]
    outcome = Outcome(setup, argv)
    log = work / "qemu.stderr"
    async with gate:
        started = time.monotonic()
        qmp = QMPClient(setup.label)
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            outcome.problem = await _connect(qmp, proc, setup.runtime.qmp_socket)
            if outcome.problem is None:
                reply = await qmp.execute("query-status")
                assert isinstance(reply, dict)
                outcome.status = str(reply.get("status"))
                if outcome.status not in ("prelaunch", "paused"):
                    outcome.problem = f"query-status says {reply}"
                with contextlib.suppress(ExecInterruptedError):
                    await qmp.execute("quit")
                code = await asyncio.to_thread(proc.wait, EXIT_TIMEOUT)
                if code != 0 and outcome.problem is None:
                    outcome.problem = f"QEMU exited with status {code} after quit"
        except Exception as exc:  # reported with QEMU's stderr, never hidden
            outcome.problem = outcome.problem or f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await qmp.disconnect()
            if proc.poll() is None:
                proc.kill()
                outcome.problem = outcome.problem or "QEMU did not exit after quit"
            proc.wait(timeout=EXIT_TIMEOUT)
            for listener in setup.listeners:
                listener.close()
        outcome.seconds = time.monotonic() - started
    outcome.stderr = log.read_text(errors="replace")
    return outcome


async def _launch_all(setups: list[tuple[Setup, Path]]) -> list[Outcome]:
    gate = asyncio.Semaphore(CONCURRENCY)
    return list(await asyncio.gather(*(_launch(s, w, gate) for s, w in setups)))


def _labelled() -> list[tuple[str, Domain]]:
    """Every sample, the generated set, and the hand-built domains at the model's limits."""
    items = [(f"sample-{p.stem}", model.parse_file(p).domain) for p in SAMPLES]
    items += [(f"generated-{i:02d}", d) for i, d in enumerate(generated_domains())]
    items += list(edge_domains().items())
    items += [(f"virt-install-{p.stem}", model.parse_file(p).domain) for p in VIRT_INSTALL]
    items += list(COMBOS.items())
    return items


LABELS = [label for label, _ in _labelled()]


LEFTOVERS: list[int] = []
"""QEMU processes found still running after all launches finished (they are killed)."""


@pytest.fixture(scope="module")
def outcomes(guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Launch every domain concurrently once; map label -> outcome."""
    root = tmp_path_factory.mktemp("qemu-accepts")
    short = Path(tempfile.mkdtemp(prefix="qa-", dir="/tmp"))  # unix socket paths max 107 bytes
    setups: list[tuple[Setup, Path]] = []
    taken: set[int] = set()
    try:
        for label, domain in _labelled():
            work, sockets = root / label, short / label
            sockets.mkdir()
            setups.append((adapt(label, domain, work, sockets, guest, taken), work))
        results = asyncio.run(_launch_all(setups))
        # every QMP socket lives under `short`
        LEFTOVERS[:] = pids_mentioning(str(short), include_zombies=True)
        yield {o.setup.label: o for o in results}
    finally:
        kill_mentioning(str(short))  # only QEMUs started here mention it
        for setup, _ in setups:
            for listener in setup.listeners:
                listener.close()
        shutil.rmtree(short, ignore_errors=True)
        Path("/dev/shm/qemud-accepts-test").unlink(missing_ok=True)  # combo-shmem's memory


def test_samples_and_generated_are_covered() -> None:
    assert len(SAMPLES) >= 5
    assert sum(label.startswith("virt-install-") for label in LABELS) == 10
    assert sum(label.startswith("generated-") for label in LABELS) == GENERATED


def test_no_qemu_is_left_running(outcomes: dict[str, Outcome]) -> None:
    assert outcomes
    assert not LEFTOVERS, f"QEMU processes left running after quit: {LEFTOVERS}"


@pytest.mark.parametrize("label", LABELS)
def test_qemu_accepts(outcomes: dict[str, Outcome], label: str) -> None:
    outcome = outcomes[label]
    assert outcome.problem is None, outcome.report()
    assert outcome.status in ("prelaunch", "paused")
