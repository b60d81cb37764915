"""The host facts `model.parse` is given: machine types, libvirt's networks, QEMU's modules.

One seam (`model.parse.HostFacts`) for everything the pure model may ask about the host; each
fact's side effects live in its own module (`machines`, `networks`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import model
from model.parse import HostFacts
from reconciler.machines import default_catalog
from reconciler.networks import Networks, networks_dir

MODULE_DIR = Path("/usr/lib/x86_64-linux-gnu/qemu")
"""Where Debian's QEMU loads its modules from (its build's CONFIG_QEMU_MODDIR)."""
GUI_MODULES = frozenset({"audio-pa", "audio-jack", "audio-sdl", "ui-sdl", "ui-gtk"})
"""The modules Debian ships in qemu-system-gui rather than with the emulator."""


def check_module(emulator: str, module: str, module_dir: Path = MODULE_DIR) -> str | None:
    """None when `emulator` can load QEMU module `module`, else what to install.

    `emulator` is a path or a name looked up in $PATH. Only Debian's own emulators
    (/usr/bin/qemu-system-*) are checked, against Debian's module
    folder; another build (or one with modules built in, no folder) is trusted to have it.
    """
    found = emulator if "/" in emulator else shutil.which(emulator)
    real = os.path.realpath(found) if found else ""
    if not real.startswith("/usr/bin/qemu-system-") or not module_dir.is_dir():
        return None
    if (module_dir / f"{module}.so").exists():
        return None
    package = "qemu-system-gui" if module in GUI_MODULES else "qemu-system-x86"
    return (f"needs QEMU's {module} module, which is not installed ({module_dir}/{module}.so); "
            f"install Debian's {package} package")


def check_emulator(path: str) -> str | None:
    """None when `<emulator>` `path` is a program this process may execute, else why not.

    A bare name is looked up in $PATH.
    """
    if "/" not in path:
        return None if shutil.which(path) else (f"{path} is not found in $PATH; install it, or "
                                                "give the QEMU binary's full path")
    if not os.path.exists(path):
        return (f"{path} does not exist; install that QEMU, or give the path of one that is "
                "installed (Debian: /usr/bin/qemu-system-x86_64)")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return f"{path} is not an executable program; give the QEMU binary's path"
    return None


SPICE_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
"""What QEMU reads from spice's x509-dir (as libvirt's spice_tls_x509_cert_dir holds them)."""


def spice_certificates(folder: str) -> str | None:
    """None when this process (QEMU's user) can read spice's TLS certificates in `folder`.

    Else a sentence naming what is missing and what to do.
    """
    missing = [name for name in SPICE_FILES if not os.access(Path(folder) / name, os.R_OK)]
    if not missing:
        return None
    return (f"spice over TLS needs {', '.join(SPICE_FILES)} in {folder} (libvirt's "
            f"spice_tls_x509_cert_dir), readable by qemud's user; missing or unreadable: "
            f"{', '.join(missing)}; create them or remove tlsPort")


def host_key() -> tuple[tuple[str, int], ...]:
    """A cheap fingerprint of the host facts that change: libvirt's network definitions.

    The name and mtime of each; a change makes the scanner read the files that depend on them.
    """
    folder = networks_dir()
    try:
        with os.scandir(folder) as found:
            return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in found
                                if e.name.endswith(".xml")))
    except OSError:
        return ()


def host_facts() -> HostFacts:
    """The process's host facts: the emulator, machine types, libvirt's networks, modules.

    The networks folder is `$QEMUD_LIBVIRT_NETWORKS` as it is at each call.
    """
    return HostFacts(check_machine=default_catalog().check, check_emulator=check_emulator,
                     network_bridge=Networks().bridge, check_module=check_module,
                     spice_certificates=spice_certificates)


def parse_checked(data: bytes, file: str | Path | None = None) -> model.Parsed:
    """`model.parse` with the machine type checked and networks resolved on this host."""
    return model.parse(data, file, host_facts())


def parse_file_checked(path: str | Path) -> model.Parsed:
    """`model.parse_file` with the machine type checked and networks resolved on this host."""
    return model.parse_file(path, host_facts())
