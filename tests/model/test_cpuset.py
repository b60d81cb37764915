"""`<vcpu cpuset=>`: libvirt's list syntax, the affinity `model.host_cpus` gives, the argv."""

from __future__ import annotations

import pytest

import model
from model.cpuset import CpusetError, format_cpuset, parse_cpuset
from tests.support.snippets import domain_xml

SYNTAX = [
    ("0", {0}),
    ("0-3", {0, 1, 2, 3}),
    ("0-3,^2,8", {0, 1, 3, 8}),
    ("^2,0-3", {0, 1, 3}),  # exclusions apply to the whole list, wherever they are written
    (" 1 , 4-5 ", {1, 4, 5}),
    ("8191", {8191}),
]


@pytest.mark.parametrize(("text", "cpus"), SYNTAX)
def test_cpuset_syntax_reads_as_libvirt(text: str, cpus: set[int]) -> None:
    assert parse_cpuset(text) == frozenset(cpus)
    assert parse_cpuset(format_cpuset(frozenset(cpus))) == frozenset(cpus)


@pytest.mark.parametrize("text", ["", "a", "1,,2", "1-", "-1", "^1-2", "5-3", "8192", "0,^0"])
def test_cpuset_syntax_errors(text: str) -> None:
    with pytest.raises(CpusetError):
        parse_cpuset(text)


@pytest.mark.parametrize(("cpus", "text"), [({0, 1, 2, 3, 8}, "0-3,8"), ({5}, "5"),
                                            ({1, 3, 4}, "1,3-4")])
def test_format_cpuset_is_short(cpus: set[int], text: str) -> None:
    assert format_cpuset(frozenset(cpus)) == text


HOST_CPUS = [
    ("<vcpu>2</vcpu>", None),
    ("<vcpu placement='static' cpuset='1-3,^2'>2</vcpu>", frozenset({1, 3})),
    ("<vcpu placement='static' cpuset='0-1' current='1'>4</vcpu>", frozenset({0, 1})),
]


@pytest.mark.parametrize(("vcpu", "cpus"), HOST_CPUS)
def test_host_cpus(vcpu: str, cpus: frozenset[int] | None) -> None:
    d = model.parse(domain_xml(vcpu)).domain
    assert model.host_cpus(d) == cpus
    assert model.parse(model.to_xml(d)).domain == d  # the definition in use keeps the cpuset


def test_cpuset_does_not_change_the_command_line_and_current_is_rendered() -> None:
    """libvirt renders cpuset as affinity only; current as `-smp current,maxcpus=count`."""
    pinned = model.parse(domain_xml("<vcpu placement='static' cpuset='0-1' current='1'>4</vcpu>"))
    plain = model.parse(domain_xml("<vcpu current='1'>4</vcpu>"))
    assert model.command_line(pinned.domain) == model.command_line(plain.domain)
    assert ("-smp", "1,maxcpus=4") in model.options(pinned.domain)


@pytest.mark.parametrize(("cpu", "expected"), [
    ("<cpu><topology sockets='2' dies='1' cores='1' threads='1'/></cpu>", []),
    ("<cpu mode='custom'><topology sockets='2' dies='1' cores='1' threads='1'/></cpu>", []),
    ("<cpu mode='custom'><model>Haswell</model></cpu>", ["Haswell"]),
])
def test_cpu_without_model_keeps_qemus_default(cpu: str, expected: list[str]) -> None:
    """libvirt (cpu-hotplug-startup) renders no -cpu for a `<cpu>` with only a topology."""
    d = model.parse(domain_xml("<vcpu>2</vcpu>\n" + cpu, kind="qemu")).domain
    assert [o[1] for o in model.options(d) if o[0] == "-cpu"] == expected
    assert model.parse(model.to_xml(d)).domain == d
