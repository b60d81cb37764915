"""The host's hugepages for `model.Runtime.hugepages`: hugetlbfs mounts by page size, free pages.

Read from /proc/mounts, /proc/meminfo and /sys/kernel/mm/hugepages (paths passed in, with the
real ones as defaults). A mount without `pagesize=` has the host's default hugepage size.
"""

from __future__ import annotations

import re
from pathlib import Path

from model.memory import DEFAULT_HUGEPAGE, HugepageHost

MOUNTS = Path("/proc/mounts")
MEMINFO = Path("/proc/meminfo")
SYSFS = Path("/sys/kernel/mm/hugepages")

_SIZE = re.compile(r"^(\d+)([KMG]?)$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _octal_unescape(field: str) -> str:
    """Undo /proc/mounts' octal escapes (a space is written as backslash 040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str, default_size: int) -> dict[int, Path]:
    """The hugetlbfs mount points by page size from /proc/mounts text (the first mount of each size)."""
    out: dict[int, Path] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "hugetlbfs":
            continue
        size = default_size
        for opt in fields[3].split(","):
            if opt.startswith("pagesize="):
                m = _SIZE.match(opt.removeprefix("pagesize="))
                if m is None:
                    break
                size = int(m.group(1)) * _SCALE[m.group(2).lower()]
        out.setdefault(size, Path(_octal_unescape(fields[1])))
    return out


def parse_default_size(meminfo: str) -> int:
    """The default hugepage size in bytes from /proc/meminfo text (`Hugepagesize: 2048 kB`)."""
    m = re.search(r"^Hugepagesize:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else DEFAULT_HUGEPAGE


def free_pages(sysfs: Path) -> dict[int, int]:
    """Free hugepages per page size from /sys/kernel/mm/hugepages/hugepages-<N>kB/free_hugepages."""
    out: dict[int, int] = {}
    if not sysfs.is_dir():
        return out
    for entry in sysfs.iterdir():
        m = re.fullmatch(r"hugepages-(\d+)kB", entry.name)
        if m is None:
            continue
        try:
            out[int(m.group(1)) * 1024] = int((entry / "free_hugepages").read_text().strip())
        except (OSError, ValueError):
            continue
    return out


def host(mounts: Path = MOUNTS, meminfo: Path = MEMINFO, sysfs: Path = SYSFS) -> HugepageHost:
    """Read the host's hugepages (small reads of /proc and /sys; nothing missing raises)."""
    try:
        default = parse_default_size(meminfo.read_text())
    except OSError:
        default = DEFAULT_HUGEPAGE
    try:
        found = parse_mounts(mounts.read_text(), default)
    except OSError:
        found = {}
    return HugepageHost(mounts=found, default_size=default, free=free_pages(sysfs))
