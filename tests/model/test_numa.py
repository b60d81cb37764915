"""`<cpu><numa>` cells and `<numatune>`: libvirt 9.0's rendering for QEMU 7.2, errors at lines.

Expected values follow libvirt's corpus (`numatune-memnode.x86_64-latest.args`), with its JSON
-object values written as QEMU's key=value.
"""

from __future__ import annotations

import pytest

import model
from tests.support.snippets import domain_xml

CELLS = """<vcpu>32</vcpu>
<cpu>
  <numa>
    <cell id='0' cpus='0' memory='20002' unit='KiB'/>
    <cell id='1' cpus='1-27,29' memory='660066' unit='KiB'/>
    <cell id='2' cpus='28,30-31' memory='24002400' unit='KiB'/>
  </numa>
</cpu>"""

RENDER = [
    pytest.param("", ["-m", "24105",
                      "-object", "memory-backend-ram,id=ram-node0,size=20971520",
                      "-numa", "node,nodeid=0,cpus=0,memdev=ram-node0",
                      "-object", "memory-backend-ram,id=ram-node1,size=676331520",
                      "-numa", "node,nodeid=1,cpus=1-27,cpus=29,memdev=ram-node1",
                      "-object", "memory-backend-ram,id=ram-node2,size=24578621440",
                      "-numa", "node,nodeid=2,cpus=28,cpus=30-31,memdev=ram-node2"],
                 id="cells"),
    pytest.param("<numatune>\n<memnode cellid='0' mode='preferred' nodeset='3'/>\n"
                 "<memory mode='strict' nodeset='0-7'/>\n"
                 "<memnode cellid='2' mode='strict' nodeset='1-2,5-7,^6'/>\n</numatune>",
                 ["-m", "24105",
                  "-object", "memory-backend-ram,id=ram-node0,size=20971520,host-nodes=3,"
                  "policy=preferred",
                  "-numa", "node,nodeid=0,cpus=0,memdev=ram-node0",
                  "-object", "memory-backend-ram,id=ram-node1,size=676331520,host-nodes=0-7,"
                  "policy=bind",
                  "-numa", "node,nodeid=1,cpus=1-27,cpus=29,memdev=ram-node1",
                  "-object", "memory-backend-ram,id=ram-node2,size=24578621440,host-nodes=1-2,"
                  "host-nodes=5,host-nodes=7,policy=bind",
                  "-numa", "node,nodeid=2,cpus=28,cpus=30-31,memdev=ram-node2"],
                 id="numatune-memnode"),
    pytest.param("<numatune><memory mode='interleave' nodeset='0-1'/></numatune>",
                 ["-m", "24105",
                  "-object", "memory-backend-ram,id=ram-node0,size=20971520,host-nodes=0-1,"
                  "policy=interleave",
                  "-numa", "node,nodeid=0,cpus=0,memdev=ram-node0",
                  "-object", "memory-backend-ram,id=ram-node1,size=676331520,host-nodes=0-1,"
                  "policy=interleave",
                  "-numa", "node,nodeid=1,cpus=1-27,cpus=29,memdev=ram-node1",
                  "-object", "memory-backend-ram,id=ram-node2,size=24578621440,host-nodes=0-1,"
                  "policy=interleave",
                  "-numa", "node,nodeid=2,cpus=28,cpus=30-31,memdev=ram-node2"],
                 id="numatune-interleave"),
]


@pytest.mark.parametrize(("numatune", "expected"), RENDER)
def test_numa_renders_as_libvirt(numatune: str, expected: list[str]) -> None:
    d = model.parse(domain_xml(numatune + "\n" + CELLS, kind="qemu")).domain
    argv = model.command_line(d)
    picked = [a for i, a in enumerate(argv) for opt in ("-m", "-object", "-numa")
              if a == opt or (i and argv[i - 1] == opt)]
    assert picked == expected
    assert model.parse(model.to_xml(d)).domain == d


ERRORS = [
    pytest.param("<vcpu>2</vcpu>\n<cpu>\n<numa>\n<cell id='0' cpus='0-2' memory='64' unit='MiB'/>"
                 "\n</numa>\n</cpu>",
                 [(7, "<cell id='0'> names vCPU 2, but <vcpu> is 2 (vCPUs are numbered from 0)")],
                 id="cell-cpu-beyond-vcpu"),
    pytest.param("<vcpu>2</vcpu>\n<cpu>\n<numa>\n<cell id='0' cpus='0-1' memory='64' unit='MiB'/>"
                 "\n<cell id='1' cpus='1' memory='64' unit='MiB'/>\n</numa>\n</cpu>",
                 [(7, "<cell id='1'> shares vCPUs 1 with an earlier cell; each vCPU belongs to "
                      "one cell")], id="cell-overlap"),
    pytest.param("<vcpu>2</vcpu>\n<cpu>\n<numa>\n<cell id='0' cpus='0-x' memory='64'/>"
                 "\n</numa>\n</cpu>",
                 [(9, "<cell cpus>: '0-x' in '0-x' is not a number, a range a-b or ^n")],
                 id="cell-cpus-syntax"),
    pytest.param("<vcpu>2</vcpu>\n<cpu>\n<numa>\n<cell id='1' cpus='0-1' memory='64'/>"
                 "\n</numa>\n</cpu>",
                 [(9, "<cell id='1'>: cell ids must be 0, 1, 2... (each once, in any order); "
                      "there is no cell 0")], id="cell-id-gap"),
    pytest.param("<vcpu>2</vcpu>\n<cpu>\n<numa>\n<cell id='0' cpus='0-1' memory='64'>\n"
                 "<distances><sibling id='1' value='20'/></distances>\n</cell>\n</numa>\n</cpu>",
                 [(7, "<cell id='0'> <sibling id='1'>: there is no such cell")],
                 id="cell-distance-to-nowhere"),
    pytest.param("<numatune>\n<memnode cellid='0' mode='strict' nodeset='0'/>\n</numatune>",
                 [(6, "<numatune><memnode> needs <cpu><numa> cells (it sets one cell's memory "
                      "policy); add the cells or remove it")], id="memnode-without-cells"),
    pytest.param("<numatune>\n<memory mode='restrictive' nodeset='0'/>\n</numatune>",
                 [(7, "<memory mode='restrictive'>: libvirt applies it with cgroups, which "
                      "qemud does not manage; use strict, preferred or interleave")],
                 id="numatune-restrictive"),
    pytest.param("<numatune>\n<memory mode='strict' placement='auto'/>\n</numatune>",
                 [(7, "<memory placement>: 'auto' needs numad, which qemud does not use; use a "
                      "nodeset")], id="numatune-auto"),
    pytest.param("<numatune>\n<memnode cellid='3' mode='strict' nodeset='0'/>\n</numatune>\n"
                 "<cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/></numa></cpu>",
                 [(6, "<memnode cellid='3'>: there is no such <cell> (cells 0-0)")],
                 id="memnode-no-cell"),
]


@pytest.mark.parametrize(("extra", "expected"), ERRORS)
def test_numa_errors_name_their_line(extra: str, expected: list[tuple[int, str]]) -> None:
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(domain_xml(extra))
    assert [(i.line, i.message) for i in info.value.issues] == expected
