"""libvirt network definitions (`<network>` documents): the host bridge a network's guests join.

Pure: the caller reads the file (`reconciler/networks.py`) and passes its bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

from model.errors import Issue, NetworkError
from model.xml import Node, XmlError, load

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
    _per_guest_settings(name, root, file)
    return value


PER_GUEST = {
    "port": "port isolation (guests on the bridge kept from each other)",
    "virtualport": "an Open vSwitch or 802.1Qbh port",
    "vlan": "a VLAN tag",
    "mtu": "an MTU for each guest's link",
}
"""What a network definition sets on each guest's tap (libvirt does, when the guest starts),
which joining the bridge through qemu-bridge-helper cannot do: refused, never dropped."""


def _per_guest_settings(name: str, root: Node, file: str | Path) -> None:
    """Raise `NetworkError` for a setting libvirt would apply to each guest's port.

    Host-side settings (`<forward>`, `<ip>`, `<dns>`, the bridge's own `<bandwidth>`, ...) are
    in effect once libvirt has started the network, and need nothing from qemud.
    """
    for tag, what in PER_GUEST.items():
        node = root.child(tag)
        if node is None or (tag == "port" and node.attr("isolated") != "yes"):
            continue
        raise NetworkError(name, f"{file}:{node.line}: network {name!r} gives each guest "
                           f"{what} (<{tag}>), which qemud cannot set up when it joins the "
                           "bridge; use <interface type='bridge'> on a bridge set up for it, or "
                           "remove the setting from the network")
    for group in root.children("portgroup"):
        if group.attr("default") == "yes" and any(group.child(t) is not None for t in (
                "bandwidth", "vlan", "virtualport")):
            raise NetworkError(name, f"{file}:{group.line}: network {name!r}'s default "
                               "<portgroup> sets bandwidth, VLAN or virtualport for each "
                               "guest, which qemud cannot set up; use <interface "
                               "type='bridge'>, or remove them from the portgroup")


def _where(file: str | Path, issue: Issue) -> str:
    """`file:line: message` of an issue found in a network file."""
    return issue.render(file)
