"""libvirt network definitions (`<network>` documents): the host bridge a network's guests join.

Pure: the caller reads the file (`reconciler/networks.py`) and passes its bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

from model.errors import Issue, NetworkError
from model.xml import XmlError, load

BRIDGE = re.compile(r"^[A-Za-z0-9_.:\-]{1,15}$")
"""A Linux interface name (at most 15 bytes), as `Interface.bridge` takes it."""


def network_bridge(name: str, data: bytes, file: str | Path) -> str:
    """The bridge of libvirt network `name` from its definition `data` (read from `file`).

    libvirt's NAT, route, open and isolated networks have `<bridge name=>` (libvirt creates the
    bridge when the network starts); `<forward mode='bridge'>` networks name a host bridge the
    same way. Raises `NetworkError` naming `file` and the line when there is no bridge (macvtap
    and hostdev networks, a damaged file) or the document is another network's.
    """
    try:
        root = load(data)
    except XmlError as exc:
        raise NetworkError(name, _where(file, exc.issue) + "; fix or redefine the network "
                           f"(virsh net-edit {name})") from exc
    if root.tag != "network":
        raise NetworkError(name, f"{file}:{root.line}: <{root.tag}> is not a libvirt "
                           f"<network> definition")
    declared = root.child("name")
    if declared is not None and (declared.text or "").strip() != name:
        raise NetworkError(name, f"{file}:{declared.line}: defines network "
                           f"{(declared.text or '').strip()!r}, not {name!r}")
    bridge = root.child("bridge")
    forward = root.child("forward")
    mode = forward.attr("mode") if forward is not None else None
    if bridge is None or not bridge.attr("name"):
        how = f"<forward mode='{mode}'>" if mode else "it has no <bridge name=>"
        at = forward.line if forward is not None and mode else root.line
        raise NetworkError(name, f"{file}:{at}: network {name!r} gives its guests no bridge "
                           f"({how}); qemud attaches guests to a bridge only: use "
                           "<interface type='bridge'><source bridge='BRIDGE'/> or a network "
                           "with <bridge name=>")
    value = bridge.attr("name") or ""
    if not BRIDGE.match(value):
        raise NetworkError(name, f"{file}:{bridge.line}: <bridge name={value!r}> is not an "
                           "interface name (1-15 letters, digits, '_', '.', ':', '-')")
    return value


def _where(file: str | Path, issue: Issue) -> str:
    """`file:line: message` of an issue found in a network file."""
    return issue.render(file)
