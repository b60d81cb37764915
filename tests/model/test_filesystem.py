"""virtiofs `<filesystem>` and `<memoryBacking>`: parse, libvirt 9.0's argv, refusals with lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import model
from model.domain import Domain, Filesystem, MemoryBacking
from tests.support.snippets import domain_xml

SHARED = "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
FS = """<filesystem type='mount' accessmode='passthrough'>
  <driver type='virtiofs'/>
  <source dir='/srv/share'/>
  <target dir='share'/>
</filesystem>"""


def xml(devices: str = FS, backing: str | None = SHARED, **parts: str | None) -> bytes:
    """The minimal domain with `backing` on line 6, <devices> on line 7 and `devices` from 8."""
    top = backing if backing is not None else "<!-- no memoryBacking -->"
    return domain_xml(top + "\n<devices>\n" + textwrap.dedent(devices).strip("\n")
                      + "\n</devices>", **parts)


def parse(data: bytes) -> Domain:
    """Parse a document that must be valid."""
    return model.parse(data).domain


def issues(data: bytes) -> list[tuple[int | None, str]]:
    """The (line, message) of every issue; fails the test when the document is valid."""
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data)
    return [(i.line, i.message) for i in info.value.issues]


def values(d: Domain, option: str, runtime: model.Runtime | None = None) -> list[str]:
    """The values of every occurrence of `option`, in order."""
    return [o[1] for o in model.options(d, runtime) if o[0] == option]


RUNTIME = model.Runtime(Path("/r/u/qmp.sock"), Path("/r/u/pid"), Path("/l/x.log"),
                        state_dir=Path("/s/u"))


# --- parse -------------------------------------------------------------------------------------


def test_a_virtiofs_share_parses() -> None:
    d = parse(xml())
    assert d.memory_backing == MemoryBacking(source="memfd", access="shared")
    assert d.devices.filesystems == (Filesystem(source_dir="/srv/share", target_dir="share"),)


def test_libvirts_binary_settings_are_read() -> None:
    """libvirt's vhost-user-fs-fd-memory.xml `<filesystem>` (its path, options and address)."""
    d = parse(xml("""
        <filesystem type='mount' accessmode='passthrough'>
          <driver type='virtiofs' queue='1024'/>
          <binary path='/usr/libexec/virtiofsd' xattr='on'>
            <cache mode='always'/>
            <sandbox mode='chroot'/>
            <lock posix='off' flock='off'/>
            <thread_pool size='16'/>
          </binary>
          <source dir='/path'/>
          <target dir='mount_tag'/>
          <alias name='fs0'/>
          <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
        </filesystem>"""))
    [fs] = d.devices.filesystems
    assert fs == Filesystem(source_dir="/path", target_dir="mount_tag", queue=1024,
                            binary_path="/usr/libexec/virtiofsd", xattr=True, cache="always",
                            sandbox="chroot", posix_lock=False, flock=False, thread_pool=16,
                            address=fs.address)
    assert fs.address is not None and fs.address.slot == 2


# --- argv --------------------------------------------------------------------------------------


def test_memfd_memory_as_libvirt_renders_it() -> None:
    """libvirt's disk-vhostuser.x86_64-latest.args: 219136 KiB of shared memfd memory on 'pc'."""
    d = parse(xml("", memory="<memory unit='KiB'>219136</memory>"))
    argv = model.command_line(d)
    assert argv[argv.index("-machine") + 1] == "pc,acpi=off,dump-guest-core=off,memory-backend=pc.ram"
    at = argv.index("-m")
    assert argv[at:at + 4] == ["-m", "214", "-object", "memory-backend-memfd,id=pc.ram,share=on,"
                               "x-use-canonical-path-for-ramblock-id=off,size=224395264"]


@pytest.mark.parametrize(("access", "share"), [
    ("<access mode='private'/>", ",share=off"), ("", ""),
])
def test_memfd_without_shared_access(access: str, share: str) -> None:
    d = parse(xml("", backing=f"<memoryBacking><source type='memfd'/>{access}</memoryBacking>"))
    assert values(d, "-object") == [f"memory-backend-memfd,id=pc.ram{share},"
                                    "x-use-canonical-path-for-ramblock-id=off,size=67108864"]


def test_memfd_with_numa_cells_backs_each_cell() -> None:
    """libvirt's memfd-memory-numa.args: each cell's backend is a shared memfd, no pc.ram."""
    d = parse(domain_xml(SHARED + "\n<vcpu>2</vcpu><cpu><numa><cell id='0' cpus='0-1' "
                         "memory='64' unit='MiB'/></numa></cpu>"))
    argv = model.command_line(d)
    assert "memory-backend=pc.ram" not in argv[argv.index("-machine") + 1]
    assert values(d, "-object") == ["memory-backend-memfd,id=ram-node0,share=on,size=67108864"]
    assert values(d, "-numa") == ["node,nodeid=0,cpus=0-1,memdev=ram-node0"]


def test_virtiofs_device_as_libvirt_renders_it() -> None:
    """libvirt's vhost-user-fs-fd-memory.x86_64-latest.args: the chardev on virtiofsd's socket
    and vhost-user-fs-pci at the address the file gives, with libvirt's ids."""
    d = parse(xml("""
        <filesystem type='mount' accessmode='passthrough'>
          <driver type='virtiofs' queue='1024'/>
          <source dir='/path'/>
          <target dir='mount_tag'/>
          <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
        </filesystem>"""))
    argv = model.command_line(d, RUNTIME)
    at = argv.index("-chardev", argv.index("-display"))
    assert argv[at:at + 4] == [
        "-chardev", "socket,id=chr-vu-fs0,path=/r/u/fs0-fs.sock",
        "-device", "vhost-user-fs-pci,id=fs0,chardev=chr-vu-fs0,queue-size=1024,tag=mount_tag,"
                   "bus=pci.0,addr=0x2"]
    assert values(d, "-chardev") == ["socket,id=chr-vu-fs0,path=fs0-fs.sock"]  # reconcile argv


def test_virtiofs_is_placed_like_other_pci_devices() -> None:
    """'pc': the next free slot after the disks; 'q35': its own pcie-root-port."""
    disk = "<disk type='file'><source file='/a'/><target dev='vda' bus='virtio'/></disk>"
    d = parse(xml(FS + disk))
    devs = values(d, "-device")
    assert devs[-1] == "vhost-user-fs-pci,id=fs0,chardev=chr-vu-fs0,tag=share,bus=pci.0,addr=0x3"
    assert any("virtio-blk-pci" in v and "addr=0x2" in v for v in devs)
    q35 = parse(xml(FS, os="<os><type arch='x86_64' machine='q35'>hvm</type></os>"))
    devs = values(q35, "-device")
    assert devs[-1] == "vhost-user-fs-pci,id=fs0,chardev=chr-vu-fs0,tag=share,bus=pci.1,addr=0x0"
    assert devs[0].startswith("pcie-root-port,port=0x8,chassis=1,id=pci.1,")


def test_two_shares_and_a_comma_in_the_tag() -> None:
    d = parse(xml(FS + FS.replace("'share'", "'a,b'").replace("/srv/share", "/srv/b")))
    assert values(d, "-chardev", RUNTIME)[-2:] == [
        "socket,id=chr-vu-fs0,path=/r/u/fs0-fs.sock", "socket,id=chr-vu-fs1,path=/r/u/fs1-fs.sock"]
    assert values(d, "-device")[-1] == ("vhost-user-fs-pci,id=fs1,chardev=chr-vu-fs1,tag=a,,b,"
                                        "bus=pci.0,addr=0x3")


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("devices", "backing", "expected"), [
    pytest.param(FS, None, [(8, "<filesystem> with <driver type='virtiofs'> needs guest memory "
                                "virtiofsd can share; add <memoryBacking><source type='memfd'/>"
                                "<access mode='shared'/></memoryBacking> to <domain>")],
                 id="no-memory-backing"),
    pytest.param(FS, "<memoryBacking><source type='memfd'/></memoryBacking>",
                 [(8, "<filesystem> with <driver type='virtiofs'> needs guest memory")],
                 id="memfd-not-shared"),
    pytest.param("", "<memoryBacking><hugepages>\n<page unit='KiB'/></hugepages>"
                 "<source type='memfd'/></memoryBacking>",
                 [(7, "<page> needs size= (e.g. size='2048' unit='KiB')")], id="hugepages"),
    pytest.param(FS, "<memoryBacking><source type='file'/></memoryBacking>",
                 [(8, "<filesystem> with <driver type='virtiofs'> needs guest memory")],
                 id="file-backed-private"),
    pytest.param("", "<memoryBacking>\n<allocation mode='sometimes'/><locked/></memoryBacking>",
                 [(7, "<allocation mode>: 'sometimes' is not allowed")], id="allocation"),
    pytest.param("", "<memoryBacking><source type='memfd'/><access mode='open'/></memoryBacking>",
                 [(6, "<access mode>: 'open' is not allowed")], id="access-mode"),
    pytest.param("<filesystem type='mount'>\n<driver type='handle'/>\n<source dir='/a'/>"
                 "<target dir='t'/></filesystem>", SHARED,
                 [(9, "<filesystem>: QEMU 7.2 has no 9p 'handle' backend any more")],
                 id="9p-handle"),
    pytest.param("<filesystem type='ram'><driver type='virtiofs'/><source usage='1024'/>"
                 "<target dir='t'/></filesystem>", SHARED,
                 [(8, "<filesystem type>: 'ram' is not supported; use 'mount'")], id="ram"),
    pytest.param("<filesystem accessmode='mapped'><driver type='virtiofs'/></filesystem>", SHARED,
                 [(8, "<filesystem accessmode>: 'mapped' is not supported by virtiofs")],
                 id="mapped"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/>\n<target dir='t'/></filesystem>",
                 SHARED, [(8, "<filesystem> needs <source dir='/host/folder'/>")],
                 id="no-source"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/>\n<source dir='/a'/>\n"
                 "<target/></filesystem>", SHARED,
                 [(11, "<filesystem> needs <target dir='TAG'/>")], id="no-target-dir"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/><source dir='/a'/><target dir='t'/>\n"
                 "<readonly/></filesystem>", SHARED,
                 [(10, "<filesystem><readonly/>: virtiofs cannot share a folder read-only")],
                 id="readonly"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/><source dir='a'/><target dir='t'/>"
                 "</filesystem>", SHARED,
                 [(9, "<source dir>: 'a' is not an absolute path")], id="relative"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/><source dir='/a'/><target dir='"
                 + "x" * 37 + "'/></filesystem>", SHARED,
                 [(9, "<target dir> is too long (at most 36 characters)")], id="long-tag"),
    pytest.param("<filesystem>\n<driver type='virtiofs' queue='1000'/><source dir='/a'/>"
                 "<target dir='t'/></filesystem>", SHARED,
                 [(9, "<driver queue>: 1000 is not a power of two")], id="queue"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/><binary><cache mode='auto'/></binary>"
                 "<source dir='/a'/><target dir='t'/></filesystem>", SHARED,
                 [(9, "<cache mode>: 'auto' is not allowed")], id="cache-mode"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/><binary xattr='yes'/>"
                 "<source dir='/a'/><target dir='t'/></filesystem>", SHARED,
                 [(9, "<binary xattr>: 'yes' is not allowed; use 'on' or 'off'")], id="xattr"),
    pytest.param("<filesystem>\n<driver type='virtiofs'/><idmap/>"
                 "<source dir='/a'/><target dir='t'/></filesystem>", SHARED,
                 [(9, "<idmap> inside <filesystem> is not supported by qemud")], id="idmap"),
    pytest.param(FS + "\n" + FS.replace("/srv/share", "/srv/other"), SHARED,
                 [(13, "two <filesystem> have <target dir='share'>; each needs its own tag")],
                 id="same-tag"),
])
def test_refusals_name_their_line(devices: str, backing: str | None,
                                  expected: list[tuple[int, str]]) -> None:
    got = issues(xml(devices, backing))
    assert [(line, message[:len(prefix)]) for (line, message), (_, prefix)
            in zip(got, expected, strict=False)] == expected, got
    assert len(got) == len(expected), got

