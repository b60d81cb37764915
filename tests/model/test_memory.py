"""Memory backing, NUMA cells' memory and memory hotplug: parse, libvirt 9.0's argv, errors.

Expected command lines are libvirt 9.0's `.args` for the corpus file named in each case (its
JSON `-object`/`-device` values written as QEMU's key=value), with one deliberate difference:
a hugetlbfs or file backend names the mount (or the VM's runtime folder) itself, a directory
in which QEMU creates and unlinks its file, where libvirt names a per-VM folder it manages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import model
from model.domain import Domain
from model.errors import RenderError
from model.memory import HugepageHost
from reconciler import hugepages
from tests.support.snippets import domain_xml

NUMA4 = """<vcpu>4</vcpu>
<cpu><numa>
<cell id='0' cpus='0' memory='1048576' unit='KiB'/>
<cell id='1' cpus='1' memory='1048576' unit='KiB' memAccess='shared'/>
<cell id='2' cpus='2' memory='1048576' unit='KiB' memAccess='private'/>
<cell id='3' cpus='3' memory='1048576' unit='KiB'/>
</numa></cpu>"""

HOTPLUG = """<maxMemory slots='16' unit='KiB'>1099511627776</maxMemory>
<vcpu>2</vcpu><features><acpi/></features>
<cpu><numa><cell id='0' cpus='0-1' memory='219136' unit='KiB'/></numa></cpu>"""
"""libvirt's memory-hotplug-*.xml: one cell of 214 MiB, 16 slots, 1 TiB at most (and ACPI,
which QEMU needs to plug DIMMs in)."""

RUNTIME = model.Runtime(Path("/run/q/u/qmp.sock"), Path("/run/q/u/pid"), Path("/log/c.log"))


def parse(extra: str, memory: str = "<memory unit='KiB'>1048576</memory>") -> Domain:
    """A domain with `extra` from line 6 on (memory on line 4)."""
    return model.parse(domain_xml(extra, memory=memory)).domain


def values(d: Domain, option: str, runtime: model.Runtime | None = None) -> list[str]:
    """Every value of `option`, in order."""
    return [o[1] for o in model.options(d, runtime) if o[0] == option]


def memory_values(d: Domain, runtime: model.Runtime | None = None) -> list[str]:
    """The memory backends, thread contexts and memory devices of the command line, in order."""
    keep = ("memory-backend", "thread-context", "pc-dimm", "nvdimm", "virtio-mem", "virtio-pmem")
    return [o[1] for o in model.options(d, runtime)
            if o[0] in ("-object", "-device") and o[1].startswith(keep)]


def issues(data: bytes) -> list[tuple[int | None, str]]:
    """(line, message) of every issue of an invalid document."""
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data)
    return [(i.line, i.message) for i in info.value.issues]


# --- memory backing without NUMA cells ---------------------------------------------------------


@pytest.mark.parametrize(("backing", "machine", "backend"), [
    # hugepages-default-2M.xml
    ("<hugepages><page size='2048' unit='KiB'/></hugepages>", "memory-backend=pc.ram",
     "memory-backend-file,id=pc.ram,mem-path=/dev/hugepages2M,"
     "x-use-canonical-path-for-ramblock-id=off,prealloc=on,size=1073741824"),
    # hugepages-default-system-size.xml: the 4 KiB page is ordinary memory
    ("<hugepages><page size='4' unit='KiB'/></hugepages>", "memory-backend=pc.ram",
     "memory-backend-ram,id=pc.ram,size=1073741824"),
    # hugepages-memaccess3.xml
    ("<hugepages/><access mode='shared'/>", "memory-backend=pc.ram",
     "memory-backend-file,id=pc.ram,mem-path=/dev/hugepages2M,share=on,"
     "x-use-canonical-path-for-ramblock-id=off,prealloc=on,size=1073741824"),
    # fd-memory-no-numa-topology.xml (libvirt 9.0's QEMU 7.2 form of its -mem-path)
    ("<source type='file'/><access mode='shared'/><allocation mode='immediate'/>",
     "memory-backend=pc.ram",
     "memory-backend-file,id=pc.ram,mem-path=.,share=on,x-use-canonical-path-for-ramblock-id=off,"
     "prealloc=on,size=1073741824"),
    # disk-vhostuser.xml
    ("<source type='memfd'/><access mode='shared'/>", "memory-backend=pc.ram",
     "memory-backend-memfd,id=pc.ram,share=on,x-use-canonical-path-for-ramblock-id=off,"
     "size=1073741824"),
    ("<source type='anonymous'/><allocation mode='immediate' threads='4'/>",
     "memory-backend=pc.ram",
     "memory-backend-ram,id=pc.ram,prealloc=on,prealloc-threads=4,size=1073741824"),
])
def test_backing_without_cells(backing: str, machine: str, backend: str) -> None:
    d = parse(f"<memoryBacking>{backing}</memoryBacking>")
    assert values(d, "-machine")[0].endswith("," + machine)
    assert values(d, "-m") == ["1024"]
    assert memory_values(d) == [backend]


def test_numatune_without_cells_is_the_policy_of_pc_ram() -> None:
    """numatune-system-memory.xml."""
    d = parse("<numatune><memory mode='strict' nodeset='0'/></numatune>",
              memory="<memory unit='KiB'>219136</memory>")
    assert values(d, "-machine") == ["pc,acpi=off,dump-guest-core=off,memory-backend=pc.ram"]
    assert memory_values(d) == ["memory-backend-ram,id=pc.ram,size=224395264,host-nodes=0,"
                                "policy=bind"]


def test_locked_and_nosharepages() -> None:
    d = parse("<memoryBacking><nosharepages/><locked/></memoryBacking>")
    assert values(d, "-machine") == ["pc,acpi=off,dump-guest-core=off,mem-merge=off"]
    assert values(d, "-overcommit") == ["mem-lock=on"]
    assert memory_values(d) == []


def test_file_memory_lives_in_the_runtime_folder() -> None:
    d = parse("<memoryBacking><source type='file'/></memoryBacking>")
    assert memory_values(d, RUNTIME) == [
        "memory-backend-file,id=pc.ram,mem-path=/run/q/u,"
        "x-use-canonical-path-for-ramblock-id=off,size=1073741824"]


# --- NUMA cells ----------------------------------------------------------------------------------


def test_hugepages_per_cell_with_numatune_and_mem_access() -> None:
    """hugepages-shared.xml: per-cell page sizes, memAccess, numatune, thread contexts."""
    d = parse("<memoryBacking><hugepages>\n"
              "<page size='2048' unit='KiB' nodeset='1'/>\n"
              "<page size='1048576' unit='KiB' nodeset='0,2-3'/>\n"
              "</hugepages></memoryBacking>\n"
              "<numatune><memory mode='strict' nodeset='0-3'/>"
              "<memnode cellid='3' mode='strict' nodeset='3'/></numatune>\n" + NUMA4,
              memory="<memory unit='KiB'>4194304</memory>")
    def cell(n: int, page: str, share: str, nodes: str) -> list[str]:
        return [f"thread-context,id=tc-ram-node{n},node-affinity={nodes}",
                f"memory-backend-file,id=ram-node{n},mem-path=/dev/hugepages{page}{share},"
                f"prealloc=on,size=1073741824,host-nodes={nodes},policy=bind,"
                f"prealloc-context=tc-ram-node{n}"]
    assert memory_values(d) == [*cell(0, "1G", "", "0-3"), *cell(1, "2M", ",share=on", "0-3"),
                                *cell(2, "1G", ",share=off", "0-3"), *cell(3, "1G", "", "3")]
    assert values(d, "-numa")[1] == "node,nodeid=1,cpus=1,memdev=ram-node1"


def test_cells_without_a_page_are_ordinary_memory() -> None:
    """hugepages-numa-nodeset-part.xml: a page for cell 1 only."""
    d = parse("<memoryBacking><hugepages><page size='2048' unit='KiB' nodeset='1'/></hugepages>"
              "</memoryBacking>\n<vcpu>2</vcpu><cpu><numa>"
              "<cell id='0' cpus='0' memory='262144' unit='KiB'/>"
              "<cell id='1' cpus='1' memory='786432' unit='KiB'/></numa></cpu>")
    assert memory_values(d) == [
        "memory-backend-ram,id=ram-node0,size=268435456",
        "memory-backend-file,id=ram-node1,mem-path=/dev/hugepages2M,prealloc=on,size=805306368"]


def test_mem_access_without_backing_is_file_memory() -> None:
    """cpu-numa-memshared.xml: shared cells need a file QEMU can share."""
    d = parse("<vcpu>2</vcpu><cpu><numa>"
              "<cell id='0' cpus='0' memory='109550' unit='KiB' memAccess='shared'/>"
              "<cell id='1' cpus='1' memory='109550' unit='KiB' memAccess='private'/>"
              "</numa></cpu>", memory="<memory unit='KiB'>219100</memory>")
    assert memory_values(d, RUNTIME) == [
        "memory-backend-file,id=ram-node0,mem-path=/run/q/u,share=on,size=112197632",
        "memory-backend-file,id=ram-node1,mem-path=/run/q/u,share=off,size=112197632"]


def test_discard_per_cell() -> None:
    """pages-discard-hugepages.xml: the cell's discard wins over <discard/>."""
    d = parse("<memoryBacking><hugepages/><discard/></memoryBacking>\n<vcpu>2</vcpu><cpu><numa>"
              "<cell id='0' cpus='0' memory='262144' unit='KiB' discard='no'/>"
              "<cell id='1' cpus='1' memory='786432' unit='KiB'/></numa></cpu>")
    assert memory_values(d) == [
        "memory-backend-file,id=ram-node0,mem-path=/dev/hugepages2M,discard-data=off,"
        "prealloc=on,size=268435456",
        "memory-backend-file,id=ram-node1,mem-path=/dev/hugepages2M,discard-data=on,"
        "prealloc=on,size=805306368"]


def test_memfd_hugepages() -> None:
    """memfd-memory-default-hugepage.xml."""
    d = parse("<memoryBacking><hugepages/><source type='memfd'/><access mode='shared'/>"
              "<allocation mode='immediate'/></memoryBacking>\n"
              "<numatune><memnode cellid='0' mode='preferred' nodeset='3'/></numatune>\n"
              "<vcpu>8</vcpu><cpu><numa><cell id='0' cpus='0-7' memory='14680064' unit='KiB'/>"
              "</numa></cpu>", memory="<memory unit='KiB'>14680064</memory>")
    assert memory_values(d) == [
        "thread-context,id=tc-ram-node0,node-affinity=3",
        "memory-backend-memfd,id=ram-node0,hugetlb=on,hugetlbsize=2097152,share=on,prealloc=on,"
        "size=15032385536,host-nodes=3,policy=preferred,prealloc-context=tc-ram-node0"]


def test_cells_in_any_order_memory_only_cells_and_memory_from_cells() -> None:
    """cpu-numa-no-memory-element.xml and numatune-no-vcpu.xml: libvirt sorts the cells, sums
    their memory when <memory> is absent and renders a cell without cpus as a memory-only node."""
    data = domain_xml("<vcpu>2</vcpu><cpu><numa>\n"
                      "<cell id='2' memory='32' unit='MiB'/>\n"
                      "<cell id='1' cpus='1' memory='32' unit='MiB'/>\n"
                      "<cell id='0' cpus='0' memory='64' unit='MiB'/>\n"
                      "</numa></cpu>", memory=None)
    d = model.parse(data).domain
    assert d.memory == 128 << 20
    assert values(d, "-m") == ["128"]
    assert values(d, "-numa") == ["node,nodeid=0,cpus=0,memdev=ram-node0",
                                  "node,nodeid=1,cpus=1,memdev=ram-node1",
                                  "node,nodeid=2,memdev=ram-node2"]
    assert model.parse(model.to_xml(d)).domain == d


def test_numa_distances_completed_as_libvirt_does() -> None:
    """numatune-distances.xml: each distance given once, both ways, 10 locally."""
    d = parse("<vcpu>3</vcpu><cpu><numa>"
              "<cell id='0' cpus='0' memory='64' unit='MiB'><distances>"
              "<sibling id='1' value='21'/><sibling id='2' value='31'/></distances></cell>"
              "<cell id='1' cpus='1' memory='64' unit='MiB'><distances>"
              "<sibling id='2' value='21'/></distances></cell>"
              "<cell id='2' cpus='2' memory='64' unit='MiB'/></numa></cpu>")
    assert values(d, "-numa")[3:] == [
        "dist,src=0,dst=0,val=10", "dist,src=0,dst=1,val=21", "dist,src=0,dst=2,val=31",
        "dist,src=1,dst=0,val=21", "dist,src=1,dst=1,val=10", "dist,src=1,dst=2,val=21",
        "dist,src=2,dst=0,val=31", "dist,src=2,dst=1,val=21", "dist,src=2,dst=2,val=10"]
    assert model.parse(model.to_xml(d)).domain == d


# --- the host's hugepages ----------------------------------------------------------------------


HUGE = "<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>"


def test_hugepages_use_the_hosts_mount() -> None:
    d = parse(HUGE)
    host = HugepageHost(mounts={2 << 20: Path("/mnt/huge 2M")}, free={2 << 20: 512})
    runtime = model.Runtime(RUNTIME.qmp_socket, RUNTIME.pidfile, RUNTIME.console_log,
                            hugepages=host)
    assert memory_values(d, runtime)[0].startswith(
        "memory-backend-file,id=pc.ram,mem-path=/mnt/huge 2M,")


@pytest.mark.parametrize(("host", "message"), [
    (HugepageHost(mounts={2 << 20: Path("/dev/hugepages")}, free={2 << 20: 511}),
     "<hugepages>: the guest needs 512 free 2M hugepages but the host has 511; reserve more"),
    (HugepageHost(mounts={1 << 30: Path("/dev/hugepages1G")}, free={2 << 20: 512}),
     "<hugepages> asks for 2M pages but this host has no hugetlbfs mounted for them; mount one"),
])
def test_hugepages_the_host_lacks_are_refused(host: HugepageHost, message: str) -> None:
    runtime = model.Runtime(RUNTIME.qmp_socket, RUNTIME.pidfile, RUNTIME.console_log,
                            hugepages=host)
    with pytest.raises(RenderError) as info:
        model.command_line(parse(HUGE), runtime)
    assert str(info.value).startswith(message)


def test_the_hosts_hugepages_are_read_from_proc_and_sys(tmp_path: Path) -> None:
    (tmp_path / "mounts").write_text(
        "proc /proc proc rw 0 0\n"
        "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n"
        "none /mnt/huge\\0401G hugetlbfs rw,pagesize=1024M 0 0\n"
        "none /mnt/default hugetlbfs rw 0 0\n")
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\nHugepagesize:       2048 kB\n")
    for size, free in (("2048kB", "7"), ("1048576kB", "1")):
        (tmp_path / f"hugepages-{size}").mkdir()
        (tmp_path / f"hugepages-{size}" / "free_hugepages").write_text(free + "\n")
    found = hugepages.host(tmp_path / "mounts", tmp_path / "meminfo", tmp_path)
    assert found == HugepageHost(mounts={2 << 20: Path("/dev/hugepages"),
                                         1 << 30: Path("/mnt/huge 1G")},
                                 default_size=2 << 20, free={2 << 20: 7, 1 << 30: 1})


# --- memory hotplug ------------------------------------------------------------------------------


def test_dimms_with_slots_and_addresses() -> None:
    """memory-hotplug-dimm-addr.xml."""
    d = parse(HOTPLUG + """
<devices>
<memory model='dimm'><source><nodemask>1-3</nodemask><pagesize unit='KiB'>2048</pagesize></source>
<target><size unit='KiB'>524287</size><node>0</node></target>
<address type='dimm' slot='0' base='0x100000000'/></memory>
<memory model='dimm'><target><size unit='KiB'>524287</size><node>0</node></target>
<address type='dimm' slot='2'/></memory>
</devices>""", memory="<memory unit='KiB'>1267710</memory>")
    assert values(d, "-m") == ["size=219136k,slots=16,maxmem=1099511627776k"]
    assert memory_values(d) == [
        "memory-backend-ram,id=ram-node0,size=224395264",
        "thread-context,id=tc-memdimm0,node-affinity=1-3",
        "memory-backend-file,id=memdimm0,mem-path=/dev/hugepages2M,prealloc=on,size=536870912,"
        "host-nodes=1-3,policy=bind,prealloc-context=tc-memdimm0",
        "pc-dimm,node=0,memdev=memdimm0,id=dimm0,slot=0,addr=4294967296",
        "memory-backend-ram,id=memdimm2,size=536870912",
        "pc-dimm,node=0,memdev=memdimm2,id=dimm2,slot=2"]


@pytest.mark.parametrize(("source", "target", "backend", "device"), [
    # memory-hotplug-nvdimm.xml
    ("", "", "prealloc=on,size=536870912", "nvdimm,node=0,memdev=memnvdimm0"),
    # memory-hotplug-nvdimm-align.xml
    ("<alignsize unit='KiB'>2048</alignsize>", "", "prealloc=on,size=536870912,align=2097152",
     "nvdimm,node=0,memdev=memnvdimm0"),
    # memory-hotplug-nvdimm-label.xml
    ("", "<label><size unit='KiB'>128</size></label>", "prealloc=on,size=536870912",
     "nvdimm,node=0,label-size=131072,memdev=memnvdimm0"),
    # memory-hotplug-nvdimm-pmem.xml
    ("<pmem/>", "", "size=536870912,pmem=on", "nvdimm,node=0,memdev=memnvdimm0"),
    # memory-hotplug-nvdimm-readonly.xml
    ("", "<readonly/>", "prealloc=on,size=536870912", "nvdimm,node=0,unarmed=on,memdev=memnvdimm0"),
])
def test_nvdimm(source: str, target: str, backend: str, device: str) -> None:
    d = parse(HOTPLUG + f"""
<devices><memory model='nvdimm'><source><path>/tmp/nvdimm</path>{source}</source>
<target><size unit='KiB'>523264</size><node>0</node>{target}</target>
<address type='dimm' slot='0'/></memory></devices>""")
    assert values(d, "-machine") == ["pc,dump-guest-core=off,nvdimm=on"]
    assert memory_values(d)[1:] == [
        f"memory-backend-file,id=memnvdimm0,mem-path=/tmp/nvdimm,{backend}",
        f"{device},id=nvdimm0,slot=0"]


def test_virtio_mem_and_virtio_pmem_on_pci() -> None:
    """memory-hotplug-virtio-mem.xml and memory-hotplug-virtio-pmem.xml."""
    d = parse(HOTPLUG + """
<devices>
<memory model='virtio-mem'><target><size unit='KiB'>1048576</size><node>0</node>
<block unit='KiB'>2048</block><requested unit='KiB'>524288</requested></target>
<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/></memory>
<memory model='virtio-mem'><source><nodemask>1-3</nodemask><pagesize unit='KiB'>2048</pagesize>
</source><target><size unit='KiB'>2097152</size><node>0</node><block unit='KiB'>2048</block>
<requested unit='KiB'>1048576</requested></target></memory>
<memory model='virtio-pmem' access='shared'><source><path>/tmp/virtio_pmem</path></source>
<target><size unit='KiB'>524288</size></target>
<address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></memory>
</devices>""")
    got = memory_values(d)[1:]
    assert got[:2] == [
        "memory-backend-ram,id=memvirtiomem0,reserve=off,size=1073741824",
        "virtio-mem-pci,node=0,block-size=2097152,requested-size=536870912,memdev=memvirtiomem0,"
        "id=virtiomem0,bus=pci.0,addr=0x2"]
    assert got[2] == ("memory-backend-file,id=memvirtiomem1,mem-path=/dev/hugepages2M,"
                      "reserve=off,size=2147483648,host-nodes=1-3,policy=bind")
    assert got[3].startswith("virtio-mem-pci,node=0,block-size=2097152,requested-size="
                             "1073741824,memdev=memvirtiomem1,prealloc=on,id=virtiomem1,bus=pci.0,")
    assert got[4:] == [
        "memory-backend-file,id=memvirtiopmem0,mem-path=/tmp/virtio_pmem,share=on,"
        "size=536870912",
        "virtio-pmem-pci,memdev=memvirtiopmem0,id=virtiopmem0,bus=pci.0,addr=0x5"]


# --- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    "<memoryBacking><hugepages><page size='2048' unit='KiB' nodeset='1'/>"
    "<page size='1' unit='GiB'/></hugepages><nosharepages/><locked/><source type='file'/>"
    "<access mode='private'/><allocation mode='immediate' threads='2'/><discard/>"
    "</memoryBacking>\n" + NUMA4,
    HOTPLUG + "<devices><memory model='nvdimm' access='shared' discard='yes'><source>"
    "<path>/tmp/n</path><alignsize unit='KiB'>2048</alignsize><pmem/></source><target>"
    "<size unit='KiB'>523264</size><node>0</node><label><size unit='KiB'>128</size></label>"
    "<readonly/></target><address type='dimm' slot='3' base='0x100000000'/></memory>"
    "<memory model='virtio-mem'><source><nodemask>0</nodemask><pagesize unit='KiB'>2048"
    "</pagesize></source><target><size unit='MiB'>64</size><node>0</node><block unit='KiB'>2048"
    "</block><requested unit='MiB'>32</requested></target></memory></devices>",
])
def test_round_trip(extra: str) -> None:
    d = parse(extra, memory="<memory unit='KiB'>4194304</memory>")
    assert model.parse(model.to_xml(d)).domain == d


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "expected"), [
    ("<devices>\n<memory model='dimm'><target><size unit='MiB'>128</size></target></memory>"
     "</devices>",
     [(7, "memory devices need <maxMemory slots= unit=> (the hotplug limit); add it"),
      (7, "memory hotplug needs at least one NUMA cell"),
      (7, "<memory model='dimm'> needs ACPI (QEMU plugs DIMMs in through it); add "
          "<features><acpi/></features>")]),
    (HOTPLUG + "<devices>\n<memory model='nvdimm'><target><size unit='MiB'>128</size>"
     "</target></memory></devices>",
     [(9, "<memory model='nvdimm'>: needs <source><path>")]),
    (HOTPLUG + "<devices>\n<memory model='dimm'><target><size unit='MiB'>128</size>"
     "<node>1</node></target><address type='dimm' slot='16'/></memory></devices>",
     [(9, "<target><node> 1 is not a NUMA cell (cells 0-0)"),
      (9, "<address slot='16'> is beyond <maxMemory slots='16'>")]),
    (HOTPLUG + "<devices>\n<memory model='virtio-mem'><target><size unit='MiB'>128</size>"
     "</target></memory></devices>",
     [(9, "<memory model='virtio-mem'>: needs <target><block> and <requested>")]),
    ("<memoryBacking><hugepages>\n<page size='2' unit='MiB'/>\n<page size='1' unit='GiB'/>"
     "</hugepages></memoryBacking>",
     [(6, "<hugepages> has more than one <page> without nodeset=")]),
    # hugepages-default-1G-nodeset-2M.xml and hugepages-nodeset-nonexist.xml, refused by libvirt
    ("<memoryBacking>\n<hugepages><page size='1' unit='GiB'/>"
     "<page size='2' unit='MiB' nodeset='0'/></hugepages></memoryBacking>",
     [(6, "without <numa> cells every <page> applies to the one node; keep one page size")]),
    ("<memoryBacking>\n<hugepages><page size='2' unit='MiB' nodeset='1'/></hugepages>"
     "</memoryBacking>",
     [(6, "<page nodeset> names NUMA node 1, which does not exist (without <numa> cells there "
          "is only node 0)")]),
    ("<vcpu>2</vcpu><cpu>\n<numa><cell id='0' cpus='0' memory='64' unit='MiB'><distances>"
     "<sibling id='1' value='20'/></distances></cell>\n<cell id='1' cpus='1' memory='64' "
     "unit='MiB'/><cell id='2' memory='64' unit='MiB'/></numa></cpu>",
     [(6, "<distances>: no distance between cells 0 and 2; QEMU needs every pair")]),
    ("<vcpu>2</vcpu><cpu><numa>\n<cell id='0' cpus='0-1' memory='64' unit='MiB' "
     "memAccess='open'/></numa></cpu>",
     [(7, "<cell memAccess>: 'open' is not allowed")]),
    ("<memtune><hard_limit unit='KiB'>512000</hard_limit></memtune>",
     [(6, "<memtune>: libvirt applies memory limits (hard, soft, swap) through cgroups, which "
          "qemud does not manage per VM; remove it (systemd's MemoryMax= on the qemud service "
          "limits all its VMs together)")]),
    ("<blkiotune/>",
     [(6, "<blkiotune>: libvirt applies block I/O weights and limits through cgroups, which "
          "qemud does not manage per VM; remove it (systemd's IOWeight= or IOReadBandwidthMax= "
          "on the qemud service limits all its VMs together)")]),
])
def test_refusals_name_their_line(extra: str, expected: list[tuple[int, str]]) -> None:
    got = issues(domain_xml(extra))
    assert [(line, message[:len(prefix)]) for (line, message), (_, prefix)
            in zip(got, expected, strict=False)] == expected, got
    assert len(got) == len(expected), got
