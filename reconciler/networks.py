"""libvirt's network definitions on this host: the bridge of `<interface type='network'>`.

`Networks.bridge` is the `model.parse.BridgeLookup` that `model.parse` is given (through
`reconciler.hostfacts`): it reads `<dir>/<name>.xml`, libvirt's persistent definition of the
network (`/etc/libvirt/qemu/networks`, or `$QEMUD_LIBVIRT_NETWORKS`), and returns its
`<bridge name=>`. Reading /etc is a side effect, so it lives here and not in `model/`.
The definition is read each time a domain file is parsed (the scan parses only changed files);
libvirt creates the bridge when it starts the network, so a defined but inactive network's
bridge may be missing at start: QEMU's bridge helper then says so in the VM's log.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import NetworkError
from model.network import network_bridge

LIBVIRT_NETWORKS = Path("/etc/libvirt/qemu/networks")
"""Where libvirt's system instance keeps its network definitions."""
ENV = "QEMUD_LIBVIRT_NETWORKS"
"""Environment variable overriding `LIBVIRT_NETWORKS` (tests, other libvirt layouts)."""
MAX_BYTES = 1 << 20


def networks_dir() -> Path:
    """`$QEMUD_LIBVIRT_NETWORKS`, else /etc/libvirt/qemu/networks."""
    return Path(os.environ.get(ENV) or LIBVIRT_NETWORKS)


def _read(path: Path) -> bytes:
    """Read at most `MAX_BYTES` of `path` (a network definition is a few hundred bytes)."""
    with path.open("rb") as f:
        return f.read(MAX_BYTES + 1)


@dataclass(frozen=True)
class Networks:
    """libvirt's network definitions in `folder`; `bridge` is a `model.parse.BridgeLookup`."""

    folder: Path = field(default_factory=networks_dir)
    read: Callable[[Path], bytes] = _read

    def bridge(self, name: str) -> str:
        """The bridge of network `name`; raises `NetworkError` saying which file and what to do."""
        if "/" in name or name.startswith("."):
            raise NetworkError(name, f"{name!r} cannot be a libvirt network name")
        path = self.folder / f"{name}.xml"
        try:
            data = self.read(path)
        except FileNotFoundError:
            raise NetworkError(name, f"no libvirt network {name!r}: {path} does not exist; "
                               f"define it (virsh net-define, then net-start and net-autostart "
                               f"{name}), set ${ENV} to the folder holding it, or use "
                               "<interface type='bridge'><source bridge='BRIDGE'/>") from None
        except OSError as exc:
            raise NetworkError(name, f"cannot read {path}: {exc.strerror}; check its "
                               "permissions") from None
        if len(data) > MAX_BYTES:
            raise NetworkError(name, f"{path} is larger than {MAX_BYTES} bytes; it is not a "
                               "libvirt network definition")
        return network_bridge(name, data, path)
