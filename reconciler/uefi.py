"""UEFI on the host side: QEMU's firmware descriptors in, each VM's variable store made once.

The model chooses the firmware (`model.firmware.choose`, pure) from the descriptors this module
reads, the way libvirt does: `/etc/qemu/firmware` overrides `/usr/share/qemu/firmware` file by
file, and the files are taken in name order. A VM's variable store (`VARS.fd` in its state
folder) is copied from the firmware's template before its first start and never overwritten,
so what the guest stores (boot entries, Secure Boot keys) survives restarts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from model.firmware import Descriptor, FirmwareChoice, parse_descriptor
from reconciler.paths import ensure_private_dir

FIRMWARE_DIRS = (Path("/etc/qemu/firmware"), Path("/usr/share/qemu/firmware"))
"""Searched in this order; a file name found in an earlier folder hides the later ones."""

_cache: dict[tuple[Path, ...], tuple[tuple[int, ...], list[Descriptor]]] = {}


def descriptors(dirs: Sequence[Path] = FIRMWARE_DIRS) -> list[Descriptor]:
    """The firmware descriptors on this host, in file-name order; re-read when a folder changes."""
    stamps = []
    for directory in dirs:
        try:
            stamps.append(os.stat(directory).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    key = tuple(dirs)
    cached = _cache.get(key)
    if cached is not None and cached[0] == tuple(stamps):
        return cached[1]
    files: dict[str, Path] = {}
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".json"):
                files.setdefault(name, directory / name)
    found: list[Descriptor] = []
    for name in sorted(files):
        try:
            desc = parse_descriptor(name, files[name].read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if desc is not None:
            found.append(desc)
    _cache[key] = (tuple(stamps), found)
    return found


def ensure_vars(choice: FirmwareChoice) -> None:
    """Create the variable store from its template if it does not exist yet; never overwrite it.

    The store's folder is made private (0700) when missing. Raises OSError when the template
    cannot be copied (the start fails and says so).
    """
    if choice.vars.exists() or choice.template is None:
        return
    ensure_private_dir(choice.vars.parent)
    tmp = choice.vars.with_name(f".{choice.vars.name}.tmp")
    shutil.copyfile(choice.template, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, choice.vars)
