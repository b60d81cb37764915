"""libvirt's CPU and NUMA node list syntax (`0-3,^2,8`) and the host CPUs a domain is pinned to."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.domain import Domain

MAX_CPU = 8191
"""The highest host CPU (or NUMA node) number accepted, as libvirt's VIR_DOMAIN_CPUMASK_LEN."""


class CpusetError(ValueError):
    """A list in libvirt's cpuset syntax that cannot be read; the message says what is wrong."""


def parse_cpuset(text: str) -> frozenset[int]:
    """Read libvirt's list syntax: comma-separated numbers and ranges `a-b`, `^n` excluding n.

    Exclusions apply to everything listed (`0-3,^2` is {0, 1, 3}), as in libvirt's
    virBitmapParse. Raises `CpusetError` for an empty, malformed or out-of-range list, or one
    whose exclusions leave nothing.
    """
    included: set[int] = set()
    excluded: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise CpusetError(f"{text!r} has an empty item; write e.g. '0-3,^2,8'")
        negate = part.startswith("^")
        body = part[1:] if negate else part
        low, sep, high = body.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise CpusetError(f"{part!r} in {text!r} is not a number, a range a-b or ^n") from None
        if first < 0 or last > MAX_CPU or first > last or (negate and sep):
            raise CpusetError(f"{part!r} in {text!r} is not a valid item (numbers 0-{MAX_CPU}, "
                              "ranges low-high, ^n excludes one)")
        (excluded if negate else included).update(range(first, last + 1))
    result = frozenset(included - excluded)
    if not result:
        raise CpusetError(f"{text!r} selects no CPU")
    return result


def format_cpuset(cpus: frozenset[int]) -> str:
    """Write a set in the canonical short form (`0-3,8`), which `parse_cpuset` reads back equal."""
    out: list[str] = []
    ordered = sorted(cpus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def qemu_ranges(cpus: frozenset[int]) -> list[str]:
    """The set as QEMU's repeated `cpus=` items of `-numa node`: `0-3`, `8` (one per range)."""
    return format_cpuset(cpus).split(",")


def host_cpus(domain: Domain) -> frozenset[int] | None:
    """The host CPUs the domain's QEMU must be confined to (`<vcpu cpuset=>`), None for any.

    Pure: the caller applies it (sched_setaffinity on the spawned QEMU, as libvirt does for the
    emulator and vCPU threads when only `<vcpu cpuset>` is given).
    """
    return domain.vcpu.cpuset
