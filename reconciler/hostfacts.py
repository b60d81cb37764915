"""The host facts `model.parse` is given: machine types of the emulator, libvirt's networks.

One seam (`model.parse.HostFacts`) for everything the pure model may ask about the host; each
fact's side effects live in its own module (`machines`, `networks`).
"""

from __future__ import annotations

from pathlib import Path

import model
from model.parse import HostFacts
from reconciler.machines import default_catalog
from reconciler.networks import Networks


def host_facts() -> HostFacts:
    """The process's host facts: the shared machine catalog and libvirt's networks.

    The networks folder is `$QEMUD_LIBVIRT_NETWORKS` as it is at each call.
    """
    return HostFacts(check_machine=default_catalog().check, network_bridge=Networks().bridge)


def parse_checked(data: bytes, file: str | Path | None = None) -> model.Parsed:
    """`model.parse` with the machine type checked and networks resolved on this host."""
    return model.parse(data, file, host_facts())


def parse_file_checked(path: str | Path) -> model.Parsed:
    """`model.parse_file` with the machine type checked and networks resolved on this host."""
    return model.parse_file(path, host_facts())
