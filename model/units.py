"""libvirt's memory units, normalised to bytes, and QEMU's MiB rounding."""

from __future__ import annotations

_K = 1024
_PREFIXES = "kmgtpe"
"""The scale prefixes libvirt knows, in order: kilo ... exa (power 1 ... 6)."""

UNITS: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "KB": 1000,
    "k": _K,
    "KiB": _K,
    "MB": 1000**2,
    "M": _K**2,
    "MiB": _K**2,
    "GB": 1000**3,
    "G": _K**3,
    "GiB": _K**3,
    "TB": 1000**4,
    "T": _K**4,
    "TiB": _K**4,
    "PB": 1000**5,
    "P": _K**5,
    "PiB": _K**5,
    "EB": 1000**6,
    "E": _K**6,
    "EiB": _K**6,
}
"""libvirt's documented spelling of every unit, with its factor (render() and messages use it).

libvirt itself reads units case-insensitively and also takes "byte"; see `factor`."""

DEFAULT_UNIT = "KiB"
MAX_BYTES = 16 * _K**5
"""Largest memory size accepted (16 PiB), far beyond any host, to catch typos and overflow."""


def factor(unit: str | None) -> int | None:
    """The factor of a unit name as libvirt's virScaleInteger reads it, or None when unknown.

    Case-insensitive: "b", "byte", "bytes"; a prefix k, m, g, t, p or e alone or with "ib"
    (powers of 1024) or with "b" (powers of 1000). An absent or empty unit is KiB.
    """
    if unit is None or unit == "":
        return _K
    name = unit.lower()
    if name in ("b", "byte", "bytes"):
        return 1
    power = _PREFIXES.find(name[0]) + 1
    if power == 0:
        return None
    rest = name[1:]
    if rest in ("", "ib"):
        return int(_K**power)
    if rest == "b":
        return int(1000**power)
    return None


def to_bytes(value: str, unit: str | None) -> int:
    """Convert a libvirt size (decimal integer text and unit name) to bytes.

    Raises ValueError with a user-facing sentence when the number or unit is not valid.
    """
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{value!r} is not a whole number")
    scale = factor(unit)
    if scale is None:
        raise ValueError(f"unit {unit!r} is unknown; use one of {', '.join(UNITS)} "
                         "(any case), or byte")
    size = int(text) * scale
    if size > MAX_BYTES:
        raise ValueError(f"{value} {unit or DEFAULT_UNIT} is larger than 16 PiB")
    return size


def to_mib(size: int) -> int:
    """Round a size in bytes up to whole MiB, as libvirt does for QEMU's -m (219100 KiB -> 214)."""
    return -(-size // _K**2)


def render(size: int) -> tuple[str, str]:
    """Express a byte count as (text, unit) in the largest binary unit that divides it exactly."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size % UNITS[unit] == 0:
            return str(size // UNITS[unit]), unit
    return str(size), "b"
