"""Guest memory on the QEMU command line: backends, hugepages, NUMA cells' memory, memory hotplug.

Pure functions rendering `<memoryBacking>`, `<cell memAccess discard>`, `<maxMemory>` and the
`<memory model=>` devices the way libvirt 9.0 does (`memory-backend-ram|file|memfd` objects,
`-m size=,slots=,maxmem=`, `pc-dimm`/`nvdimm`/`virtio-mem-pci`/`virtio-pmem-pci`). What the host
offers (hugetlbfs mounts and free pages) comes in as a `HugepageHost`, read by the caller
(reconciler/hugepages.py); without one the command line shows libvirt-style placeholder mounts
(`/dev/hugepages2M`), as `reconcile argv` does for other host paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from model import units
from model.cpuset import qemu_ranges
from model.domain import Domain, MemoryDevice, NumaCell, NumaMemory
from model.errors import RenderError

Option = tuple[str, ...]

SYSTEM_PAGE = 4096
"""x86's base page: a `<page size='4' unit='KiB'>` is ordinary memory, not a hugepage."""
DEFAULT_HUGEPAGE = 2 << 20
"""x86's default hugepage size, assumed when the host's is not known (`reconcile argv`)."""

MODULE_ALIGN = 2 << 20
"""libvirt rounds x86 DIMM, NVDIMM and virtio-pmem sizes up to 2 MiB (QEMU's module alignment)."""

_POLICY = {"strict": "bind", "preferred": "preferred", "interleave": "interleave"}
"""libvirt's `<numatune>` modes as QEMU memory-backend policies."""

_DEVICE_PREFIX = {"dimm": "dimm", "nvdimm": "nvdimm", "virtio-mem": "virtiomem",
                  "virtio-pmem": "virtiopmem"}
DEVICE_DRIVER = {"dimm": "pc-dimm", "nvdimm": "nvdimm", "virtio-mem": "virtio-mem-pci",
                 "virtio-pmem": "virtio-pmem-pci"}
"""The QEMU device of each `<memory model=>`."""


@dataclass(frozen=True)
class HugepageHost:
    """The host's hugepages: hugetlbfs mounts by page size, the default size, free pages by size."""

    mounts: Mapping[int, Path] = field(default_factory=dict)
    default_size: int = DEFAULT_HUGEPAGE
    free: Mapping[int, int] = field(default_factory=dict)


def size_label(size: int) -> str:
    """A page size as libvirt's mount names write it: 2M, 1G, 5M, 64K."""
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}B"


def memory_device_problem(dev: MemoryDevice) -> str | None:
    """Why one `<memory>` device cannot be rendered as given (None when it can)."""
    backed = dev.model in ("nvdimm", "virtio-pmem")
    if backed and dev.path is None:
        return "needs <source><path> (the backing file of its contents)"
    if not backed and dev.path is not None:
        return "takes no <source><path> (its memory is RAM); remove it"
    if dev.model == "virtio-mem" and (dev.block is None or dev.requested is None):
        return "needs <target><block> and <requested> (e.g. 2 MiB blocks)"
    if dev.model != "virtio-mem" and (dev.block is not None or dev.requested is not None):
        return "takes no <block> or <requested> (only virtio-mem does); remove them"
    if dev.model != "nvdimm" and (dev.label_size is not None or dev.readonly):
        return "takes no <label> or <readonly/> (only nvdimm does); remove them"
    if dev.pmem and not backed:
        return "takes no <pmem/> (only nvdimm and virtio-pmem do); remove it"
    if dev.model.startswith("virtio") and (dev.slot is not None or dev.base is not None):
        return "is a PCI device: use a PCI <address>, not type='dimm'"
    if not dev.model.startswith("virtio") and dev.address is not None:
        return "sits in a DIMM slot: use <address type='dimm' slot=>, not a PCI address"
    if backed and dev.pagesize is not None:
        return "takes no <pagesize> (its memory is the file of <path>); remove it"
    if dev.model == "virtio-pmem" and dev.node is not None:
        return "takes no <target><node> (QEMU gives virtio-pmem no NUMA node); remove it"
    if dev.block is not None and dev.size % dev.block:
        return "<size> must be a multiple of <block>"
    if dev.requested is not None and dev.size < dev.requested:
        return "<requested> is larger than <size>"
    return None


def check_domain(d: Domain) -> list[tuple[int | str | None, str]]:
    """Whole-domain memory checks: (device index, 'backing' or None for the domain, sentence)."""
    out: list[tuple[int | str | None, str]] = []
    cells = d.cpu.numa if d.cpu is not None else ()
    mems = d.devices.memories
    if mems and d.max_memory is None:
        out.append((0, "memory devices need <maxMemory slots= unit=> (the hotplug limit); add it"))
    if (mems or d.max_memory is not None) and not cells:
        out.append((0 if mems else None, "memory hotplug needs at least one NUMA cell (<cpu><numa>"
                    "<cell .../></numa>), as libvirt requires; add one"))
    slots = d.max_memory_slots or 0
    taken: set[int] = set()
    for i, dev in enumerate(mems):
        if dev.model in ("dimm", "nvdimm") and not d.features.acpi:
            out.append((i, f"<memory model='{dev.model}'> needs ACPI (QEMU plugs DIMMs in through "
                        "it); add <features><acpi/></features>"))
        if dev.node is not None and cells and dev.node >= len(cells):
            out.append((i, f"<target><node> {dev.node} is not a NUMA cell (cells 0-{len(cells) - 1})"))
        if dev.slot is not None:
            if dev.slot >= slots:
                out.append((i, f"<address slot='{dev.slot}'> is beyond <maxMemory slots='{slots}'>"))
            if dev.slot in taken:
                out.append((i, f"<address slot='{dev.slot}'> is used by another memory device"))
            taken.add(dev.slot)
    dimms = sum(1 for m in mems if m.model in ("dimm", "nvdimm"))
    if d.max_memory is not None and dimms > slots:
        out.append((None, f"{dimms} DIMMs need as many <maxMemory slots=>, not {slots}"))
    if d.max_memory is not None and d.max_memory < initial_memory(d) + sum(m.size for m in mems):
        out.append((None, "<maxMemory> is smaller than the memory and the memory devices "
                    "together; raise it"))
    backing = d.memory_backing
    nodes = len(cells) or 1  # without cells the guest has one node, 0
    for page in backing.pages if backing is not None else ():
        for node in sorted(page.nodeset or ()):
            if node >= nodes:
                out.append(("backing", f"<page nodeset> names NUMA node {node}, which does not "
                            "exist" + ("" if cells else " (without <numa> cells there is only "
                                       "node 0)")))
    if backing is not None and not cells and len(backing.pages) > 1:
        out.append(("backing", "without <numa> cells every <page> applies to the one node; keep "
                    "one page size"))
    return out


def distance_matrix(cells: tuple[NumaCell, ...]) -> dict[tuple[int, int], int]:
    """NUMA distances as libvirt completes them: each given one both ways, 10 to itself.

    Empty when no cell has `<distances>`; a pair left unset is absent (see
    `numa_distance_problems`).
    """
    if not any(c.distances for c in cells):
        return {}
    out: dict[tuple[int, int], int] = {}
    for cell in cells:
        for sibling, value in cell.distances:
            out[(cell.id, sibling)] = value
    for (src, dst), value in list(out.items()):
        out.setdefault((dst, src), value)
    for cell in cells:
        out.setdefault((cell.id, cell.id), 10)
    return out


def numa_distance_problems(cells: tuple[NumaCell, ...]) -> list[str]:
    """Why the cells' `<distances>` cannot be rendered: unknown siblings, a gap, a bad local one."""
    out = []
    ids = {c.id for c in cells}
    for cell in cells:
        for sibling, value in cell.distances:
            if sibling not in ids:
                out.append(f"<cell id='{cell.id}'> <sibling id='{sibling}'>: there is no such cell")
            elif sibling == cell.id and value != 10:
                out.append(f"<cell id='{cell.id}'> <sibling id='{sibling}'>: a cell's distance to "
                           "itself is 10")
            elif sibling != cell.id and value == 10:
                out.append(f"<cell id='{cell.id}'> <sibling id='{sibling}'>: distances to other "
                           "cells must be above 10")
    matrix = distance_matrix(cells)
    if matrix and not out:
        missing = [(a, b) for a in sorted(ids) for b in sorted(ids) if (a, b) not in matrix]
        if missing:
            a, b = missing[0]
            out.append(f"<distances>: no distance between cells {a} and {b}; QEMU needs every "
                       "pair once distances are given (add <sibling> for it)")
    return out


def distance_options(d: Domain) -> list[Option]:
    """`-numa dist,src=,dst=,val=` for every pair, as libvirt renders a complete matrix."""
    cells = d.cpu.numa if d.cpu is not None else ()
    matrix = distance_matrix(cells)
    return [("-numa", f"dist,src={a},dst={b},val={matrix[(a, b)]}")
            for a in sorted(c.id for c in cells) for b in sorted(c.id for c in cells)
            if (a, b) in matrix]


def initial_memory(d: Domain) -> int:
    """The boot memory in bytes: the NUMA cells' sum when there are cells, else `<memory>`."""
    cells = d.cpu.numa if d.cpu is not None else ()
    return sum(c.memory for c in cells) if cells else d.memory


def memory_option(d: Domain, mib: int) -> Option:
    """`-m`: MiB, or `size=Nk,slots=S,maxmem=Mk` with `<maxMemory>` (libvirt's hotplug form)."""
    if d.max_memory is None:
        return ("-m", str(mib))
    return ("-m", f"size={initial_memory(d) // 1024}k,slots={d.max_memory_slots or 0},"
                  f"maxmem={d.max_memory // 1024}k")


def machine_props(d: Domain) -> list[str]:
    """`-machine` properties memory needs: pc.ram's backend, nvdimm=on, mem-merge=off."""
    out = []
    if default_ram(d):
        out.append("memory-backend=pc.ram")
    if any(m.model == "nvdimm" for m in d.devices.memories):
        out.append("nvdimm=on")
    if d.memory_backing is not None and d.memory_backing.nosharepages:
        out.append("mem-merge=off")
    return out


def overcommit(d: Domain) -> Iterator[Option]:
    """`-overcommit mem-lock=on` for `<locked/>` (QEMU's default is off)."""
    if d.memory_backing is not None and d.memory_backing.locked:
        yield ("-overcommit", "mem-lock=on")


def default_ram(d: Domain) -> bool:
    """Whether guest RAM without NUMA cells gets its own backend object (`pc.ram`), as libvirt."""
    if d.cpu is not None and d.cpu.numa:
        return False
    if d.numatune is not None and d.numatune.memory is not None:
        return True  # the policy is the backend's (numatune-system-memory.xml)
    b = d.memory_backing
    if b is None:
        return False
    return (b.hugepages or b.source is not None or b.access is not None or b.discard
            or b.allocation == "immediate")


def page_for(d: Domain, cell: int | None, host: HugepageHost | None) -> int | None:
    """The hugepage size (bytes) for memory of NUMA cell `cell` (None: no cells), or None.

    A `<page>` whose nodeset holds the cell wins, then the one without nodeset; `<hugepages/>`
    without pages means the host's default size; a cell no page covers, the system's 4 KiB
    page or no `<hugepages>` at all mean ordinary memory (None).
    """
    b = d.memory_backing
    if b is None or not b.hugepages:
        return None
    index = 0 if cell is None else cell
    chosen = next((p.size for p in b.pages if p.nodeset is not None and index in p.nodeset), None)
    if chosen is None:
        chosen = next((p.size for p in b.pages if p.nodeset is None), None)
    if chosen is None and b.pages:
        return None
    if chosen is None:
        chosen = host.default_size if host is not None else DEFAULT_HUGEPAGE
    return None if chosen == SYSTEM_PAGE else chosen


def hugepage_dir(size: int, host: HugepageHost | None) -> Path:
    """The hugetlbfs mount for pages of `size`; a placeholder without host facts.

    Raises RenderError when the host has no such mount (the VM is refused before QEMU runs).
    """
    if host is None:
        return Path(f"/dev/hugepages{size_label(size)}")
    mount = host.mounts.get(size)
    if mount is None:
        raise RenderError(f"<hugepages> asks for {size_label(size)} pages but this host has no "
                          f"hugetlbfs mounted for them; mount one (mount -t hugetlbfs -o "
                          f"pagesize={size_label(size)} none /dev/hugepages{size_label(size)}) "
                          "and reserve pages (/sys/kernel/mm/hugepages/hugepages-"
                          f"{size // 1024}kB/nr_hugepages), or remove <hugepages>")
    return mount


@dataclass(frozen=True)
class Region:
    """One memory backend to render: a NUMA cell's, pc.ram, or a memory device's."""

    bid: str
    size: int
    cell: int | None
    device: MemoryDevice | None = None
    policy: NumaMemory | None = None


def _access(d: Domain, region: Region) -> str | None:
    """The device's access, else its cell's memAccess, else `<memoryBacking><access>`."""
    cells = d.cpu.numa if d.cpu is not None else ()
    dev = region.device
    if dev is not None and dev.access is not None:
        return dev.access
    cell: NumaCell | None = cells[region.cell] if region.cell is not None and \
        region.cell < len(cells) else None
    if cell is not None and cell.mem_access is not None and (dev is None or dev.model == "dimm"):
        return cell.mem_access
    return d.memory_backing.access if d.memory_backing is not None else None


def backend_objects(d: Domain, region: Region, folder: Path | None,
                    host: HugepageHost | None) -> list[Option]:
    """The `-object`s of one region: an optional thread-context, then the memory backend.

    The backend is memory-backend-file for a device's `<path>`, hugepages (their hugetlbfs
    mount) and file-backed or access-controlled memory (a file QEMU creates and unlinks in the
    VM's runtime folder `folder`), memory-backend-memfd for `<source type='memfd'/>` (hugetlb
    pages too), else memory-backend-ram; with libvirt's share, prealloc, discard-data, policy.
    """
    b = d.memory_backing
    dev = region.device
    cells = d.cpu.numa if d.cpu is not None else ()
    cell = cells[region.cell] if region.cell is not None and region.cell < len(cells) else None
    if dev is not None and dev.path is not None:
        page = None
    elif dev is not None and dev.pagesize is not None:
        page = None if dev.pagesize == SYSTEM_PAGE else dev.pagesize
    else:
        page = page_for(d, region.cell, host)
    access = _access(d, region)
    memfd = b is not None and b.source == "memfd"
    props = [f"id={region.bid}"]
    if dev is not None and dev.path is not None:
        kind = "file"
        props.append(f"mem-path={_esc(dev.path)}")
    elif page is not None and memfd:
        kind = "memfd"
        props += ["hugetlb=on", f"hugetlbsize={page}"]
    elif page is not None:
        kind = "file"
        props.append(f"mem-path={_esc(hugepage_dir(page, host))}")
    elif memfd:
        kind = "memfd"
    elif (b is not None and b.source == "file") or access is not None:
        kind = "file"
        props.append(f"mem-path={_esc(folder if folder is not None else Path('.'))}")
    else:
        kind = "ram"
    discard = dev.discard if dev is not None else (cell.discard if cell is not None else None)
    if discard is None and b is not None and b.discard:
        discard = True
    if kind == "file" and discard is not None:
        props.append(f"discard-data={_on(discard)}")
    if access is not None:
        props.append(f"share={_on(access == 'shared')}")
    if region.bid == "pc.ram" and kind != "ram":
        props.append("x-use-canonical-path-for-ramblock-id=off")
    virtio_mem = dev is not None and dev.model == "virtio-mem"
    if virtio_mem:
        props.append("reserve=off")
    immediate = b is not None and b.allocation == "immediate"
    prealloc = not virtio_mem and (page is not None or immediate or (
        dev is not None and dev.model == "nvdimm" and not dev.pmem))
    if prealloc:
        props.append("prealloc=on")
        if b is not None and b.threads is not None:
            props.append(f"prealloc-threads={b.threads}")
    props.append(f"size={region.size}")
    if dev is not None and dev.alignsize is not None:
        props.append(f"align={dev.alignsize}")
    if dev is not None and dev.pmem:
        props.append("pmem=on")
    nodes = dev.nodemask if dev is not None and dev.nodemask is not None else None
    policy = "bind" if nodes is not None else None
    if nodes is None and region.policy is not None:
        nodes, policy = region.policy.nodeset, _POLICY[region.policy.mode]
    out: list[Option] = []
    if nodes is not None:
        props += [f"host-nodes={r}" for r in qemu_ranges(nodes)]
        props.append(f"policy={policy}")
        if prealloc:
            affinity = ",".join(f"node-affinity={r}" for r in qemu_ranges(nodes))
            out.append(("-object", f"thread-context,id=tc-{region.bid},{affinity}"))
            props.append(f"prealloc-context=tc-{region.bid}")
    out.append(("-object", f"memory-backend-{kind}," + ",".join(props)))
    return out


def _esc(value: str | Path) -> str:
    """Escape a value for QEMU's comma-separated options (`,` becomes `,,`)."""
    return str(value).replace(",", ",,")


def _on(value: bool) -> str:
    """QEMU's on/off."""
    return "on" if value else "off"


def policy_of(d: Domain, cell: int | None) -> NumaMemory | None:
    """`<numatune>`'s policy for NUMA cell `cell`: its `<memnode>`, else the default `<memory>`."""
    tune = d.numatune
    if tune is None:
        return None
    return next((m for m in tune.memnodes if m.cellid == cell), tune.memory)


def pc_ram(d: Domain, size: int, folder: Path | None, host: HugepageHost | None) -> list[Option]:
    """The `pc.ram` backend of a domain without NUMA cells (see `default_ram`), or nothing."""
    if not default_ram(d):
        return []
    return backend_objects(d, Region("pc.ram", size, None, policy=policy_of(d, None)),
                           folder, host)


def device_ids(d: Domain) -> list[str]:
    """The id of each memory device, as libvirt aliases them (`dimm<slot>`, `virtiomem<n>`)."""
    ids = []
    counters: dict[str, int] = {}
    slots = dimm_slots(d)
    for i, dev in enumerate(d.devices.memories):
        prefix = _DEVICE_PREFIX[dev.model]
        if dev.model in ("dimm", "nvdimm"):
            ids.append(f"{prefix}{slots[i]}")
        else:
            ids.append(f"{prefix}{counters.get(prefix, 0)}")
            counters[prefix] = counters.get(prefix, 0) + 1
    return ids


def dimm_slots(d: Domain) -> dict[int, int]:
    """Each DIMM's slot (by device index): the one given, else the lowest free one, in order."""
    taken = {m.slot for m in d.devices.memories if m.slot is not None}
    out: dict[int, int] = {}
    for i, dev in enumerate(d.devices.memories):
        if dev.model not in ("dimm", "nvdimm"):
            continue
        if dev.slot is not None:
            out[i] = dev.slot
            continue
        slot = 0
        while slot in taken:
            slot += 1
        taken.add(slot)
        out[i] = slot
    return out


def devices(d: Domain, folder: Path | None, host: HugepageHost | None,
            at: Callable[[str], str]) -> Iterator[Option]:
    """Each memory device: its backend `-object`(s), then its `-device`, as libvirt renders them.

    `at` gives the `,bus=,addr=` of the PCI ones (virtio-mem, virtio-pmem) by id.
    """
    slots = dimm_slots(d)
    for i, (dev, did) in enumerate(zip(d.devices.memories, device_ids(d), strict=True)):
        mem_id = f"mem{did}"
        policy = policy_of(d, dev.node if dev.node is not None else 0)
        size = dev.size if dev.model == "virtio-mem" else -(-dev.size // MODULE_ALIGN) * MODULE_ALIGN
        yield from backend_objects(d, Region(mem_id, size, dev.node if dev.node is not None
                                             else 0, dev, policy), folder, host)
        props = [DEVICE_DRIVER[dev.model]]
        if dev.node is not None:
            props.append(f"node={dev.node}")
        if dev.label_size is not None:
            props.append(f"label-size={dev.label_size}")
        if dev.readonly:
            props.append("unarmed=on")
        if dev.model == "virtio-mem":
            props += [f"block-size={dev.block}", f"requested-size={dev.requested}"]
        props.append(f"memdev={mem_id}")
        if dev.model == "virtio-mem" and (page_for(d, dev.node, host) is not None
                                          or (dev.pagesize is not None and dev.pagesize != SYSTEM_PAGE)
                                          or (d.memory_backing is not None
                                              and d.memory_backing.allocation == "immediate")):
            props.append("prealloc=on")
        props.append(f"id={did}")
        if dev.model in ("dimm", "nvdimm"):
            props.append(f"slot={slots[i]}")
            if dev.base is not None:
                props.append(f"addr={dev.base}")
            yield ("-device", ",".join(props))
        else:
            yield ("-device", ",".join(props) + at(did))


def hugepages_needed(d: Domain, host: HugepageHost | None) -> dict[int, int]:
    """Bytes of hugepages needed per page size (hugetlbfs and hugetlb memfds alike)."""
    need: dict[int, int] = {}
    cells = d.cpu.numa if d.cpu is not None else ()
    for cell in cells:
        page = page_for(d, cell.id, host)
        if page is not None:
            need[page] = need.get(page, 0) + units.to_mib(cell.memory) * (1 << 20)
    if not cells:
        page = page_for(d, None, host)
        if page is not None and default_ram(d):
            need[page] = need.get(page, 0) + units.to_mib(d.memory) * (1 << 20)
    for dev in d.devices.memories:
        if dev.path is not None:
            continue
        page = dev.pagesize if dev.pagesize is not None else page_for(d, dev.node or 0, host)
        if page is not None and page != SYSTEM_PAGE:
            need[page] = need.get(page, 0) + dev.size
    return need


def needs_hugepages(d: Domain) -> bool:
    """Whether any of the domain's memory is backed by hugepages (the host must be read)."""
    return bool(hugepages_needed(d, None))


def check_host(d: Domain, host: HugepageHost) -> None:
    """Refuse (RenderError) a domain whose hugepages the host has not reserved or mounted.

    Every page size needs enough free pages (QEMU preallocates them at start), and hugetlbfs
    backends need a mount of that size; memfd backends need only the pages.
    """
    memfd = d.memory_backing is not None and d.memory_backing.source == "memfd"
    for size, wanted in sorted(hugepages_needed(d, host).items()):
        label = size_label(size)
        pages = -(-wanted // size)
        free = host.free.get(size, 0)
        sysfs = f"/sys/kernel/mm/hugepages/hugepages-{size // 1024}kB/nr_hugepages"
        if free < pages:
            raise RenderError(f"<hugepages>: the guest needs {pages} free {label} hugepages but "
                              f"the host has {free}; reserve more (echo N > {sysfs}, or "
                              "hugepages= on the kernel command line) or remove <hugepages>")
        if not memfd:
            hugepage_dir(size, host)
