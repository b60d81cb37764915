"""UEFI firmware for `<os firmware='efi'>`: QEMU's firmware descriptors in, one choice out.

QEMU's packages describe their firmware in JSON files (`/usr/share/qemu/firmware/*.json`,
Debian package `ovmf`). The model stays pure: the caller reads those files and passes their
text to `parse_descriptor`, in the order libvirt uses (sorted by file name, `/etc/qemu/firmware`
overriding files of the same name). `choose` then picks the first descriptor that fits the
domain, as libvirt 9.0 does, and names the VM's own variable store (NVRAM).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.domain import Domain
from model.errors import RenderError

VARS_FILE = "VARS.fd"
"""The NVRAM file's name in the VM's state folder (`Runtime.state_dir`)."""
PLACEHOLDER = Path("firmware-descriptors-not-read")
"""The code path shown when no descriptors were given (`reconcile argv` without them)."""


@dataclass(frozen=True)
class Descriptor:
    """The parts of one QEMU firmware descriptor that the choice needs."""

    name: str
    code: str
    code_format: str
    template: str | None
    template_format: str
    machines: tuple[str, ...]
    """Machine type globs for x86_64, e.g. 'pc-q35-*'."""
    features: frozenset[str]


@dataclass(frozen=True)
class FirmwareChoice:
    """What QEMU gets for UEFI, and what the process layer must prepare before starting it.

    The process layer copies `template` to `vars` when `vars` does not exist yet (as libvirt
    does on first start) and keeps it: the guest's boot entries and Secure Boot keys live there.
    """

    code: Path
    code_format: str
    vars: Path
    vars_format: str
    template: Path | None
    requires_smm: bool
    descriptor: str | None = None


def parse_descriptor(name: str, text: str) -> Descriptor | None:
    """Parse one descriptor's JSON; None when it is not a UEFI flash firmware for x86_64.

    Raises ValueError with a sentence when the text is not a valid descriptor.
    """
    try:
        data = json.loads(text)
        if "uefi" not in data.get("interface-types", []):
            return None
        mapping = data["mapping"]
        if mapping.get("device") != "flash":
            return None
        executable = mapping["executable"]
        template = mapping.get("nvram-template")
        machines = tuple(m for t in data.get("targets", []) if t.get("architecture") == "x86_64"
                         for m in t.get("machines", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"firmware descriptor {name} is not valid: {exc}") from exc
    if not machines:
        return None
    return Descriptor(
        name=name,
        code=str(executable["filename"]),
        code_format=str(executable.get("format", "raw")),
        template=str(template["filename"]) if template else None,
        template_format=str(template.get("format", "raw")) if template else "raw",
        machines=machines,
        features=frozenset(str(f) for f in data.get("features", [])),
    )


def _machine_name(d: Domain) -> str:
    """The machine type as the descriptors' globs see it ('q35' is a pc-q35-*)."""
    machine = d.os.machine or "pc"
    return {"q35": "pc-q35-0.0", "pc": "pc-i440fx-0.0"}.get(machine, machine)


def _fits(desc: Descriptor, d: Domain) -> bool:
    """Whether a descriptor fits the machine and the `<firmware><feature>` wishes."""
    machine = _machine_name(d)
    if not any(fnmatch.fnmatchcase(machine, glob) for glob in desc.machines):
        return False
    if "requires-smm" in desc.features and d.features.smm is False:
        return False
    if desc.template is None:
        return False
    return all((name in desc.features) == wanted for name, wanted in d.os.firmware_features)


def uses_uefi(d: Domain) -> bool:
    """Whether `d` boots UEFI: `<os firmware='efi'>`, or an explicit `<loader>`."""
    return d.os.firmware == "efi" or d.os.loader is not None


def choose(d: Domain, descriptors: Sequence[Descriptor] | None,
           state_dir: Path | None) -> FirmwareChoice | None:
    """The UEFI firmware for `d`, or None for BIOS (SeaBIOS, QEMU's default).

    An explicit `<loader>` wins; else the first fitting descriptor. The variable store is
    `<nvram>` when given, else `VARS_FILE` in `state_dir` (shown relative without one). An
    explicit loader without `<nvram template=>` takes the template of the descriptor whose
    code it is, as libvirt does, so a store that does not exist yet can be made.
    """
    os = d.os
    if os.firmware != "efi" and os.loader is None:
        return None
    vars_path = Path(os.nvram) if os.nvram else (state_dir or Path()) / VARS_FILE
    if os.loader is not None:
        template = os.nvram_template or next(
            (desc.template for desc in descriptors or () if desc.code == os.loader
             and desc.template), None)
        return FirmwareChoice(Path(os.loader), "raw", vars_path, "raw",
                              Path(template) if template else None, bool(os.loader_secure))
    if descriptors is None:
        return FirmwareChoice(PLACEHOLDER, "raw", vars_path, "raw", None, False)
    for desc in descriptors:
        if _fits(desc, d):
            return FirmwareChoice(Path(desc.code), desc.code_format, vars_path,
                                  desc.template_format, Path(desc.template or ""),
                                  "requires-smm" in desc.features, desc.name)
    wishes = ", ".join(f"{n}={'yes' if w else 'no'}" for n, w in os.firmware_features)
    raise RenderError(f"no UEFI firmware fits machine {os.machine or 'pc'!r}"
                      + (f" with {wishes}" if wishes else "")
                      + f" among {len(descriptors)} firmware descriptor(s); install Debian's "
                      "'ovmf' package or change <firmware><feature>")
