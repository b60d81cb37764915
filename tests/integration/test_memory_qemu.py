"""Real QEMU 7.2 accepts the memory the model renders: backends, NUMA cells, hotplug devices.

Each domain's `model.command_line(domain, runtime)` plus `-S` is started under TCG; QMP must
answer `query-status` (QEMU realized every object and device), and for hotplug domains
`query-memory-devices` must list each device with the id, slot and size libvirt gives it.

Hugepages need pages the kernel has reserved and (for file backends) a hugetlbfs mount. The
`hugetlb` fixture (root only, else skipped with why) reserves 48 pages of 2 MiB and mounts a
private hugetlbfs under the test's temporary directory, then restores the host's
`nr_hugepages` and unmounts it: the runtime's `hugepages` are read from this host by
`reconciler.hugepages.host()`, as the daemon reads them, so the mount the model picks is real.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import model
from reconciler import hugepages
from reconciler.loop import Reconciler
from reconciler.paths import Layout
from reconciler.process import read_cmdline
from tests.support.procs import kill_mentioning
from tests.support.qmp import query_paused
from tests.support.snippets import domain_xml

pytestmark = pytest.mark.qemu

NR_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
PAGES = 48


def _domain(extra: str, memory: str = "<memory unit='MiB'>64</memory>") -> model.Domain:
    """A TCG domain with `extra` (pc machine, no devices unless `extra` has them)."""
    return model.parse(domain_xml(extra, kind="qemu", memory=memory)).domain


def _runtime(work: Path, host: hugepages.HugepageHost | None = None) -> model.Runtime:
    """A runtime folder of its own under `work`."""
    folder = work / "run"
    folder.mkdir(mode=0o700, parents=True)
    return model.Runtime(folder / "qmp.sock", folder / "pid", work / "console.log",
                         hugepages=host)


def accepts(domain: model.Domain, runtime: model.Runtime, work: Path,
            command: str | None = None) -> object:
    """Assert real QEMU starts `domain` paused; the reply to `command` (a QMP query)."""
    argv = [*model.command_line(domain, runtime), "-S"]
    replies = query_paused(argv, runtime.qmp_socket, work / "qemu.log",
                           ["query-status", *([command] if command else [])])
    assert replies[0]["status"] == "prelaunch", replies[0]
    return replies[1] if command else None


@pytest.fixture
def hugetlb(tmp_path: Path) -> Iterator[hugepages.HugepageHost]:
    """48 reserved 2 MiB pages and a private hugetlbfs mount, then the host as it was."""
    if os.geteuid() != 0 or not NR_2M.exists():
        pytest.skip("reserving hugepages and mounting hugetlbfs needs root and 2 MiB pages")
    before = int(NR_2M.read_text())
    mount = tmp_path / "huge 2M"
    mount.mkdir()
    NR_2M.write_text(str(before + PAGES))
    try:
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "qemud-test", str(mount)],
                       check=True)
        try:
            host = hugepages.host()
            assert host.mounts.get(2 << 20) is not None
            free = host.free.get(2 << 20, 0)
            if free < PAGES:
                pytest.skip(f"the kernel reserved only {free} of {PAGES} 2 MiB pages")
            # our own mount, whichever other 2M mount the host lists first
            yield hugepages.HugepageHost({2 << 20: mount}, host.default_size, host.free)
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        NR_2M.write_text(str(before))


def test_hugepages_backed_ram_and_a_memfd_cell(tmp_path: Path,
                                                hugetlb: hugepages.HugepageHost) -> None:
    plain = _domain("<memoryBacking><hugepages><page size='2' unit='MiB'/></hugepages>"
                    "</memoryBacking>")
    runtime = _runtime(tmp_path / "a", hugetlb)
    assert any(f"mem-path={hugetlb.mounts[2 << 20]}" in a
               for a in model.command_line(plain, runtime))
    accepts(plain, runtime, tmp_path / "a")
    memfd = _domain("<memoryBacking><hugepages/><source type='memfd'/><access mode='shared'/>"
                    "<allocation mode='immediate' threads='2'/></memoryBacking>\n"
                    "<numatune><memnode cellid='0' mode='strict' nodeset='0'/></numatune>\n"
                    "<cpu><numa><cell id='0' cpus='0' memory='32' unit='MiB'/></numa></cpu>",
                    memory="<memory unit='MiB'>32</memory>")
    accepts(memfd, _runtime(tmp_path / "b", hugetlb), tmp_path / "b")


def test_hugepages_the_host_lacks_stop_the_start(tmp_path: Path) -> None:
    """Without reserved pages the model refuses before QEMU runs (no cryptic QEMU exit)."""
    host = hugepages.HugepageHost({}, 2 << 20, {2 << 20: 0})
    d = _domain("<memoryBacking><hugepages/></memoryBacking>")
    with pytest.raises(model.RenderError, match="needs 32 free 2M hugepages but the host has 0"):
        model.command_line(d, _runtime(tmp_path, host))


def test_a_vm_whose_hugepages_the_host_lacks_fails_its_start_and_says_why() -> None:
    """The daemon's own path: hugepages read from this host, the start refused before QEMU."""
    if hugepages.host().free.get(1 << 30, 0) > 0:
        pytest.skip("this host has free 1 GiB hugepages")
    base = Path(tempfile.mkdtemp(prefix="qdm", dir="/tmp"))
    os.chmod(base, 0o700)
    layout = Layout.under(base)
    try:
        layout.config_dir.mkdir(mode=0o700, exist_ok=True)
        (layout.config_dir / "huge.xml").write_text(
            "<domain type='qemu'><name>huge</name><memory unit='MiB'>64</memory>"
            "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
            "<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>"
            "</domain>")
        out = io.StringIO()
        result = asyncio.run(Reconciler(layout, out=out).once())
        assert result.statuses[0].pid is None
        assert "huge: failed to start (prepare): <hugepages>: the guest needs 1 free 1G " \
               "hugepages but the host has 0; reserve more" in out.getvalue(), out.getvalue()
        assert not any(argv and f"{base}/" in " ".join(argv)
                       for argv in (read_cmdline(int(p)) for p in os.listdir("/proc")
                                    if p.isdigit()))
    finally:
        kill_mentioning(f"{base}/")
        shutil.rmtree(base, ignore_errors=True)


def test_file_backed_shared_memory_with_prealloc_threads_locked_and_no_ksm(
        tmp_path: Path) -> None:
    d = _domain("<memoryBacking><nosharepages/><locked/><source type='file'/>"
                "<access mode='shared'/><allocation mode='immediate' threads='2'/><discard/>"
                "</memoryBacking>")
    runtime = _runtime(tmp_path)
    accepts(d, runtime, tmp_path)
    assert list(runtime.folder.glob("qemu_back_mem*")) == []  # QEMU unlinked its file


def test_numatune_without_cells_binds_pc_ram(tmp_path: Path) -> None:
    d = _domain("<numatune><memory mode='strict' nodeset='0'/></numatune>")
    runtime = _runtime(tmp_path)
    assert "memory-backend-ram,id=pc.ram,size=67108864,host-nodes=0,policy=bind" in \
        model.command_line(d, runtime)
    accepts(d, runtime, tmp_path)


def test_numa_cells_with_access_discard_policy_distances_and_thread_context(tmp_path: Path) -> None:
    d = _domain("<memoryBacking><allocation mode='immediate'/><discard/></memoryBacking>\n"
                "<numatune><memory mode='strict' nodeset='0'/>"
                "<memnode cellid='1' mode='preferred' nodeset='0'/></numatune>\n"
                "<vcpu>2</vcpu><cpu><numa>"
                "<cell id='0' cpus='0' memory='32' unit='MiB' memAccess='shared'><distances>"
                "<sibling id='1' value='20'/><sibling id='2' value='30'/></distances></cell>"
                "<cell id='1' cpus='1' memory='32' unit='MiB' memAccess='private' discard='no'>"
                "<distances><sibling id='2' value='25'/></distances></cell>"
                "<cell id='2' memory='16' unit='MiB'/>"  # memory-only
                "</numa></cpu>", memory="<memory unit='MiB'>80</memory>")
    runtime = _runtime(tmp_path)
    assert "thread-context,id=tc-ram-node0,node-affinity=0" in model.command_line(d, runtime)
    accepts(d, runtime, tmp_path)


def test_hotplug_devices(tmp_path: Path) -> None:
    """dimm, nvdimm (label, readonly), virtio-mem and virtio-pmem on an i440FX, as libvirt."""
    nvdimm, pmem = tmp_path / "nv dimm", tmp_path / "pmem"
    for path in (nvdimm, pmem):
        with path.open("wb") as f:
            f.truncate(16 << 20)
    d = _domain(f"""<maxMemory slots='4' unit='MiB'>1024</maxMemory>
<vcpu>2</vcpu>
<features><acpi/></features>
<cpu><numa><cell id='0' cpus='0' memory='32' unit='MiB'/>
<cell id='1' cpus='1' memory='32' unit='MiB'/></numa></cpu>
<devices>
<memory model='dimm'><source><nodemask>0</nodemask></source>
<target><size unit='MiB'>16</size><node>1</node></target></memory>
<memory model='nvdimm'><source><path>{nvdimm}</path></source>
<target><size unit='MiB'>16</size><node>0</node><label><size unit='KiB'>128</size></label>
<readonly/></target><address type='dimm' slot='2'/></memory>
<memory model='virtio-mem'><target><size unit='MiB'>64</size><node>0</node>
<block unit='MiB'>2</block><requested unit='MiB'>0</requested></target></memory>
<memory model='virtio-pmem' access='shared'><source><path>{pmem}</path></source>
<target><size unit='MiB'>16</size></target></memory>
</devices>""")
    reply = accepts(d, _runtime(tmp_path), tmp_path, "query-memory-devices")
    assert isinstance(reply, list)
    got = {(dev["type"], dev["data"].get("id"), dev["data"].get("slot"),
            dev["data"].get("max-size", dev["data"].get("size"))) for dev in reply}
    # an NVDIMM's label area is taken from its size; virtio-mem's size is what is plugged (0)
    assert got == {("dimm", "dimm0", 0, 16 << 20), ("nvdimm", "nvdimm2", 2, (16 << 20) - (128 << 10)),
                   ("virtio-mem", "virtiomem0", None, 64 << 20),
                   ("virtio-pmem", "virtiopmem0", None, 16 << 20)}
