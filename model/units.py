"""libvirt's memory units, normalised to bytes, and QEMU's MiB rounding."""

from __future__ import annotations

_K = 1024
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
}
"""Every unit libvirt accepts for memory sizes, with its factor. Absent unit means KiB."""

DEFAULT_UNIT = "KiB"
MAX_BYTES = 16 * _K**5
"""Largest memory size accepted (16 PiB), far beyond any host, to catch typos and overflow."""


def to_bytes(value: str, unit: str | None) -> int:
    """Convert a libvirt size (decimal integer text and unit name) to bytes.

    Raises ValueError with a user-facing sentence when the number or unit is not valid.
    """
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{value!r} is not a whole number")
    name = DEFAULT_UNIT if unit is None else unit
    if name not in UNITS:
        raise ValueError(f"unit {unit!r} is unknown; use one of {', '.join(UNITS)}")
    size = int(text) * UNITS[name]
    if size > MAX_BYTES:
        raise ValueError(f"{value} {name} is larger than 16 PiB")
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
